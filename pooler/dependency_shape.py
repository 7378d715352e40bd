"""The start-up check of the modules that reach into a dependency's internals (Hypercorn,
h11, trio): the source texts each relies on, found, or the server refuses to start."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def missing_texts(expected: Mapping[Callable[..., Any], Iterable[str]]) -> list[str]:
    """The texts not found in their function's source."""
    return [
        text
        for function, texts in expected.items()
        for text in texts
        if text not in inspect.getsource(function)
    ]


def refuse_if_moved(missing: list[str], dependency: str, module: str) -> None:
    """Refuse to start when something a wrapper relies on was not found."""
    if missing:
        raise RuntimeError(f"{dependency} changed: {missing} not found ({module})")
