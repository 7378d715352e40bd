"""Codex-shaped `auth.json` files for the fake accounts (protocol §6.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pooler.emulator.accounts import FakeAccount
from pooler.emulator.state import EmulatorState


def auth_json_for(account: FakeAccount) -> dict[str, Any]:
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": account.id_token,
            "access_token": account.access_token,
            "refresh_token": account.refresh_token,
            "account_id": account.account_id,
        },
        "last_refresh": account.last_refresh,
    }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def write_auth_json_files(state: EmulatorState, directory: Path) -> list[Path]:
    """`directory/account-{i}/auth.json` for every account (mode 0600), current tokens."""
    paths = []
    for account in state.accounts:
        folder = directory / account.label
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / "auth.json"
        _write_private(path, json.dumps(auth_json_for(account), indent=2) + "\n")
        paths.append(path)
    return paths
