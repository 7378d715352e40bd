"""Quart-trio's per-request pipeline without the signals nobody listens to, and its URL
adapter bound in one step.

Quart sends six blinker signals on every request (`request_started`, `request_finished`,
`request_tearing_down`, and for the app context it pushes per request `appcontext_pushed`,
`appcontext_popped`, `appcontext_tearing_down`); the gateway connects no receiver to any
of them, yet each send is an awaited coroutine and a receiver lookup. `LeanQuartTrio`
keeps Quart's methods as they are (copied from Quart 0.22 / quart-trio 0.12, the order of
every step unchanged) except that a signal is sent only while it has a receiver: connect
one and it is sent exactly as before (tests/unit/test_quart_hot_path.py).

The copies are checked against Quart's source at import (`check_quart_shape`): if Quart
changes one of these methods, the gateway refuses to start rather than silently run an
outdated copy.
"""

from __future__ import annotations

import functools
import sys
from inspect import CO_COROUTINE
from types import FunctionType, MethodType
from typing import Any

from quart.app import Quart
from quart.ctx import AppContext, RequestContext, _sentinel
from quart.globals import _cv_app, request_ctx
from quart.routing import QuartMap, _normalise_host
from quart.sessions import SecureCookieSession, SecureCookieSessionInterface
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers.base import BaseRequestWebsocket
from quart_trio import QuartTrio
from werkzeug.exceptions import BadHost, HTTPException
from werkzeug.routing import Map, MapAdapter

from pooler.dependency_shape import missing_texts, refuse_if_moved


class LeanAppContext(AppContext):
    """Quart's app context, its signals sent only to a receiver."""

    async def push(self) -> None:
        self._cv_tokens.append(_cv_app.set(self))
        if appcontext_pushed.receivers:
            await appcontext_pushed.send_async(
                self.app,
                _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
            )

    async def pop(self, exc: BaseException | None = _sentinel) -> None:  # type: ignore[assignment]
        try:
            if len(self._cv_tokens) == 1:
                if exc is _sentinel:
                    exc = sys.exc_info()[1]
                await self.app.do_teardown_appcontext(exc)
        finally:
            ctx = _cv_app.get()
            _cv_app.reset(self._cv_tokens.pop())

            if ctx is not self:
                raise AssertionError(f"Popped wrong app context. ({ctx!r} instead of {self!r})")

        if appcontext_popped.receivers:
            await appcontext_popped.send_async(
                self.app,
                _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
            )


class LeanSessionInterface(SecureCookieSessionInterface):
    """Quart's cookie sessions; without a secret key (the gateway sets none: the console
    keeps its own sessions) the null session at once, as Quart's request context would
    make it after `open_session` returned None."""

    async def open_session(
        self, app: Quart, request: BaseRequestWebsocket
    ) -> SecureCookieSession | None:
        if not app.secret_key:
            return self.null_session_class()
        return await super().open_session(app, request)


class LeanQuartTrio(QuartTrio):
    """QuartTrio, its per-request signals sent only to a receiver, its URL adapter bound
    in one step, and coroutine functions recognised without inspect's unwrapping."""

    session_interface = LeanSessionInterface()

    def app_context(self) -> AppContext:
        return LeanAppContext(self)

    def ensure_async(self, func: Any) -> Any:
        # Quart asks this for the view and the session methods on every request; a plain
        # coroutine function or method is what Quart's `iscoroutinefunction` accepts first,
        # so it is returned as is without the check; anything else goes to Quart.
        target = func.__func__ if type(func) is MethodType else func
        if type(target) is FunctionType and target.__code__.co_flags & CO_COROUTINE:
            return func
        return super().ensure_async(func)

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        """Quart's adapter for `request`, bound as `QuartMap.bind_to_request` and
        `Map.bind` bind it when the app has no SERVER_NAME, subdomains or host matching
        (the gateway's case): the request's own host, subdomain "", its host name
        IDNA-encoded once per host (`_idna_host`) rather than per request."""
        url_map = self.url_map
        if (
            request is None
            or self.config["SERVER_NAME"] is not None
            or self.subdomain_matching
            or url_map.host_matching
            or url_map.default_subdomain
        ):
            return super().create_url_adapter(request)
        scheme = request.scheme
        return MapAdapter(
            url_map,
            _idna_host(_normalise_host(scheme, request.host.lower())),
            request.root_path,
            "",
            scheme,
            request.path,
            request.method,
            request.query_string.decode(),
        )

    async def full_dispatch_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        try:
            if request_started.receivers:
                await request_started.send_async(self, _sync_wrapper=self.ensure_async)

            result: ResponseReturnValue | HTTPException | None
            result = await self.preprocess_request(request_context)
            if result is None:
                result = await self.dispatch_request(request_context)
        except (Exception, BaseExceptionGroup) as error:
            result = await self.handle_user_exception(error)
        return await self.finalize_request(result, request_context)

    async def finalize_request(
        self,
        result: ResponseReturnValue | HTTPException,
        request_context: RequestContext | None = None,
        from_error_handler: bool = False,
    ) -> ResponseTypes:
        response = await self.make_response(result)
        try:
            response = await self.process_response(response, request_context)
            if request_finished.receivers:
                await request_finished.send_async(
                    self,
                    _sync_wrapper=self.ensure_async,
                    response=response,
                )
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Request finalizing errored")
        return response

    async def do_teardown_request(
        self, exc: BaseException | None, request_context: RequestContext | None = None
    ) -> None:
        names = [*(request_context or request_ctx).request.blueprints, None]
        for name in names:
            for function in reversed(self.teardown_request_funcs[name]):
                await self.ensure_async(function)(exc)

        if request_tearing_down.receivers:
            await request_tearing_down.send_async(
                self,
                _sync_wrapper=self.ensure_async,
                exc=exc,
            )

    async def do_teardown_appcontext(self, exc: BaseException | None) -> None:
        for function in self.teardown_appcontext_funcs:
            await self.ensure_async(function)(exc)
        if appcontext_tearing_down.receivers:
            await appcontext_tearing_down.send_async(
                self,
                _sync_wrapper=self.ensure_async,
                exc=exc,
            )


@functools.lru_cache(maxsize=64)
def _idna_host(host: str) -> str:
    """`host` as `Map.bind` makes it (its name IDNA-encoded, the port kept; BadHost if it
    cannot be: a failure is not cached, so it is refused every time). A client varying
    Host only churns the bounded cache."""
    name, port_sep, port = host.lower().partition(":")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise BadHost() from e
    return f"{name}{port_sep}{port}"


# What each copied method of Quart does, in Quart's own words: any of these gone (Quart
# changed the method) and the copy above may be outdated.
QUART_SHAPE: dict[Any, tuple[str, ...]] = {
    AppContext.push: (
        "self._cv_tokens.append(_cv_app.set(self))",
        "await appcontext_pushed.send_async(",
    ),
    AppContext.pop: (
        "if len(self._cv_tokens) == 1:",
        "await self.app.do_teardown_appcontext(exc)",
        "_cv_app.reset(self._cv_tokens.pop())",
        "await appcontext_popped.send_async(",
    ),
    Quart.app_context: ("return AppContext(self)",),
    Quart.ensure_async: ("if iscoroutinefunction(func):", "return func"),
    RequestContext._push: (
        "self.session = await self.app.ensure_async(session_interface.open_session)(",
        "if self.session is None:",
        "self.session = await session_interface.make_null_session(self.app)",
    ),
    SecureCookieSessionInterface.make_null_session: ("return self.null_session_class()",),
    SecureCookieSessionInterface.open_session: (
        "signer = self.get_signing_serializer(app)",
        "if signer is None:\n            return None",
    ),
    Quart.create_url_adapter: (
        "(self.url_map.default_subdomain or None)",
        "if not self.subdomain_matching",
        "return self.url_map.bind_to_request(",
        'request, subdomain, self.config["SERVER_NAME"]',
    ),
    QuartMap.bind_to_request: (
        "host = request.host.lower()",
        "host = _normalise_host(request.scheme, host)",
        "if subdomain is None and not self.host_matching:",
        'subdomain = ".".join(filter(None, request_host_parts[:offset]))',
        "request.root_path,",
        "request.scheme,",
        "request.method,",
        "request.path,",
        "request.query_string.decode(),",
    ),
    Map.bind: (
        "server_name = server_name.lower()",
        'server_name, port_sep, port = server_name.partition(":")',
        'server_name = server_name.encode("idna").decode("ascii")',
        "raise BadHost() from e",
        'f"{server_name}{port_sep}{port}",',
        "script_name,\n            subdomain,\n            url_scheme,\n            path_info,\n"
        "            default_method,\n            query_args,",
    ),
    QuartTrio.full_dispatch_request: (
        "await request_started.send_async(self, _sync_wrapper=self.ensure_async)",
        "result = await self.preprocess_request(request_context)",
        "result = await self.dispatch_request(request_context)",
        "except (Exception, BaseExceptionGroup) as error:",
        "result = await self.handle_user_exception(error)",
        "return await self.finalize_request(result, request_context)",
    ),
    Quart.finalize_request: (
        "response = await self.make_response(result)",
        "response = await self.process_response(response, request_context)",
        "await request_finished.send_async(",
        "if not from_error_handler:",
        'self.logger.exception("Request finalizing errored")',
    ),
    Quart.do_teardown_request: (
        "names = [*(request_context or request_ctx).request.blueprints, None]",
        "for function in reversed(self.teardown_request_funcs[name]):",
        "await self.ensure_async(function)(exc)",
        "await request_tearing_down.send_async(",
    ),
    Quart.do_teardown_appcontext: (
        "for function in self.teardown_appcontext_funcs:",
        "await self.ensure_async(function)(exc)",
        "await appcontext_tearing_down.send_async(",
    ),
}


def check_quart_shape() -> None:
    """Refuse to start if a Quart method copied here changed (see the module doc)."""
    missing = missing_texts(QUART_SHAPE)
    if not hasattr(request_started, "receivers"):
        missing.append("blinker Signal.receivers")
    refuse_if_moved(missing, "Quart", "pooler.web.quart_pipeline")


check_quart_shape()
