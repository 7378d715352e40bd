"""What a scheduled heap-trim pass costs the loop (issue 17): a process that did not grow
reads no heap statistics and hands nothing to a thread (mallinfo2 and malloc_trim hold
the main arena's lock, which the loop thread allocates from), and a trim waits for a
pass without requests in flight, for a bounded number of passes."""

from __future__ import annotations

import threading

import trio

from pooler.web.heap_trim import MAX_DEFERRED_PASSES, HeapProbes, HeapTrimmer

MIB = 1024 * 1024


class CountingHeap:
    def __init__(self) -> None:
        self.free, self.resident = 0, 100 * MIB
        self.looks = self.trims = 0
        self.threads: set[str] = set()

    def probes(self) -> HeapProbes:
        return HeapProbes(self.free_bytes, lambda: self.resident, self.trim)

    def free_bytes(self) -> int:
        self.looks += 1
        self.threads.add(threading.current_thread().name)
        return self.free

    def trim(self) -> None:
        self.trims += 1
        self.resident = 100 * MIB


def passes(trimmer: HeapTrimmer, count: int) -> None:
    async def main() -> None:
        for _ in range(count):
            await trimmer.run()

    trio.run(main)


def test_a_process_that_did_not_grow_is_not_looked_at() -> None:
    heap = CountingHeap()
    trimmer = HeapTrimmer(heap.probes(), threshold=16 * MIB)
    heap.free = 64 * MIB  # free memory alone (no growth since start-up) is not a reason
    heap.resident = 110 * MIB
    passes(trimmer, 5)
    assert heap.looks == 0 and heap.trims == 0


def test_a_grown_process_is_looked_at_in_a_thread_and_trimmed_once() -> None:
    heap = CountingHeap()
    trimmer = HeapTrimmer(heap.probes(), threshold=16 * MIB)
    heap.free, heap.resident = 200 * MIB, 300 * MIB  # large bodies came and went
    passes(trimmer, 3)
    assert heap.trims == 1 and heap.looks == 1
    assert threading.main_thread().name not in heap.threads


def test_a_trim_waits_for_a_pass_without_requests_in_flight() -> None:
    heap = CountingHeap()
    in_flight = [3]
    trimmer = HeapTrimmer(heap.probes(), threshold=16 * MIB, busy=lambda: in_flight[0] > 0)
    heap.free, heap.resident = 200 * MIB, 300 * MIB
    passes(trimmer, 2)
    assert heap.looks == 0 and heap.trims == 0
    in_flight[0] = 0
    passes(trimmer, 1)
    assert heap.trims == 1


def test_a_trim_waits_no_longer_than_its_bound() -> None:
    heap = CountingHeap()
    trimmer = HeapTrimmer(heap.probes(), threshold=16 * MIB, busy=lambda: True)
    heap.free, heap.resident = 200 * MIB, 300 * MIB
    passes(trimmer, MAX_DEFERRED_PASSES)
    assert heap.trims == 0
    passes(trimmer, 1)
    assert heap.trims == 1
