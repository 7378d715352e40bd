"""`/admin/alerts`: the alert incidents of the Pools the operator may see (open ones first,
then the most recent), each with its notifications' delivery state, and each Pool's rules
and channels; an operator adds and deletes rules for its Pools here (channels, whose
webhook secret is shown once, are made with `pooler admin alerts channel`).

Everything goes through `pooler.store.alerts` and `pooler.store.alert_incidents` (the
CLI's functions); the leader's pass (`pooler.alerts.job`) opens and resolves incidents.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response

from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, pool_or_404, read_form, redirect_to, render
from pooler.alerts.rules import KINDS, THRESHOLDS
from pooler.store import alert_incidents as incident_store
from pooler.store import alerts as alert_store
from pooler.store.common import Conn, StoreError
from pooler.store.models import Pool
from pooler.store.pools import list_pools

HOME: Final = "/admin/alerts"
RECENT: Final = 100
KIND_LABELS: Final = {
    "usable_below": "Usable accounts below N",
    "reauth_required": "An account needs a new login",
    "quota_above": "A quota window at or above X %",
    "error_rate_above": "Error rate at or above Y % over 5 minutes",
}


@dataclass(frozen=True, slots=True)
class AlertsView:
    pools: list[Pool]
    incidents: list[incident_store.Incident]
    deliveries: dict[UUID, list[incident_store.DeliveryView]]
    rules: list[alert_store.StoredRule]
    channels: list[alert_store.Channel]


def load_view(conn: Conn, pool_ids: frozenset[UUID] | None) -> AlertsView:
    pools = [p for p in list_pools(conn) if pool_ids is None or p.id in pool_ids]
    scope = frozenset(p.id for p in pools)
    found = incident_store.list_incidents(conn, scope, limit=RECENT)
    by_incident: defaultdict[UUID, list[incident_store.DeliveryView]] = defaultdict(list)
    for d in incident_store.deliveries_of(conn, [i.id for i in found]):
        by_incident[d.incident_id].append(d)
    return AlertsView(
        pools,
        found,
        dict(by_incident),
        alert_store.list_rules(conn, scope),
        alert_store.list_channels(conn, scope),
    )


def _threshold(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise StoreError("the threshold must be a number", "threshold") from None


def alerts_blueprint() -> Blueprint:
    bp = Blueprint("alerts_page", __name__)

    async def page(found: SignedIn, status: int = 200, **context: Any) -> Response:
        view = await db(lambda conn: load_view(conn, found.pool_ids))
        context.setdefault("error", None)
        context.setdefault("values", {})
        return await render(
            "alerts.html",
            status,
            view=view,
            kinds=KINDS,
            kind_labels=KIND_LABELS,
            thresholds=THRESHOLDS,
            **context,
        )

    @bp.get(HOME)
    @operator_required()
    async def show(found: SignedIn) -> Response:
        return await page(found)

    @bp.post(f"{HOME}/rules")
    @operator_required()
    async def add_rule(found: SignedIn) -> Response:
        form = await read_form()
        values = {k: form.get(k) for k in ("pool", "kind", "threshold", "min_requests")}
        try:
            pool_id = UUID(values["pool"])
        except ValueError:
            return await page(found, 400, error=StoreError("choose a Pool", "pool"), values=values)
        pool_or_404(found, pool_id)
        try:
            threshold = _threshold(values["threshold"])
            min_requests = int(values["min_requests"] or "10")
            await db(
                lambda conn: alert_store.add_rule(
                    conn,
                    pool_id,
                    values["kind"],
                    threshold,
                    min_requests=min_requests,
                    actor=found.operator.email,
                )
            )
        except ValueError:
            error = StoreError("the fewest requests must be a whole number", "min_requests")
            return await page(found, 400, error=error, values=values)
        except StoreError as exc:
            return await page(found, 400, error=exc, values=values)
        return redirect_to(HOME)

    @bp.post(f"{HOME}/rules/<uuid:rule_id>/delete")
    @operator_required()
    async def delete_rule(found: SignedIn, rule_id: UUID) -> Response:
        await read_form()
        rule = await db(lambda conn: alert_store.get_rule(conn, rule_id))
        pool_or_404(found, rule.pool_id)
        await db(lambda conn: alert_store.delete_rule(conn, rule_id, actor=found.operator.email))
        return redirect_to(HOME)

    return bp
