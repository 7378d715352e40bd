"""The fake model catalog served on `GET /backend-api/codex/models` (protocol §1.5)."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

_LEVELS = [
    {"effort": "low", "description": "Fast responses with lighter reasoning"},
    {"effort": "medium", "description": "Balances speed and reasoning depth"},
    {"effort": "high", "description": "Greater reasoning depth for complex problems"},
    {"effort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
]


def model_info(
    slug: str, display_name: str, priority: int, *, visible: bool = True
) -> dict[str, Any]:
    """One ModelInfo with every field the Codex CLI requires, plus the common optional ones."""
    return {
        "slug": slug,
        "display_name": display_name,
        "description": f"{display_name} served by the Codex emulator.",
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": _LEVELS,
        "shell_type": "shell_command",
        "visibility": "list" if visible else "hide",
        "supported_in_api": True,
        "priority": priority,
        "upgrade": None,
        "base_instructions": "You are Codex, a coding agent running in the Codex emulator.",
        "supports_reasoning_summaries": True,
        "support_verbosity": True,
        "default_verbosity": "low",
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": True,
        "experimental_supported_tools": [],
        "context_window": 272000,
        "effective_context_window_percent": 95,
        "input_modalities": ["text", "image"],
    }


# The Codex CLI the catalog was checked against, and the model it asks for when none is
# configured (its bundled presets; 0.171.0 asks for gpt-6.2-sol). `pooler demo` prints both.
CODEX_CLI_VERSION = "0.169.0"
CODEX_CLI_MODEL = "gpt-6.1-sol"

MODELS: list[dict[str, Any]] = [
    # What current Codex CLIs pick by default: a CLI asking for a model no account lists is
    # refused (model_not_found), so the fake backend serves them as the real one does.
    model_info("gpt-6.2-sol", "GPT-6.2-Sol", 0),
    model_info(CODEX_CLI_MODEL, "GPT-6.1-Sol", 1),
    model_info("gpt-6.1-terra", "GPT-6.1 Terra", 2),
    model_info("gpt-5.5", "GPT-5.5", 3),
    model_info("gpt-5.4", "GPT-5.4", 4),
    model_info("gpt-5.4-mini", "GPT-5.4 mini", 5),
    model_info("gpt-5.3-codex", "GPT-5.3 Codex", 6, visible=False),
    # Served with its own limit family on the real backend (`x-codex-bengalfox-*`).
    model_info("gpt-5.3-codex-spark", "GPT-5.3-Codex-Spark", 7),
]
MODEL_SLUGS = frozenset(m["slug"] for m in MODELS)

MODELS_BODY = json.dumps({"models": MODELS}, separators=(",", ":")).encode()
MODELS_ETAG = '"' + hashlib.sha256(MODELS_BODY).hexdigest()[:32] + '"'

_BY_SLUG = {str(m["slug"]): m for m in MODELS}


def catalog_for(slugs: tuple[str, ...] | None) -> tuple[bytes, str]:
    """The `/models` body and its ETag for an account serving `slugs` (None: the default
    catalog). A slug outside the default catalog gets a generated ModelInfo."""
    if slugs is None:
        return MODELS_BODY, MODELS_ETAG
    return _catalog_for(slugs)


@lru_cache(maxsize=64)
def _catalog_for(slugs: tuple[str, ...]) -> tuple[bytes, str]:
    models = [_BY_SLUG.get(slug) or model_info(slug, slug, 10 + i) for i, slug in enumerate(slugs)]
    body = json.dumps({"models": models}, separators=(",", ":")).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def model_not_found(model: str) -> tuple[int, str, str]:
    """What the backend answers a turn for a model the account cannot use: (status, code,
    message). The exact real body is not captured (protocol §4.2: a 400 is fatal)."""
    return (
        400,
        "model_not_found",
        f"The model `{model}` does not exist or you do not have access to it.",
    )
