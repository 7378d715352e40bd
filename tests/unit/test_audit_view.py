"""The audit log's view of details: masking at any depth, the diff rows, the target's
name, and filter parsing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from pooler.admin_ui.audit_view import MASK, DiffRow, detail_rows, diff_rows, masked, target_label
from pooler.store.audit_query import Cursor, parse_filter
from pooler.store.common import InvalidInputError, changed_values


def test_secret_looking_keys_and_values_are_masked_at_any_depth() -> None:
    raw = "sk-cxp-" + "x" * 43
    details = {
        "Password": "p",
        "list": [{"api_key": "k"}, f"see {raw}"],
        "id_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "note": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "prefix": "sk-cxp-abcde",  # a display prefix is not a secret
        "sessions_ended": 2,
    }
    assert masked(details) == {
        "Password": MASK,
        "list": [{"api_key": MASK}, MASK],
        "id_token": MASK,
        "note": MASK,
        "prefix": "sk-cxp-abcde",
        "sessions_ended": 2,
    }


def test_diff_rows_show_each_changed_value_readably() -> None:
    details = {
        "name": "team",
        **changed_values(
            {"v1_enabled": True, "allowed_models": None, "retry_budget": 2, "same": 1},
            {"v1_enabled": False, "allowed_models": ["a", "b"], "retry_budget": 3, "same": 1},
        ),
    }
    assert diff_rows(details) == [
        DiffRow("v1_enabled", "on", "off"),
        DiffRow("allowed_models", "—", "a, b"),
        DiffRow("retry_budget", "2", "3"),
    ]
    assert detail_rows(details) == [("name", "team")]
    assert diff_rows({"before": {"client_secret": "a"}, "after": {"client_secret": "b"}}) == [
        DiffRow("client_secret", MASK, MASK)
    ]
    assert detail_rows({"before": "not a mapping"}) == [("before", "not a mapping")]
    assert target_label({"pool": "p", "label": "acct"}) == "acct"
    assert target_label({"name": ""}) is None


def test_filter_parsing() -> None:
    wanted, cursor = parse_filter({"action": "api_key.", "since": "2026-01-02T03:04", "x": "y"})
    assert wanted.action_prefix == "api_key." and cursor is None
    assert wanted.since == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert wanted.given == {"action": "api_key.", "since": "2026-01-02T03:04"}
    assert parse_filter({"action": "api_key.update"})[0].action_prefix is None
    assert parse_filter({"pool": "instance"})[0].instance_wide
    at = Cursor(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid4())
    assert parse_filter({"before": at.encode()})[1] == at
    for bad in ({"outcome": "x"}, {"pool": "x" * 100}, {"actor": "\x00"}, {"until": "2026-13-01"}):
        with pytest.raises(InvalidInputError):
            parse_filter(bad)
