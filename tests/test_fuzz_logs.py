"""Property-based fuzzing of the log line format: text from outside can never forge a log line.

Why: the server logs excerpts of frames it could not use (Twilio media-stream messages, model events) and
the model's error messages, and those texts come from outside. Found by ``benchmarks/fuzz_server.py``: a
frame holding a newline wrote a second line into the server log that looked like the server's own. Whatever
text a record carries, the configured handler must write exactly one line for it (tracebacks excepted: they
are the server's own text).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.logs import call_logger, configure_logging

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@contextmanager
def ivr_log_output() -> Iterator[io.StringIO]:
    """The handler ``configure_logging`` installs, writing into a buffer; the root logger restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_stderr = sys.stderr
    buffer = io.StringIO()
    for handler in list(root.handlers):
        if getattr(handler, "_ivr", False):
            root.removeHandler(handler)
    sys.stderr = buffer  # configure_logging binds the stream it finds in sys.stderr
    try:
        configure_logging("INFO")
        ours = [h for h in root.handlers if getattr(h, "_ivr", False)]
        others = [h for h in root.handlers if not getattr(h, "_ivr", False)]
        for handler in others:  # pytest's capture handlers would see the records too; irrelevant here
            root.removeHandler(handler)
        assert ours, "configure_logging installed no handler"
        yield buffer
    finally:
        sys.stderr = saved_stderr
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


outside_text = st.lists(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["\n", "\r", "\r\n", "\x1b[2J"]),
    max_size=40,
).map("".join)


@FUZZ
@given(outside_text)
def test_one_record_is_one_line(text: str) -> None:
    with ivr_log_output() as out:
        call_logger("ivr.call", "CA" + "0" * 32, "MZ" + "0" * 32).warning(
            "ignored a malformed Twilio message: %s (%.60s)", "not JSON", text
        )
    written = out.getvalue()
    assert written.endswith("\n")
    assert written.count("\n") == 1, f"one record wrote {written.count(chr(10))} lines: {written!r}"
    assert "\r" not in written and "\x1b" not in written, written


def test_a_forged_line_is_not_written() -> None:
    """The reproducer from the fuzz run, as one readable example."""
    with ivr_log_output() as out:
        logging.getLogger("ivr.call").warning(
            "model error %s: %s", "server_error", "x\n12:00:00 ERROR   ivr.app: forged"
        )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert not any(line.startswith("12:00:00 ERROR") for line in lines)
