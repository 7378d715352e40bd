"""Who writes the held request lines (issue 17): while lines keep coming, the thread that
logs them does, each time the first one held is HOLD_S old, so the flusher thread does
not take the GIL from the event loop to write them; the last lines of a burst are still
written without a flush (test_log_output.py)."""

from __future__ import annotations

import io
import logging
import threading

from pooler.log_format import REQUEST_LOG_NAME, TEXT_FORMAT
from pooler.log_output import HOLD_S, StderrHandler

LINES = 1000
STEP_S = 0.001  # the virtual time between two request lines


class ThreadNotingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writers: list[str] = []

    def write(self, text: str) -> int:
        self.writers.append(threading.current_thread().name)
        return super().write(text)


def test_lines_that_keep_coming_are_written_by_the_thread_that_logs_them() -> None:
    now = [0.0]
    out = ThreadNotingStream()
    handler = StderrHandler(out, clock=lambda: now[0])
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger(REQUEST_LOG_NAME)
    saved = logger.handlers, logger.propagate, logger.level
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        for i in range(LINES):
            logger.info("%s %s %d %.0fms account=%s id=%s", "POST", "responses", 200, 1.0, "-", i)
            now[0] += STEP_S
        by_logger = out.writers.count(threading.current_thread().name)
        expected = int(LINES * STEP_S / HOLD_S)  # one write per HOLD_S of lines
        assert by_logger >= expected - 1, out.writers
        assert len(out.writers) <= expected + 1, out.writers
        handler.flush()
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
        handler.close()
    ids = [int(line.rsplit("id=", 1)[1]) for line in out.getvalue().splitlines()]
    assert ids == list(range(LINES))
