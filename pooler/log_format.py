"""How log lines look: `text` (the default, one human line each) or `json`
(`CODEX_POOLER_LOG_FORMAT=json`): one JSON object a line, with `time` (UTC, ISO 8601),
`level`, `logger` and `message`, the request line's fields as fields of their own (method,
route, status, duration_ms, account_label, request_id; pooler.web.request_record.log_line),
and an exception as one escaped `exception` field. Only what the text line says: never a
body, a prompt, a key or a token.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

# The one line each answered request gets (pooler.web.request_record.log_line): its logger,
# and its arguments in order, each its own field in JSON.
REQUEST_LOG_NAME: Final = "pooler.requests"
REQUEST_LOG_FIELDS: Final = (
    "method",
    "route",
    "status",
    "duration_ms",
    "account_label",
    "request_id",
)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# logging.Formatter's default_time_format and default_msec_format
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_MSEC_FORMAT: Final = "%s,%03d"


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, its time (`asctime`) worked out once per second: `Formatter.formatTime`
    calls `localtime` and `strftime` for every line, and a request line is written per
    request. The same text: the part that changes within a second is the milliseconds."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")  # one tuple: read and replaced at once

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime(_TIME_FORMAT, self.converter(record.created))
            self._second = (second, text)
        return _MSEC_FORMAT % (text, record.msecs)


# json.dumps(line, default=str) with the encoder built once: `dumps` builds a new
# JSONEncoder on every call that passes an argument. The same options, the same text.
_ENCODER: Final = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args if record.name == REQUEST_LOG_NAME else None
        if isinstance(args, tuple) and len(args) == len(REQUEST_LOG_FIELDS):
            line.update(zip(REQUEST_LOG_FIELDS, args, strict=True))
            line["duration_ms"] = round(float(line["duration_ms"]), 1)
            if line["account_label"] == "-":
                line["account_label"] = None
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(line)


def apply_log_format(log_format: str) -> None:
    """Give the root logger's handlers the chosen format (`configure_logging` made them)."""
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
