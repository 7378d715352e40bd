"""The ingress rules of a settings snapshot, parsed once: how the client's address is
resolved (`pooler.web.forwarded`) and the allowlist's networks (`pooler.web.ingress`).
Pure; `rules_for` keeps the rules of the latest snapshot, so a request pays an identity
check.
"""

from __future__ import annotations

from dataclasses import dataclass

from pooler.instance_settings import InstanceSettings
from pooler.web.forwarded import (
    ClientIpRules,
    Network,
    client_rules,
    networks,
    parse_address,
    within,
)


@dataclass(frozen=True, slots=True)
class IngressRules:
    client: ClientIpRules
    allow: tuple[Network, ...]  # empty: every address may

    def allows(self, address: str) -> bool:
        parsed = parse_address(address)
        return parsed is not None and within(parsed, self.allow)


_last: tuple[InstanceSettings, IngressRules] | None = None


def rules_for(settings: InstanceSettings) -> IngressRules:
    """The parsed rules of a settings snapshot (kept for the latest snapshot seen)."""
    global _last
    last = _last
    if last is not None and last[0] is settings:
        return last[1]
    ingress = settings.ingress
    rules = IngressRules(
        client_rules(settings.trusted_proxies, ingress.client_ip_source, ingress.proxy_depth),
        networks(ingress.allowlist),
    )
    _last = (settings, rules)
    return rules
