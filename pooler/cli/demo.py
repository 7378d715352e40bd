"""`pooler demo`: seed a Pool with the emulator's accounts and print how to use it."""

from __future__ import annotations

import contextlib

from pooler.client_snippets import CURL_BODY
from pooler.config import Config
from pooler.crypto import Keyring
from pooler.emulator.authjson import auth_json_for
from pooler.emulator.models import CODEX_CLI_MODEL, CODEX_CLI_VERSION
from pooler.emulator.state import EmulatorState
from pooler.store import accounts, keys, pools
from pooler.store.common import ConflictError, Conn

DEMO_POOL = "demo"


def seed_demo(conn: Conn, *, config: Config, state: EmulatorState) -> str:
    """Create (or refresh) the demo Pool and its three accounts; returns a new raw key."""
    with contextlib.suppress(ConflictError):
        pools.create_pool(conn, DEMO_POOL, actor="demo")
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    for account in state.accounts:
        accounts.import_account(
            conn, keyring, DEMO_POOL, auth_json_for(account), account.label, actor="demo"
        )
    raw, _ = keys.create_key(conn, config.secret_key, DEMO_POOL, "demo", actor="demo")
    return raw


def codex_provider(base_url: str) -> str:
    return (
        f'model_providers.pooler={{name="OpenAI",base_url="{base_url}/backend-api/codex",'
        'env_key="CODEX_POOLER_API_KEY",wire_api="responses",supports_websockets=false}'
    )


def demo_banner(address: str, emulator_url: str, raw_key: str, config: Config) -> str:
    base = f"http://{address}"
    return "\n".join(
        [
            f"Codex Pooler demo: gateway on {base}, fake Codex upstream on {emulator_url}",
            f"Data directory: {config.data_dir}",
            "Pool 'demo' with 3 emulated accounts. Pool API key (shown once):",
            "",
            f"  export CODEX_POOLER_API_KEY={raw_key}",
            "",
            f"Ask the Codex CLI through the gateway (tested with {CODEX_CLI_VERSION}:"
            f" npm install -g @openai/codex@{CODEX_CLI_VERSION}):",
            "",
            f"  codex exec --skip-git-repo-check -m {CODEX_CLI_MODEL} -c model_provider=pooler \\",
            f"    -c '{codex_provider(base)}' \\",
            "    'Reply with exactly: hello from the pool' </dev/null",
            "",
            "Or with curl:",
            "",
            f"  curl -N {base}/backend-api/codex/responses \\",
            '    -H "Authorization: Bearer $CODEX_POOLER_API_KEY" \\',
            "    -H 'Content-Type: application/json' \\",
            f"    -d '{CURL_BODY}'",
            "",
            "Press Ctrl-C to stop.",
        ]
    )
