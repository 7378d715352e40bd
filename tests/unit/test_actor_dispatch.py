"""One dispatch table and one policy for unknown messages, for both real actors: a message
nobody handles is counted and dropped, and if it is a request its caller hears ActorDead at
once instead of waiting for its deadline (before, the PoolSupervisor dropped it silently
and the AccountActor only logged it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from pooler.actors import messages as m
from pooler.actors.account import AccountActor, AccountState, Credentials, RefreshResult
from pooler.actors.account_tree import AccountDeps
from pooler.actors.pool import PoolSupervisor
from pooler.actors.runtime import Actor, ActorDead, Mailbox, ReplyTo, call
from pooler.routing.snapshot import AccountSnapshot
from pooler.upstream.http1 import UpstreamPool


@dataclass(frozen=True)
class Unknown:
    reply_to: ReplyTo[str]


async def load_credentials(account_id: str) -> Credentials:
    return Credentials("token", None, None)


async def refresh_credentials(account_id: str, stale_token: str) -> RefreshResult:
    raise AssertionError("no refresh here")


def account_actor(**options: Any) -> AccountActor:
    """An account actor with a token and no refresh; `options` go to AccountActor."""
    state = AccountState(AccountSnapshot(account_id="a", label="A"), chatgpt_account_id="c")
    return AccountActor(
        state,
        Mailbox(8, name="account:A"),
        UpstreamPool("http://127.0.0.1:9"),
        publish=lambda snapshot: None,
        load_credentials=load_credentials,
        refresh_credentials=refresh_credentials,
        **options,
    )


def pool_supervisor() -> PoolSupervisor:
    return PoolSupervisor(AccountDeps("http://127.0.0.1:9", load_credentials, refresh_credentials))


@pytest.mark.parametrize("make", [account_actor, pool_supervisor])
async def test_an_unknown_request_is_answered_actor_dead_at_once(
    make: Callable[[], Actor[Any]], autojump_clock: trio.testing.MockClock
) -> None:
    actor = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        started = trio.current_time()
        with pytest.raises(ActorDead):
            await call(actor.mailbox, Unknown, timeout=60)
        assert trio.current_time() == started  # not after the deadline
        assert actor.unknown_messages == 1
        # The actor goes on serving what it knows.
        if isinstance(actor, PoolSupervisor):
            assert await call(actor.mailbox, lambda r: m.PoolSnapshots("p", r), timeout=5) == []
        else:
            lease = await call(actor.mailbox, m.Confirm, timeout=5)
            assert lease is not None and lease.access_token == "token"
        nursery.cancel_scope.cancel()
