"""Restart intensity and backoff for supervisors: pure logic, no clock, no I/O.

A supervisor asks `RestartBudget.record(now)` after every crash of a child. The budget
allows at most ``max_restarts`` crashes inside any trailing window of ``window_seconds``;
one more and the supervisor stops restarting and escalates to its parent. Every crash is
recorded, allowed or not, so a spent budget stays spent until old crashes age out. A budget
holds one child's history; supervisors take a budget as a policy and keep a `fresh()` copy.

`backoff(attempt)` is the pause before restart number ``attempt`` (0-based): ``base``
doubled per attempt, capped at ``cap``.
"""

from __future__ import annotations

from collections import deque

# 2.0 ** 64 is far past any cap we would use; stops the float from overflowing.
_MAX_DOUBLINGS = 64


class RestartBudget:
    """At most ``max_restarts`` crashes in any trailing ``window_seconds`` window."""

    def __init__(self, max_restarts: int, window_seconds: float) -> None:
        if max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if not window_seconds > 0:
            raise ValueError("window_seconds must be > 0")
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        # Only the newest max_restarts + 1 crashes can decide anything.
        self._crashes: deque[float] = deque(maxlen=max_restarts + 1)

    def __repr__(self) -> str:
        return f"RestartBudget({self.max_restarts}, {self.window_seconds})"

    def fresh(self) -> RestartBudget:
        """The same policy with no crashes recorded: one per supervised child."""
        return RestartBudget(self.max_restarts, self.window_seconds)

    def record(self, now: float) -> bool:
        """Record a crash at ``now``; True if the child may be restarted.

        ``now`` must not go backwards (use `trio.current_time()`).
        """
        if self._crashes and now < self._crashes[-1]:
            raise ValueError("time went backwards")
        self._crashes.append(now)
        return self.recent(now) <= self.max_restarts

    def recent(self, now: float) -> int:
        """How many crashes lie in the window ``(now - window_seconds, now]``."""
        horizon = now - self.window_seconds
        while self._crashes and self._crashes[0] <= horizon:
            self._crashes.popleft()
        return len(self._crashes)


def backoff(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Seconds to wait before restart ``attempt`` (0-based): ``min(cap, base * 2**attempt)``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    return min(cap, base * 2.0 ** min(attempt, _MAX_DOUBLINGS))
