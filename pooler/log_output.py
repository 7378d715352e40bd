"""Where log lines go and when: stderr, the request lines a little late (issue 17).

Every answered request logs one INFO line (pooler.web.request_record.log_line). Written
as the standard StreamHandler writes, each line is one write(2) to stderr (a pipe to the
container's log driver, usually): about half of what the line costs. `StderrHandler`
holds the request lines and writes them together: the line that finds the first one
held `HOLD_S` ago (or `HOLD_BYTES` held) writes them all, in the thread that logs it.
Every other record (start-up, warnings, errors, exceptions) is written at once, after
the lines held before it, so the order of lines never changes and nothing but a request
line waits.

While lines keep coming they are written by the thread that logs them (the event loop's):
a thread of our own that woke every `HOLD_S` to write them took the GIL from the loop
two or three times per write (issue 17: a flush was in the window of 20 of the 50
slowest of 5,000 c=1 requests against 8 % of all). The flusher thread only writes the
last lines of a burst, the ones no later line came to write: it looks every
`IDLE_CHECK_S` while lines are held and writes those held `HOLD_S` or more, so such a
line waits at most twice `IDLE_CHECK_S`.

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
from collections.abc import Callable
from types import TracebackType
from typing import Final, TextIO

from pooler.log_format import REQUEST_LOG_NAME

HOLD_S: Final = 0.1
HOLD_BYTES: Final = 64 * 1024
IDLE_CHECK_S: Final = 0.5


class StderrHandler(logging.Handler):
    """Writes formatted records to `stream` (stderr when None), the request lines held."""

    terminator = "\n"

    def __init__(
        self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._stream = stream
        self._clock = clock
        self._held: list[str] = []
        self._held_bytes = 0
        self._held_since = 0.0  # when the first line held was held (`clock`)
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
            held = self._held
            if not held:
                self._held_since = self._clock()
            held.append(line)
            self._held_bytes += len(line)
            if self._held_bytes >= HOLD_BYTES or self._clock() - self._held_since >= HOLD_S:
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
        """Write the lines no later line came to write: the last ones of a burst."""
        while True:
            self._wake.wait()
            time.sleep(IDLE_CHECK_S)
            self.acquire()
            try:
                if not self._held or self._clock() - self._held_since >= HOLD_S:
                    self._wake.clear()  # set again by the next line held
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
