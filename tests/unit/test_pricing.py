"""The price catalog (pooler.pricing): the bundled file, the cost of a request, the dated-slug
rule, and what a catalog must satisfy to be used."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from pooler.emulator.models import MODEL_SLUGS
from pooler.pricing import (
    MAX_CATALOG_BYTES,
    Price,
    PricingError,
    bundled,
    cost_usd,
    parse_catalog,
)


def catalog(**models: Any) -> dict[str, Any]:
    return {"schema": 1, "as_of": "2026-12-06", "source": "test", "models": models}


def test_the_bundled_catalog_is_valid_dated_and_sourced() -> None:
    prices = bundled()
    assert prices.as_of == "2026-12-06"
    assert prices.source.startswith("https://developers.openai.com/")
    assert prices.price_of("gpt-5.5") == Price(5_000_000, 500_000, 30_000_000)
    assert prices.price_of("gpt-5.4-mini") == Price(750_000, 75_000, 4_500_000)
    # The Codex models the emulator serves that OpenAI prices; the rest stay unpriced.
    priced = {slug for slug in MODEL_SLUGS if prices.price_of(slug) is not None}
    assert priced == {"gpt-5.5", "gpt-5.4", "gpt-5.4-mini", "gpt-5.3-codex"}


def test_cost_is_uncached_input_plus_cached_input_plus_output() -> None:
    price = Price(input=5_000_000, cached_input=500_000, output=30_000_000)  # gpt-5.5
    # 1000 input of which 400 cached; 200 output (reasoning included in it, not added).
    cost = cost_usd(price, 1000, 400, 200)
    assert cost == Decimal("0.003") + Decimal("0.0002") + Decimal("0.006")
    assert bundled().cost("gpt-5.5", 1000, 400, 200) == cost


def test_cost_is_exact_for_tiny_prices() -> None:
    # gpt-5-nano's cached input: $0.005 per 1M, i.e. 5e-9 dollars a token.
    assert bundled().cost("gpt-5-nano", 1, 1, 0) == Decimal("5E-9")
    assert bundled().cost("gpt-5-nano", 3, 0, 0) == Decimal("1.5E-7")


def test_cached_tokens_past_the_input_or_negative_counts_never_inflate_the_cost() -> None:
    price = Price(1_000_000, 100_000, 10_000_000)
    assert cost_usd(price, 10, 50, 0) == cost_usd(price, 10, 10, 0)
    assert cost_usd(price, -5, -5, -5) == 0


def test_no_usage_or_an_unknown_model_has_no_cost() -> None:
    prices = bundled()
    assert prices.cost("gpt-5.5", None, None, None) is None
    assert prices.cost(None, 10, 0, 10) is None
    assert prices.cost("gpt-6.1-sol", 10, 0, 10) is None
    assert prices.cost("gpt-5.3-codex-spark", 10, 0, 10) is None
    # No prefix guessing: a longer slug is another model.
    assert prices.price_of("gpt-5.5-pro") is None
    assert prices.price_of("GPT-5.5") is None


def test_a_dated_snapshot_is_priced_as_its_family() -> None:
    prices = bundled()
    assert prices.price_of("gpt-5-2025-08-07") == prices.price_of("gpt-5")
    assert prices.price_of("gpt-5.1-codex-2025-11-13") == prices.price_of("gpt-5.1-codex")
    # Only a real date, and only a family the catalog lists.
    assert prices.price_of("gpt-5-2025-13-45") is None
    assert prices.price_of("gpt-5-20250807") is None
    assert prices.price_of("gpt-9-2025-08-07") is None
    # An exact entry wins over the family.
    own = parse_catalog(
        catalog(
            **{
                "gpt-5": {"input": 1, "output": 2},
                "gpt-5-2025-08-07": {"input": 3, "output": 4},
            }
        )
    )
    assert own.price_of("gpt-5-2025-08-07") == Price(3_000_000, 3_000_000, 4_000_000)


def test_cached_input_defaults_to_the_input_price() -> None:
    parsed = parse_catalog(catalog(m={"input": 2, "output": 8}))
    assert parsed.price_of("m") == Price(2_000_000, 2_000_000, 8_000_000)


def test_the_digest_is_of_the_content() -> None:
    a = parse_catalog(json.dumps(catalog(m={"input": 1.5, "output": 2})))
    b = parse_catalog(catalog(m={"output": 2.0, "input": 1.50}))
    c = parse_catalog(catalog(m={"input": 1.5, "output": 2.5}))
    assert a.digest == b.digest != c.digest
    assert parse_catalog(a.as_json()) == a


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b"[" * 100_000,
        json.dumps({**catalog(m={"input": 1, "output": 1}), "schema": 2}),
        json.dumps({**catalog(m={"input": 1, "output": 1}), "currency": "EUR"}),
        json.dumps({**catalog(m={"input": 1, "output": 1}), "as_of": "yesterday"}),
        json.dumps({**catalog(m={"input": 1, "output": 1}), "source": ""}),
        json.dumps(catalog()),
        json.dumps(catalog(m={"input": -1, "output": 1})),
        json.dumps(catalog(m={"input": 1e9, "output": 1})),
        json.dumps(catalog(m={"input": "1", "output": 1})),
        json.dumps(catalog(m={"input": True, "output": 1})),
        json.dumps(catalog(m={"input": 1})),
        json.dumps(catalog(m={"input": 1, "output": 0.0000001})),
        json.dumps(catalog(m={"input": 1, "output": 1, "extra": 1})),
        json.dumps(catalog(m=[1, 2])),
        json.dumps(catalog(**{"Bad Slug": {"input": 1, "output": 1}})),
        json.dumps(catalog(**{"x" * 101: {"input": 1, "output": 1}})),
        b"{" + b" " * MAX_CATALOG_BYTES + b"}",
        '{"schema": 1, "as_of": "2026-12-06", "source": "s", "models": {"m": '
        '{"input": NaN, "output": 1}}}',
    ],
)
def test_a_bad_catalog_is_refused(raw: bytes | str) -> None:
    with pytest.raises(PricingError):
        parse_catalog(raw)


def test_too_many_models_are_refused() -> None:
    many = {f"m{i}": {"input": 1, "output": 1} for i in range(2001)}
    with pytest.raises(PricingError, match="models"):
        parse_catalog(catalog(**many))
