"""Summarize a py-spy speedscope profile as text: where the CPU time goes.

`python ops/bench/profile_summary.py PROFILE.json [--top N]` prints the frames with the
most self time (the leaf of each sample), the frames with the most inclusive time (on the
stack at all), and self time grouped by package (h11, hypercorn, trio, pooler, ...).
Speedscope's sampled profiles list each sample's frames outermost first; every thread
is a profile, and they are added together.

py-spy in its default (blocking) mode pauses the process for each sample, which keeps
the stacks whole but also records threads that were only waiting; samples whose leaf is
a known wait (`IDLE_LEAVES`: epoll, a condition or queue wait, an idle worker thread, a
psycopg socket wait) are dropped and reported as the idle share.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SITE = "site-packages/"
IDLE_LEAVES = frozenset(
    {
        ("EpollIOManager.get_events", "trio/_core/_io_epoll.py"),
        ("Condition.wait", "threading.py"),
        ("Event.wait", "threading.py"),
        ("Queue.get", "queue.py"),
        ("WorkerThread._work", "trio/_core/_thread_cache.py"),
        ("Connection.wait", "psycopg/connection.py"),
        ("wait", "psycopg/waiting.py"),
        # the log flusher's pause between writes (`time.sleep` is C, so its caller is the leaf)
        ("StderrHandler._flush_held", "pooler/log_output.py"),
    }
)


def is_idle(frame: Mapping[str, Any]) -> bool:
    path = str(frame.get("file", ""))
    return any(frame.get("name") == name and path.endswith(tail) for name, tail in IDLE_LEAVES)


@dataclass(frozen=True)
class Summary:
    total: float
    idle: float
    self_time: Counter[str]
    inclusive: Counter[str]
    by_package: Counter[str]


def package_of(path: str) -> str:
    """`.../site-packages/h11/_readers.py` -> `h11`; `.../pooler/web/x.py` -> `pooler`;
    the standard library -> `stdlib:<module>`."""
    if SITE in path:
        return path.split(SITE, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/pooler/" in path:
        return "pooler"
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)
        return "stdlib:" + (rest[1].split("/", 1)[0].removesuffix(".py") if len(rest) > 1 else "")
    return path or "?"


def label(frame: Mapping[str, Any]) -> str:
    path = str(frame.get("file", ""))
    short = path.split(SITE, 1)[1] if SITE in path else path.rsplit("/pooler/", 1)[-1]
    if "/pooler/" in path:
        short = "pooler/" + short
    elif "/lib/python3" in path and SITE not in path:
        short = path.rsplit("/", 1)[-1]
    return f"{frame.get('name', '?')} ({short}:{frame.get('line', '?')})"


def summarize(profile: Mapping[str, Any]) -> Summary:
    frames: Sequence[Mapping[str, Any]] = profile["shared"]["frames"]
    labels = [label(f) for f in frames]
    packages = [package_of(str(f.get("file", ""))) for f in frames]
    idle_frames = {i for i, f in enumerate(frames) if is_idle(f)}
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = idle = 0.0
    for thread in profile["profiles"]:
        weights = thread.get("weights") or [1.0] * len(thread["samples"])
        for stack, weight in zip(thread["samples"], weights, strict=True):
            if not stack:
                continue
            if stack[-1] in idle_frames:
                idle += weight
                continue
            total += weight
            self_time[labels[stack[-1]]] += weight
            by_package[packages[stack[-1]]] += weight
            for name in {labels[i] for i in stack}:
                inclusive[name] += weight
    return Summary(total, idle, self_time, inclusive, by_package)


def render(summary: Summary, top: int = 20) -> str:
    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"{title}:"]
        for name, weight in counts.most_common(top):
            rows.append(f"  {100.0 * weight / summary.total:5.1f} %  {name}")
        return rows

    lines = [
        f"busy samples: {summary.total:.1f}, waiting samples dropped: {summary.idle:.1f} "
        "(speedscope weight units, all threads); percentages are of busy samples"
    ]
    lines += table("self time by package", summary.by_package)
    lines += table("self time by frame", summary.self_time)
    lines += table("inclusive time by frame", summary.inclusive)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    print(render(summarize(json.loads(args.profile.read_text())), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
