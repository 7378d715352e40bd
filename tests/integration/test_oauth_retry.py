"""Token refresh retries (protocol §6.3): transient failures are retried with bounded,
jittered exponential backoff; permanent ones never are.

The emulator's `/oauth/token` can refuse a refresh token (`refresh_token_reused` fault, an
unknown token) but has no fault that makes it answer 5xx or drop the connection, so the
transient cases run against `httpx.MockTransport` and a refused local port; the permanent
cases also run against the real emulator."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
import trio

from pooler.emulator import EmulatorState, serve_emulator
from pooler.upstream.oauth import (
    DEFAULT_RETRY,
    RefreshFailed,
    RetryPolicy,
    TokenSet,
    refresh_tokens,
)

AUTH = "https://auth.test"
OK_BODY = {"access_token": "at-new", "refresh_token": "rt-new", "id_token": "id-new"}


class Sleeps(list[float]):
    """A `sleep` that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(
    sleeps: Sleeps,
    *,
    attempts: int = 3,
    initial_wait: float = 0.01,
    max_wait: float = 0.05,
    max_total: float = 8.0,
) -> RetryPolicy:
    """Tiny waits (recorded, not slept) with 0.01 s of jitter."""
    return RetryPolicy(attempts, initial_wait, max_wait, 0.01, max_total, sleeps)


def scripted(
    *answers: httpx.Response | type[httpx.TransportError],
) -> tuple[httpx.Client, list[str]]:
    """A client whose successive requests get `answers` (an exception class is raised);
    also returns the refresh tokens it was sent."""
    queue: Iterator[httpx.Response | type[httpx.TransportError]] = iter(answers)
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["refresh_token"])
        answer = next(queue)
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("scripted", request=request)

    return httpx.Client(transport=httpx.MockTransport(handler)), sent


def failure(status: int, code: str | None = None) -> httpx.Response:
    body = {"error": {"message": "no", "type": "invalid_request_error", "code": code}}
    return httpx.Response(status, json=body if code else {"detail": "no"})


@pytest.mark.parametrize(
    "transient",
    [
        failure(500),
        failure(502),
        failure(503, "server_busy"),
        failure(429, "rate_limit_exceeded"),
        httpx.ConnectError,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
    ],
)
def test_transient_failure_then_success(
    transient: httpx.Response | type[httpx.TransportError],
) -> None:
    sleeps = Sleeps()
    client, sent = scripted(transient, httpx.Response(200, json=OK_BODY))
    with client:
        tokens = refresh_tokens(client, AUTH, "rt-old", retry=policy(sleeps))
    assert tokens == TokenSet("at-new", "rt-new", "id-new")
    assert sent == ["rt-old", "rt-old"]
    assert len(sleeps) == 1


def test_retries_are_bounded_and_back_off_with_jitter() -> None:
    sleeps = Sleeps()
    client, sent = scripted(*[failure(503)] * 10)
    with client, pytest.raises(RefreshFailed) as caught:
        refresh_tokens(client, AUTH, "rt", retry=policy(sleeps, initial_wait=1.0, max_wait=3.0))
    assert (caught.value.code, caught.value.permanent) == ("http_503", False)
    assert len(sent) == 3  # the default three attempts
    first, second = sleeps
    assert 1.0 <= first <= 1.01 and 2.0 <= second <= 2.01  # doubling, plus jitter


def test_waits_are_capped_and_total_time_is_bounded() -> None:
    sleeps = Sleeps()
    client, sent = scripted(*[failure(500)] * 10)
    capped = policy(sleeps, attempts=6, initial_wait=1.0, max_wait=1.5)
    with client, pytest.raises(RefreshFailed):
        refresh_tokens(client, AUTH, "rt", retry=capped)
    assert len(sent) == 6 and max(sleeps) <= 1.5 + 0.01  # the cap, plus jitter
    # No attempt starts when its wait would end past max_total.
    sleeps.clear()
    client, sent = scripted(*[failure(500)] * 10)
    bounded = policy(sleeps, attempts=6, initial_wait=5.0, max_wait=5.0, max_total=1.0)
    with client, pytest.raises(RefreshFailed):
        refresh_tokens(client, AUTH, "rt", retry=bounded)
    assert len(sent) == 1 and sleeps == []


def test_default_policy_stays_under_ten_seconds() -> None:
    sleeps = Sleeps()
    client, sent = scripted(*[httpx.ConnectError] * 10)
    defaults = RetryPolicy(
        attempts=DEFAULT_RETRY.attempts,
        initial_wait=DEFAULT_RETRY.initial_wait,
        max_wait=DEFAULT_RETRY.max_wait,
        jitter=DEFAULT_RETRY.jitter,
        max_total=DEFAULT_RETRY.max_total,
        sleep=sleeps,
    )
    with client, pytest.raises(RefreshFailed) as caught:
        refresh_tokens(client, AUTH, "rt", retry=defaults)
    assert caught.value.code == "ConnectError" and not caught.value.permanent
    assert len(sent) == DEFAULT_RETRY.attempts
    assert sum(sleeps) < 10 and DEFAULT_RETRY.max_total < 10


@pytest.mark.parametrize(
    ("answer", "code", "permanent"),
    [
        (failure(401, "refresh_token_expired"), "refresh_token_expired", True),
        (failure(400, "refresh_token_reused"), "refresh_token_reused", True),
        (failure(500, "refresh_token_invalidated"), "refresh_token_invalidated", True),
        (failure(401), "http_401", True),
        (failure(400, "invalid_request"), "invalid_request", False),
        (failure(403), "http_403", False),
        (httpx.Response(200, json={"token_type": "bearer"}), "invalid_token_response", False),
    ],
)
def test_refusals_are_never_retried(answer: httpx.Response, code: str, permanent: bool) -> None:
    sleeps = Sleeps()
    client, sent = scripted(answer, httpx.Response(200, json=OK_BODY))
    with client, pytest.raises(RefreshFailed) as caught:
        refresh_tokens(client, AUTH, "rt", retry=policy(sleeps))
    assert (caught.value.code, caught.value.permanent) == (code, permanent)
    assert not caught.value.retryable
    assert len(sent) == 1 and sleeps == []


def test_a_refused_port_is_retried() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    with httpx.Client(timeout=5) as client, pytest.raises(RefreshFailed) as caught:
        refresh_tokens(client, f"http://127.0.0.1:{port}", "rt", retry=policy(sleeps))
    assert caught.value.code == "ConnectError" and not caught.value.permanent
    assert len(sleeps) == 2


# -- against the emulator's /oauth/token -----------------------------------------------------


def refresher(base: str, refresh_token: str) -> tuple[Callable[[], TokenSet], Sleeps]:
    """A blocking refresh to run in a thread, and the waits it records."""
    sleeps = Sleeps()

    def call() -> TokenSet:
        with httpx.Client(timeout=10) as client:
            return refresh_tokens(client, base, refresh_token, retry=policy(sleeps))

    return call, sleeps


async def test_emulator_rotation_and_permanent_refusals(nursery: trio.Nursery) -> None:
    state = EmulatorState(accounts=2)
    port = await nursery.start(serve_emulator, state)
    base = f"http://127.0.0.1:{port}"
    account, other = state.accounts
    old = account.refresh_token

    with trio.fail_after(20):
        call, sleeps = refresher(base, old)
        tokens = await trio.to_thread.run_sync(call)
        assert tokens.refresh_token not in (None, old)
        assert tokens.access_token == account.access_token  # the emulator's current token

        # The spent token is refused as reused: permanent, asked once.
        call, sleeps = refresher(base, old)
        with pytest.raises(RefreshFailed) as caught:
            await trio.to_thread.run_sync(call)
        assert (caught.value.code, caught.value.permanent) == ("refresh_token_reused", True)
        assert sleeps == []

        # An armed fault refuses a fresh token the same way.
        state.arm_fault(other.account_id, "refresh_token_reused")
        call, sleeps = refresher(base, other.refresh_token)
        with pytest.raises(RefreshFailed) as caught:
            await trio.to_thread.run_sync(call)
        assert (caught.value.code, caught.value.permanent) == ("refresh_token_reused", True)

        # A token the server never issued.
        call, sleeps = refresher(base, "rt-forged")
        with pytest.raises(RefreshFailed) as caught:
            await trio.to_thread.run_sync(call)
        assert (caught.value.code, caught.value.permanent) == ("refresh_token_invalidated", True)
        assert sleeps == []

    calls = [r for r in state.requests if r["path"] == "/oauth/token"]
    assert [r["status"] for r in calls] == [200, 401, 401, 401]  # no request was repeated
