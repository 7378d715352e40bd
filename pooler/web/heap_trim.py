"""Giving memory freed by large requests back to the system (glibc only).

glibc keeps what a process frees in its heaps for reuse, and a heap fragmented by many body
chunks rarely shrinks on its own: after ten requests whose bodies decoded to 40 MiB each the
gateway (with the emulator, in one test process) stayed at 536 MB against 96 MB before,
though nothing referenced the memory; `malloc_trim(0)` brought it back to 98 MB.

A scheduled pass reads how much free memory the heaps hold (`mallinfo2`, microseconds) and
the resident size, and trims when both are a threshold above where the last trim left
them: a quiet process is never trimmed twice for nothing, and the pass (milliseconds on a
large heap) runs only after large bodies came and went. Blocks of 1 MiB or more are mapped
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
    def __init__(self, probes: HeapProbes | None = None, threshold: int = TRIM_ABOVE_BYTES) -> None:
        if probes is None:  # this process's own heap
            map_large_blocks()
        self._probes = probes if probes is not None else glibc_probes()
        self.threshold = threshold
        self.rss_after_last_trim = 0
        self.trims = 0

    def trim_if_worth_it(self) -> bool:
        probes = self._probes
        if probes is None:
            return False
        try:
            rss = probes.rss()
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
        """One scheduled pass, in a thread: a trim of a large heap takes milliseconds."""
        await trio.to_thread.run_sync(self.trim_if_worth_it)
