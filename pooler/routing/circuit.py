"""Circuit breakers, one per account and route class: closed -> open -> half-open -> closed.

Pure state machine; the AccountActor owns the instances and passes `now`.

- closed: every request passes; `failure_threshold` consecutive failures open it.
- open: nothing passes until `open_seconds` have gone by.
- half-open: up to `half_open_probes` requests pass as probes; a probe that succeeds closes
  the circuit, one that fails opens it again. A neutral end (the client went away, the
  request itself was bad) frees the probe slot and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pooler.routing.snapshot import CircuitView


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED, OPEN, HALF_OPEN = CircuitState

# Route classes (DESIGN §2): one circuit each per account.
RESPONSES = "responses"
COMPACT = "compact"
CONTROL = "control"


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    failure_threshold: int = 3
    open_seconds: float = 60.0
    half_open_probes: int = 1


@dataclass(slots=True)
class Circuit:
    state: CircuitState = CLOSED
    failures: int = 0
    open_until: float = 0.0
    probes: int = 0

    def admit(self, now: float, settings: CircuitSettings) -> bool | None:
        """May a request pass? None: no; False: yes; True: yes, as a half-open probe."""
        if self.state == CLOSED:
            return False
        if self.state == OPEN:
            if now < self.open_until:
                return None
            self.state, self.probes = HALF_OPEN, 0
        if self.probes >= settings.half_open_probes:
            return None
        self.probes += 1
        return True

    def succeeded(self, probe: bool) -> str | None:
        """Record a success; the transition it caused, if any."""
        self.failures = 0
        if probe and self.state == HALF_OPEN:
            self.state, self.probes = CLOSED, 0
            return "half_open->closed"
        return None

    def failed(self, probe: bool, now: float, settings: CircuitSettings) -> str | None:
        if self.state == HALF_OPEN:
            if not probe:
                return None  # a request admitted before the circuit opened
            self.state, self.probes = OPEN, 0
            self.open_until = now + settings.open_seconds
            return "half_open->open"
        if self.state == OPEN:
            return None
        self.failures += 1
        if self.failures < settings.failure_threshold:
            return None
        self.state, self.failures = OPEN, 0
        self.open_until = now + settings.open_seconds
        return "closed->open"

    def neutral(self, probe: bool) -> None:
        if probe and self.state == HALF_OPEN and self.probes > 0:
            self.probes -= 1

    def view(self, settings: CircuitSettings) -> CircuitView:
        if self.state == OPEN:
            return CircuitView(open_until=self.open_until)
        if self.state == HALF_OPEN:
            return CircuitView(probing=self.probes >= settings.half_open_probes)
        return CircuitView()
