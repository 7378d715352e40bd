"""Rate-limit evidence: headers, codex.rate_limits events, 429 bodies (protocol §5)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pooler.protocol.ratelimit import (
    Credits,
    RateLimitSnapshot,
    ReportedWindow,
    parse_rate_limit_headers,
    parse_rate_limits_event,
    parse_usage_limit_error,
)

NOW = 1_760_000_000.0


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-" + k.replace("_", "-").encode(), v.encode()) for k, v in values.items()]


def test_codex_headers_with_both_windows_and_credits() -> None:
    raw = headers(
        codex_primary_used_percent="12.5",
        codex_primary_window_minutes="300",
        codex_primary_reset_at="1760003600",
        codex_primary_reset_after_seconds="999",
        codex_secondary_used_percent="40",
        codex_secondary_window_minutes="10080",
        codex_secondary_reset_after_seconds="86400",
        codex_credits_has_credits="True",
        codex_credits_unlimited="0",
        codex_credits_balance=" 12.50 ",
        codex_active_limit="codex",
    )
    raw.append((b"content-type", b"text/event-stream"))
    snapshot = parse_rate_limit_headers(raw, NOW)
    assert snapshot == RateLimitSnapshot(
        primary=ReportedWindow(12.5, 300, 1760003600.0),  # reset-at wins over reset-after
        secondary=ReportedWindow(40.0, 10080, NOW + 86400),
        credits=Credits(has_credits=True, unlimited=False, balance="12.50"),
        extra={},
        plan_type=None,
        active_limit="codex",
    )


def test_extra_families_and_their_names() -> None:
    snapshot = parse_rate_limit_headers(
        [
            (b"X-Codex-Bengalfox-Primary-Used-Percent", b"80"),
            (b"x-codex-bengalfox-limit-name", b"gpt-5.2-codex-sonic"),
            (b"x-codex-secondary-primary-used-percent", b"5"),  # the family codex_secondary
            (b"x-codex-secondary-primary-window-minutes", b"1440"),
        ],
        NOW,
    )
    assert snapshot is not None
    assert snapshot.primary is None and snapshot.secondary is None
    assert snapshot.extra == {
        "codex_bengalfox": (ReportedWindow(80.0, None, None), None),
        "codex_secondary": (ReportedWindow(5.0, 1440, None), None),
    }
    assert snapshot.limit_names == {"codex_bengalfox": "gpt-5.2-codex-sonic"}


def test_window_present_rule() -> None:
    empty = headers(codex_primary_used_percent="0", codex_primary_window_minutes="0")
    assert parse_rate_limit_headers(empty, NOW) is None
    zero_with_reset = headers(codex_primary_used_percent="0", codex_primary_reset_at="1760000100")
    snapshot = parse_rate_limit_headers(zero_with_reset, NOW)
    assert snapshot is not None and snapshot.primary == ReportedWindow(0.0, None, 1760000100.0)


def test_garbage_values_are_ignored() -> None:
    snapshot = parse_rate_limit_headers(
        headers(
            codex_primary_used_percent="nan",
            codex_secondary_used_percent="7",
            codex_secondary_window_minutes="lots",
            codex_secondary_reset_at="\xff",
            codex_credits_has_credits="maybe",
            codex_credits_unlimited="false",
        ),
        NOW,
    )
    assert snapshot is not None
    assert snapshot.primary is None and snapshot.credits is None
    assert snapshot.secondary == ReportedWindow(7.0, None, None)
    assert parse_rate_limit_headers([(b"x-codex-primary-used-percent", b"inf")], NOW) is None
    assert parse_rate_limit_headers([], NOW) is None


def test_credits_alone_are_evidence() -> None:
    snapshot = parse_rate_limit_headers(
        headers(codex_credits_has_credits="false", codex_credits_unlimited="false"), NOW
    )
    assert snapshot is not None and snapshot.credits == Credits(False, False, None)


def test_rate_limits_event() -> None:
    event = json.loads(
        '{"type":"codex.rate_limits","plan_type":"plus","rate_limits":{"allowed":true,'
        '"limit_reached":false,"primary":{"used_percent":12,"window_minutes":300,'
        '"reset_at":1760003600},"secondary":null},"credits":{"has_credits":true,'
        '"unlimited":false,"balance":"3"},"metered_limit_name":"codex","limit_name":null}'
    )
    assert parse_rate_limits_event(event, NOW) == RateLimitSnapshot(
        ReportedWindow(12.0, 300, 1760003600.0), None, Credits(True, False, "3"), {}, "plus", None
    )


def test_rate_limits_event_of_another_family() -> None:
    event = {
        "type": "codex.rate_limits",
        "rate_limits": {"primary": {"used_percent": 50.5, "reset_after_seconds": 60}},
        "metered_limit_name": "codex-bengalfox",
        "limit_name": "GPT Sonic",
    }
    snapshot = parse_rate_limits_event(event, NOW)
    assert snapshot is not None and snapshot.primary is None
    assert snapshot.extra == {"codex_bengalfox": (ReportedWindow(50.5, None, NOW + 60), None)}
    assert snapshot.limit_names == {"codex_bengalfox": "GPT Sonic"}


def test_rate_limits_event_rejects_other_shapes() -> None:
    assert parse_rate_limits_event({"type": "response.created"}, NOW) is None
    assert parse_rate_limits_event({"type": "codex.rate_limits"}, NOW) is None
    bad = {"type": "codex.rate_limits", "rate_limits": {"primary": {"used_percent": True}}}
    assert parse_rate_limits_event(bad, NOW) is None
    assert parse_rate_limits_event([], NOW) is None  # type: ignore[arg-type]


def test_usage_limit_error() -> None:
    body = {"error": {"type": "usage_limit_reached", "plan_type": "plus", "resets_at": 1760009999}}
    assert parse_usage_limit_error(body, NOW) == 1760009999
    relative = {"error": {"code": "usage_limit_reached", "resets_in_seconds": 120}}
    assert parse_usage_limit_error(relative, NOW) == NOW + 120
    assert parse_usage_limit_error({"error": {"type": "rate_limit_exceeded"}}, NOW) is None
    assert parse_usage_limit_error({"error": "usage_limit_reached"}, NOW) is None
    no_time = {"error": {"type": "usage_limit_reached", "resets_at": "soon"}}
    assert parse_usage_limit_error(no_time, NOW) is None


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=20))
def test_headers_never_raise(raw: list[tuple[bytes, bytes]]) -> None:
    parse_rate_limit_headers(raw, NOW)


_names = st.sampled_from(
    [
        b"x-codex-primary-used-percent",
        b"x-codex-secondary-reset-at",
        b"x-codex-credits-unlimited",
        b"x-codex-credits-has-credits",
        b"x-codex-primary-window-minutes",
        b"x-a-b-primary-used-percent",
        b"x-primary-used-percent",
        b"x--primary-used-percent",
        b"x-codex-primary-reset-after-seconds",
    ]
)


@given(st.lists(st.tuples(_names, st.binary(max_size=30)), max_size=12))
def test_known_headers_with_garbage_values_never_raise(raw: list[tuple[bytes, bytes]]) -> None:
    parse_rate_limit_headers(raw, NOW)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_event_and_error_parsers_never_raise(value: object) -> None:
    for wrapped in (value, {"type": "codex.rate_limits", "rate_limits": value, "credits": value}):
        if isinstance(wrapped, dict):
            parse_rate_limits_event(wrapped, NOW)
            parse_usage_limit_error(wrapped, NOW)
    parse_usage_limit_error({"error": {"type": "usage_limit_reached", "resets_at": value}}, NOW)


_used = st.floats(min_value=0, max_value=150, allow_nan=False).filter(lambda v: v != 0)
_window = st.none() | st.tuples(
    _used, st.none() | st.integers(0, 100_000), st.none() | st.integers(1, 2**40)
)
_family = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


def _window_headers(stem: str, window: tuple[float, int | None, int | None]) -> list[str]:
    used, minutes, reset_at = window
    lines = [f"{stem}-used-percent: {used!r}"]
    if minutes is not None:
        lines.append(f"{stem}-window-minutes: {minutes}")
    if reset_at is not None:
        lines.append(f"{stem}-reset-at: {reset_at}")
    return lines


def _expected(window: tuple[float, int | None, int | None] | None) -> ReportedWindow | None:
    if window is None:
        return None
    used, minutes, reset_at = window
    return ReportedWindow(used, minutes, None if reset_at is None else float(reset_at))


@given(
    primary=_window,
    secondary=_window,
    extra=st.dictionaries(_family, st.tuples(_window, _window), max_size=3),
    credits=st.none()
    | st.tuples(st.booleans(), st.booleans(), st.none() | st.decimals(0, 999, places=2)),
    upper=st.booleans(),
)
def test_well_formed_headers_round_trip(
    primary: tuple[float, int | None, int | None] | None,
    secondary: tuple[float, int | None, int | None] | None,
    extra: dict[str, tuple[tuple[float, int | None, int | None] | None, ...]],
    credits: tuple[bool, bool, object] | None,
    upper: bool,
) -> None:
    lines: list[str] = []
    for stem, window in (("x-codex-primary", primary), ("x-codex-secondary", secondary)):
        lines += _window_headers(stem, window) if window else []
    for family, pair in extra.items():
        for stem, window in (
            (f"x-codex-{family}-primary", pair[0]),
            (f"x-codex-{family}-secondary", pair[1]),
        ):
            lines += _window_headers(stem, window) if window else []
    if credits is not None:
        has, unlimited, balance = credits
        lines += [
            f"x-codex-credits-has-credits: {str(has).lower()}",
            f"x-codex-credits-unlimited: {int(unlimited)}",
        ]
        if balance is not None:
            lines.append(f"x-codex-credits-balance: {balance}")
    raw = [tuple(line.encode().split(b": ", 1)) for line in lines]
    raw = [(name.upper() if upper else name, value) for name, value in raw]

    snapshot = parse_rate_limit_headers(raw, NOW)  # type: ignore[arg-type]

    families = {
        f"codex_{family}": (_expected(p), _expected(s))
        for family, (p, s) in extra.items()
        if p or s
    }
    expected_credits = None
    if credits is not None:
        expected_credits = Credits(
            credits[0], credits[1], None if credits[2] is None else str(credits[2])
        )
    if primary is None and secondary is None and not families and expected_credits is None:
        assert snapshot is None
        return
    assert snapshot == RateLimitSnapshot(
        _expected(primary), _expected(secondary), expected_credits, families, None, None
    )
