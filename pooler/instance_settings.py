"""Instance settings: what an operator tunes at run time, stored as one JSON object.

The `instance_settings` row holds only what was changed; everything missing takes its
default here. Parsing is strict about types and ranges (a bad value is refused when it is
set, with the key named) and lenient about unknown keys (a newer node may know more).
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pooler.outbound_url import outbound_url_refusal


class SettingsError(ValueError):
    """A setting that cannot be applied; the message names it."""


@dataclass(frozen=True, slots=True)
class Bulkhead:
    """Admission for one route class: requests running at once, waiting, and for how long."""

    concurrency: int
    queue: int
    queue_timeout_s: float


# The reference (inventory §6) admits 32 plain and 24 streaming requests per node; a Trio
# process holds thousands of idle streams cheaply (DESIGN §9), so streams get room for that
# and the bulkhead guards memory rather than throughput. The smaller classes match it.
# `body` admits the Responses-shaped routes while they read, decode and parse a body (their
# class, stream or not, is in the body): it bounds the bodies being decoded at once.
DEFAULT_BULKHEADS: Mapping[str, Bulkhead] = {
    "body": Bulkhead(64, 1024, 10.0),
    "responses": Bulkhead(512, 1024, 10.0),
    "stream": Bulkhead(8192, 1024, 10.0),
    "compact": Bulkhead(8, 32, 10.0),
    "control": Bulkhead(8, 16, 5.0),
    "files": Bulkhead(4, 8, 5.0),
    "audio": Bulkhead(4, 8, 5.0),
    "websocket": Bulkhead(8192, 1024, 10.0),
    # The operator console's pages (pooler/admin_ui): a few at once, so paging through
    # accounts or hashing passwords never takes CPU or database connections from traffic.
    "admin": Bulkhead(4, 64, 10.0),
    # The operator MCP endpoint (/mcp): a few tool calls at once, each a short database read.
    "mcp": Bulkhead(4, 8, 5.0),
}

# Host names `/mcp` answers to (any port): DNS-rebinding protection. Behind a proxy or on
# another name the operator adds theirs (`mcp.allowed_hosts`); "*" accepts any Host.
DEFAULT_MCP_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
MAX_MCP_HOSTS = 64


@dataclass(frozen=True, slots=True)
class McpSettings:
    """The operator MCP endpoint: the instance's gate (off by default) and its Host names."""

    enabled: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_MCP_HOSTS


# Retention (pooler.retention): days each history table keeps its rows; 0 keeps them forever.
# The reference keeps everything; the hourly and daily stats are never pruned.
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long request logs, their attempts and the audit trail are kept (days; 0 = for
    ever). Attempts never outlive their request row: they go at the shorter of the two."""

    request_logs_days: int = 30
    attempts_days: int = 30
    audit_days: int = 365


# Ingress (pooler.web.ingress): where the client's address is read from, and which
# addresses may use the runtime routes and /mcp.
CLIENT_IP_SOURCES: tuple[str, ...] = ("x_forwarded_for", "peer", "x_real_ip")
MAX_PROXY_DEPTH = 16
MAX_ALLOWLIST = 256


@dataclass(frozen=True, slots=True)
class IngressSettings:
    """`allowlist`: IPs or CIDRs allowed on the runtime routes and /mcp (empty: any).
    `client_ip_source`: the header a trusted proxy names the client in (or `peer`: none).
    `proxy_depth`: 0, the right-most address in X-Forwarded-For that is not a trusted
    proxy; N, the Nth address from the right counting the peer."""

    allowlist: tuple[str, ...] = ()
    client_ip_source: str = "x_forwarded_for"
    proxy_depth: int = 0


MAX_PRICING_URL = 2048


@dataclass(frozen=True, slots=True)
class PricingSettings:
    """Where a newer price catalog is fetched from (pooler.pricing_refresh): an http(s) URL,
    empty (the default) to keep the bundled catalog; and how often."""

    refresh_url: str = ""
    refresh_interval_hours: float = 24.0


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP server alert emails go through (`pooler.alerts.mail`); no host: no email.
    Its password is not a setting: it is stored encrypted (`pooler admin alerts
    smtp-password`)."""

    host: str = ""
    port: int = 587
    username: str = ""
    from_address: str = ""
    starttls: bool = True


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Alerts: the console's public URL, for the incident links notifications carry."""

    console_url: str = ""


@dataclass(frozen=True, slots=True)
class InstanceSettings:
    circuit_failure_threshold: int = 3
    circuit_open_seconds: float = 60.0
    circuit_half_open_probes: int = 1
    demotion_seconds: float = 60.0
    usage_poll_interval_seconds: float = 60.0
    quota_freshness_seconds: float = 900.0
    # Request bodies (DESIGN §8): a body must arrive within the deadline, and a compressed
    # one may not decode past either bound (the reference's 64 MiB and 200:1).
    body_read_timeout_seconds: float = 30.0
    max_decompressed_body_bytes: int = 64 * 1024 * 1024
    max_decompression_ratio: float = 200.0
    # A write to a client that makes no progress this long ends its connection: a client
    # that stops reading would otherwise hold its lease and slot (pooler.write_stall).
    write_stall_timeout_seconds: float = 60.0
    bulkheads: Mapping[str, Bulkhead] = field(default_factory=lambda: dict(DEFAULT_BULKHEADS))
    # Operator console: a session unused this long is signed out (its 14-day life aside).
    console_idle_timeout_minutes: int = 60
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs); the
    # console's client IP (throttling, session list) and https detection depend on them.
    trusted_proxies: tuple[str, ...] = ()
    mcp: McpSettings = McpSettings()
    retention: RetentionSettings = RetentionSettings()
    ingress: IngressSettings = IngressSettings()
    pricing: PricingSettings = PricingSettings()
    # The digest (HMAC-SHA256 under the instance's secret key, hex) of the bearer token
    # /metrics requires; None: /metrics is open. Written only by `pooler admin settings
    # metrics-token create|clear` (pooler.store.instance_settings.set_metrics_token_digest),
    # never listed with the settings: they show whether one is configured, not its value.
    metrics_token_digest: str | None = None
    smtp: SmtpSettings = SmtpSettings()
    alerts: AlertSettings = AlertSettings()


MAX_TRUSTED_PROXIES = 64
METRICS_TOKEN_DIGEST = "metrics_token_digest"
_DIGEST = re.compile(r"[0-9a-f]{64}")

_RANGES: Mapping[str, tuple[type, float, float]] = {
    "circuit_failure_threshold": (int, 1, 1000),
    "circuit_open_seconds": (float, 1, 86_400),
    "circuit_half_open_probes": (int, 1, 100),
    "demotion_seconds": (float, 0, 3600),
    "usage_poll_interval_seconds": (float, 5, 86_400),
    "quota_freshness_seconds": (float, 30, 86_400),
    "body_read_timeout_seconds": (float, 0.1, 3600),
    "max_decompressed_body_bytes": (int, 1024, 1024**3),
    "max_decompression_ratio": (float, 1, 100_000),
    "write_stall_timeout_seconds": (float, 1, 3600),
    "console_idle_timeout_minutes": (int, 5, 10_080),
}
_MCP_KEYS = ("enabled", "allowed_hosts")
_RETENTION_KEYS = ("request_logs_days", "attempts_days", "audit_days")
_INGRESS_KEYS = ("allowlist", "client_ip_source", "proxy_depth")
_PRICING_KEYS = ("refresh_url", "refresh_interval_hours")
_BULKHEAD_RANGES: Mapping[str, tuple[type, float, float]] = {
    "concurrency": (int, 1, 100_000),
    "queue": (int, 0, 1_000_000),
    "queue_timeout_s": (float, 0, 600),
}


def _number(key: str, value: Any, kind: type, low: float, high: float) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{key} must be a number")
    if kind is int and value != int(value):
        raise SettingsError(f"{key} must be a whole number")
    if not low <= value <= high:
        raise SettingsError(f"{key} must be between {_shown(low)} and {_shown(high)}")
    return int(value) if kind is int else float(value)


def _shown(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else f"{bound:g}"


def _bulkhead(route_class: str, raw: Any, base: Bulkhead) -> Bulkhead:
    if not isinstance(raw, Mapping):
        raise SettingsError(f"bulkheads.{route_class} must be an object")
    changes: dict[str, int | float] = {}
    for name, value in raw.items():
        if name not in _BULKHEAD_RANGES:
            raise SettingsError(f"bulkheads.{route_class}.{name} is not a bulkhead setting")
        kind, low, high = _BULKHEAD_RANGES[name]
        changes[name] = _number(f"bulkheads.{route_class}.{name}", value, kind, low, high)
    return replace(base, **changes)  # type: ignore[arg-type]


def _networks(
    raw: Any, key: str = "trusted_proxies", most: int = MAX_TRUSTED_PROXIES
) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or len(raw) > most:
        raise SettingsError(f"{key} must be a list of at most {most}")
    out = []
    for item in raw:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise SettingsError(f"{key}: {str(item)[:64]!r} is not an IP address or CIDR") from None
    return tuple(out)


def _host_names(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or not 1 <= len(raw) <= MAX_MCP_HOSTS:
        raise SettingsError(f"mcp.allowed_hosts must be a list of 1 to {MAX_MCP_HOSTS} host names")
    out = []
    for item in raw:
        name = str(item).strip().lower()
        if not _HOST_NAME.fullmatch(name):
            raise SettingsError(
                f"mcp.allowed_hosts: {str(item)[:64]!r} is not a host name (or [IPv6], or *)"
            )
        out.append(name)
    return tuple(out)


# A DNS name or IPv4 address, an [IPv6] literal, either with an optional :port, or "*".
_HOST_NAME = re.compile(r"\*|(?:[a-z0-9_.-]{1,253}|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")


def _mcp(raw: Any) -> McpSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("mcp must be an object")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "enabled":
            if not isinstance(value, bool):
                raise SettingsError("mcp.enabled must be true or false")
            changes[name] = value
        elif name == "allowed_hosts":
            changes[name] = _host_names(value)
        else:
            raise SettingsError(f"mcp.{name} is not an MCP setting")
    return replace(McpSettings(), **changes)


def _retention(raw: Any) -> RetentionSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("retention must be an object")
    changes: dict[str, int] = {}
    for name, value in raw.items():
        if name not in _RETENTION_KEYS:
            raise SettingsError(f"retention.{name} is not a retention setting")
        changes[name] = int(_number(f"retention.{name}", value, int, 0, MAX_RETENTION_DAYS))
    return replace(RetentionSettings(), **changes)


def _ingress(raw: Any) -> IngressSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("ingress must be an object")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "allowlist":
            changes[name] = _networks(value, "ingress.allowlist", MAX_ALLOWLIST)
        elif name == "client_ip_source":
            if value not in CLIENT_IP_SOURCES:
                raise SettingsError(
                    f"ingress.client_ip_source must be one of {', '.join(CLIENT_IP_SOURCES)}"
                )
            changes[name] = value
        elif name == "proxy_depth":
            changes[name] = int(_number("ingress.proxy_depth", value, int, 0, MAX_PROXY_DEPTH))
        else:
            raise SettingsError(f"ingress.{name} is not an ingress setting")
    return replace(IngressSettings(), **changes)


def _pricing(raw: Any) -> PricingSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("pricing must be an object")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "refresh_url":
            changes[name] = _pricing_url(value)
        elif name == "refresh_interval_hours":
            changes[name] = _number("pricing.refresh_interval_hours", value, float, 1, 720)
        else:
            raise SettingsError(f"pricing.{name} is not a pricing setting")
    return replace(PricingSettings(), **changes)


def _pricing_url(value: Any) -> str:
    """ "" (off) or an http(s) URL with a host and no user name or password in it (the
    settings are shown to every operator)."""
    if not isinstance(value, str) or len(value) > MAX_PRICING_URL:
        raise SettingsError(f"pricing.refresh_url must be a URL of at most {MAX_PRICING_URL}")
    url = value.strip()
    if not url:
        return ""
    refusal = outbound_url_refusal(url)
    if refusal == "invalid":
        raise SettingsError("pricing.refresh_url is not a URL")
    if refusal == "not_http":
        raise SettingsError("pricing.refresh_url must be an http:// or https:// URL")
    if refusal is not None:
        raise SettingsError("pricing.refresh_url may not hold credentials or control characters")
    return url


_SMTP_KEYS = ("host", "port", "username", "from_address", "starttls")
_ALERT_KEYS = ("console_url",)


def _text(key: str, value: Any, limit: int, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or len(value) > limit or not pattern.fullmatch(value):
        raise SettingsError(
            f"{key} must be {_TEXT_WHAT[pattern.pattern]} (at most {limit} characters)"
        )
    return value


_SMTP_HOST = re.compile(r"|[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_SMTP_USER = re.compile(r"[^\x00-\x20\x7f]{0,320}")
_SMTP_FROM = re.compile(r"|[^\x00-\x20\x7f<>,;\"@]{1,64}@[A-Za-z0-9_.-]{1,253}")
_CONSOLE_URL = re.compile(r"|https?://[^\x00-\x20\x7f]{1,2000}")
_TEXT_WHAT = {
    _SMTP_HOST.pattern: "a host name or [IPv6] address, or empty",
    _SMTP_USER.pattern: "printable text without spaces",
    _SMTP_FROM.pattern: "an email address, or empty",
    _CONSOLE_URL.pattern: "an http(s) URL, or empty",
}


def _smtp(raw: Any) -> SmtpSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("smtp must be an object")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"smtp.{name}"
        if name == "host":
            changes[name] = _text(key, value, 255, _SMTP_HOST)
        elif name == "port":
            changes[name] = _number(key, value, int, 1, 65_535)
        elif name == "username":
            changes[name] = _text(key, value, 320, _SMTP_USER)
        elif name == "from_address":
            changes[name] = _text(key, value, 320, _SMTP_FROM)
        elif name == "starttls":
            if not isinstance(value, bool):
                raise SettingsError("smtp.starttls must be true or false")
            changes[name] = value
        else:
            raise SettingsError(f"smtp.{name} is not an SMTP setting")
    return replace(SmtpSettings(), **changes)


def _alerts(raw: Any) -> AlertSettings:
    if not isinstance(raw, Mapping):
        raise SettingsError("alerts must be an object")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "console_url":
            changes[name] = _text("alerts.console_url", value, 2000, _CONSOLE_URL).rstrip("/")
        else:
            raise SettingsError(f"alerts.{name} is not an alerts setting")
    return replace(AlertSettings(), **changes)


def parse_settings(raw: Mapping[str, Any], *, strict: bool = False) -> InstanceSettings:
    """Settings from the stored object. `strict` refuses unknown keys (when an operator sets
    them); stored rows are read leniently."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "bulkheads":
            if not isinstance(value, Mapping):
                raise SettingsError("bulkheads must be an object")
            merged = dict(DEFAULT_BULKHEADS)
            for route_class, spec in value.items():
                if route_class not in DEFAULT_BULKHEADS:
                    if strict:
                        raise SettingsError(f"bulkheads.{route_class}: unknown route class")
                    continue
                merged[route_class] = _bulkhead(route_class, spec, DEFAULT_BULKHEADS[route_class])
            values["bulkheads"] = merged
        elif key == "trusted_proxies":
            values[key] = _networks(value)
        elif key == "mcp":
            values[key] = _mcp(value)
        elif key == "retention":
            values[key] = _retention(value)
        elif key == "ingress":
            values[key] = _ingress(value)
        elif key == "pricing":
            values[key] = _pricing(value)
        elif key == METRICS_TOKEN_DIGEST and not strict:
            if value is not None and not (isinstance(value, str) and _DIGEST.fullmatch(value)):
                raise SettingsError(f"{METRICS_TOKEN_DIGEST} must be a SHA-256 digest in hex")
            values[key] = value
        elif key == "smtp":
            values[key] = _smtp(value)
        elif key == "alerts":
            values[key] = _alerts(value)
        elif key in _RANGES:
            kind, low, high = _RANGES[key]
            values[key] = _number(key, value, kind, low, high)
        elif strict:
            raise SettingsError(f"{key} is not an instance setting")
    return InstanceSettings(**values)


def settings_as_dict(settings: InstanceSettings) -> dict[str, Any]:
    """Every setting an operator sets by key (the metrics token's digest is not one)."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == METRICS_TOKEN_DIGEST:
            continue
        if f.name == "bulkheads":
            value = {
                name: {
                    "concurrency": b.concurrency,
                    "queue": b.queue,
                    "queue_timeout_s": b.queue_timeout_s,
                }
                for name, b in value.items()
            }
        elif f.name == "trusted_proxies":
            value = list(value)
        elif f.name == "mcp":
            value = {"enabled": value.enabled, "allowed_hosts": list(value.allowed_hosts)}
        elif f.name == "retention":
            value = {name: getattr(value, name) for name in _RETENTION_KEYS}
        elif f.name == "ingress":
            value = {
                "allowlist": list(value.allowlist),
                "client_ip_source": value.client_ip_source,
                "proxy_depth": value.proxy_depth,
            }
        elif f.name == "pricing":
            value = {
                "refresh_url": value.refresh_url,
                "refresh_interval_hours": value.refresh_interval_hours,
            }
        elif f.name in ("smtp", "alerts"):
            value = {g.name: getattr(value, g.name) for g in fields(value)}
        out[f.name] = value
    return out


def flat_settings(settings: InstanceSettings) -> dict[str, Any]:
    """Every setting under its dotted key (`bulkheads.body.concurrency`), as the CLI and
    the console's System page list them."""
    return _flat(settings_as_dict(settings))


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_setting_key(key: str) -> bool:
    """Whether a dotted key names a setting or a group of them (`bulkheads.stream`)."""
    parts = key.split(".")
    if parts[0] == "mcp":
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in _MCP_KEYS)
    if parts[0] == "retention":
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in _RETENTION_KEYS)
    if parts[0] == "ingress":
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in _INGRESS_KEYS)
    if parts[0] == "pricing":
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in _PRICING_KEYS)
    if parts[0] in ("smtp", "alerts"):
        known = _SMTP_KEYS if parts[0] == "smtp" else _ALERT_KEYS
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in known)
    if parts[0] != "bulkheads":
        return len(parts) == 1 and (parts[0] in _RANGES or parts[0] == "trusted_proxies")
    if len(parts) == 1:
        return True
    if parts[1] not in DEFAULT_BULKHEADS:
        return False
    return len(parts) == 2 or (len(parts) == 3 and parts[2] in _BULKHEAD_RANGES)


def with_change(raw: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with the dotted `key` set to `value` (a whole object for a group);
    the objects on its path are copied, a non-object in the way is replaced."""
    head, _, rest = key.partition(".")
    out = dict(raw)
    if not rest:
        out[head] = value
        return out
    inner = raw.get(head)
    out[head] = with_change(inner if isinstance(inner, Mapping) else {}, rest, value)
    return out


def without_key(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of `raw` without the dotted `key` (back to its default); objects it leaves
    empty are dropped too."""
    head, _, rest = key.partition(".")
    out = dict(raw)
    inner = out.get(head)
    if not rest:
        out.pop(head, None)
    elif isinstance(inner, Mapping):
        pruned = without_key(inner, rest)
        if pruned:
            out[head] = pruned
        else:
            del out[head]
    return out
