"""Every ``ivr … --help`` is written for a person: a description in prose, help for every option, no docstring
markup, lines that fit a terminal.

Why: a new user's first contact with a command is its help. Several commands printed their module's docstring
(reST markup such as ``ivr flows check``, ":func:`register`", notes for programmers); `ivr serve` printed no
description at all.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ivr.cli import build_parser, main

DOCSTRING_MARKS = ("``", ":func:", ":class:", ":mod:", ":meth:", "Registered into", "func``", "%(")
#: The terminal width the help is checked at (prose wraps to it; kept example lines may pass it by a little).
WIDTH = 80


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, (*path, name))
    return paths


#: Every command the ivr command line offers, walked from the parser itself (a new one is checked too).
PATHS = command_paths(build_parser())


def help_of(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {
        "",
        "serve",
        "call",
        "demo",
        "flows check",
        "approvals approve",
        "operators remove",
        "data load",
    } <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ivr")
def test_help_is_written_for_a_person(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    text = help_of(path, capsys)
    where = f"ivr {' '.join(path)} --help"

    for mark in DOCSTRING_MARKS:
        assert mark not in text, f"{where} shows docstring markup {mark!r}:\n{text}"
    # a description: the paragraph between the usage and the first list of arguments
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    description = body.split("\n\n")[0]
    assert not description.rstrip().endswith(":") and len(description.split()) >= 5, (
        f"{where} has no description in prose:\n{text}"
    )
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH + 2]
    assert not too_wide, f"{where}: lines wider than a {WIDTH}-column terminal: {too_wide}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ivr")
def test_every_option_and_argument_says_what_it_is(path: tuple[str, ...]) -> None:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"ivr {' '.join(path)}: {action.dest!r} has no help text"


def test_a_module_s_own_prose_is_kept() -> None:
    """The help text in ivr/cli.py fills gaps; it never replaces what a command wrote for people itself."""
    from ivr.caller.cli import register as register_call
    from ivr.demo.cli import register as register_demo

    alone = argparse.ArgumentParser(prog="ivr").add_subparsers()
    register_demo(alone)
    register_call(alone)
    full = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("demo", "call"):
        assert full.choices[name].description == alone.choices[name].description


def test_the_installed_command_prints_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ivr", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "ivr demo" in done.stdout and "ivr serve" in done.stdout and "ivr call" in done.stdout
