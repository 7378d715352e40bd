"""What the Quart-trio app does per request (pooler.web.quart_pipeline, quart_http): the
framework's per-request work counted under cProfile (no timings), and Quart's behaviour
kept where the hot path was cut: signals reach a receiver, before/after/teardown
functions of nested blueprints run in Quart's order, blueprint names as Quart derives
them, request headers as werkzeug builds them, and the dependency shape checks pass."""

from __future__ import annotations

import cProfile
import functools
import pstats
from typing import Any

import orjson
import pytest
from quart import Blueprint, g, session
from quart.sessions import NullSession
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.wrappers import Response
from quart.wrappers.base import BaseRequestWebsocket
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadHost
from werkzeug.sansio.request import Request as SansIORequest

from ops.bench import app_overhead
from pooler.dependency_shape import missing_texts
from pooler.web.app import GatewayApp, install_error_handlers
from pooler.web.quart_http import (
    HEADERS_SHAPE,
    GatewayHTTPConnection,
    GatewayRequest,
    current_request,
    json_response,
)
from pooler.web.quart_pipeline import QUART_SHAPE

REQUESTS = 200


class Exchange:
    """One ASGI request's receive and send, the answer kept."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    scope = app_overhead.scope()
    scope.update(method=method, path=path, raw_path=path.encode(), headers=headers)
    return scope


async def profiled(app: GatewayApp, requests: int) -> pstats.Stats:
    for _ in range(20):  # warm-up: caches filled, as in a running gateway
        await app(app_overhead.scope(), Exchange(app_overhead.BODY).receive, Exchange().send)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        exchange = Exchange(app_overhead.BODY)
        await app(app_overhead.scope(), exchange.receive, exchange.send)
        assert exchange.status == 200
    profile.disable()
    return pstats.Stats(profile)


def calls_to(stats: pstats.Stats, module_part: str, function: str) -> int:
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(
        entry[1]
        for (filename, _, name), entry in table.items()
        if module_part in filename and name == function
    )


async def test_a_hot_request_does_less_framework_work() -> None:
    """The bench's request (a Codex `/responses` POST with a CLI's headers) through the
    gateway's app: no signal sent (nobody listens), headers not re-validated one by one,
    the blueprint chain not re-derived, the URL adapter bound in one step, the null session
    made at once, coroutine functions taken as they are, the
    content length read from the headers in one pass, and fewer Python calls in all (347
    before)."""
    stats = await profiled(app_overhead.quart_app(), REQUESTS)
    assert calls_to(stats, "blinker", "send_async") == 0
    assert calls_to(stats, "werkzeug/datastructures/headers", "add") == 0
    assert calls_to(stats, "werkzeug/datastructures/headers", "_str_header_value") == 0
    assert calls_to(stats, "quart/helpers", "_split_blueprint_path") == 0
    assert calls_to(stats, "quart/wrappers/base", "endpoint") == 0
    assert calls_to(stats, "quart/routing", "bind_to_request") == 0
    assert calls_to(stats, "encodings/idna", "encode") == 0
    assert calls_to(stats, "quart/sessions", "make_null_session") == 0
    assert calls_to(stats, "inspect", "iscoroutinefunction") == 0
    # Remote-Addr and Host, each found at once (the first headers)
    assert calls_to(stats, "werkzeug/datastructures/headers", "_get_key") == 2 * REQUESTS
    table: dict[Any, tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    per_request = sum(entry[1] for entry in table.values()) / REQUESTS
    assert per_request <= 180, per_request


async def test_signals_still_reach_a_receiver() -> None:
    app = app_overhead.quart_app()
    heard: list[str] = []

    def receiver(name: str) -> Any:
        async def receive(sender: Any, **extra: Any) -> None:
            assert sender is app
            heard.append(name)

        return receive

    signals = {
        "appcontext_pushed": appcontext_pushed,
        "request_started": request_started,
        "request_finished": request_finished,
        "request_tearing_down": request_tearing_down,
        "appcontext_tearing_down": appcontext_tearing_down,
        "appcontext_popped": appcontext_popped,
    }
    receivers = {name: receiver(name) for name in signals}
    for name, signal in signals.items():
        signal.connect(receivers[name], sender=app)
    try:
        exchange = Exchange(app_overhead.BODY)
        await app(app_overhead.scope(), exchange.receive, exchange.send)
    finally:
        for name, signal in signals.items():
            signal.disconnect(receivers[name])  # from every sender: receivers empty again
    assert exchange.status == 200
    assert heard == list(signals)  # Quart's order
    assert not any(signal.receivers for signal in signals.values())


def nested_app(order: list[str]) -> GatewayApp:
    """An app with a nested blueprint whose functions record the order they ran in."""
    app = GatewayApp()
    outer, inner = Blueprint("outer", __name__), Blueprint("inner", __name__)

    @inner.get("/deep")
    async def deep() -> Response:
        order.append(f"view:{current_request().blueprint}:{current_request().blueprints}")
        return json_response({"seen": g.seen})

    for name, bp in (("outer", outer), ("inner", inner)):

        def before(name: str = name) -> None:
            order.append(f"before:{name}")
            g.seen = [*getattr(g, "seen", []), name]

        def after(response: Response, name: str = name) -> Response:
            order.append(f"after:{name}")
            response.headers[f"x-{name}"] = "1"
            return response

        def teardown(exc: BaseException | None, name: str = name) -> None:
            order.append(f"teardown:{name}")

        bp.before_request(before)
        bp.after_request(after)
        bp.teardown_request(teardown)
    outer.register_blueprint(inner)
    app.register_blueprint(outer)
    install_error_handlers(app)
    return app


async def test_nested_blueprint_functions_run_in_quarts_order() -> None:
    order: list[str] = []
    app = nested_app(order)
    exchange = Exchange()
    await app(http_scope("GET", "/deep", [(b"host", b"x")]), exchange.receive, exchange.send)
    assert exchange.status == 200
    assert orjson.loads(exchange.sent[1]["body"]) == {"seen": ["outer", "inner"]}
    headers = dict(exchange.sent[0]["headers"])
    assert headers[b"x-outer"] == headers[b"x-inner"] == b"1"
    assert order == [
        "before:outer",
        "before:inner",
        "view:outer.inner:['outer.inner', 'outer']",
        "after:inner",
        "after:outer",
        "teardown:inner",
        "teardown:outer",
    ]


async def test_404_and_405_answers_unchanged() -> None:
    app = nested_app([])
    missing, wrong = Exchange(), Exchange()
    await app(http_scope("GET", "/nowhere", [(b"host", b"x")]), missing.receive, missing.send)
    await app(http_scope("POST", "/deep", [(b"host", b"x")]), wrong.receive, wrong.send)
    assert missing.status == 404
    assert orjson.loads(missing.sent[1]["body"])["error"]["message"] == (
        "no such endpoint: /nowhere"
    )
    assert wrong.status == 405
    assert (b"allow", b"GET, HEAD") in wrong.sent[0]["headers"]


@pytest.mark.parametrize("endpoint", [None, "plain", "bp.view", "a.b.c.view"])
def test_blueprint_names_as_quart_derives_them(endpoint: str | None) -> None:
    request = request_for(http_scope("GET", "/", [(b"host", b"x")]))
    if endpoint is not None:
        request.url_rule = type("Rule", (), {"endpoint": endpoint})()  # type: ignore[assignment]
    blueprint = BaseRequestWebsocket.blueprint.fget(request)  # type: ignore[attr-defined]
    blueprints = BaseRequestWebsocket.blueprints.fget(request)  # type: ignore[attr-defined]
    assert request.blueprint == blueprint
    assert request.blueprints == blueprints


def request_for(scope: dict[str, Any]) -> GatewayRequest:
    return GatewayHTTPConnection(GatewayApp(), scope)._create_request_from_scope(  # type: ignore[arg-type]
        Exchange().send  # type: ignore[arg-type]
    )


def test_request_headers_as_werkzeug_builds_them() -> None:
    raw = [*app_overhead.HEADERS, (b"x-latin", "café".encode("latin-1")), (b"X-DUP", b"2")]
    request = request_for(http_scope("POST", "/", raw))
    expected = Headers()
    expected["Remote-Addr"] = "127.0.0.1"
    for name, value in raw:
        expected.add(name.decode("latin-1").title(), value.decode("latin-1"))
    assert list(request.headers.items()) == list(expected.items())
    assert request.content_length == len(app_overhead.BODY)
    assert request.headers["x-latin"] == "café"


def test_a_header_value_with_a_newline_is_refused_as_werkzeug_does() -> None:
    for bad in (b"a\nb", b"a\rb"):
        with pytest.raises(ValueError, match="newline"):
            request_for(http_scope("GET", "/", [(b"host", b"x"), (b"x-bad", bad)]))


def test_the_dependency_shapes_still_hold() -> None:
    assert missing_texts(QUART_SHAPE) == []
    assert missing_texts(HEADERS_SHAPE) == []


@pytest.mark.parametrize(
    ("host", "scheme", "path", "query"),
    [
        (b"127.0.0.1:4000", "http", "/backend-api/codex/responses", b""),
        (b"Gateway.EXAMPLE.com:80", "http", "/v1/models", b"a=1&b=%20"),
        (b"gateway.example.com:443", "https", "/x", b""),
        (b"b\xc3\xbccher.example", "http", "/", b""),
        (None, "http", "/", b""),
    ],
)
def test_the_url_adapter_is_bound_as_quart_binds_it(
    host: bytes | None, scheme: str, path: str, query: bytes
) -> None:
    headers = [] if host is None else [(b"host", host)]
    scope = http_scope("GET", path, headers)
    scope.update(scheme=scheme, query_string=query)
    request = request_for(scope)
    app = GatewayApp()
    ours = app.create_url_adapter(request)
    quarts = QuartTrio.create_url_adapter(app, request)
    fields = ("server_name", "script_name", "subdomain", "url_scheme", "path_info")
    assert ours is not None and quarts is not None
    for field in (*fields, "default_method", "query_args", "map"):
        assert getattr(ours, field) == getattr(quarts, field), field


def test_a_host_idna_refuses_is_refused_as_quart_refuses_it() -> None:
    request = request_for(http_scope("GET", "/", [(b"host", b"a..b")]))
    app = GatewayApp()
    with pytest.raises(BadHost):
        QuartTrio.create_url_adapter(app, request)
    for _ in range(2):  # a failure is not cached
        with pytest.raises(BadHost):
            app.create_url_adapter(request)


async def test_no_secret_key_still_means_quarts_null_session() -> None:
    app = GatewayApp()
    seen: list[object] = []
    probe = Blueprint("probe", __name__)

    @probe.get("/s")
    async def view() -> Response:
        seen.append(type(session._get_current_object()))  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="secret key"):
            session["x"] = 1
        return json_response({})

    app.register_blueprint(probe)
    exchange = Exchange()
    await app(http_scope("GET", "/s", [(b"host", b"x")]), exchange.receive, exchange.send)
    assert exchange.status == 200
    assert seen == [NullSession]
    assert all(name.lower() != "set-cookie" for name, _ in exchange.sent[0]["headers"])


async def test_ensure_async_answers_as_quarts() -> None:
    app = GatewayApp()

    async def coroutine_function() -> int:
        return 1

    def plain() -> int:
        return 2

    bound = app.session_interface.open_session
    assert app.ensure_async(coroutine_function) is coroutine_function
    assert app.ensure_async(bound) is bound
    assert await app.ensure_async(plain)() == 2  # run as Quart runs it (a worker thread)
    partial = functools.partial(coroutine_function)
    assert app.ensure_async(partial) is QuartTrio.ensure_async(app, partial)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-length", b"12")],
        [(b"Content-Length", b"12"), (b"content-length", b"99")],
        [(b"content-length", b"abc")],
        [(b"content-length", b"-5")],
        [(b"content-length", b"12"), (b"transfer-encoding", b"gzip, chunked")],
        [(b"transfer-encoding", b"chunked")],
        [(b"TRANSFER-ENCODING", b"gzip"), (b"content-length", b"7")],
    ],
)
def test_content_length_as_werkzeug_computes_it(headers: list[tuple[bytes, bytes]]) -> None:
    request = request_for(http_scope("POST", "/", [(b"host", b"x"), *headers]))
    werkzeugs = vars(SansIORequest)["content_length"].fget(request)
    assert request.content_length == werkzeugs
    assert request.headers.get("Content-Length") == (
        next((v.decode() for n, v in headers if n.lower() == b"content-length"), None)
    )
