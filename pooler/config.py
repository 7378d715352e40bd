"""Process configuration from the environment (DESIGN §6).

Everything else is an instance setting in the database.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pooler.roles import ROLES

DEFAULT_DATA_DIR = "~/.local/share/codex-pooler"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """The environment does not configure a working process; the message names the variable
    and what it needs (the CLI prints it as one line)."""


def data_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("CODEX_POOLER_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()


def _read_or_create_secret(path: Path, nbytes: int) -> bytes:
    """A random secret kept in the data dir (mode 0600), created on first use."""
    if path.exists():
        try:
            return decode_key(path.read_text().strip())
        except ValueError:
            raise ConfigError(f"{path} must hold a 32-byte key, raw or base64") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(raw).decode())
    return raw


def decode_key(text: str) -> bytes:
    """A 32-byte key given raw (32 chars) or base64 / urlsafe base64."""
    text = text.strip()
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(text + "=" * (-len(text) % 4))
        except ValueError:
            continue
        if len(raw) == 32:
            return raw
    if len(text.encode()) == 32:
        return text.encode()
    raise ValueError("a secret key must be 32 bytes, raw or base64")


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database_url: str | None
    secret_key: bytes
    upstream_secret_key: bytes
    upstream_secret_keys_old: tuple[bytes, ...]
    upstream_base_url: str
    auth_base_url: str
    host: str
    port: int
    role: str
    log_level: str
    log_format: str = "text"  # text | json (pooler.log_format)
    extra: dict[str, str] = field(default_factory=dict)
    drain_seconds: float = 30.0  # after SIGTERM, how long requests in flight may finish

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def _decoded(name: str, text: str) -> bytes:
    try:
        return decode_key(text)
    except ValueError:
        raise ConfigError(f"{name} must be 32 bytes, raw or base64") from None


def _node_secret(env: dict[str, str], name: str, generated: Path, shared: bool) -> bytes:
    """A secret every node must share: from `name`, else (one node, embedded database)
    generated into the data dir. With a shared database a generated secret would differ
    per node, so it is required."""
    if env.get(name, "").strip():
        return _decoded(name, env[name])
    if shared:
        raise ConfigError(
            f"{name} is required when DATABASE_URL is set (the same on every node;"
            " 32 bytes, raw or base64: openssl rand -base64 32)"
        )
    return _read_or_create_secret(generated, 32)


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"CODEX_POOLER_HTTP_PORT must be a port number, not {text!r}")
    return int(text)


def _role(text: str) -> str:
    if text.strip().lower() not in ROLES:
        raise ConfigError(f"CODEX_POOLER_ROLE must be one of {', '.join(ROLES)}")
    return text.strip().lower()


def _log_level(text: str) -> str:
    if text.strip().lower() not in LOG_LEVELS:
        raise ConfigError(f"CODEX_POOLER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    return text.strip().lower()


def _log_format(text: str) -> str:
    if text.strip().lower() not in LOG_FORMATS:
        raise ConfigError(
            f"CODEX_POOLER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {text[:40]!r}"
        )
    return text.strip().lower()


def _drain_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:  # also refuses nan and inf
        raise ConfigError(
            f"CODEX_POOLER_DRAIN_SECONDS must be a number of seconds from 0 to 3600, not {text!r}"
        )
    return seconds


def load_config(environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    data_dir = data_dir_from_env(env)
    database_url = env.get("DATABASE_URL") or None
    shared = database_url is not None
    secret_key = _node_secret(env, "CODEX_POOLER_SECRET_KEY", data_dir / "secret_key", shared)
    upstream_key = _node_secret(
        env, "CODEX_POOLER_UPSTREAM_SECRET_KEY", data_dir / "upstream_secret_key", shared
    )
    old = tuple(
        _decoded("CODEX_POOLER_UPSTREAM_SECRET_KEYS_OLD", part)
        for part in env.get("CODEX_POOLER_UPSTREAM_SECRET_KEYS_OLD", "").split(",")
        if part.strip()
    )
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        secret_key=secret_key,
        upstream_secret_key=upstream_key,
        upstream_secret_keys_old=old,
        upstream_base_url=env.get("CODEX_POOLER_UPSTREAM_BASE_URL", "https://chatgpt.com").rstrip(
            "/"
        ),
        auth_base_url=env.get("CODEX_POOLER_AUTH_BASE_URL", "https://auth.openai.com").rstrip("/"),
        host=env.get("CODEX_POOLER_HOST", "127.0.0.1"),
        port=_port(env.get("CODEX_POOLER_HTTP_PORT", "4000")),
        role=_role(env.get("CODEX_POOLER_ROLE") or "all"),
        log_level=_log_level(env.get("CODEX_POOLER_LOG_LEVEL", "info")),
        log_format=_log_format(env.get("CODEX_POOLER_LOG_FORMAT", "text")),
        drain_seconds=_drain_seconds(env.get("CODEX_POOLER_DRAIN_SECONDS", "30")),
    )
