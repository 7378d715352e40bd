"""Pieces of the several-replicas test (tests/e2e/test_replicas.py): `pooler serve` nodes
whose output goes to a log file, Debian's nginx in front of them (its configuration, its
process, its access log), and the tally of what every client saw."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from harness import free_port, missing_client, run_process

PYTHON = [sys.executable, "-m", "pooler.cli.main"]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        missing_client("nginx is not installed: `apt-get install nginx-light` enables this test")
    return found


def nginx_conf(workdir: Path, listen: int, upstreams: list[int]) -> str:
    """A reverse proxy as one would run it in front of several replicas: round robin over
    the nodes; a node that refuses or does not answer a connection within a second is
    skipped (`proxy_next_upstream error timeout`: nginx retries only where the request
    never reached a node, since a POST is not passed on once sent); no buffering, so SSE
    frames leave as they arrive; websocket upgrades, kept while idle as long as the gateway
    keeps them (30 min); X-Forwarded-For; keep-alive connections to the nodes (nginx drops
    an idle one after 60 s, before the gateway's 75 s). The access log names the node that
    answered each request (the client's x-client-request-id ties it to the request-log
    row)."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in upstreams
    )
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
{temp}
    log_format replicas escape=json '{{"rid":"$http_x_client_request_id","uri":"$uri",'
        '"status":$status,"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
        '"bytes":$body_bytes_sent}}';
    access_log {workdir / "access.log"} replicas;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream pooler {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://pooler;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30m;
            proxy_send_timeout 60s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 5s;
        }}
    }}
}}
"""


@dataclass
class Node:
    """One `pooler serve` process: its own data dir and port, restartable on that port."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: trio.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self, nursery: trio.Nursery) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        command = [*PYTHON, "serve", "--port", str(self.port)]
        self.process = await nursery.start(run_process, command, self.env, self.log.open("ab"))
        with trio.fail_after(60):
            while b"listening on" not in self.log.read_bytes()[offset:]:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
                await trio.sleep(0.1)


def write_conf(workdir: Path, listen: int, upstreams: list[int]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, listen, upstreams))
    return conf


@dataclass
class Proxy:
    process: trio.Process
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def quit(self) -> None:
        """Graceful stop: nginx finishes its connections (and their log lines)."""
        self.process.send_signal(signal.SIGQUIT)
        with trio.fail_after(10):
            await self.process.wait()


async def start_nginx(nursery: trio.Nursery, workdir: Path, upstreams: list[int]) -> Proxy:
    """nginx in the foreground with its own config, pid and temp paths."""
    binary, port = nginx_binary(), free_port()
    conf = write_conf(workdir, port, upstreams)
    command = [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    proc = await nursery.start(run_process, command, {}, (workdir / "stdout.log").open("ab"))
    with trio.fail_after(10):
        while True:
            if proc.returncode is not None:
                raise AssertionError((workdir / "error.log").read_text()[-2000:])
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return Proxy(proc, port, workdir)


def access_lines(workdir: Path) -> list[dict[str, Any]]:
    """nginx's access log: one object per request (a websocket: per connection, at its
    close); `node` is the address that finally answered (after skipping refusing ones)."""
    lines = []
    for raw in (workdir / "access.log").read_text().splitlines():
        line = json.loads(raw)
        line["node"] = line["upstream"].split(",")[-1].strip()
        line["tried"] = [u.strip() for u in line["upstream"].split(",") if u.strip()]
        lines.append(line)
    return lines


@dataclass
class Seen:
    """One client request as its client saw it. `outcome`: `completed`; `refused` (an
    error status or a failed connection before any byte of an answer: retryable);
    `cut` (a 200 stream, or a websocket turn, ended after its first byte without its
    completion event: only where a node was killed)."""

    kind: str  # sse | ws | chat | responses
    conversation: str
    rid: str  # the x-client-request-id (a websocket: its connection's)
    outcome: str
    detail: str = ""  # the status, or the error's class
    at: float = 0.0  # trio.current_time() when it ended


@dataclass
class Tally:
    seen: list[Seen] = field(default_factory=list)

    def add(self, kind: str, conversation: str, rid: str, outcome: str, detail: str = "") -> None:
        self.seen.append(Seen(kind, conversation, rid, outcome, detail, trio.current_time()))

    def by(self, outcome: str) -> list[Seen]:
        return [s for s in self.seen if s.outcome == outcome]

    def summary(self, node_of: Callable[[str], str]) -> dict[str, Any]:
        """Counts by kind; refusals and cuts also by what the client saw and the node
        (`node_of` a client request id) that nginx tried last."""

        def detailed(outcome: str) -> dict[str, int]:
            return dict(Counter(f"{s.kind} {s.detail} @{node_of(s.rid)}" for s in self.by(outcome)))

        return {
            "requests_by_kind": dict(Counter(s.kind for s in self.seen)),
            "completed_by_kind": dict(Counter(s.kind for s in self.by("completed"))),
            "refused": detailed("refused"),
            "cut": detailed("cut"),
        }
