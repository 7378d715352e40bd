"""The Pool's merged model catalog: union by slug, first seen wins, weak ETag matching."""

from __future__ import annotations

import json

from pooler.web.catalog import AccountCatalog, etag_matches, merge, parse_models


def test_merge_dedupes_by_slug_and_keeps_order_and_fields() -> None:
    a = AccountCatalog(({"slug": "x", "n": 1}, {"slug": "y"}), '"a"')
    b = AccountCatalog(({"slug": "y", "n": 2}, {"slug": "z"}), None)
    merged = merge([a, b])
    assert json.loads(merged.body)["models"] == [
        {"slug": "x", "n": 1},
        {"slug": "y"},
        {"slug": "z"},
    ]
    assert merged.etag.startswith('W/"') and merge([a, b]).etag == merged.etag
    assert merge([b, a]).etag != merged.etag


def test_etag_matching_is_weak() -> None:
    tag = 'W/"abc"'
    assert etag_matches(b'W/"abc"', tag)
    assert etag_matches(b'"abc"', tag)
    assert etag_matches(b'"zzz", W/"abc"', tag)
    assert etag_matches(b"*", tag)
    assert not etag_matches(b'"abd"', tag)
    assert not etag_matches(None, tag)


def test_parse_models_takes_only_objects_with_a_slug() -> None:
    assert parse_models(b'{"models":[{"slug":"x"},{"no":1},3]}') == ({"slug": "x"},)
    assert parse_models(b"not json") is None
    assert parse_models(b'{"models":{}}') is None
