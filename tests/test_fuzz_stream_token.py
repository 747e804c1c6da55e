"""Property-based fuzzing of the media-stream token (ivr.telephony.stream_token): forged streams stay out.

Why: the token is what binds a media stream to its signed webhook (finding 1). It must verify for exactly
the call sid, flow, caller and called number it was issued for, and for nothing else: any other value, any
change to the token text, another key or a later clock is refused with a named reason — and ``verify``
must never raise, since its input is whatever a stream's ``start`` message carries.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.telephony.stream_token import (
    TOKEN_PARAMETER,
    OnceClaims,
    Refusal,
    StreamBinding,
    StreamTokens,
    derive_key,
)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
KEY = derive_key("", "fuzz-auth-token")
assert KEY is not None
TOKENS = StreamTokens(KEY, ttl_s=120.0)
NOW = 1_800_000_000.0

# What can arrive in a JSON ``start`` message: valid Unicode (orjson refuses lone surrogates).
wire_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
bindings = st.builds(StreamBinding, wire_text, wire_text, wire_text, wire_text)


def _params(binding: StreamBinding, token: str) -> dict[str, str]:
    return {**binding.parameters(), TOKEN_PARAMETER: token}


@FUZZ
@given(bindings, st.floats(min_value=0, max_value=119))
def test_a_token_verifies_for_exactly_its_binding(binding: StreamBinding, later: float) -> None:
    token = TOKENS.issue(binding, NOW)
    assert TOKENS.verify(_params(binding, token), binding.call_sid, NOW + later) == binding


@FUZZ
@given(bindings, st.sampled_from(["call_sid", "flow", "caller", "called"]), wire_text)
def test_any_other_value_is_refused(binding: StreamBinding, field: str, other: str) -> None:
    token = TOKENS.issue(binding, NOW)
    values = {"call_sid": binding.call_sid, **binding.parameters()}
    if values[field] == other:
        return
    values[field] = other
    changed = StreamBinding(values["call_sid"], values["flow"], values["caller"], values["called"])
    result = TOKENS.verify(_params(changed, token), changed.call_sid, NOW)
    assert isinstance(result, Refusal)
    assert result.reason == "bad_token"


@FUZZ
@given(bindings, st.data())
def test_any_change_to_the_token_text_is_refused(binding: StreamBinding, data: st.DataObject) -> None:
    token = TOKENS.issue(binding, NOW)
    action = data.draw(st.sampled_from(["replace", "drop", "insert", "truncate", "append"]))
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    char = data.draw(st.characters(codec="utf-8", exclude_categories=["Cs"]))
    if action == "replace":
        forged = token[:at] + char + token[at + 1 :]
    elif action == "drop":
        forged = token[:at] + token[at + 1 :]
    elif action == "insert":
        forged = token[:at] + char + token[at:]
    elif action == "truncate":
        forged = token[:at]
    else:
        forged = token + char
    if forged == token:
        return
    result = TOKENS.verify(_params(binding, forged), binding.call_sid, NOW)
    assert isinstance(result, Refusal), f"forged token {forged!r} was accepted"
    assert result.reason in {"missing_token", "malformed_token", "bad_token", "expired_token"}
    assert forged not in result.detail  # the token itself is never logged


@FUZZ
@given(bindings, st.floats(min_value=121, max_value=1e7))
def test_an_expired_token_is_refused(binding: StreamBinding, later: float) -> None:
    token = TOKENS.issue(binding, NOW)
    result = TOKENS.verify(_params(binding, token), binding.call_sid, NOW + later)
    assert isinstance(result, Refusal)
    assert result.reason == "expired_token"


@FUZZ
@given(bindings, st.text(min_size=1, max_size=20))
def test_another_key_is_refused(binding: StreamBinding, secret: str) -> None:
    other_key = derive_key(secret, "")
    assert other_key is not None
    if other_key == KEY:
        return
    token = StreamTokens(other_key, ttl_s=120.0).issue(binding, NOW)
    result = TOKENS.verify(_params(binding, token), binding.call_sid, NOW)
    assert isinstance(result, Refusal)
    assert result.reason == "bad_token"


@FUZZ
@given(
    st.dictionaries(wire_text, wire_text, max_size=6),
    wire_text,
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_verify_never_raises(parameters: dict[str, Any], call_sid: str, now: float) -> None:
    result = TOKENS.verify(parameters, call_sid, now)
    assert isinstance(result, Refusal | StreamBinding)
    if TOKEN_PARAMETER not in parameters or not parameters[TOKEN_PARAMETER]:
        assert isinstance(result, Refusal)


claim_sequences = st.lists(
    st.tuples(st.sampled_from([f"CA{i}" for i in range(30)]), st.floats(0, 100)), max_size=200
)


@FUZZ
@given(claim_sequences)
def test_a_call_sid_is_admitted_once_while_its_claim_holds(claims: list[tuple[str, float]]) -> None:
    once = OnceClaims(max_entries=1000)  # never pruned here: the exact semantics
    held: dict[str, float] = {}
    now = 0.0
    for sid, hold in claims:
        now += 0.5
        admitted = once.claim(sid, now + hold, now)
        assert admitted == (sid not in held or held[sid] < now), (sid, held.get(sid), now)
        if admitted:
            held[sid] = now + hold


@FUZZ
@given(claim_sequences)
def test_claims_stay_bounded(claims: list[tuple[str, float]]) -> None:
    once = OnceClaims(max_entries=10)
    now = 0.0
    for sid, hold in claims:
        now += 0.5
        once.claim(sid, now + hold, now)
        assert len(once) <= 10
