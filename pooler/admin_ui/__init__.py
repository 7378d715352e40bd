"""The operator console: server-rendered pages in the gateway's one Quart-trio app
(`console_blueprint`, registered by `pooler.web.create_app`). Works without JavaScript.

How to add a page
-----------------
1. **A module per page** (`pooler/admin_ui/<page>.py`) with a factory returning a
   `quart.Blueprint` (see `pools_home.py`); add it to `PAGES` below. Routes use the
   reference's paths (`/admin/api-keys`, ...). Blueprint names are unique.
2. **Decorate every handler**: `@operator_required()` (any signed-in operator),
   `@operator_required("owner")` (owner only: others get 403), or `@public_page` (no
   operator: sign-in, invites). Both admit the request through the `admin` bulkhead. The
   handler receives the `SignedIn` (operator, session, `pool_ids`: None for an owner,
   else the admin's Pools) before the route's arguments. Scope every query to
   `found.pool_ids` (`pool_overview.visible_pools` shows how) and refuse another Pool with
   `pool_or_404(found, pool_id)`: an admin's request for a Pool not theirs is a 404 and
   changes nothing.
3. **Database work** goes through `await db(lambda conn: store.fn(conn, ...))` (one
   transaction in a worker thread, never on the event loop; `db_with_password` for work
   that hashes a password: one at a time per process), calling the same
   `pooler.store` functions as the CLI. A `StoreError` a form should show is caught and
   rendered beside the form; one left uncaught becomes an error page (404/409/400).
4. **Templates** live in `templates/console/`, extend `base.html` and fill `title` and
   `content`; exactly one `<h1>` per page; every field has a visible `<label for=...>`
   (tests find fields by label): `{% from "console/_form.html" import csrf, field,
   error_box with context %}` gives `field("Name", "name")`. Autoescaping is on: never
   mark operator- or client-typed text `|safe`. Use the classes of `static/console.css`
   (`.table.stack` in a `.scroll` div, with `data-label` on each cell so a row becomes a
   card at 390 px; `.form`, `.error`, `.notice`, `.actions`, `.button`, `.danger`); add
   little to it. `render("page.html", status, **context)` answers; the
   context always has `me` (the SignedIn, or None), `csrf_token` and `request`. Templates
   render synchronously (`templating.py`): Quart's template globals (`url_for`,
   `session`, `g`, `config`) are not there; pass what a template needs.
5. **Forms** are `method="post"` with `{{ csrf() }}` inside and are
   read with `form = await read_form()`, which bounds the body (64 KiB, urlencoded),
   parses it and refuses a missing or wrong CSRF token with 403 before the handler does
   anything. After a successful POST answer `redirect_to(path)` (303); on a refused one
   re-render the form with the error and status 400.
6. **Audit**: configuration changes are audited by the store functions themselves
   (`record_change`, actor `found.operator.email`); events that change no configuration
   (sign-ins, views of secrets) use `store.audit.record_event`. Never put a password,
   token, raw key or cookie in a detail, a log line or an error message.
7. **Errors**: raise werkzeug's `NotFound`/`Forbidden`/`BadRequest`, or a `PoolerError`; the
   console answers with an HTML error page (the `/v1` and `/backend-api` surfaces keep
   their JSON). Every console answer carries the CSP, nosniff and referrer headers.
8. **One-time forms**: a form whose answer shows a secret once (a new or rotated key, an
   invite link, a temporary password, recovery codes) has `{{ csrf(once=True) }}`; its
   handler takes `once = form_once(found, form)` and calls `once.claim(conn, "action")`
   first in the action's transaction (`once.made(conn, id)` after a creation). Sending
   the same rendered form again (a reload) does nothing and answers a 409 page that says
   what it did then (`form_once.py`; the claims are in PostgreSQL, for every node).
9. **Tests**: httpx against `tests/harness.py` `open_stack`; `tests/integration/
   console_support.py` signs in (`bootstrap_owner`, `sign_in`, `csrf_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING

from quart import Blueprint, g
from quart.wrappers import Response
from werkzeug.exceptions import HTTPException, NotFound

from pooler.admin_ui.access import access_blueprint, second_factor_blueprint
from pooler.admin_ui.alerts_page import alerts_blueprint
from pooler.admin_ui.api_keys import api_keys_blueprint
from pooler.admin_ui.audit_logs_page import audit_logs_blueprint
from pooler.admin_ui.errors import (
    add_security_headers,
    http_error_page,
    is_console_path,
    pooler_error_page,
    store_error_page,
    unexpected_error_page,
)
from pooler.admin_ui.form_once import FormAlreadySent, already_sent_page, new_token
from pooler.admin_ui.invites_page import invites_blueprint
from pooler.admin_ui.onboarding import onboarding_blueprint
from pooler.admin_ui.operators_page import operators_blueprint
from pooler.admin_ui.overview_page import overview_blueprint
from pooler.admin_ui.own_settings import own_settings_blueprint
from pooler.admin_ui.pools_home import pools_home_blueprint
from pooler.admin_ui.request_logs import request_logs_blueprint
from pooler.admin_ui.stats_page import stats_blueprint
from pooler.admin_ui.system_page import system_blueprint
from pooler.admin_ui.templating import ENVIRONMENT
from pooler.admin_ui.upstream_add import upstream_add_blueprint
from pooler.admin_ui.upstreams import upstreams_blueprint
from pooler.errors import PoolerError
from pooler.store.common import StoreError
from pooler.web.asgi import ClientDisconnected
from pooler.web.quart_http import PUSHED

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

__all__ = ["console_blueprint", "http_error_page", "is_console_path"]

# Every page's blueprint factory, registered under the console's blueprint.
PAGES: tuple[Callable[[], Blueprint], ...] = (
    access_blueprint,
    second_factor_blueprint,
    pools_home_blueprint,
    own_settings_blueprint,
    api_keys_blueprint,
    upstreams_blueprint,
    upstream_add_blueprint,
    operators_blueprint,
    invites_blueprint,
    onboarding_blueprint,
    system_blueprint,
    audit_logs_blueprint,
    stats_blueprint,
    overview_blueprint,
    request_logs_blueprint,
    alerts_blueprint,
)
STATIC_FILES = {
    "console.css": "text/css; charset=utf-8",
    "copy.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
}


ENVIRONMENT.globals["new_form_once"] = new_token


def console_blueprint(
    gateway: Gateway, pages: Sequence[Callable[[], Blueprint]] = PAGES
) -> Blueprint:
    """The console: every page (of `pages`), its error pages and headers, and its static
    files."""
    bp = Blueprint("console", __name__, template_folder="templates")
    for page in pages:
        bp.register_blueprint(page())
    static = {
        name: resources.files("pooler.admin_ui").joinpath("static", name).read_bytes()
        for name in STATIC_FILES
    }

    @bp.before_request
    async def attach_gateway() -> None:
        g.pooler_gateway = gateway

    @bp.after_request
    async def headers(response: Response) -> Response:
        return add_security_headers(response)

    @bp.get("/admin/static/<name>")
    async def static_file(name: str) -> Response:
        if name not in static:
            raise NotFound()
        headers = {"content-type": STATIC_FILES[name], "cache-control": "public, max-age=3600"}
        return Response(static[name], headers=headers)

    @bp.route("/admin/<path:rest>", methods=["GET", "POST"])
    async def no_such_page(rest: str) -> Response:
        raise NotFound()

    bp.register_error_handler(FormAlreadySent, already_sent_page)
    bp.register_error_handler(HTTPException, http_error_page)
    bp.register_error_handler(PoolerError, pooler_error_page)
    bp.register_error_handler(StoreError, store_error_page)
    bp.register_error_handler(ClientDisconnected, client_left)
    bp.register_error_handler(Exception, unexpected_error_page)
    return bp


async def client_left(error: ClientDisconnected) -> Response:
    return PUSHED  # nobody to answer
