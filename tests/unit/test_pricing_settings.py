"""The `pricing.*` instance settings: off by default, parsed strictly."""

from __future__ import annotations

from typing import Any

import pytest

from pooler.instance_settings import (
    PricingSettings,
    SettingsError,
    flat_settings,
    is_setting_key,
    parse_settings,
)


def test_refresh_is_off_by_default() -> None:
    settings = parse_settings({})
    assert settings.pricing == PricingSettings("", 24.0)
    flat = flat_settings(settings)
    assert flat["pricing.refresh_url"] == ""
    assert flat["pricing.refresh_interval_hours"] == 24.0
    assert is_setting_key("pricing") and is_setting_key("pricing.refresh_url")
    assert not is_setting_key("pricing.other")


def test_a_url_and_an_interval_are_taken() -> None:
    raw = {
        "pricing": {"refresh_url": " https://prices.example/c.json ", "refresh_interval_hours": 6}
    }
    settings = parse_settings(raw, strict=True)
    assert settings.pricing == PricingSettings("https://prices.example/c.json", 6.0)


@pytest.mark.parametrize(
    "pricing",
    [
        {"refresh_url": "ftp://prices.example/c.json"},
        {"refresh_url": "prices.example/c.json"},
        {"refresh_url": "https://user:secret@prices.example/c.json"},
        {"refresh_url": "https://prices.example/a\nb"},
        {"refresh_url": "https://" + "a" * 3000},
        {"refresh_url": 5},
        {"refresh_interval_hours": 0},
        {"refresh_interval_hours": 10_000},
        {"refresh_interval_hours": "6"},
        {"other": 1},
        "https://prices.example",
    ],
)
def test_bad_pricing_settings_are_refused(pricing: Any) -> None:
    with pytest.raises(SettingsError, match="pricing"):
        parse_settings({"pricing": pricing}, strict=True)
