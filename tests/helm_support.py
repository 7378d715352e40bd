"""Reading the Helm chart (charts/codex-pooler) without a `helm` binary: Helm's way of merging
values, a structural check of Go-template syntax, and the environment variables pooler reads.

The structural check is not a renderer: it finds every `{{ ... }}` action, checks that
actions and comments are closed, that if/range/with/define/block ... end blocks balance, that
every bare identifier is a known template function or keyword, and that every included name
is defined. Rendering itself is left to Helm's own engine (helm-python-sdk, in the tests).
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "codex-pooler"

BLOCK_OPENERS = frozenset({"if", "range", "with", "define", "block"})
KEYWORDS = frozenset({"else", "end", "template", "nil", "true", "false", "break", "continue"})
# Go's text/template builtins, Helm's own functions, and the Sprig functions this chart may
# use (a subset of Sprig: a name outside it is more likely a typo than a need).
_FUNCTION_NAMES = """
    and call html index slice js len not or print printf println urlquery eq ne lt le gt ge
    include tpl required fail toYaml fromYaml toJson fromJson toToml lookup
    default empty coalesce ternary quote squote trim trimAll trimSuffix trimPrefix trunc
    replace contains hasPrefix hasSuffix lower upper title nindent indent int int64 float64
    toString atoi add add1 sub mul div mod max min dict list get set hasKey keys merge
    mergeOverwrite kindIs kindOf typeOf typeIs splitList join b64enc sha256sum cat regexMatch
    semverCompare until append first last uniq has toStrings
"""
FUNCTIONS = frozenset(_FUNCTION_NAMES.split())

_ACTION_TOKEN = re.compile(
    r"""
      (?P<string>"(?:\\.|[^"\\])*"|`[^`]*`|'(?:\\.|[^'\\])')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>:=|[()|=,])
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)


class TemplateSyntaxError(ValueError):
    pass


@dataclass
class Action:
    start: int  # offset of `{{` in the file
    text: str  # inside the delimiters, trim markers removed
    depth: int  # open blocks around it (before it, for an opener)
    words: list[str] = field(default_factory=list)  # bare identifiers, in order
    strings: list[str] = field(default_factory=list)  # string literals, unquoted


def _close_of(source: str, start: int) -> int:
    """The offset of the `}}` that ends the action at `start`, skipping string literals."""
    i = start + 2
    if source.startswith("/*", i) or source.startswith("- /*", i):
        end = source.find("*/", i)
        if end < 0:
            raise TemplateSyntaxError(f"comment at {start} is not closed")
        close = source.find("}}", end)
        between = source[end + 2 : close].strip()
        if close < 0 or between not in ("", "-"):
            raise TemplateSyntaxError(f"comment at {start} must end with */}}")
        return close
    while i < len(source):
        ch = source[i]
        if ch in "\"`'":
            j = i + 1
            while j < len(source) and source[j] != ch:
                j += 2 if ch != "`" and source[j] == "\\" else 1
            if j >= len(source):
                raise TemplateSyntaxError(f"string at {i} is not closed")
            i = j + 1
            continue
        if source.startswith("{{", i):
            raise TemplateSyntaxError(f"`{{{{` inside the action at {start}")
        if source.startswith("}}", i):
            return i
        i += 1
    raise TemplateSyntaxError(f"action at {start} is not closed")


def _tokens(text: str, where: int) -> tuple[list[str], list[str]]:
    words: list[str] = []
    strings: list[str] = []
    pos = 0
    while pos < len(text):
        match = _ACTION_TOKEN.match(text, pos)
        if match is None:
            raise TemplateSyntaxError(
                f"unexpected {text[pos : pos + 10]!r} in the action at {where}"
            )
        if match.lastgroup == "ident":
            words.append(match.group())
        elif match.lastgroup == "string":
            strings.append(match.group()[1:-1])
        pos = match.end()
    return words, strings


def parse_template(source: str) -> list[Action]:
    """Every action of `source`, checked for the structural errors above."""
    actions: list[Action] = []
    stack: list[str] = []
    i = 0
    while True:
        start = source.find("{{", i)
        stray = source.find("}}", i, start if start >= 0 else len(source))
        if stray >= 0:
            raise TemplateSyntaxError(f"`}}}}` without an action at {stray}")
        if start < 0:
            break
        close = _close_of(source, start)
        inner = source[start + 2 : close]
        i = close + 2
        text = inner.removeprefix("-").removesuffix("-").strip()
        if text.startswith("/*"):
            continue
        words, strings = _tokens(text, start)
        action = Action(start, text, len(stack), words, strings)
        actions.append(action)
        head = words[0] if words and text.startswith(words[0]) else ""
        if head in BLOCK_OPENERS:
            stack.append(head)
        elif head == "else":
            if not stack or stack[-1] not in ("if", "with", "range"):
                raise TemplateSyntaxError(f"`else` outside if/with/range at {start}")
        elif head == "end":
            if not stack:
                raise TemplateSyntaxError(f"`end` without a block at {start}")
            stack.pop()
            action.depth = len(stack)
        for word in words:
            if word not in FUNCTIONS and word not in KEYWORDS and word not in BLOCK_OPENERS:
                raise TemplateSyntaxError(f"unknown function {word!r} at {start}")
    if stack:
        raise TemplateSyntaxError(f"{len(stack)} block(s) not closed: {', '.join(stack)}")
    return actions


def defined_names(actions: list[Action]) -> set[str]:
    return {a.strings[0] for a in actions if a.words[:1] == ["define"] and a.strings}


def included_names(actions: list[Action]) -> set[str]:
    found: set[str] = set()
    for action in actions:
        for m in re.finditer(r"\b(?:include|template)\s+\"([^\"]+)\"", action.text):
            found.add(m.group(1))
    return found


def depth_at(actions: list[Action], offset: int) -> int:
    """How many blocks are open at `offset` of the file the actions came from."""
    depth = 0
    for action in actions:
        if action.start > offset:
            break
        head = action.words[0] if action.words and action.text.startswith(action.words[0]) else ""
        if head in BLOCK_OPENERS:
            depth = action.depth + 1
        elif head == "end":
            depth = action.depth
    return depth


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values: maps merge key by key, anything else replaces, and a null
    override deletes the key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


ENV_NAME = re.compile(r"^(CODEX_POOLER_[A-Z0-9_]+|DATABASE_URL)$")


def variables_pooler_reads() -> set[str]:
    """The environment variables pooler reads, from its source: every such name in
    pooler/config.py (the module that owns the process environment), and elsewhere in the
    package the names passed to `.get(...)`/`getenv(...)` or used as a subscript."""
    found: set[str] = set()
    for path in (ROOT / "pooler").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        whole_module = path.name == "config.py" and path.parent.name == "pooler"
        for node in ast.walk(tree):
            candidates: list[ast.AST] = []
            if whole_module:
                candidates = [node]
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("get", "getenv", "pop", "setdefault"):
                    candidates = [node.args[0]]
            elif isinstance(node, ast.Subscript):
                candidates = [node.slice]
            for candidate in candidates:
                if (
                    isinstance(candidate, ast.Constant)
                    and isinstance(candidate.value, str)
                    and ENV_NAME.match(candidate.value)
                ):
                    found.add(candidate.value)
    return found


def secrets_pooler_requires_with_a_database() -> set[str]:
    """The names pooler/config.py passes to `_node_secret`: required once DATABASE_URL is set."""
    tree = ast.parse((ROOT / "pooler" / "config.py").read_text())
    return {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "_node_secret"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    }
