"""Importing the benchmark's modules (ops/bench, run as scripts there) in unit tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "ops" / "bench"


def load_bench(name: str) -> ModuleType:
    """`ops/bench/<name>.py` as a module (its own imports resolved from ops/bench)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
