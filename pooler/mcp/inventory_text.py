"""The inventory tools' readable text (`ToolSpec.summary`): a line or a few per answer.
Text someone typed (a label, a name) is shown with its control characters escaped, so a
terminal showing the summary runs no escape sequence; the structured content keeps the
text as stored (its JSON escapes it)."""

from __future__ import annotations

from pooler.mcp import inventory_models as im
from pooler.store.text import storable


def shown(text: str | None, limit: int = 200) -> str:
    """Typed text as the summary shows it: printable, at most `limit` characters."""
    return storable(text, limit) or ""


def verdict_words(account: im.AccountOut) -> str:
    if not account.verdicts:
        return "in no active Pool"
    return "; ".join(
        f"{v.pool_name}: "
        + ("takes traffic" if v.takes_traffic else ", ".join(r.text for r in v.reasons))
        for v in account.verdicts
    )


def account_line(a: im.AccountOut) -> str:
    quota = ", ".join(f"{q.name} {q.used_percent:.0f}%" for q in a.quota_windows) or "no quota yet"
    return f"{shown(a.label)} ({a.lifecycle}; {quota}): {shown(verdict_words(a), 1000)}"


def accounts_summary(out: im.AccountListOut) -> str:
    more = f" (of {out.matched})" if out.truncated else ""
    lines = [f"{len(out.accounts)} account(s){more}, verdicts from the {out.state_source} state."]
    return "\n".join(lines + [account_line(a) for a in out.accounts[:5]])


def account_summary(out: im.AccountDetailOut) -> str:
    return account_line(out.account) + f" [{out.state_source} state]"


def key_line(k: im.KeyOut) -> str:
    name, pool = shown(k.name), shown(k.pool_name)
    return f"{k.prefix}… {name} ({pool}, {k.status}): {k.requests_24h} requests in 24 h"


def keys_summary(out: im.KeyListOut) -> str:
    more = " (more exist)" if out.truncated else ""
    return "\n".join([f"{len(out.keys)} key(s){more}."] + [key_line(k) for k in out.keys[:5]])


def operator_line(o: im.OperatorOut) -> str:
    pools_text = f", Pools: {shown(', '.join(o.assigned_pools))}" if o.assigned_pools else ""
    totp = "TOTP on" if o.totp_enabled else "TOTP off"
    return f"{shown(o.email)} ({o.role}, {o.status}, {totp}{pools_text})"


def operators_summary(out: im.OperatorListOut) -> str:
    head = f"{len(out.operators)} operator(s){' (more exist)' if out.truncated else ''}."
    return "\n".join([head] + [operator_line(o) for o in out.operators[:5]])


def invite_line(i: im.InviteOut) -> str:
    used = f", used by {shown(i.used_by_account)}" if i.used_by_account else ""
    return f"{shown(i.pool_name)}: {i.status}, expires {i.expires_at:%Y-%m-%d %H:%M} UTC{used}"


def invites_summary(out: im.InviteListOut) -> str:
    head = f"{len(out.invites)} invite(s){' (more exist)' if out.truncated else ''}."
    return "\n".join([head] + [invite_line(i) for i in out.invites[:5]])


def pool_line(p: im.PoolCapacityOut) -> str:
    windows = "; ".join(
        f"{w.name}: {w.remaining_accounts:.2f} of {w.usable_accounts} left"
        + (f", earliest reset {w.earliest_reset:%Y-%m-%d %H:%M} UTC" if w.earliest_reset else "")
        for w in p.windows
    )
    risk = (
        f"; at risk within the hour: {', '.join(shown(r.label) for r in p.at_risk)}"
        if p.at_risk
        else ""
    )
    return (
        f"{p.pool_name} ({p.usable_accounts}/{p.accounts} usable): {windows or 'no figures'}{risk}"
    )


def capacity_summary(out: im.CapacityOut) -> str:
    return "\n".join([pool_line(p) for p in out.pools] or ["No Pool to show."])
