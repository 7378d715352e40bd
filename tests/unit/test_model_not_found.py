"""The unknown-model error, the emulator's refusals of malformed bodies, and the demo
banner's model (issue 11, items 12 and 13)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from pooler.cli.demo import demo_banner
from pooler.config import Config
from pooler.emulator.inbound import validate_http, validate_shape
from pooler.emulator.models import CODEX_CLI_MODEL, CODEX_CLI_VERSION, MODEL_SLUGS
from pooler.errors import BadRequest, ModelNotFound
from pooler.web.catalog import AccountCatalog, merge


def test_model_not_found_names_the_model_and_what_is_served() -> None:
    error = ModelNotFound("gpt-nope", ["gpt-5.5", "gpt-5.4"])
    assert isinstance(error, BadRequest) and error.status == 400
    body = error.body()["error"]
    assert body["type"] == "invalid_request_error"
    assert (body["code"], body["param"]) == ("model_not_found", "model")
    assert "'gpt-nope'" in body["message"] and "gpt-5.5, gpt-5.4" in body["message"]
    assert error.retry_after is None  # not worth retrying: no Retry-After


def test_model_not_found_bounds_what_it_echoes() -> None:
    error = ModelNotFound("x" * 10_000, [f"m{i}" for i in range(500)])
    assert len(error.message) < 1_000
    assert error.message.endswith(", ....")


def test_merged_catalog_knows_served_scopes_and_listed_slugs() -> None:
    merged = merge(
        [
            AccountCatalog(({"slug": "GPT-5.5"}, {"slug": "internal", "visibility": "none"}), None),
            AccountCatalog(({"slug": "gpt-5.4", "visibility": "hide"},), None),
        ]
    )
    assert merged.scopes == frozenset({"GPT-5.5", "gpt5.5", "internal", "gpt-5.4", "gpt5.4"})
    assert merged.listed == ("GPT-5.5", "gpt-5.4")


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "input": "hi", "stream": True, **fields}


@pytest.mark.parametrize(
    ("fields", "param", "code", "words"),
    [
        ({"input": 5}, "input", "invalid_type", "but got integer instead"),
        ({"input": {"a": 1}}, "input", "invalid_type", "but got object instead"),
        ({"tools": {"type": "function"}}, "tools", "invalid_type", "expected an array"),
        ({"tools": "x"}, "tools", "invalid_type", "but got string instead"),
        ({"model": 5}, "model", "invalid_type", "but got integer instead"),
        ({"model": None}, "model", "invalid_type", "but got null instead"),
        ({"instructions": True}, "instructions", "invalid_type", "but got boolean instead"),
    ],
)
def test_emulator_refuses_malformed_bodies(
    fields: dict[str, Any], param: str, code: str, words: str
) -> None:
    refused = validate_http(body(**fields))
    assert refused is not None and refused.status == 400
    assert (refused.error["param"], refused.code) == (param, code)
    assert refused.error["type"] == "invalid_request_error"
    assert words in refused.error["message"]


def test_emulator_refuses_a_body_without_model() -> None:
    refused = validate_shape({"input": "hi"})
    assert refused is not None and refused.code == "missing_required_parameter"
    assert refused.error["param"] == "model"


def test_emulator_accepts_well_formed_bodies() -> None:
    assert validate_shape(body()) is None
    assert validate_shape(body(input=[], tools=[], instructions=None)) is None


def test_demo_banner_names_a_served_model_and_the_tested_cli(tmp_path: Any) -> None:
    config = Config(
        tmp_path,
        None,
        b"k" * 32,
        b"u" * 32,
        (),
        "http://u",
        "http://a",
        "127.0.0.1",
        0,
        "all",
        "info",
    )
    banner = demo_banner("127.0.0.1:4000", "http://127.0.0.1:1", "sk-cxp-x", config)
    line = next(x for x in banner.splitlines() if x.strip().startswith("codex exec"))
    words = shlex.split(line.rstrip(" \\"))
    assert words[words.index("-m") + 1] == CODEX_CLI_MODEL
    assert CODEX_CLI_MODEL in MODEL_SLUGS
    assert f"npm install -g @openai/codex@{CODEX_CLI_VERSION}" in banner
