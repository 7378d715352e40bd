"""`/admin/system` (owner only): every instance setting (`pooler admin settings show`),
grouped, with its default; saved through `pooler.store.instance_settings` (the CLI's own
checks: a refused value is shown beside its field, 400), audited, and applied by every
running gateway on the change's NOTIFY. A changed setting can be put back to its default.
The one secret setting, the /metrics token's digest, is not listed with the others: the page
says whether one is configured (never the value) and how to create or clear it (the CLI).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from quart import Blueprint
from quart.wrappers import Response

from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import (
    Form,
    db,
    in_words,
    operator_required,
    read_form,
    redirect_to,
    render,
)
from pooler.instance_settings import (
    DEFAULT_BULKHEADS,
    InstanceSettings,
    SettingsError,
    flat_settings,
    parse_settings,
    with_change,
)
from pooler.store.common import StoreError
from pooler.store.instance_settings import (
    get_instance_settings,
    reset_instance_settings,
    update_instance_settings,
)

HOME = "/admin/system"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    label: str
    hint: str
    kind: str = "number"  # number | list | bool | text | url (text and url may be empty)


# The groups and words of the page; every key of `InstanceSettings` appears once (a test
# checks it against `pooler admin settings show`).
GROUPS: Final[tuple[tuple[str, tuple[Setting, ...]], ...]] = (
    (
        "Circuit breakers",
        (
            Setting(
                "circuit_failure_threshold",
                "Failures to open",
                "Failures in a row that open an account's circuit for a route class.",
            ),
            Setting(
                "circuit_open_seconds",
                "Open for (seconds)",
                "How long an open circuit keeps the account out.",
            ),
            Setting(
                "circuit_half_open_probes",
                "Half-open probes",
                "Trial requests let through before the circuit closes again.",
            ),
        ),
    ),
    (
        "Routing and quota",
        (
            Setting(
                "demotion_seconds",
                "Demotion (seconds)",
                "How long an account that failed a request is tried last.",
            ),
            Setting(
                "usage_poll_interval_seconds",
                "Usage poll interval (seconds)",
                "How often each account's quota is read from upstream.",
            ),
            Setting(
                "quota_freshness_seconds",
                "Quota freshness (seconds)",
                "Quota data older than this is not trusted for routing.",
            ),
        ),
    ),
    (
        "Client traffic",
        (
            Setting(
                "body_read_timeout_seconds",
                "Body read timeout (seconds)",
                "A request body must arrive within this.",
            ),
            Setting(
                "write_stall_timeout_seconds",
                "Write stall timeout (seconds)",
                "A client that takes none of its answer for this long is disconnected.",
            ),
            Setting(
                "max_decompressed_body_bytes",
                "Largest decompressed body (bytes)",
                "A compressed body may not decode past this size.",
            ),
            Setting(
                "max_decompression_ratio",
                "Largest decompression ratio",
                "Nor past this ratio to its compressed size.",
            ),
        ),
    ),
    (
        "Console",
        (
            Setting(
                "console_idle_timeout_minutes",
                "Idle sign-out (minutes)",
                "A console session unused this long is signed out.",
            ),
        ),
    ),
    (
        "Ingress",
        (
            Setting(
                "ingress.allowlist",
                "Allowed client addresses",
                "IP addresses or CIDRs, one a line, that may use the runtime routes and /mcp"
                " (others get 403). Empty: any address. Never applies to the console,"
                " /healthz, /readyz or /metrics.",
                "list",
            ),
            Setting(
                "trusted_proxies",
                "Trusted proxies",
                "IP addresses or CIDRs, one a line, whose X-Forwarded-For, X-Real-IP and"
                " X-Forwarded-Proto are believed.",
                "list",
            ),
            Setting(
                "ingress.client_ip_source",
                "Client address from",
                "x_forwarded_for, x_real_ip (read only from a trusted proxy) or peer (the"
                " connection's own address).",
            ),
            Setting(
                "ingress.proxy_depth",
                "Proxy depth",
                "0: the right-most X-Forwarded-For address that is not a trusted proxy. N (up"
                " to 16): the Nth from the right counting the proxy that connected (2: one"
                " proxy in front).",
            ),
        ),
    ),
    (
        "Operator MCP (/mcp)",
        (
            Setting(
                "mcp.enabled",
                "MCP service",
                "The instance's gate: when off, /mcp refuses every token. Each operator also"
                " turns on their own MCP switch.",
                "bool",
            ),
            Setting(
                "mcp.allowed_hosts",
                "MCP host names",
                "Host names /mcp answers to, one a line (any port, or name:port; * for any):"
                " add the name clients reach this gateway by. Others get 421.",
                "list",
            ),
        ),
    ),
    (
        "Retention",
        (
            Setting(
                "retention.request_logs_days",
                "Request logs (days)",
                "Request logs older than this are deleted (0 keeps them for ever). The hourly"
                " and daily stats outlive them.",
            ),
            Setting(
                "retention.attempts_days",
                "Attempts (days)",
                "Each request's upstream attempts; never kept longer than their request"
                " (0: as long as it).",
            ),
            Setting(
                "retention.audit_days",
                "Audit events (days)",
                "Audit events older than this are deleted (0 keeps them for ever).",
            ),
        ),
    ),
    (
        "Pricing (cost accounting)",
        (
            Setting(
                "pricing.refresh_url",
                "Price catalog URL",
                "Where a newer price catalog (JSON, the bundled file's format) is fetched"
                " from once per cluster; empty keeps the bundled catalog.",
                "url",
            ),
            Setting(
                "pricing.refresh_interval_hours",
                "Fetch every (hours)",
                "How often the catalog URL is fetched.",
            ),
        ),
    ),
    (
        "Alerts",
        (
            Setting(
                "alerts.console_url",
                "Console URL",
                "This console's public address (https://...), for the incident links alert"
                " notifications carry. Empty: the links are paths.",
                "url",
            ),
            Setting(
                "smtp.host",
                "SMTP host",
                "The mail server alert emails go through. Empty: no email is sent.",
                "text",
            ),
            Setting("smtp.port", "SMTP port", "587 for STARTTLS submission."),
            Setting(
                "smtp.starttls",
                "STARTTLS",
                "Upgrade the connection to TLS before signing in and sending.",
                "bool",
            ),
            Setting(
                "smtp.username",
                "SMTP user name",
                "Empty: no sign-in. The password is set with"
                " `pooler admin alerts smtp-password --stdin` and stored encrypted.",
                "text",
            ),
            Setting("smtp.from_address", "From address", "The sender of alert emails.", "text"),
        ),
    ),
)
LIST_KEYS: Final = frozenset(s.key for _, group in GROUPS for s in group if s.kind == "list")
TEXT_KEYS: Final = frozenset(
    s.key for _, group in GROUPS for s in group if s.kind in ("text", "url")
)
BULKHEAD_FIELDS: Final = (
    ("concurrency", "Running at once"),
    ("queue", "Waiting"),
    ("queue_timeout_s", "Wait at most (seconds)"),
)


def label_of(key: str) -> str:
    """The words a setting's field is labelled with on the page."""
    for _, settings in GROUPS:
        for setting in settings:
            if setting.key == key:
                return setting.label
    for field, label in BULKHEAD_FIELDS:
        if key.startswith("bulkheads.") and key.endswith("." + field):
            return f"{label} ({key.split('.')[1]})"
    return key


def all_keys() -> list[str]:
    return list(flat_settings(InstanceSettings()))


def shown(value: Any) -> str:
    """A value as its field holds it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "\n".join(str(item) for item in value)
    if isinstance(value, float) and value == int(value) and math.isfinite(value):
        return str(int(value))
    return str(value)


def typed_value(key: str, text: str) -> Any:
    """What an operator typed, read like `pooler admin settings set KEY=VALUE` reads it
    (JSON, else text); a list (the trusted proxies, MCP host names) is one a line (or
    separated by commas)."""
    if key in LIST_KEYS:
        return [item.strip() for item in text.replace(",", "\n").splitlines() if item.strip()]
    if key in TEXT_KEYS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def changes_of(form: Form, current: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the form changes, and the error of each refused one (by key), each
    checked alone by the same parser the store and the CLI use."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in all_keys():
        if key not in form:
            continue
        text = form.get(key).strip()
        if text == shown(current[key]):
            continue
        if not text and key not in LIST_KEYS and key not in TEXT_KEYS:
            errors[key] = "a value is required"
            continue
        value = typed_value(key, text)
        try:
            parsed = parse_settings(with_change({}, key, value), strict=True)
        except SettingsError as exc:
            errors[key] = in_words(str(exc), key, label_of(key))
            continue
        if flat_settings(parsed)[key] != current[key]:  # "30.0" for 30 is no change
            changes[key] = value
    return changes, errors


def system_blueprint() -> Blueprint:
    bp = Blueprint("system_page", __name__)

    async def page(
        status: int = 200,
        typed: Mapping[str, str] | None = None,
        errors: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        _, effective = await db(get_instance_settings)
        values = {key: shown(value) for key, value in flat_settings(effective).items()}
        defaults = {key: shown(value) for key, value in flat_settings(InstanceSettings()).items()}
        saved = dict(values)  # "Reset to default" is offered for what is saved, not typed
        values.update(typed or {})
        context.setdefault("error", None)
        context.setdefault("notice", None)
        return await render(
            "system.html",
            status,
            groups=GROUPS,
            route_classes=list(DEFAULT_BULKHEADS),
            bulkhead_fields=BULKHEAD_FIELDS,
            values=values,
            saved=saved,
            defaults=defaults,
            errors=errors or {},
            metrics_token_configured=effective.metrics_token_digest is not None,
            **context,
        )

    @bp.get(HOME)
    @operator_required("owner")
    async def show(found: SignedIn) -> Response:
        return await page()

    @bp.post(HOME)
    @operator_required("owner")
    async def save(found: SignedIn) -> Response:
        form = await read_form()
        _, effective = await db(get_instance_settings)
        current = flat_settings(effective)
        changes, errors = changes_of(form, current)
        typed = {key: form.get(key) for key in current if key in form}
        if errors:
            return await page(
                400, typed, errors, error="Nothing was saved: correct the fields marked below."
            )
        if not changes:
            return await page(notice="Nothing changed.")
        actor = found.operator.email
        try:
            await db(lambda conn: update_instance_settings(conn, changes, actor=actor))
        except StoreError as exc:
            return await page(400, typed, error=exc.message)
        return await page(notice=f"Saved: {', '.join(changes)}.")

    @bp.post(f"{HOME}/reset")
    @operator_required("owner")
    async def reset(found: SignedIn) -> Response:
        form = await read_form()
        key, actor = form.get("key"), found.operator.email
        if key not in all_keys():
            return await page(400, error="That is not an instance setting.")
        await db(lambda conn: reset_instance_settings(conn, [key], actor=actor))
        return redirect_to(HOME)

    return bp
