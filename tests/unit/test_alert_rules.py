"""Alert rules on a Pool's state, the webhook signature, the retry delays and the alert
settings: pure."""

from __future__ import annotations

from uuid import uuid4

import pytest

from pooler.alerts.job import BACKOFF_CAP_S, retry_delay
from pooler.alerts.payload import signature, verify
from pooler.alerts.rules import PoolState, Rule, WindowUse, evaluate
from pooler.instance_settings import SettingsError, flat_settings, parse_settings
from pooler.store.alerts import check_webhook_url
from pooler.store.common import InvalidInputError

POOL = uuid4()


def rule(kind: str, threshold: float | None, min_requests: int = 10) -> Rule:
    return Rule(uuid4(), POOL, kind, threshold, min_requests)


def state(**kw: object) -> PoolState:
    base: dict[str, object] = {"accounts": 3, "usable": 3}
    base.update(kw)
    return PoolState(POOL, "team", **base)  # type: ignore[arg-type]


def test_usable_below_holds_strictly_below() -> None:
    assert evaluate(rule("usable_below", 2), state(usable=2)) == []
    (found,) = evaluate(rule("usable_below", 2), state(usable=1))
    assert found.subject == "pool" and found.details["usable"] == 1


def test_reauth_is_one_finding_per_account() -> None:
    a, b = uuid4(), uuid4()
    found = evaluate(rule("reauth_required", None), state(reauth=((a, "x"), (b, "y"))))
    assert [f.subject for f in found] == [str(a), str(b)]


def test_quota_window_carries_its_reset() -> None:
    windows = {"primary": WindowUse(91.0, 1_900_000_000.0), "secondary": WindowUse(40.0, None)}
    (found,) = evaluate(rule("quota_above", 90), state(windows=windows))
    assert found.subject == "primary"
    assert found.details["reset_at"].startswith("2030-")


def test_error_rate_needs_enough_requests() -> None:
    assert evaluate(rule("error_rate_above", 50, 10), state(requests=9, errors=9)) == []
    (found,) = evaluate(rule("error_rate_above", 50, 10), state(requests=10, errors=5))
    assert found.details["error_rate_percent"] == 50.0
    assert evaluate(rule("error_rate_above", 50, 10), state(requests=10, errors=4)) == []


def test_signature_is_over_timestamp_dot_body() -> None:
    secret, body = b"s3cret", b'{"a":1}'
    given = signature(secret, 1_700_000_000, body)
    assert verify(secret, "1700000000", body, given)
    assert not verify(secret, "1700000001", body, given)
    assert not verify(b"other", "1700000000", body, given)
    assert not verify(secret, "1700000000", body + b" ", given)


def test_retry_delay_grows_with_jitter_and_a_cap() -> None:
    for attempts in range(1, 6):
        seconds = retry_delay(attempts, 5.0).total_seconds()
        assert 5.0 * 2 ** (attempts - 1) * 0.5 <= seconds < 5.0 * 2 ** (attempts - 1)
    assert retry_delay(40, 5.0).total_seconds() < BACKOFF_CAP_S


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://x",
        "ftp://host/x",
        "http://",
        "http://user:pw@host/",
        "http://host/a b",
        "http://host/\x00",
        "https://host:99999/",
        "javascript:alert(1)",
    ],
)
def test_webhook_urls_other_than_http_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        check_webhook_url(url)


def test_webhook_url_accepted() -> None:
    assert check_webhook_url("https://hooks.example.com/x?y=1")


def test_smtp_and_alert_settings_parse_strictly() -> None:
    settings = parse_settings(
        {
            "smtp": {"host": "mail.example.com", "port": 2525, "from_address": "a@example.com"},
            "alerts": {"console_url": "https://pooler.example.com/"},
        },
        strict=True,
    )
    flat = flat_settings(settings)
    assert flat["smtp.port"] == 2525 and flat["smtp.starttls"] is True
    assert flat["alerts.console_url"] == "https://pooler.example.com"
    for bad in (
        {"smtp": {"host": "a b"}},
        {"smtp": {"port": 0}},
        {"smtp": {"password": "x"}},
        {"smtp": {"from_address": "not-an-address"}},
        {"alerts": {"console_url": "javascript:alert(1)"}},
    ):
        with pytest.raises(SettingsError):
            parse_settings(bad, strict=True)
