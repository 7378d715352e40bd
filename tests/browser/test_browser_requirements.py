"""Without Chromium the browser tests say why they are skipped and what enables them; in CI
(POOLER_REQUIRE_E2E=1) they fail instead."""

from __future__ import annotations

import pytest
from browser_support import find_chromium, slug


def test_without_chromium_a_browser_test_skips_naming_apt_get(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POOLER_REQUIRE_E2E", raising=False)
    monkeypatch.delenv("POOLER_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        find_chromium("/nonexistent/chromium")
    reason = str(skipped.value)
    assert "/nonexistent/chromium" in reason and "apt-get install chromium" in reason


def test_with_pooler_require_e2e_a_missing_chromium_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLER_REQUIRE_E2E", "1")
    monkeypatch.setenv("POOLER_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not at /nonexistent/chromium"):
        find_chromium()


def test_screenshots_are_named_after_the_page() -> None:
    assert slug("http://127.0.0.1:4000/admin/settings/totp?x=1") == "admin-settings-totp"
    assert slug("http://127.0.0.1:4000/") == "root"
