"""The price catalog and what a request would have cost at API list prices (pure).

A catalog lists OpenAI's list prices per 1M tokens (input, cached input, output) per model
slug, with the date they were taken and their source. The bundled one ships as
`pooler/data/pricing.json`; an instance may fetch a newer one (pooler.pricing_refresh).
Both pass `parse_catalog`, which refuses anything out of bounds rather than price with it.

Prices are held as whole micro-dollars per 1M tokens, which is pico-dollars per token, so
a request's cost is exact integer arithmetic (a catalog price with more than six decimals
is refused): the rollups' sums are then exactly the sums of the rows.

How a request is priced (`Catalog.cost`):
- `input_tokens` counts the cached ones too: the uncached part pays `input`, the cached
  part `cached_input`;
- `output_tokens` counts the reasoning tokens too: all of it pays `output` (reasoning is
  never added again);
- a model the catalog does not list costs None, never a guess. The one rule beyond an exact
  match: a dated snapshot slug (`gpt-5-2025-08-07`) is priced as its family (`gpt-5`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any, Final

SCHEMA: Final = 1
MAX_CATALOG_BYTES: Final = 1024 * 1024
MAX_MODELS: Final = 2000
# Dollars per 1M tokens above which a price is taken for an error (the dearest list price
# today is a few hundred dollars).
MAX_PRICE_PER_1M: Final = Decimal(5000)
MAX_TEXT: Final = 2000
_MICROS: Final = Decimal(1_000_000)
_PICO: Final = -12
_SLUG: Final = re.compile(r"[a-z0-9][a-z0-9._:-]{0,99}")
# A dated snapshot of a model: its family slug, a dash, then YYYY-MM-DD.
_DATED: Final = re.compile(r"(?P<family>.+)-(?P<date>\d{4}-\d{2}-\d{2})")


class PricingError(ValueError):
    """A catalog that cannot be used; the message says why (never the body)."""


@dataclass(frozen=True, slots=True)
class Price:
    """A model's list prices in micro-dollars per 1M tokens (= pico-dollars per token)."""

    input: int
    cached_input: int
    output: int


@dataclass(frozen=True, slots=True)
class Catalog:
    models: Mapping[str, Price]
    as_of: str  # the day the prices were taken (YYYY-MM-DD)
    source: str  # where they were taken from
    digest: str  # sha256 of the canonical form: equal catalogs, equal digests

    def price_of(self, model: str | None) -> Price | None:
        """The price of `model`: its exact slug, or its family's for a dated snapshot."""
        if not model:
            return None
        found = self.models.get(model)
        if found is None:
            dated = _DATED.fullmatch(model)
            if dated is not None and _is_date(dated["date"]):
                found = self.models.get(dated["family"])
        return found

    def cost(
        self,
        model: str | None,
        input_tokens: int | None,
        cached_input_tokens: int | None,
        output_tokens: int | None,
    ) -> Decimal | None:
        """What the tokens cost in US dollars (exact), or None: no usage, or no price."""
        if input_tokens is None and output_tokens is None:
            return None
        price = self.price_of(model)
        if price is None:
            return None
        return cost_usd(price, input_tokens or 0, cached_input_tokens or 0, output_tokens or 0)

    def as_json(self) -> dict[str, Any]:
        """The canonical form (what is stored and hashed); `parse_catalog` reads it back."""
        return {
            "schema": SCHEMA,
            "currency": "USD",
            "as_of": self.as_of,
            "source": self.source,
            "models": {
                slug: {
                    "input": _dollars(p.input),
                    "cached_input": _dollars(p.cached_input),
                    "output": _dollars(p.output),
                }
                for slug, p in sorted(self.models.items())
            },
        }


def cost_usd(
    price: Price, input_tokens: int, cached_input_tokens: int, output_tokens: int
) -> Decimal:
    """Uncached input at `input`, cached input at `cached_input` (never more than the input,
    never negative), output (reasoning included) at `output`."""
    input_tokens = max(input_tokens, 0)
    cached = min(max(cached_input_tokens, 0), input_tokens)
    pico = (
        (input_tokens - cached) * price.input
        + cached * price.cached_input
        + max(output_tokens, 0) * price.output
    )
    return Decimal(pico).scaleb(_PICO)


def parse_catalog(raw: bytes | str | Mapping[str, Any]) -> Catalog:
    """A catalog from its JSON (bytes, text or parsed), checked strictly: schema 1, USD, a
    date, a source, 1 to MAX_MODELS models with slugs of `[a-z0-9._:-]`, each with
    `input` and `output` prices and an optional `cached_input` (default: `input`), every
    price a number from 0 to MAX_PRICE_PER_1M with at most six decimals."""
    if isinstance(raw, bytes | str):
        if len(raw) > MAX_CATALOG_BYTES:
            raise PricingError(f"the catalog is larger than {MAX_CATALOG_BYTES} bytes")
        try:
            raw = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        except (ValueError, RecursionError):
            raise PricingError("the catalog is not JSON") from None
    if not isinstance(raw, Mapping):
        raise PricingError("the catalog must be a JSON object")
    if raw.get("schema") != SCHEMA:
        raise PricingError(f"the catalog's schema must be {SCHEMA}")
    if raw.get("currency", "USD") != "USD":
        raise PricingError("the catalog's currency must be USD")
    as_of = raw.get("as_of")
    if not isinstance(as_of, str) or not _is_date(as_of):
        raise PricingError("the catalog's as_of must be a date (YYYY-MM-DD)")
    source = raw.get("source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_TEXT:
        raise PricingError("the catalog's source must be a short text")
    models = raw.get("models")
    if not isinstance(models, Mapping) or not 0 < len(models) <= MAX_MODELS:
        raise PricingError(f"the catalog must list 1 to {MAX_MODELS} models")
    prices = {_slug(slug): _price(slug, entry) for slug, entry in models.items()}
    catalog = Catalog(prices, as_of, source, "")
    canonical = json.dumps(catalog.as_json(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return Catalog(prices, as_of, source, digest)


@cache
def bundled() -> Catalog:
    """The catalog shipped in the package (read and checked once)."""
    text = resources.files("pooler").joinpath("data/pricing.json").read_bytes()
    return parse_catalog(text)


def _slug(slug: object) -> str:
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise PricingError("a model slug in the catalog is not of [a-z0-9._:-], 1-100 long")
    return slug


def _price(slug: str, entry: object) -> Price:
    if not isinstance(entry, Mapping):
        raise PricingError(f"the price of {slug} must be an object")
    unknown = set(entry) - {"input", "cached_input", "output"}
    if unknown:
        raise PricingError(f"the price of {slug} has unknown fields")
    input_price = _micros(slug, "input", entry.get("input"))
    cached = entry.get("cached_input")
    return Price(
        input_price,
        input_price if cached is None else _micros(slug, "cached_input", cached),
        _micros(slug, "output", entry.get("output")),
    )


def _micros(slug: str, field: str, value: object) -> int:
    """Dollars per 1M tokens as whole micro-dollars (refused past six decimals)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        raise PricingError(f"{slug}.{field} must be a number")
    try:
        dollars = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not dollars.is_finite() or not 0 <= dollars <= MAX_PRICE_PER_1M:
            raise PricingError(f"{slug}.{field} must be between 0 and {MAX_PRICE_PER_1M}")
        micros = dollars * _MICROS
        if micros != micros.to_integral_value():
            raise PricingError(f"{slug}.{field} has more than six decimals")
    except InvalidOperation:
        raise PricingError(f"{slug}.{field} must be a number") from None
    return int(micros)


def _dollars(micros: int) -> float:
    return float(Decimal(micros) / _MICROS)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10
