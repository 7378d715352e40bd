"""One fake ChatGPT account: identity, current tokens, quota windows, prompt cache, and
how it reports its quota."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pooler.emulator.prompt_cache import CacheRules, PromptCache
from pooler.emulator.tokens import Identity, TokenSet, mint_token_set
from pooler.emulator.usage import PRIMARY_MINUTES, SECONDARY_MINUTES, EmulatedWindow, LimitFamily


def account_uuid(seed: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"codex-emulator:{seed}:account:{index}"))


def user_id_for(seed: str, index: int) -> str:
    digest = hashlib.sha256(f"codex-emulator:{seed}:user:{index}".encode()).hexdigest()
    return f"user-{digest[:24]}"


@dataclass
class Reporting:
    """How an account reports its quota (set through the control API, cleared by reset).

    `quiet_headers`: no `x-codex-*` quota headers on `/responses` answers (errors too), so
    the usage endpoint or the stream event is the only evidence. `rate_limits_event`: SSE
    streams start with `codex.rate_limits` events, as websocket turns do. `usage_delay_s`:
    `/wham/usage` answers this late."""

    quiet_headers: bool = False
    rate_limits_event: bool = False
    usage_delay_s: float = 0.0


@dataclass
class FakeAccount:
    index: int
    label: str
    account_id: str
    email: str
    plan_type: str
    user_id: str
    tokens: TokenSet
    primary: EmulatedWindow
    secondary: EmulatedWindow
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    families: dict[str, LimitFamily] = field(default_factory=dict)  # family id -> limit
    reporting: Reporting = field(default_factory=Reporting)
    models: tuple[str, ...] | None = None  # the slugs it serves; None: the default catalog

    @property
    def identity(self) -> Identity:
        return Identity(self.account_id, self.user_id, self.email, self.plan_type)

    @property
    def access_token(self) -> str:
        return self.tokens.access_token

    @property
    def refresh_token(self) -> str:
        return self.tokens.refresh_token

    @property
    def id_token(self) -> str:
        return self.tokens.id_token

    @property
    def last_refresh(self) -> str:
        """When the current tokens were issued, RFC 3339 UTC (auth.json `last_refresh`)."""
        moment = datetime.fromtimestamp(self.tokens.issued_at, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def clear_usage(self) -> None:
        """Back to a fresh account: empty windows and cache, no extra family, loud."""
        for window in (self.primary, self.secondary):
            window.used_percent = 0.0
        self.prompt_cache.clear()
        self.families.clear()
        self.reporting = Reporting()
        self.models = None

    def family_for(self, model: str) -> LimitFamily | None:
        """The extra limit family a request for `model` counts against, if any."""
        return next((f for f in self.families.values() if f.applies_to(model)), None)

    def windows_for(self, model: str) -> tuple[EmulatedWindow, EmulatedWindow]:
        """The windows a request for `model` counts against: its family's, else the default."""
        family = self.family_for(model)
        return (family.primary, family.secondary) if family else (self.primary, self.secondary)


def make_account(
    seed: str, index: int, now: float, token_ttl: float, cache_rules: CacheRules | None = None
) -> FakeAccount:
    """Account `index` (1-based); identity is a function of (seed, index) only."""
    account_id = account_uuid(seed, index)
    identity = Identity(account_id, user_id_for(seed, index), f"user{index}@emulator.test", "plus")
    return FakeAccount(
        index=index,
        label=f"account-{index}",
        account_id=account_id,
        email=identity.email,
        plan_type=identity.plan_type,
        user_id=identity.user_id,
        tokens=mint_token_set(identity, now, token_ttl),
        primary=EmulatedWindow(origin=now, minutes=PRIMARY_MINUTES),
        secondary=EmulatedWindow(origin=now, minutes=SECONDARY_MINUTES),
        prompt_cache=PromptCache(rules=cache_rules or CacheRules()),
    )
