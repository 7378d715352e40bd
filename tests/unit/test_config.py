"""Process configuration: the secrets every node must share, and one clear error for a
missing or malformed one (the CLI prints it as one line)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from pooler.config import ConfigError, load_config

URL = "postgresql://db.example/pooler"


def key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_a_shared_database_requires_the_key_secret(tmp_path: Path) -> None:
    env = {"DATABASE_URL": URL, "CODEX_POOLER_UPSTREAM_SECRET_KEY": key_b64()}
    with pytest.raises(ConfigError, match="CODEX_POOLER_SECRET_KEY is required"):
        load_config({**env, "CODEX_POOLER_DATA_DIR": str(tmp_path)})
    assert not (tmp_path / "secret_key").exists()  # no per-node secret generated


def test_nodes_with_separate_data_dirs_share_the_key_secret(tmp_path: Path) -> None:
    secret = os.urandom(32)
    env = {
        "DATABASE_URL": URL,
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(secret).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": key_b64(),
    }
    first = load_config({**env, "CODEX_POOLER_DATA_DIR": str(tmp_path / "a")})
    second = load_config({**env, "CODEX_POOLER_DATA_DIR": str(tmp_path / "b")})
    assert first.secret_key == second.secret_key == secret  # decoded like the other keys


@pytest.mark.parametrize(
    "text", ["0123456789abcdef0123456789abcdef", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
)
def test_the_key_secret_is_32_bytes_raw_or_base64(text: str, tmp_path: Path) -> None:
    env = {"CODEX_POOLER_DATA_DIR": str(tmp_path), "CODEX_POOLER_SECRET_KEY": text}
    assert load_config(env).secret_key == b"0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "name",
    [
        "CODEX_POOLER_SECRET_KEY",
        "CODEX_POOLER_UPSTREAM_SECRET_KEY",
        "CODEX_POOLER_UPSTREAM_SECRET_KEYS_OLD",
    ],
)
def test_a_malformed_key_names_its_variable(name: str, tmp_path: Path) -> None:
    env = {"CODEX_POOLER_DATA_DIR": str(tmp_path), name: "not-a-key"}
    with pytest.raises(ConfigError, match=f"^{name} must be 32 bytes, raw or base64$"):
        load_config(env)


def test_embedded_mode_generates_and_keeps_its_secrets(tmp_path: Path) -> None:
    first = load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path)})
    again = load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path)})
    assert len(first.secret_key) == len(first.upstream_secret_key) == 32
    assert (again.secret_key, again.upstream_secret_key) == (
        first.secret_key,
        first.upstream_secret_key,
    )
    (tmp_path / "secret_key").write_text("garbage")
    with pytest.raises(ConfigError, match="secret_key must hold a 32-byte key"):
        load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CODEX_POOLER_HTTP_PORT", "http"),
        ("CODEX_POOLER_LOG_LEVEL", "loud"),
        ("CODEX_POOLER_ROLE", "gateway"),
    ],
)
def test_other_malformed_settings_name_their_variable(
    name: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path), name: value})


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "3601", ""])
def test_a_bad_drain_time_names_its_variable(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^CODEX_POOLER_DRAIN_SECONDS must be a number"):
        load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path), "CODEX_POOLER_DRAIN_SECONDS": value})


def test_the_drain_time_defaults_to_30_seconds(tmp_path: Path) -> None:
    assert load_config({"CODEX_POOLER_DATA_DIR": str(tmp_path)}).drain_seconds == 30.0
    env = {"CODEX_POOLER_DATA_DIR": str(tmp_path), "CODEX_POOLER_DRAIN_SECONDS": " 7.5 "}
    assert load_config(env).drain_seconds == 7.5


@pytest.mark.parametrize(("text", "role"), [("", "all"), ("web", "web"), (" Worker ", "worker")])
def test_the_role_is_one_of_four(text: str, role: str, tmp_path: Path) -> None:
    env = {"CODEX_POOLER_DATA_DIR": str(tmp_path), "CODEX_POOLER_ROLE": text}
    assert load_config(env).role == role
