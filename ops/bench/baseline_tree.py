"""Running Codex Pooler from another checkout (`bench.py --baseline-tree PATH`).

The baseline gateway is this Python running `python -m pooler.cli.main` with
`PYTHONPATH=<tree>` and the tree as its working directory (with `-m`, the working
directory comes first on `sys.path`: from the current worktree it would import the
current code). It shares this Python's site-packages with the current gateway, so a
package the old tree needs must be installed here too: `unmet_requirements` reads the
tree's `pyproject.toml` and names what is missing or at a version it does not accept,
before anything starts. `code_identity` asks that same environment which `pooler` it
imports and records the tree's commit, so a run shows which code each gateway ran.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CHECK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Tree:
    """A checkout to run `pooler` from."""

    root: Path

    @classmethod
    def at(cls, path: Path) -> Tree:
        root = path.resolve()
        if not (root / "pooler" / "__init__.py").is_file():
            raise RuntimeError(f"{path} is not a Codex Pooler checkout (no pooler/__init__.py)")
        return cls(root)

    def argv(self) -> list[str]:
        """The `pooler` command for this tree (this Python; its pid is the process's)."""
        return [sys.executable, "-m", "pooler.cli.main"]

    def env(self, base: Mapping[str, str], data_dir: Path) -> dict[str, str]:
        """`base` with this tree first on the import path and its own data directory."""
        env = dict(base)
        env["PYTHONPATH"] = str(self.root)
        env["CODEX_POOLER_DATA_DIR"] = str(data_dir)
        return env


def requirements(pyproject: str) -> list[str]:
    """`[project] dependencies` of a pyproject.toml text."""
    project = tomllib.loads(pyproject).get("project", {})
    found = project.get("dependencies", [])
    return [str(r) for r in found] if isinstance(found, list) else []


def unmet_requirements(wanted: list[str]) -> list[str]:
    """The requirements among `wanted` that this Python's installed packages do not meet
    (missing, or a version outside the specifier); those whose marker excludes this
    platform are met."""
    from packaging.requirements import Requirement  # pip's own dependency, installed here

    unmet = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            unmet.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{text} (installed: {installed})")
    return unmet


def check_requirements(tree: Tree) -> None:
    """Fail before starting anything when the tree needs a package this Python lacks."""
    pyproject = tree.root / "pyproject.toml"
    if not pyproject.is_file():
        return
    unmet = unmet_requirements(requirements(pyproject.read_text()))
    if unmet:
        quoted = " ".join(f"'{u.split(' (installed')[0]}'" for u in unmet)
        raise RuntimeError(
            f"the baseline tree {tree.root} needs packages this Python does not have: "
            f"{'; '.join(unmet)}. Both gateways share this Python's site-packages; "
            f"install them with: {sys.executable} -m pip install {quoted}"
        )


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None


def code_identity(env: Mapping[str, str], cwd: Path | None = None) -> dict[str, object]:
    """Which `pooler` a process started with `env` (in `cwd`) imports, and the commit of
    the checkout it comes from (`dirty`: tracked files differ from that commit)."""
    done = subprocess.run(
        [sys.executable, "-c", "import pooler; print(pooler.__file__)"],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-1500:]
        raise RuntimeError(f"`import pooler` fails in that environment:\n{stderr}")
    module = Path(done.stdout.decode().strip()).resolve()
    root = module.parent.parent
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "pooler": str(module),
        "commit": _git(root, "rev-parse", "HEAD"),
        "subject": _git(root, "log", "-1", "--format=%s"),
        "dirty": None if status is None else bool(status),
    }


def imports_from(identity: Mapping[str, object], root: Path) -> bool:
    """The `pooler` that `code_identity` found lives in the checkout at `root`."""
    return Path(str(identity.get("pooler"))).is_relative_to(root.resolve())
