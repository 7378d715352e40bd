"""The browser tests need Debian's Chromium and the playwright package: without them they
are skipped with the reason, and with POOLER_REQUIRE_E2E=1 (CI) they fail."""

from __future__ import annotations

import pytest
from browser_support import find_chromium


@pytest.fixture
def chromium() -> str:
    """A sync fixture, so a skip keeps its reason."""
    return find_chromium()
