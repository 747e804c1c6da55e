"""Property-based fuzzing of the flow loader (ivr.flows.loader.parse_flow).

Why: a flow file is the one input an operator writes by hand, and ``ivr serve`` / ``ivr flows check`` must
answer any mistake in it with ``file:line: field: what is wrong`` — never a traceback, never a line that is
not in the file. Hypothesis starts from the shipped flows (and the test flows) and mutates them at two
levels: the YAML text (lines dropped, duplicated, spliced with junk) and the data (any one field deleted or
replaced by any YAML value). Every outcome must be a loaded flow or a ``FlowError`` whose problems all point
at a real line. Loading must also be deterministic, and a loaded flow must survive a dump → load round trip.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flows.errors import FlowError
from ivr.flows.loader import LoadedFlow, parse_flow

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROOT = Path(__file__).resolve().parents[1]
FLOW_FILES = sorted([*(ROOT / "flows").glob("*.yaml"), *(ROOT / "tests" / "data" / "flows").glob("*.yaml")])
ALL_TEXTS = {path.name: path.read_text(encoding="utf-8") for path in FLOW_FILES}

yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)


def _load(text: str, source: str = "fuzz.yaml") -> LoadedFlow | FlowError:
    """parse_flow's outcome; any exception other than FlowError fails the property."""
    try:
        return parse_flow(text, source)
    except FlowError as exc:
        return exc


# The starting points are the shipped flows that load in this checkout and environment (a flow may need an
# environment variable the operator sets); mutations of valid flows are what finds the interesting paths.
TEXTS = {name: text for name, text in ALL_TEXTS.items() if isinstance(_load(text, name), LoadedFlow)}
DATA = {name: yaml.safe_load(text) for name, text in TEXTS.items()}


def _check_outcome(outcome: LoadedFlow | FlowError, text: str) -> None:
    lines = max(1, text.count("\n") + 1)
    if isinstance(outcome, FlowError):
        assert outcome.problems, "a FlowError must list at least one problem"
        for problem in outcome.problems:
            assert problem.message, problem
            assert problem.source == "fuzz.yaml"
            if problem.line is not None:
                assert 1 <= problem.line <= lines, f"line {problem.line} of a {lines}-line file: {problem}"
        assert str(outcome).startswith("fuzz.yaml")
    else:
        for warning in outcome.warnings:
            if warning.line is not None:
                assert 1 <= warning.line <= lines


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((*prefix, index))
            out.extend(_paths(child, (*prefix, index)))
    return out


def test_enough_valid_flows_to_mutate() -> None:
    """The starting points of the mutations are valid flows (else the fuzzing proves little)."""
    assert len(TEXTS) >= 2, f"only {sorted(TEXTS)} of {sorted(ALL_TEXTS)} load"


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_flow_or_located_problems(text: str) -> None:
    _check_outcome(_load(text), text)


@FUZZ
@given(st.sampled_from(sorted(TEXTS)), st.data())
def test_line_level_mutations(name: str, data: st.DataObject) -> None:
    """Drop, duplicate or splice junk into lines of a real flow: located problems, never a traceback."""
    lines = TEXTS[name].splitlines(keepends=True)
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    action = data.draw(st.sampled_from(["drop", "duplicate", "splice", "indent", "truncate"]))
    if action == "drop":
        del lines[index]
    elif action == "duplicate":
        lines.insert(index, lines[index])
    elif action == "splice":
        junk = data.draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>#'\"\t ,?%@`x0\n")), max_size=12))
        at = data.draw(st.integers(min_value=0, max_value=len(lines[index])))
        lines[index] = lines[index][:at] + junk + lines[index][at:]
    elif action == "indent":
        lines[index] = "  " + lines[index]
    else:
        lines = lines[:index]
    text = "".join(lines)
    _check_outcome(_load(text), text)


@FUZZ
@given(st.sampled_from(sorted(DATA)), st.data(), st.sampled_from(["delete", "replace"]), yaml_values)
def test_field_level_mutations(name: str, data: st.DataObject, action: str, replacement: Any) -> None:
    """Delete or replace any one field anywhere in a real flow with any YAML value."""
    doc = copy.deepcopy(DATA[name])
    path = data.draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    outcome = _load(text)
    _check_outcome(outcome, text)
    if isinstance(outcome, FlowError) and action == "replace":
        # The problem list names where it is: at least one problem sits at a real line.
        assert any(p.line is not None for p in outcome.problems), str(outcome)


@FUZZ
@given(
    st.sampled_from(sorted(DATA)), st.dictionaries(st.text(min_size=1, max_size=12), yaml_scalars, max_size=3)
)
def test_unknown_top_level_keys_are_named(name: str, extra: dict[str, Any]) -> None:
    doc = copy.deepcopy(DATA[name])
    unknown = {k: v for k, v in extra.items() if k not in doc and k.isidentifier()}
    doc.update(unknown)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    outcome = _load(text)
    _check_outcome(outcome, text)
    if unknown:
        assert isinstance(outcome, FlowError)
        fields = {p.field for p in outcome.problems}
        for key in unknown:
            assert key in fields, (key, str(outcome))


@FUZZ
@given(st.sampled_from(sorted(TEXTS)), st.data())
def test_loading_is_deterministic(name: str, data: st.DataObject) -> None:
    lines = TEXTS[name].splitlines(keepends=True)
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    text = "".join(lines[:index] + lines[index + 1 :])
    first, second = _load(text), _load(text)
    if isinstance(first, FlowError):
        assert isinstance(second, FlowError)
        assert str(first) == str(second)
    else:
        assert isinstance(second, LoadedFlow)
        assert first.flow == second.flow


@FUZZ
@given(st.sampled_from(sorted(TEXTS)))
def test_loaded_flow_round_trips_through_yaml(name: str) -> None:
    """What a flow's data dumps to loads back to an equal flow."""
    loaded = _load(TEXTS[name])
    assert isinstance(loaded, LoadedFlow)
    again = _load(yaml.safe_dump(DATA[name], sort_keys=False, allow_unicode=True))
    assert isinstance(again, LoadedFlow), str(again)
    assert again.flow == loaded.flow


def _alias_bomb(levels: int) -> str:
    """A ~700-byte flow whose tool parameters expand, through nested YAML aliases, to 9**levels strings."""
    anchors = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        anchors.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    last = chr(ord("a") + levels - 1)
    return (
        "id: bomb\ninstructions: hi\ntools:\n  - type: http\n    name: t\n    description: d\n"
        "    url: http://example.test/\n    parameters:\n      type: object\n      x-anchors:\n"
        + "\n".join("        " + a for a in anchors)
        + f"\n      properties: {{p: {{enum: *{last}}}}}\n"
    )


def test_yaml_alias_expansion_is_bounded() -> None:
    """A few hundred bytes of nested aliases must not become a flow whose data is gigabytes when sent.

    Found by fuzzing the loader: aliases are kept as shared references at load time, so the flow loads in
    milliseconds, but every call's ``session.update`` serialises the tool parameters in full (9**7 strings
    are 43 MB of JSON per call; 9**9 would be 3.5 GB). The loader must refuse such a document, naming the
    line of the alias.
    """
    text = _alias_bomb(7)
    outcome = _load(text)
    refused = isinstance(outcome, FlowError)  # (no repr of the outcome: a loaded bomb takes minutes to print)
    assert refused, "a flow whose aliases expand to 4.8 million values loaded"
    assert isinstance(outcome, FlowError)
    assert any("alias" in p.message and p.line is not None for p in outcome.problems), str(outcome)
    _check_outcome(outcome, text)


def test_small_aliases_still_work() -> None:
    """Ordinary anchor/alias reuse (a shared schema fragment) stays allowed."""
    text = _alias_bomb(2)
    assert isinstance(_load(text), LoadedFlow)
