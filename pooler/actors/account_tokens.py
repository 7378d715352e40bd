"""An account's access token, kept usable: refreshed ahead of its expiry, refreshed once on a
401 (single flight, whoever asks meanwhile waits for the same refresh), reloaded when
another node stored a new one.

`AccountTokens` belongs to one AccountActor and runs inside it: its decisions are made while
the actor handles a message, its I/O runs as tasks in the actor's nursery, and their results
come back as messages (`RefreshFinished`, `CredentialsLoaded`) through the actor's mailbox.
A refresh refused for good is reported through `on_login_refused`; the actor moves its
lifecycle. The decrypted token lives only here and in the leases the actor hands out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from pooler.actors import messages as m
from pooler.actors.account_state import (
    AccountState,
    Credentials,
    LoadCredentials,
    RefreshCredentials,
    RefreshResult,
    RefreshUnavailable,
    credentials_from_token,
)
from pooler.actors.runtime import Mailbox, ReplyTo
from pooler.routing.lifecycle import Lifecycle

log = logging.getLogger("pooler.actors.account")

REFRESH_AHEAD_FRACTION = 0.8
REFRESH_RETRY_FIRST_S = 15.0
REFRESH_RETRY_MAX_S = 300.0
REFRESH_RETRY_MIN_S = 0.1  # the shortest pause, when the token in use is about to expire
IO_DEADLINE_S = 30.0


def refresh_ahead_delay(creds: Credentials, now: float) -> float | None:
    """Seconds until the refresh due at 80 % of the token's life; None: it never expires."""
    if creds.expires_at is None:
        return None
    issued = creds.issued_at if creds.issued_at is not None else now
    due = issued + REFRESH_AHEAD_FRACTION * max(0.0, creds.expires_at - issued)
    return max(0.0, due - now)


def refresh_retry_pause(failures: int, creds: Credentials | None, now: float) -> float:
    """The pause after ``failures`` transient refresh failures in a row: doubling, but short
    enough to retry while the token in use still lives (short-lived tokens)."""
    pause: float = min(REFRESH_RETRY_MAX_S, REFRESH_RETRY_FIRST_S * 2.0 ** (failures - 1))
    left = creds.expires_at - now if creds and creds.expires_at else 0.0
    if left > 0:
        pause = min(pause, max(REFRESH_RETRY_MIN_S, left / 2))
    return pause


class AccountTokens:
    def __init__(
        self,
        state: AccountState,
        mailbox: Mailbox[Any],
        load_credentials: LoadCredentials,
        refresh_credentials: RefreshCredentials,
        on_login_refused: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.state = state
        self.credentials: Credentials | None = None
        self._mailbox = mailbox
        self._load_credentials = load_credentials
        self._refresh_credentials = refresh_credentials
        self._on_login_refused = on_login_refused
        self._clock = clock
        self._refreshing = False
        self._loading = False
        self._waiters: list[ReplyTo[str]] = []
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def _account(self) -> tuple[str, str]:
        return self.state.snapshot.account_id, self.state.snapshot.label

    async def load(self) -> None:
        """Read the stored token (an incarnation's setup); an error fails the setup."""
        self.credentials = await self._load_credentials(self._account[0])
        self._refreshing = self._loading = False
        self._waiters = []

    def start(self, nursery: trio.Nursery) -> None:
        """Run refreshes and reloads in ``nursery`` (the incarnation's) from now on."""
        self._nursery = nursery
        self._schedule_refresh_ahead()

    def stop(self) -> None:
        """The incarnation ends: whoever waits for a refresh is told it will not come."""
        self._nursery = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.fail(RefreshUnavailable("the account actor stopped"))

    # --- decisions (called while the actor handles a message) ----------------------------

    def refresh_now(self, message: m.RefreshNow) -> None:
        """A 401 on ``message.stale_token``: answer a newer token, or refresh (once)."""
        creds = self.credentials
        if self.state.snapshot.lifecycle == Lifecycle.REAUTH_REQUIRED:
            message.reply_to.fail(RefreshUnavailable("account needs a new login"))
            return
        if creds is not None and creds.access_token != message.stale_token:
            message.reply_to.send(creds.access_token)
            return
        self._waiters.append(message.reply_to)
        self.start_refresh(message.stale_token)

    def refresh_finished(self, message: m.RefreshFinished) -> None:
        self._refreshing = False
        waiters, self._waiters = self._waiters, []
        if message.access_token is not None:
            self.state.refresh_failures = 0
            self.credentials = credentials_from_token(message.access_token)
            for waiter in waiters:
                waiter.send(message.access_token)
            self._schedule_refresh_ahead()
            return
        if message.reauth_reason is not None:
            log.warning(
                "account %s needs a new login (%s)", self._account[1], message.reauth_reason
            )
            self._on_login_refused()
        for waiter in waiters:
            waiter.fail(RefreshUnavailable(message.reauth_reason or message.error or "refresh"))
        if message.reauth_reason is None:
            # Transient: the account stays routable on its still-valid token; try again with
            # a growing pause (the OAuth call itself already retried a few times).
            failures = self.state.refresh_failures = self.state.refresh_failures + 1
            pause = refresh_retry_pause(failures, self.credentials, self._clock())
            self._schedule_refresh_ahead(retry_in=pause)

    def reload(self) -> None:
        """The stored token changed elsewhere: read it again (single flight)."""
        if self._loading or self._nursery is None:
            return
        self._loading = True
        self._nursery.start_soon(self._run_reload)

    def loaded(self, access_token: str | None) -> None:
        self._loading = False
        creds = self.credentials
        if access_token is None or (creds is not None and creds.access_token == access_token):
            return
        self.credentials = credentials_from_token(access_token)
        self._schedule_refresh_ahead()

    def start_refresh(self, stale_token: str) -> None:
        if self._refreshing or self._nursery is None:
            return
        self._refreshing = True
        self.state.refresh_generation += 1
        self._nursery.start_soon(self._run_refresh, stale_token, self.state.refresh_generation)

    def _schedule_refresh_ahead(self, retry_in: float | None = None) -> None:
        if self._nursery is None:
            return
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        delay = retry_in
        if delay is None and self.credentials is not None:
            delay = refresh_ahead_delay(self.credentials, self._clock())
        if delay is None:
            return
        scope = trio.CancelScope()
        self._timer_scope = scope
        self._nursery.start_soon(self._refresh_timer, scope, delay)

    # --- I/O (tasks in the actor's nursery; results come back as messages) ---------------

    async def _run_refresh(self, stale_token: str, generation: int) -> None:
        account_id, label = self._account
        result = RefreshResult(None, error="refresh_timeout")
        with trio.move_on_after(IO_DEADLINE_S):
            try:
                result = await self._refresh_credentials(account_id, stale_token)
            except Exception as exc:  # a refresh failure must not kill the actor
                log.warning("account %s: refresh failed: %s", label, type(exc).__name__)
                result = RefreshResult(None, error=type(exc).__name__)
        await self._mailbox.send(
            m.RefreshFinished(result.access_token, generation, result.reauth_reason, result.error)
        )

    async def _run_reload(self) -> None:
        account_id, label = self._account
        token: str | None = None
        with trio.move_on_after(IO_DEADLINE_S):
            try:
                token = (await self._load_credentials(account_id)).access_token
            except Exception as exc:
                log.warning("account %s: reload failed: %s", label, type(exc).__name__)
        await self._mailbox.send(m.CredentialsLoaded(token))

    async def _refresh_timer(self, scope: trio.CancelScope, delay: float) -> None:
        with scope:
            await trio.sleep(delay)
            if self.credentials is not None:
                self.start_refresh(self.credentials.access_token)
