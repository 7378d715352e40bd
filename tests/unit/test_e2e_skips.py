"""An end-to-end test whose client is missing says why it was skipped and what enables it."""

from __future__ import annotations

import pytest
from harness import require_tool


def test_a_missing_client_skips_naming_it_and_npm_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOLER_REQUIRE_E2E", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_tool("no-such-client-xyz", "npm install (package.json pins it)")
    reason = str(skipped.value)
    assert "no-such-client-xyz" in reason and "npm install" in reason
    assert "enables this test" in reason


def test_with_pooler_require_e2e_a_missing_client_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLER_REQUIRE_E2E", "1")
    with pytest.raises(pytest.fail.Exception, match="no-such-client-xyz"):
        require_tool("no-such-client-xyz", "npm install")
