"""The JSON log format (pooler.log_format): one object a line, the request line's fields
named, an exception as one escaped field."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from pooler.config import ConfigError, load_config
from pooler.log_format import REQUEST_LOG_NAME, JsonFormatter
from pooler.web.request_record import RequestRecord, log_line


def capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


async def test_the_request_line_has_its_fields() -> None:
    logger, out = capture(REQUEST_LOG_NAME)
    try:
        record = RequestRecord("req_1", "responses", "websocket")
        record.finish(200, "completed")
        record.duration_ms = 12.345
        log_line(record)
        record.account_label = "acct-a"
        log_line(record)
    finally:
        logger.handlers, logger.propagate = [], True
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["method"] == "WS" and first["route"] == "responses"
    assert first["status"] == 200 and first["duration_ms"] == 12.3
    assert first["account_label"] is None and second["account_label"] == "acct-a"
    assert first["request_id"] == "req_1" and first["level"] == "info"
    assert first["message"] == "WS responses 200 12ms account=- id=req_1"


def test_an_exception_is_one_escaped_field() -> None:
    logger, out = capture("pooler.test_log_format")
    try:
        try:
            raise ValueError("broken\nacross lines \x1b[31m")
        except ValueError:
            logger.exception("it failed:\n%s", "\x1b]0;title\x07")
    finally:
        logger.handlers, logger.propagate = [], True
    [line] = out.getvalue().splitlines()
    assert "\x1b" not in line and "\x07" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "pooler.test_log_format"
    assert entry["message"] == "it failed:\n\x1b]0;title\x07"
    assert entry["exception"].startswith("Traceback") and "ValueError: broken" in entry["exception"]


def test_a_bad_log_format_is_refused(tmp_path: Path) -> None:
    env = {"CODEX_POOLER_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="CODEX_POOLER_LOG_FORMAT must be one of text, json"):
        load_config({**env, "CODEX_POOLER_LOG_FORMAT": "xml"})
