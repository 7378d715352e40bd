"""What a Pool and a Pool API key allow, decided without I/O before a request goes upstream.

Refusals (in the gateway's one exception tree, `pooler.errors`): V1Disabled (403
v1_compatibility_disabled), ModelNotAllowed (403 model_not_allowed, param `model`) and
ReasoningEffortNotAllowed (400 reasoning_effort_not_allowed, param `reasoning.effort` or
the caller's name for it).

A key's effort policy is `enforce:X` (every request runs at effort X, whatever it asked) or
`max:X` (an effort above X is refused, never silently lowered: the client learns its limit).
A `max` request that names no effort runs at the upstream's default, which is `medium` at
most; so when X is below `medium` the effort X is filled in, and the ceiling holds for
requests that say nothing too. An effort this module does not know (`ultra`, a typo) cannot
be proven under the ceiling and is refused.
"""

from __future__ import annotations

from typing import Any, Final

from pooler.errors import ModelNotAllowed, ReasoningEffortNotAllowed, V1Disabled
from pooler.routing.snapshot import normalize_scope
from pooler.store.keys import REASONING_EFFORTS
from pooler.web.keys import KeyInfo, PoolInfo

_RANK: Final = {effort: rank for rank, effort in enumerate(REASONING_EFFORTS)}
# The upstream's effort when a request names none is never above this one.
UPSTREAM_DEFAULT_CEILING: Final = "medium"
RESPONSES_EFFORT_PARAM: Final = "reasoning.effort"
CHAT_EFFORT_PARAM: Final = "reasoning_effort"


def check_v1_enabled(pool: PoolInfo) -> None:
    """Raise V1Disabled unless the Pool serves the OpenAI-compatible /v1 surface."""
    if not pool.v1_enabled:
        raise V1Disabled("the OpenAI-compatible /v1 API is disabled for this Pool")


def model_allowed(key: KeyInfo, model: str) -> bool:
    """Whether the key may use `model` (names compare normalized, as for model support)."""
    return key.allowed_models is None or normalize_scope(model) in key.allowed_models


def apply_key_policy(
    key: KeyInfo, payload: dict[str, Any], *, effort_param: str = RESPONSES_EFFORT_PARAM
) -> bool:
    """Check and adjust a Responses-shaped payload (`model`, `reasoning.effort`) in place.

    Raises ModelNotAllowed or ReasoningEffortNotAllowed (its `param` is `effort_param`, so
    a chat route can name its own field). Returns whether `payload` changed: the caller then
    serializes the body again."""
    check_model(key, payload.get("model"))
    if key.reasoning_effort is None:
        return False
    if key.reasoning_effort_mode == "enforce":
        return _set_effort(payload, key.reasoning_effort)
    return _cap_effort(payload, key.reasoning_effort, effort_param)


def check_model(key: KeyInfo, model: object) -> None:
    if key.allowed_models is None:
        return
    if not isinstance(model, str) or not model_allowed(key, model):
        shown = model if isinstance(model, str) else "(none)"
        raise ModelNotAllowed(f"this API key may not use the model {shown[:200]!r}", param="model")


def requested_effort(payload: dict[str, Any]) -> object:
    """`reasoning.effort` as the client sent it (None when absent)."""
    reasoning = payload.get("reasoning")
    return reasoning.get("effort") if isinstance(reasoning, dict) else None


def _set_effort(payload: dict[str, Any], effort: str) -> bool:
    reasoning = payload.get("reasoning")
    if isinstance(reasoning, dict):
        if reasoning.get("effort") == effort:
            return False
        payload["reasoning"] = {**reasoning, "effort": effort}
    else:
        payload["reasoning"] = {"effort": effort}
    return True


def _cap_effort(payload: dict[str, Any], ceiling: str, param: str) -> bool:
    asked = requested_effort(payload)
    if asked is None:
        if _RANK[ceiling] < _RANK[UPSTREAM_DEFAULT_CEILING]:
            return _set_effort(payload, ceiling)
        return False
    if not isinstance(asked, str) or asked not in _RANK or _RANK[asked] > _RANK[ceiling]:
        shown = asked if isinstance(asked, str) else type(asked).__name__
        raise ReasoningEffortNotAllowed(
            f"this API key allows a reasoning effort up to {ceiling!r} (got {shown[:40]!r})",
            param=param,
        )
    return False
