"""Log lines on stderr (pooler.log_output): request lines reach it in batches, not one
write(2) each; every line still arrives, in order, the same text as the standard handler
writes, and none is lost when the process ends (normally, by an exception or SystemExit)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

from pooler.log_format import REQUEST_LOG_NAME, TEXT_FORMAT, JsonFormatter, TextFormatter
from pooler.log_output import StderrHandler, skip_unused_record_fields
from pooler.web.request_record import RequestRecord, log_line

LINES = 1000


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def record_fields_skipped() -> Iterator[None]:
    """The CLI's process-wide switches, restored afterwards."""
    saved = (
        logging._srcfile,
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
    )
    skip_unused_record_fields()
    try:
        yield
    finally:
        (
            logging._srcfile,
            logging.logThreads,
            logging.logProcesses,
            logging.logMultiprocessing,
        ) = saved


def attached(name: str, *handlers: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = list(handlers)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def detach(logger: logging.Logger) -> None:
    logger.handlers, logger.propagate = [], True
    logger.setLevel(logging.NOTSET)


async def a_record() -> RequestRecord:
    record = RequestRecord("req_1", "responses", "http")
    record.finish(200, "completed")
    record.account_label = "acct-a"
    return record


@pytest.mark.parametrize("json_format", [False, True])
def test_the_same_lines_as_the_standard_handler_in_the_same_order(
    json_format: bool, record_fields_skipped: None
) -> None:
    standard_out, ours_out = io.StringIO(), io.StringIO()
    standard, ours = logging.StreamHandler(standard_out), StderrHandler(ours_out)
    standard.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    ours.setFormatter(JsonFormatter() if json_format else TextFormatter())
    requests = attached(REQUEST_LOG_NAME, standard, ours)
    other = attached("pooler.test_log_output", standard, ours)
    record = trio.run(a_record)
    try:
        log_line(record)
        other.info("started")
        log_line(record)
        log_line(record)
        other.warning("a warning")
        log_line(record)
        try:
            raise ValueError("broken")
        except ValueError:
            other.exception("it failed")
        log_line(record)
        ours.flush()
    finally:
        detach(requests)
        detach(other)
    assert ours_out.getvalue() == standard_out.getvalue()
    lines = ours_out.getvalue().splitlines()
    assert sum(1 for line in lines if "req_1" in line) == 5
    assert "Traceback" in ours_out.getvalue() and "ValueError: broken" in ours_out.getvalue()


def test_the_text_time_worked_out_once_a_second_is_the_same_text() -> None:
    standard, ours = logging.Formatter(TEXT_FORMAT), TextFormatter()
    record = logging.makeLogRecord({"name": REQUEST_LOG_NAME, "msg": "a line"})
    start = 1_796_000_000.0
    for offset in (0.0, 0.0004, 0.5, 0.9995, 0.99999, 1.0, 1.001, 59.999, 60.0, 3600.25, -86400.7):
        record.created = start + offset
        record.msecs = (record.created - int(record.created)) * 1000
        assert ours.format(record) == standard.format(record)


def test_a_json_line_is_what_json_dumps_writes() -> None:
    record = logging.makeLogRecord(
        {
            "name": REQUEST_LOG_NAME,
            "msg": "%s %s %d %.0fms account=%s id=%s",
            "args": ("POST", "responses", 200, 12.34, 'compte-été "a"', "req_1"),
        }
    )
    line = JsonFormatter().format(record)
    assert line == json.dumps(json.loads(line), default=str)
    assert "\\u00e9" in line and json.loads(line)["account_label"] == 'compte-été "a"'


def test_request_lines_are_written_together_not_one_write_each() -> None:
    out = CountingStream()
    handler = StderrHandler(out)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logger = attached(REQUEST_LOG_NAME, handler)
    record = trio.run(a_record)
    try:
        for _ in range(LINES):
            log_line(record)
        handler.flush()
    finally:
        detach(logger)
    assert out.getvalue().count("\n") == LINES
    assert out.writes < LINES / 10  # the standard handler: LINES writes


async def test_held_lines_arrive_without_a_flush() -> None:
    out = io.StringIO()
    handler = StderrHandler(out)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logger = attached(REQUEST_LOG_NAME, handler)
    record = await a_record()
    try:
        for _ in range(3):
            log_line(record)
        with trio.fail_after(10):
            while out.getvalue().count("\n") < 3:
                await trio.sleep(0.01)
    finally:
        detach(logger)


ENDINGS = {
    "normal": "pass",
    "exception": "raise RuntimeError('the end')",
    "exit": "raise SystemExit(3)",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_no_line_is_lost_when_the_process_ends(ending: str) -> None:
    script = f"""
import logging
from pooler.cli.main import configure_logging
configure_logging()
requests = logging.getLogger({REQUEST_LOG_NAME!r})
for i in range({LINES}):
    requests.info("%s %s %d %.0fms account=%s id=%s", "POST", "responses", 200, 1.0, "-", i)
logging.getLogger("pooler.test").info("last words")
for i in range({LINES}, {LINES} + 3):
    requests.info("%s %s %d %.0fms account=%s id=%s", "POST", "responses", 200, 1.0, "-", i)
{ENDINGS[ending]}
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == {"normal": 0, "exception": 1, "exit": 3}[ending], done.stderr
    ids = [
        int(line.rsplit("id=", 1)[1])
        for line in done.stderr.splitlines()
        if "pooler.requests: POST responses 200 1ms account=- id=" in line
    ]
    assert ids == list(range(LINES + 3))
    lines = done.stderr.splitlines()
    last_words = next(i for i, line in enumerate(lines) if line.endswith("last words"))
    assert lines[last_words - 1].endswith(f"id={LINES - 1}")
    assert lines[last_words + 1].endswith(f"id={LINES}")
