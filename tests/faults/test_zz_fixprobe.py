import pytest
import trio
from pooler.db import Database
import test_gateway_faults as g
_orig = Database.listen

async def _listen(self, channel, on_notify, *, on_reconnect=None, task_status=trio.TASK_STATUS_IGNORED):
    return await _orig(self, channel, on_notify, on_reconnect=lambda: on_notify(""), task_status=task_status)

@pytest.fixture(autouse=True)
def patch(monkeypatch):
    monkeypatch.setattr(Database, "listen", _listen)

test_fixed = g.test_config_change_while_the_listener_reconnects_is_not_lost.__wrapped__ if hasattr(g.test_config_change_while_the_listener_reconnects_is_not_lost, "__wrapped__") else g.test_config_change_while_the_listener_reconnects_is_not_lost
