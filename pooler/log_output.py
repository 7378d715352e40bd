"""Where log lines go and when: stderr, the request lines a little late (issue 17).

Every answered request logs one INFO line (pooler.web.request_record.log_line). Written
as the standard StreamHandler writes, each line is one write(2) to stderr (a pipe to the
container's log driver, usually): about half of what the line costs. `StderrHandler`
holds the request lines and writes them together, at most `HOLD_S` after the first one
held (a thread of its own flushes), or sooner when `HOLD_BYTES` are held. Every other
record (start-up, warnings, errors, exceptions) is written at once, after the lines
held before it, so the order of lines never changes and nothing but a request line
waits.

Nothing is lost on the way out: `logging.shutdown` (registered by `logging` with
`atexit`, so it runs on a normal exit, an unhandled exception, SystemExit and Ctrl-C)
flushes every handler, and `close` flushes too; an uncaught exception's traceback comes
after the lines held before it (`flush_before_tracebacks`). Only a process killed outright (SIGKILL,
the OOM killer, a crash of the interpreter) loses the request lines of its last `HOLD_S`,
as it would lose any in-memory work.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from types import TracebackType
from typing import Final, TextIO

from pooler.log_format import REQUEST_LOG_NAME

HOLD_S: Final = 0.1
HOLD_BYTES: Final = 64 * 1024


class StderrHandler(logging.Handler):
    """Writes formatted records to `stream` (stderr when None), the request lines held."""

    terminator = "\n"

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._held: list[str] = []
        self._held_bytes = 0
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def stream(self) -> TextIO:
        # sys.stderr at the time of writing, as logging.lastResort does: a test (or a
        # daemonising wrapper) that swaps it is followed.
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
            if record.name != REQUEST_LOG_NAME or record.levelno > logging.INFO:
                self._held.append(line)
                self._write_held()
                return
            self._held.append(line)
            self._held_bytes += len(line)
            if self._held_bytes >= HOLD_BYTES:
                self._write_held()
            elif not self._wake.is_set():
                self._wake.set()
                if self._flusher is None:
                    self._start_flusher()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_held()
        finally:
            self.release()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()

    def _write_held(self) -> None:
        """Write what is held as one write (the caller holds the lock)."""
        if not self._held:
            return
        data = "".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        stream = self.stream
        stream.write(data)
        stream.flush()

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(
            target=self._flush_held, name="pooler-log-flush", daemon=True
        )
        self._flusher.start()

    def _flush_held(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(HOLD_S)  # the lines of the next HOLD_S go in the same write
            self.acquire()
            try:
                self._wake.clear()
                self._write_held()
            except Exception:  # a closed or broken stderr: nothing to report it on
                self._held.clear()
                self._held_bytes = 0
            finally:
                self.release()


def skip_unused_record_fields() -> None:
    """Stop `logging` from finding each record's caller (a walk up the stack), thread
    and process: neither format (pooler.log_format) prints them. The switches the
    logging HOWTO documents under "Optimization"; process-wide, so only the CLI sets them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def flush_before_tracebacks() -> None:
    """Write the held lines before Python prints an uncaught exception's traceback (to
    stderr, not through logging), so a crash reads in the order things happened."""
    previous = sys.excepthook

    def hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        previous(kind, value, traceback)

    sys.excepthook = hook
