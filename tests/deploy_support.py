"""Reading the deployment files as Docker and Compose would, for tests without an engine:
a tiny Dockerfile parser, the `.env` format ops/generate-env writes, Compose's `${VAR}`
interpolation (the forms compose.yaml uses), and `.dockerignore` matching.

tests/data/compose-spec.json is the Compose specification's schema, vendored from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit a08f8d5 (2025-10-28).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GENERATE_ENV = ROOT / "ops" / "generate-env"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (after any --flags)."""
        text = strip_flags(self.args)
        if self.keyword == "HEALTHCHECK":  # HEALTHCHECK [--flags] CMD [...]
            head, _, text = text.partition(" ")
            return [head, *json.loads(text)]
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(part) for part in value]

    def flags(self) -> list[str]:
        return re.findall(r"--[\w-]+=\S+", self.args.split("[", 1)[0])


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def strip_flags(args: str) -> str:
    return re.sub(r"^(\s*--[\w-]+=\S+\s+)*", "", args).strip()


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def env_settings(instruction: Instruction) -> dict[str, str]:
    """ENV KEY=VALUE [KEY=VALUE...] (the form the Dockerfile uses)."""
    pairs = [part.partition("=") for part in instruction.args.split()]
    assert all(sep for _, sep, _ in pairs), f"ENV not in KEY=VALUE form: {instruction.args}"
    return {key: value for key, _, value in pairs}


def read_dotenv(path: Path) -> dict[str, str]:
    """The `.env` written by ops/generate-env: KEY=VALUE lines and comments. Its values must
    need no quoting or escaping, so Compose reads them literally."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
        assert re.fullmatch(r"[A-Za-z0-9+/=:@._-]+", value), f"{key} would need quoting"
        values[key] = value
    return values


_VAR = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[?-])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose interpolation of every string in `value`: $$, $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?error}, ${VAR?error} (an unset required variable raises)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    out = _VAR.sub(one, value)
    assert "${" not in out, f"unsupported interpolation in {value!r}"
    return out


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as loaded (YAML anchors and merge keys resolved), interpolated with
    `env` when given."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return interpolate(doc, env) if env is not None else doc


def generate_env(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATE_ENV), "--output", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().lstrip("/").rstrip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def build_context(root: Path = ROOT) -> set[str]:
    """The files `docker build` would send: everything under `root` but what .dockerignore
    excludes (patterns anchored at the root; an excluded directory excludes its content)."""
    patterns = [
        _ignore_regex(line)
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(line.startswith("!") for line in DOCKERIGNORE.read_text().splitlines()), (
        "exceptions (!) are not modelled here"
    )

    def ignored(rel: str) -> bool:
        return any(p.fullmatch(rel) for p in patterns)

    files: set[str] = set()
    for current, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = [d for d in dirs if not ignored(prefix + d)]
        files.update(prefix + n for n in names if not ignored(prefix + n))
    return files
