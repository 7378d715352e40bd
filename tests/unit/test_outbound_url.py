"""pooler.outbound_url: the one check of a URL the gateway calls (price catalog, webhooks)."""

from __future__ import annotations

import pytest

from pooler.outbound_url import outbound_url_refusal


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://hooks.example.com/x?y=1", None),
        ("http://127.0.0.1:8080/catalog.json", None),
        ("http://host/a b", "unprintable"),
        ("http://host/\x00", "unprintable"),
        ("http://host/\x7f", "unprintable"),
        ("http://host/\ud800", "unprintable"),
        ("https://host:99999/", "invalid"),
        ("http://[::1/", "invalid"),
        ("ftp://host/x", "not_http"),
        ("javascript:alert(1)", "not_http"),
        ("host/x", "not_http"),
        ("https://user:secret@host/x", "credentials"),
        ("https://user@host/x", "credentials"),
    ],
)
def test_each_url_is_accepted_or_refused_for_its_reason(url: str, refusal: str | None) -> None:
    assert outbound_url_refusal(url) == refusal
