"""The console's sign-ins under way: bound to their session, bounded, forgotten at expiry."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from pooler.admin_ui.sign_in_flows import EXPIRED_SHOWN_S, SignInFlows
from pooler.upstream.oauth_login import BrowserSignIn, DeviceSignIn

NOW = 1_800_000_000.0
POOL = uuid4()
BROWSER = BrowserSignIn("http://auth/oauth/authorize?x", "state", "verifier")


def test_a_flow_belongs_to_its_session() -> None:
    flows = SignInFlows()
    mine, other = uuid4(), uuid4()
    flow = flows.start(mine, POOL, "demo", None, browser=BROWSER, now=NOW)
    assert flows.get(flow.id, mine, NOW) is flow
    assert flows.get(flow.id, other, NOW) is None
    assert flows.get("nope", mine, NOW) is None


def test_flows_expire_and_are_bounded() -> None:
    flows = SignInFlows(ttl_s=60, max_flows=5, per_session=2)
    session = uuid4()
    first = flows.start(session, POOL, "demo", None, browser=BROWSER, now=NOW)
    second = flows.start(session, POOL, "demo", None, browser=BROWSER, now=NOW)
    third = flows.start(session, POOL, "demo", None, browser=BROWSER, now=NOW)
    assert flows.get(first.id, session, NOW) is None  # the oldest of the session went
    assert flows.get(second.id, session, NOW) is second
    for _ in range(6):
        flows.start(uuid4(), POOL, "demo", None, browser=BROWSER, now=NOW)
    assert len(flows) == 5
    assert flows.get(third.id, session, NOW + 61) is None


def test_a_device_flow_lives_until_its_code_expires_then_says_so() -> None:
    flows = SignInFlows(ttl_s=900)
    device = DeviceSignIn(
        "ABCD-1234", "http://auth/codex/device", 5.0, datetime.fromtimestamp(NOW + 30, UTC), "id"
    )
    session = uuid4()
    flow = flows.start(session, POOL, "demo", None, device=device, now=NOW)
    assert flows.get(flow.id, session, NOW + 30 + EXPIRED_SHOWN_S - 1) is flow
    assert flows.get(flow.id, session, NOW + 30 + EXPIRED_SHOWN_S + 1) is None
