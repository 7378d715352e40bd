"""The exception tree drawn in `pooler/errors.py`'s docstring is the tree of classes: every
PoolerError subclass (found by importing every pooler module) is defined in pooler.errors
and drawn under its parent with its status, error type and code, and nothing else is drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pooler
from pooler import errors
from pooler.errors import PoolerError

# "    │   ├── InvalidJson      400 invalid_request_error invalid_json"
DRAWN = re.compile(
    r"^    (?P<tree>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Z]\w*)\s+"
    r"(?P<status>\d{3}) (?P<type>\w+)\s+(?P<code>\w+)$"
)
Row = tuple[str, str | None, int, str, str]


def drawn_tree(doc: str) -> list[Row]:
    """(class, parent, status, type, code) for each class drawn in `doc`, in order."""
    rows: list[Row] = []
    parents: list[str] = []  # the open branch, one name per depth
    for line in doc.splitlines():
        found = DRAWN.match(line)
        if found is None:
            continue
        depth = len(found["tree"]) // 4
        assert depth <= len(parents), f"drawn without a parent: {line!r}"
        del parents[depth:]
        parent = parents[-1] if parents else None
        rows.append((found["name"], parent, int(found["status"]), found["type"], found["code"]))
        parents.append(found["name"])
    return rows


def every_subclass(cls: type[PoolerError]) -> list[type[PoolerError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += every_subclass(sub)
    return found


def import_every_pooler_module() -> None:
    for module in pkgutil.walk_packages(pooler.__path__, "pooler."):
        importlib.import_module(module.name)


def class_row(cls: type[PoolerError]) -> Row:
    parent = cls.__bases__[0].__name__ if cls is not PoolerError else None
    return (cls.__name__, parent, cls.status, cls.error_type, cls.code)


def test_the_drawing_reader_reads_depth_and_columns() -> None:
    doc = (
        "    A             500 t a\n"
        "    ├── B         400 u b\n"
        "    │   └── C     400 u c\n"
        "    └── D         503 t d\n"
    )
    assert drawn_tree(doc) == [
        ("A", None, 500, "t", "a"),
        ("B", "A", 400, "u", "b"),
        ("C", "B", 400, "u", "c"),
        ("D", "A", 503, "t", "d"),
    ]


def test_every_error_class_lives_in_pooler_errors() -> None:
    import_every_pooler_module()
    elsewhere = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in every_subclass(PoolerError)
        if cls.__module__ != errors.__name__
    ]
    assert elsewhere == []


def test_the_docstring_draws_exactly_the_classes() -> None:
    import_every_pooler_module()
    drawn = drawn_tree(errors.__doc__ or "")
    classes = [class_row(cls) for cls in every_subclass(PoolerError)]
    assert len({row[0] for row in drawn}) == len(drawn), "a class is drawn twice"
    assert sorted(drawn, key=str) == sorted(classes, key=str)
