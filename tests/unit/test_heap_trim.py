"""The heap trimmer's decision: trim only when the heaps hold a lot free and the process
grew as much since the last trim (a trimmed heap still counts its pages as free)."""

from __future__ import annotations

from pooler.web.heap_trim import HeapProbes, HeapTrimmer, should_trim

MIB = 1024 * 1024


def test_should_trim_needs_both_free_memory_and_growth() -> None:
    assert should_trim(100 * MIB, 300 * MIB, 100 * MIB, 64 * MIB)
    assert not should_trim(10 * MIB, 300 * MIB, 100 * MIB, 64 * MIB)  # in use, not free
    assert not should_trim(100 * MIB, 120 * MIB, 100 * MIB, 64 * MIB)  # trimmed already


class FakeHeap:
    def __init__(self) -> None:
        self.free, self.resident, self.trims = 0, 100 * MIB, 0

    def probes(self) -> HeapProbes:
        return HeapProbes(lambda: self.free, lambda: self.resident, self.trim)

    def trim(self) -> None:
        self.trims += 1
        self.resident = 100 * MIB  # free pages go back; the heap still counts them free


def test_a_grown_heap_is_trimmed_once() -> None:
    heap = FakeHeap()
    trimmer = HeapTrimmer(heap.probes(), threshold=64 * MIB)
    trimmer.rss_after_last_trim = heap.resident
    assert not trimmer.trim_if_worth_it()
    heap.free, heap.resident = 400 * MIB, 500 * MIB  # large bodies came and went
    assert trimmer.trim_if_worth_it()
    assert heap.trims == 1 and trimmer.rss_after_last_trim == 100 * MIB
    for _ in range(3):  # quiet: free stays counted, but nothing grew
        assert not trimmer.trim_if_worth_it()
    assert heap.trims == 1


def test_large_blocks_are_mapped_on_their_own_with_glibc() -> None:
    import ctypes.util
    import sys

    from pooler.web.heap_trim import map_large_blocks

    took = map_large_blocks()
    if sys.platform == "linux" and ctypes.util.find_library("c"):
        assert took
