"""What a notification says: metadata only (the Pool's name, the rule, the values that
tripped it, a window's reset time, the incident's id and link), never a key, token, prompt
or body. And the webhook signature over it. Pure."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, Final

import orjson

from pooler.store.alert_incidents import Incident

SIGNATURE_HEADER: Final = "X-Pooler-Signature"
TIMESTAMP_HEADER: Final = "X-Pooler-Timestamp"
DELIVERY_HEADER: Final = "X-Pooler-Delivery"
EVENT_HEADER: Final = "X-Pooler-Event"


def incident_link(console_url: str, incident: Incident) -> str:
    """The incident on the console: absolute when the instance knows its URL."""
    path = f"/admin/alerts#incident-{incident.id}"
    return console_url.rstrip("/") + path if console_url else path


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notification(
    event: str, incident: Incident, console_url: str, sent_at: datetime
) -> dict[str, Any]:
    return {
        "event": f"incident.{event}",
        "sent_at": sent_at.isoformat(),
        "pool": {"id": str(incident.pool_id), "name": incident.pool_name},
        "incident": {
            "id": str(incident.id),
            "rule_id": str(incident.rule_id),
            "rule": incident.kind,
            "subject": incident.subject,
            "summary": incident.summary,
            "values": incident.details,
            "opened_at": _iso(incident.opened_at),
            "resolved_at": _iso(incident.resolved_at),
            "link": incident_link(console_url, incident),
        },
    }


def body_of(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` under the channel's secret."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, given: str) -> bool:
    """What a receiver checks (also used by the tests' receiver)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), given)


def subject_line(event: str, incident: Incident) -> str:
    state = "resolved" if event == "resolved" else "open"
    return f"[Codex Pooler] {incident.pool_name}: {incident.kind} {state}"[:200]


def email_text(payload: dict[str, Any]) -> str:
    incident = payload["incident"]
    values = "\n".join(f"  {k}: {v}" for k, v in sorted(incident["values"].items()))
    return (
        f"Pool: {payload['pool']['name']}\n"
        f"Rule: {incident['rule']}\n"
        f"Event: {payload['event']}\n"
        f"Summary: {incident['summary']}\n"
        f"Opened: {incident['opened_at']}\n"
        f"Resolved: {incident['resolved_at'] or '-'}\n"
        f"Values:\n{values}\n"
        f"Incident: {incident['id']}\n"
        f"Link: {incident['link']}\n"
    )
