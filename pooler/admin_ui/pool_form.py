"""The Pools page's routing-policy form: its fields read into the keyword arguments of
`pooler.store.pools.create_pool` / `update_pool`. Only the reading is here (a number
that is not a number); every rule on the values is the store's. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from pooler.admin_ui.pages import Form

# (form field = store argument, label)
NUMBERS: Final = (
    ("quota_threshold_percent", "Quota threshold (%)", float),
    ("retry_budget", "Retry budget", int),
    ("max_in_flight_per_account", "In-flight cap per account", int),
)
SWITCHES: Final = ("continuity_enabled", "v1_enabled")
STRATEGY_LABELS: Final = {
    "least_used": "Least used",
    "round_robin": "Round robin",
    "fill_first": "Fill first",
    "weighted": "Weighted",
}
MAX_NUMBER_CHARS: Final = 32


@dataclass(slots=True)
class PolicyForm:
    """What was typed (shown again when refused), the store arguments read from it, and
    the errors by field."""

    values: dict[str, str]
    policy: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def read_policy(form: Form) -> PolicyForm:
    """The policy fields of `form`. The form shows every field, so an unchecked switch is
    off; an empty number is left to the store (its default, or unchanged)."""
    values = {name: form.get(name).strip() for name, _, _ in NUMBERS}
    values["strategy"] = form.get("strategy")
    read = PolicyForm(values)
    if values["strategy"]:
        read.policy["strategy"] = values["strategy"]
    for name, label, kind in NUMBERS:
        text = values[name]
        if not text:
            continue
        try:
            if len(text) > MAX_NUMBER_CHARS:
                raise ValueError(text)
            read.policy[name] = kind(text)
        except ValueError:
            whole = " whole" if kind is int else ""
            read.errors[name] = f"{label} must be a{whole} number."
    for name in SWITCHES:
        on = form.get(name) == "on"
        values[name] = "on" if on else ""
        read.policy[name] = on
    return read


def values_of(pool: Any) -> dict[str, str]:
    """A stored Pool's settings as the form shows them."""
    threshold = float(pool.quota_threshold_percent)
    return {
        "strategy": pool.strategy,
        "quota_threshold_percent": f"{threshold:g}",
        "retry_budget": str(pool.retry_budget),
        "max_in_flight_per_account": str(pool.max_in_flight_per_account),
        "continuity_enabled": "on" if pool.continuity_enabled else "",
        "v1_enabled": "on" if pool.v1_enabled else "",
    }


# A new Pool's form: numbers left empty take the store's defaults; switches start on.
NEW_POOL: Final = {"continuity_enabled": "on", "v1_enabled": "on"}
