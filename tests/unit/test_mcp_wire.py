"""`/mcp`'s pure checks: host names, origins, Accept, the `mcp` settings, the gates."""

from __future__ import annotations

import uuid

import pytest

from pooler.instance_settings import SettingsError, flat_settings, parse_settings
from pooler.mcp.gates import (
    NO_TOKEN,
    NOT_MCP_TOKEN,
    OPERATOR_DISABLED,
    OPERATOR_OFF,
    UNKNOWN_TOKEN,
    bearer_token,
    caller_of,
)
from pooler.mcp.wire import accepts_json_and_sse, host_allowed, same_origin
from pooler.store.mcp_tokens import TokenHolder

DEFAULT = ("localhost", "127.0.0.1", "[::1]")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:4000", True),
        ("127.0.0.1", True),
        ("[::1]:4000", True),
        ("localhost.evil.example", False),
        ("evil.example:4000", False),
        ("", False),
    ],
)
def test_host_names(host: str, allowed: bool) -> None:
    assert host_allowed(host, DEFAULT) is allowed


def test_a_host_with_a_port_and_any_host() -> None:
    assert host_allowed("pooler.example:8443", ("pooler.example:8443",))
    assert not host_allowed("pooler.example:8444", ("pooler.example:8443",))
    assert host_allowed("anything", ("*",))


def test_origins_and_accept() -> None:
    assert same_origin("http://localhost:4000", "localhost:4000")
    assert not same_origin("http://localhost:4001", "localhost:4000")
    assert not same_origin("file://localhost:4000", "localhost:4000")
    assert not same_origin("null", "localhost:4000")
    assert accepts_json_and_sse(b"application/json, text/event-stream")
    assert accepts_json_and_sse(b"*/*")
    assert not accepts_json_and_sse(b"application/json")


def test_mcp_settings() -> None:
    settings = parse_settings({"mcp": {"enabled": True}}, strict=True)
    assert settings.mcp.enabled and settings.mcp.allowed_hosts == DEFAULT
    assert flat_settings(settings)["mcp.allowed_hosts"] == list(DEFAULT)
    for bad in ({"enabled": "yes"}, {"allowed_hosts": []}, {"allowed_hosts": ["a b"]}, {"x": 1}):
        with pytest.raises(SettingsError, match="mcp"):
            parse_settings({"mcp": bad}, strict=True)


def holder(**changes: object) -> TokenHolder:
    base = dict(
        operator_id=uuid.uuid4(),
        email="a@example.com",
        role="admin",
        status="active",
        mcp_enabled=True,
        must_change_password=False,
        pool_ids=frozenset({uuid.uuid4()}),
    )
    return TokenHolder(**{**base, **changes})  # type: ignore[arg-type]


def test_gates() -> None:
    assert bearer_token(None) is NO_TOKEN
    assert bearer_token(b"Basic abc") is NO_TOKEN
    assert bearer_token(b"Bearer sk-cxp-abc") is NOT_MCP_TOKEN
    assert bearer_token(b"Bearer cxp-mcp-abc") == "cxp-mcp-abc"
    assert caller_of(None) is UNKNOWN_TOKEN
    assert caller_of(holder(status="disabled")) is OPERATOR_DISABLED
    assert caller_of(holder(mcp_enabled=False)) is OPERATOR_OFF
    admin = caller_of(holder())
    assert not isinstance(admin, type(NO_TOKEN)) and admin.pool_ids
    owner = caller_of(holder(role="owner"))
    assert not isinstance(owner, type(NO_TOKEN)) and owner.pool_ids is None
