"""The service layer shared by the CLI, the admin pages and the gateway.

Plain synchronous functions taking a `psycopg.Connection` in a transaction; run them through
`Database.run(lambda conn: store.create_pool(conn, "team"))` (or `run_sync` in the CLI).
They return frozen dataclasses (`pooler.store.models`) and raise `StoreError` subclasses for
refusals an operator should see. Configuration changes write an `audit_events` row and
NOTIFY `pooler_config` in the same transaction; runtime writes (tokens, quota, continuity)
announce themselves on their own channels; request logs are silent.
"""

from pooler.store.accounts import (
    LIFECYCLES,
    OPERATOR_MOVES,
    delete_account,
    get_account,
    import_account,
    list_accounts,
    parse_auth_json,
    pause_account,
    quota_by_account,
    resolve_account,
    resume_account,
    set_lifecycle,
    upsert_quota_windows,
)
from pooler.store.audit import list_audit_events
from pooler.store.common import (
    CONFIG_CHANNEL,
    CONTINUITY_CHANNEL,
    QUOTA_CHANNEL,
    TOKENS_CHANNEL,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from pooler.store.continuity import (
    delete_expired_continuity_pins,
    load_continuity_pins,
    upsert_continuity_pins,
)
from pooler.store.credentials import (
    account_refresh_lock,
    load_account_credentials,
    reencrypt_all_secrets,
    store_refreshed_tokens,
)
from pooler.store.keys import create_key, list_keys, mark_keys_used, revoke_key
from pooler.store.logs import (
    attempts_for,
    count_request_logs,
    delete_request_logs_before,
    insert_attempts,
    insert_request_logs,
    recent_request_logs,
)
from pooler.store.mcp_tokens import (
    create_mcp_token,
    find_mcp_token,
    list_mcp_tokens,
    revoke_mcp_token,
)
from pooler.store.models import (
    Account,
    AccountView,
    ApiKey,
    Assignment,
    AssignmentEntry,
    AttemptRow,
    AuditEvent,
    ContinuityPin,
    Credentials,
    KeyEntry,
    McpToken,
    Operator,
    Pool,
    QuotaWindow,
    QuotaWindowRow,
    RequestLogRow,
    RuntimeAccount,
    RuntimeSnapshot,
)
from pooler.store.operators import (
    create_operator,
    create_owner,
    list_operators,
    verify_operator_password,
)
from pooler.store.pools import (
    STRATEGIES,
    create_pool,
    get_pool,
    list_pools,
    set_assignment,
    update_pool,
)
from pooler.store.refresh import RefreshOutcome, refresh_account_now
from pooler.store.runtime import load_runtime_snapshot

__all__ = [
    "CONFIG_CHANNEL",
    "CONTINUITY_CHANNEL",
    "LIFECYCLES",
    "OPERATOR_MOVES",
    "QUOTA_CHANNEL",
    "STRATEGIES",
    "TOKENS_CHANNEL",
    "Account",
    "AccountView",
    "ApiKey",
    "Assignment",
    "AssignmentEntry",
    "AttemptRow",
    "AuditEvent",
    "ConflictError",
    "ContinuityPin",
    "Credentials",
    "InvalidInputError",
    "KeyEntry",
    "McpToken",
    "NotFoundError",
    "Operator",
    "Pool",
    "QuotaWindow",
    "QuotaWindowRow",
    "RefreshOutcome",
    "RequestLogRow",
    "RuntimeAccount",
    "RuntimeSnapshot",
    "StoreError",
    "account_refresh_lock",
    "attempts_for",
    "count_request_logs",
    "create_key",
    "create_mcp_token",
    "create_operator",
    "create_owner",
    "create_pool",
    "delete_account",
    "delete_expired_continuity_pins",
    "delete_request_logs_before",
    "find_mcp_token",
    "get_account",
    "get_pool",
    "import_account",
    "insert_attempts",
    "insert_request_logs",
    "list_accounts",
    "list_audit_events",
    "list_keys",
    "list_mcp_tokens",
    "list_operators",
    "list_pools",
    "load_account_credentials",
    "load_continuity_pins",
    "load_runtime_snapshot",
    "mark_keys_used",
    "parse_auth_json",
    "pause_account",
    "quota_by_account",
    "recent_request_logs",
    "reencrypt_all_secrets",
    "refresh_account_now",
    "resolve_account",
    "resume_account",
    "revoke_key",
    "revoke_mcp_token",
    "set_assignment",
    "set_lifecycle",
    "store_refreshed_tokens",
    "update_pool",
    "upsert_continuity_pins",
    "upsert_quota_windows",
    "verify_operator_password",
]
