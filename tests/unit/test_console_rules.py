"""The console's pure rules: the password policy, sign-in delays, forwarded client
addresses and https, and the settings they read."""

from __future__ import annotations

import pytest

from pooler.instance_settings import (
    InstanceSettings,
    SettingsError,
    is_setting_key,
    parse_settings,
    settings_as_dict,
)
from pooler.password_policy import PasswordRefused, check_password, common_passwords
from pooler.store.console_signin import ACCOUNT_CAP_S, IP_CAP_S, delay_after
from pooler.web.forwarded import came_over_https, client_address, client_rules


def test_the_common_password_list_ships_with_ten_thousand_entries() -> None:
    found = common_passwords()
    assert len(found) == 10_000
    assert {"123456", "password", "qwerty"} <= found


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 12"),
        ("x" * 129, "at most 128"),
        ("1qaz2wsx3edc", "most common"),
        ("1QAZ2WSX3EDC", "most common"),
        ("qwertyuiop12", None),
        ("correct horse battery staple", None),
    ],
)
def test_password_policy(password: str, why: str | None) -> None:
    if why is None:
        assert check_password(password) == password
    else:
        with pytest.raises(PasswordRefused, match=why):
            check_password(password)


def test_sign_in_delays_grow_to_a_cap() -> None:
    assert [delay_after(n, ACCOUNT_CAP_S) for n in range(1, 9)] == [0, 0, 0, 1, 2, 4, 8, 16]
    assert delay_after(50, ACCOUNT_CAP_S) == ACCOUNT_CAP_S
    assert delay_after(50, IP_CAP_S) == IP_CAP_S
    assert ACCOUNT_CAP_S <= 60  # the owner is slowed down, never locked out


TRUSTED = client_rules(("10.0.0.0/8", "::1/128"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # untrusted peer: header ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # spoofed left
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.2", ["not-an-ip, 10.0.0.3"], "10.0.0.3"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["1" * 100], "10.0.0.2"),
        ("::1", ["2001:db8::7"], "2001:db8::7"),
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    assert client_address(TRUSTED, peer, xff) == expected


def test_client_address_without_trusted_proxies_is_the_peer() -> None:
    assert client_address(client_rules(()), "10.0.0.2", ["198.51.100.1"]) == "10.0.0.2"


def test_https_is_believed_only_from_a_trusted_proxy() -> None:
    assert came_over_https("https", "203.0.113.9", None, client_rules(()))
    assert not came_over_https("http", "203.0.113.9", "https", TRUSTED)
    assert came_over_https("http", "10.1.2.3", "https", TRUSTED)
    assert came_over_https("http", "10.1.2.3", "HTTPS, http", TRUSTED)
    assert not came_over_https("http", "10.1.2.3", "http", TRUSTED)


def test_console_settings_parse_and_print() -> None:
    parsed = parse_settings(
        {"trusted_proxies": ["10.0.0.1", "192.168.0.0/16"], "console_idle_timeout_minutes": 30}
    )
    assert parsed.trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16")
    assert parsed.console_idle_timeout_minutes == 30
    assert settings_as_dict(parsed)["trusted_proxies"] == ["10.0.0.1/32", "192.168.0.0/16"]
    assert is_setting_key("trusted_proxies") and is_setting_key("bulkheads.admin")
    assert InstanceSettings().bulkheads["admin"].concurrency >= 1
    for bad in ("nope", ["10.0.0.300"], ["1.2.3.4"] * 65):
        with pytest.raises(SettingsError, match="trusted_proxies"):
            parse_settings({"trusted_proxies": bad})
    with pytest.raises(SettingsError, match="console_idle_timeout_minutes"):
        parse_settings({"console_idle_timeout_minutes": 1})
