"""Giving memory freed by large requests back to the system (glibc only).

glibc keeps what a process frees in its heaps for reuse, and a heap fragmented by many body
chunks rarely shrinks on its own: after ten requests whose bodies decoded to 40 MiB each the
gateway (with the emulator, in one test process) stayed at 536 MB against 96 MB before,
though nothing referenced the memory; `malloc_trim(0)` brought it back to 98 MB.

A scheduled pass reads the resident size, on the loop (one read of /proc/self/statm), and
only when the process grew a threshold above where the last trim (or start-up) left it,
in a thread, how much free memory the heaps hold (`mallinfo2`), trimming when that is a
threshold too: a quiet process is never trimmed twice for nothing, and the trim
(milliseconds on a large heap) runs only after large bodies came and went. Both
`mallinfo2` and `malloc_trim` walk an arena's free chunks holding its lock, and the loop
thread allocates from the same main arena, so "in a thread" does not keep them off the
loop: a process that did not grow pays neither, nor the thread's hand-off (issue 17: a
pass every 10 s, ~0.3 ms of CPU in the thread, was in the window of some of the slowest
c=1 requests). A trim waits for a pass when no request is in flight (`busy`), for at
most `MAX_DEFERRED_PASSES` passes. Blocks of 1 MiB or more are mapped
on their own (`map_large_blocks`), so a large body's memory goes back when it is freed,
without waiting for a trim. Without glibc (musl, macOS) neither does anything.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

log = logging.getLogger("pooler.heap_trim")

TRIM_INTERVAL_S = 10.0
MAX_DEFERRED_PASSES = 6  # a trim waits for an idle moment at most a minute
TRIM_ABOVE_BYTES = 16 * 1024 * 1024
PAGE_SIZE = 4096
# Blocks this large are mapped on their own and unmapped when freed (see
# `map_large_blocks`); request bodies of this size are rare, so the syscalls are too.
MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter, <malloc.h>


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def should_trim(free_bytes: int, rss: int, rss_after_last_trim: int, threshold: int) -> bool:
    """Whether a trim is worth its cost: the heaps hold `threshold` bytes free and the
    process grew by as much since the last trim (free pages already given back still count
    as free in the heaps)."""
    return free_bytes >= threshold and rss - rss_after_last_trim >= threshold


@dataclass
class HeapProbes:
    """How the trimmer reads and trims the process's heap; None where glibc is missing."""

    free_bytes: Callable[[], int]
    rss: Callable[[], int]
    trim: Callable[[], None]


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc map every block of `threshold` bytes or more on its own (mallopt). glibc
    raises its mmap threshold as large blocks are freed (up to 32 MiB), so a burst of large
    bodies leaves later large blocks in the heap, fragmented and kept after they are freed;
    a fixed threshold gives each one back to the system when it is freed. Whether it took
    (False without glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def glibc_probes() -> HeapProbes | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallinfo2, malloc_trim = libc.mallinfo2, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2
    malloc_trim.argtypes = [ctypes.c_size_t]

    def free_bytes() -> int:
        return int(mallinfo2().fordblks)

    def trim() -> None:
        malloc_trim(0)

    return HeapProbes(free_bytes, _rss, trim)


def _rss() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


class HeapTrimmer:
    """`busy`: whether requests are in flight now (a trim then waits for a later pass)."""

    def __init__(
        self,
        probes: HeapProbes | None = None,
        threshold: int = TRIM_ABOVE_BYTES,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        if probes is None:  # this process's own heap
            map_large_blocks()
        self._probes = probes if probes is not None else glibc_probes()
        self.threshold = threshold
        self.busy = busy
        self.deferred = 0
        self.rss_after_last_trim = 0
        self.trims = 0
        self.looks = 0  # passes that read the heaps' statistics (in a thread)
        if self._probes is not None:
            try:  # start-up is the first "last trim": growth is counted from here
                self.rss_after_last_trim = self._probes.rss()
            except OSError:
                self._probes = None

    def grown(self) -> bool:
        """Whether the process grew a threshold since the last trim (cheap: no heap walk)."""
        probes = self._probes
        if probes is None:
            return False
        try:
            rss = probes.rss()
        except OSError as exc:
            log.warning("heap trimming stopped: %s", exc)
            self._probes = None
            return False
        if rss - self.rss_after_last_trim >= self.threshold:
            return True
        self.rss_after_last_trim = min(self.rss_after_last_trim, rss)
        return False

    def trim_if_worth_it(self) -> bool:
        probes = self._probes
        if probes is None:
            return False
        try:
            rss = probes.rss()
            self.looks += 1
            if not should_trim(probes.free_bytes(), rss, self.rss_after_last_trim, self.threshold):
                self.rss_after_last_trim = min(self.rss_after_last_trim, rss)
                return False
            probes.trim()
            self.rss_after_last_trim = probes.rss()
        except OSError as exc:  # /proc unreadable: give up quietly, nothing depends on it
            log.warning("heap trimming stopped: %s", exc)
            self._probes = None
            return False
        self.trims += 1
        return True

    async def run(self) -> None:
        """One scheduled pass: the heap is looked at (and trimmed), in a thread, only when
        the process grew, and while requests are in flight only once it waited
        `MAX_DEFERRED_PASSES` passes for a moment without."""
        if not self.grown():
            self.deferred = 0
            return
        if self.busy is not None and self.busy() and self.deferred < MAX_DEFERRED_PASSES:
            self.deferred += 1
            return
        self.deferred = 0
        await trio.to_thread.run_sync(self.trim_if_worth_it)
