"""The processes under test: emulator, floor relay and gateway, pinned to their cores.

With a baseline tree (`bench.py --baseline-tree PATH`), a second gateway runs from that
checkout (baseline_tree.py) on the gateway's core, with its own data directory and
embedded PostgreSQL, seeded like the gateway's `bench` Pool (same emulator accounts:
the two are never loaded at once). The extras' Pools are seeded on the gateway only.

`Cluster` is a context manager that owns a temporary directory and every process it
starts. Leaving it — normally, on an error, on Ctrl-C or SIGTERM (which `bench.py` turns
into an exception) — stops the gateway gracefully (so its embedded PostgreSQL shuts down
with it), kills whatever is left by pid, stops a PostgreSQL that outlived the gateway and
removes the directory. Children also get SIGTERM if this process dies without cleaning up
(PR_SET_PDEATHSIG), so not even `kill -9` of the benchmark leaves servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from baseline_tree import Tree, check_requirements, code_identity, imports_from

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
GATEWAY_STOP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
ACCOUNTS = 3
POOL = "bench"
# Pools of their own for the failover and cache runs (extras), after the 3 accounts of
# `bench`, so faults and conversations there never touch the scenarios' Pool.
EXTRA_POOLS = (("failover", 3), ("cache", 4))
# The Pool's default in-flight cap (32 per account) would answer c=200 with 503s from
# 3 accounts; the benchmark measures the relay, not that cap.
MAX_IN_FLIGHT = 10_000
_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat; NaN once the
    process is gone (its requests fail and are counted as errors)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU of these processes and of their children alive now or already reaped."""
    wanted, total = set(pids), 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid in wanted:
            total += sum(int(v) for v in fields[11:15]) / _CLK_TCK  # self + reaped children
        elif ppid in wanted:
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class SeededPool:
    name: str
    key: str
    account_ids: tuple[str, ...]  # chatgpt account ids, in emulator order


@dataclass(frozen=True)
class BaselineGateway:
    """The second gateway, run from an older checkout."""

    port: int
    pid: int
    postgres_pid: int | None
    pool_key: str  # of its own `bench` Pool


@dataclass(frozen=True)
class Endpoints:
    emulator_port: int
    relay_port: int
    gateway_port: int
    access_token: str
    account_id: str
    pool_key: str
    gateway_pid: int
    relay_pid: int
    emulator_pid: int
    postgres_pid: int | None
    extra_pools: tuple[SeededPool, ...] = field(default=())
    mcp_token: str | None = None  # the mcp extra's (bench.py opens /mcp after the start)
    baseline: BaselineGateway | None = None

    def pool(self, name: str) -> SeededPool:
        for seeded in self.extra_pools:
            if seeded.name == name:
                return seeded
        raise RuntimeError(f"the Pool {name!r} was not seeded (run without --skip-extras)")

    def our_pids(self) -> list[int]:
        pids = [os.getpid(), self.gateway_pid, self.relay_pid, self.emulator_pid]
        pids += [self.postgres_pid] if self.postgres_pid else []
        if self.baseline is not None:
            pids.append(self.baseline.pid)
            pids += [self.baseline.postgres_pid] if self.baseline.postgres_pid else []
        return pids

    def gateway_port_of(self, path: str) -> int:
        """The port of the gateway serving `path` ("gateway" or "baseline")."""
        return self._baseline().port if path == "baseline" else self.gateway_port

    def gateway_pid_of(self, path: str) -> int:
        return self._baseline().pid if path == "baseline" else self.gateway_pid

    def postgres_pid_of(self, path: str) -> int | None:
        return self._baseline().postgres_pid if path == "baseline" else self.postgres_pid

    def _baseline(self) -> BaselineGateway:
        if self.baseline is None:
            raise RuntimeError("no baseline gateway runs (--baseline-tree)")
        return self.baseline


class Cluster:
    def __init__(
        self,
        cores: tuple[int, int] | None,
        log: Callable[[str], None],
        *,
        extra_pools: bool = False,
        baseline_tree: Path | None = None,
    ) -> None:
        self.cores = cores  # (gateway + relay core, emulator + load-generator core)
        # Checked before the temporary directory exists (a raise here skips close()).
        self.baseline_tree = Tree.at(baseline_tree) if baseline_tree is not None else None
        if self.baseline_tree is not None:
            check_requirements(self.baseline_tree)
        self.log = log
        self.extra_pools: tuple[tuple[str, int], ...] = EXTRA_POOLS if extra_pools else ()
        beside = Path(sys.executable).with_name("pooler")  # not a pyenv shim: its pid is ours
        pooler = str(beside) if beside.exists() else shutil.which("pooler")
        if pooler is None:
            raise RuntimeError("the `pooler` console script is not on PATH (pip install -e .)")
        self.pooler = pooler
        self.root = Path(tempfile.mkdtemp(prefix="pooler-bench-"))
        self.root.chmod(0o755)  # the embedded PostgreSQL runs as its own user when root
        self.services: list[Service] = []
        self.env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        self.env["CODEX_POOLER_DATA_DIR"] = str(self.root / "data")
        # Which code each gateway runs (filled by start(), only with a baseline tree).
        self.code: dict[str, dict[str, object]] = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- start ------------------------------------------------------------------------

    def start(self) -> Endpoints:
        auth_dir = self.root / "auth"
        accounts = ACCOUNTS + sum(size for _, size in self.extra_pools)
        emulator = self._spawn(
            "emulator",
            1,
            [
                *(self.pooler, "emulator", "--host", "127.0.0.1", "--port", "0"),
                *("--accounts", str(accounts), "--percent-per-request", "0"),
                *("--write-auth-json", str(auth_dir)),
            ],
            r"emulator listening on http://127\.0\.0\.1:(\d+)",
        )
        upstream = f"http://127.0.0.1:{emulator.port}"
        self.env["CODEX_POOLER_UPSTREAM_BASE_URL"] = upstream
        self.env["CODEX_POOLER_AUTH_BASE_URL"] = upstream
        relay = self._spawn(
            "relay",
            0,
            [sys.executable, str(HERE / "relay.py"), "--target-port", str(emulator.port)],
            r"relay listening on http://127\.0\.0\.1:(\d+)",
        )
        auth_files = [auth_dir / f"account-{i}" / "auth.json" for i in range(1, accounts + 1)]
        self._wait_for(lambda: all(p.exists() for p in auth_files), emulator, "auth.json files")
        gateway = self._spawn(
            "gateway",
            0,
            [self.pooler, "serve", "--host", "127.0.0.1", "--port", "0"],
            r"Codex Pooler listening on http://127\.0\.0\.1:(\d+)",
        )
        key = self._seed(POOL, auth_files[:ACCOUNTS])
        seeded, first = [], ACCOUNTS
        for name, size in self.extra_pools:
            files = auth_files[first : first + size]
            first += size
            ids = tuple(json.loads(f.read_text())["tokens"]["account_id"] for f in files)
            seeded.append(SeededPool(name, self._seed(name, files), ids))
        tokens = json.loads(auth_files[0].read_text())["tokens"]
        baseline = (
            self._start_baseline(self.baseline_tree, auth_files[:ACCOUNTS])
            if self.baseline_tree is not None
            else None
        )
        return Endpoints(
            emulator_port=emulator.port,
            relay_port=relay.port,
            gateway_port=gateway.port,
            access_token=tokens["access_token"],
            account_id=tokens["account_id"],
            pool_key=key,
            gateway_pid=gateway.pid,
            relay_pid=relay.pid,
            emulator_pid=emulator.pid,
            postgres_pid=self._postgres_pid(self.root / "data"),
            extra_pools=tuple(seeded),
            baseline=baseline,
        )

    def _start_baseline(self, tree: Tree, auth_files: Sequence[Path]) -> BaselineGateway:
        """The baseline gateway from `tree` (emulator URLs as the gateway's), seeded the
        same way; fails unless it really imports its `pooler` from that tree."""
        data = self.root / "baseline" / "data"
        data.parent.mkdir()
        data.parent.chmod(0o755)
        env = tree.env(self.env, data)
        # The console script puts its own bin directory first on sys.path, not the
        # working directory: asked from the (package-less) temporary directory, `python -c`
        # resolves `pooler` the same way.
        self.code["gateway"] = code_identity(self.env, self.root)
        self.code["baseline"] = code_identity(env, tree.root)
        if not imports_from(self.code["baseline"], tree.root):
            raise RuntimeError(
                f"the baseline gateway would import {self.code['baseline']['pooler']}, "
                f"not the pooler of {tree.root}"
            )
        self.log(f"baseline tree {tree.root} at {self.code['baseline']['commit']}")
        service = self._spawn(
            "baseline",
            0,
            [*tree.argv(), "serve", "--host", "127.0.0.1", "--port", "0"],
            r"Codex Pooler listening on http://127\.0\.0\.1:(\d+)",
            env=env,
            cwd=tree.root,
        )

        def admin(*args: str, stdin: str | None = None) -> str:
            return self._admin(tree.argv(), args, env, tree.root, stdin)

        key = self._seed(POOL, auth_files, admin)
        return BaselineGateway(service.port, service.pid, self._postgres_pid(data), key)

    def _spawn(
        self,
        name: str,
        core_index: int,
        argv: Sequence[str],
        ready: str,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        if self.cores is not None:
            argv = ["taskset", "-c", str(self.cores[core_index]), *argv]
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.env if env is None else env,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
                preexec_fn=_die_with_parent,
            )
        service = Service(name, process, out, err)
        self.services.append(service)
        pattern = re.compile(ready)

        def port() -> bool:
            match = pattern.search(out.read_text(errors="replace"))
            if match:
                service.port = int(match.group(1))
            return match is not None

        self._wait_for(port, service, "its listening line")
        self.log(f"{name} pid {service.pid} on :{service.port}")
        return service

    def _wait_for(self, check: Callable[[], bool], service: Service, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not check():
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited early:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name}: no {what} after {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def admin(self, *args: str, stdin: str | None = None) -> str:
        """`pooler admin ARGS` against the gateway's own database (its environment); stdout."""
        return self._admin([self.pooler], args, self.env, None, stdin)

    def _admin(
        self,
        pooler: list[str],
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path | None,
        stdin: str | None,
    ) -> str:
        done = subprocess.run(
            [*pooler, "admin", *args],
            env=env,
            cwd=cwd,
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"pooler admin {' '.join(args)} failed:\n{stderr}")
        return done.stdout.decode()

    def _seed(
        self, pool: str, auth_files: Sequence[Path], admin: Callable[..., str] | None = None
    ) -> str:
        run = admin or self.admin
        run("pool", "create", pool)
        run("pool", "update", pool, "--max-in-flight", str(MAX_IN_FLIGHT))
        for path in auth_files:
            run("account", "import", "--pool", pool, str(path))
        key: str = json.loads(run("key", "create", "--pool", pool, "--json"))["key"]
        return key

    # --- stop -------------------------------------------------------------------------

    def close(self) -> None:
        for service in reversed(self.services):  # gateway first, emulator last
            gateway = service.name in ("gateway", "baseline")
            timeout = GATEWAY_STOP_TIMEOUT_S if gateway else STOP_TIMEOUT_S
            _stop(service.process, timeout)
        self.services.clear()
        self._stop_orphan_postgres(self.root / "data")
        self._stop_orphan_postgres(self.root / "baseline" / "data")
        shutil.rmtree(self.root, ignore_errors=True)

    def _postgres_pid(self, data: Path) -> int | None:
        """The embedded PostgreSQL (postmaster) of the gateway with data dir `data`, if it
        runs."""
        pidfile = data / "pg" / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.root).encode() in cmdline else None

    def _stop_orphan_postgres(self, data: Path) -> None:
        """The gateway stops its PostgreSQL at exit; if it was killed, we do it."""
        pid = self._postgres_pid(data)
        if pid is None:
            return
        with contextlib.suppress(OSError):
            self.log(f"stopping the PostgreSQL the gateway left behind (pid {pid})")
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
