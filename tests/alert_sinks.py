"""Real receivers for alert notifications, each in a thread on a free local port: a webhook
receiver that checks every signature and can fail the first N deliveries, and a minimal
SMTP sink. Plus hostile webhook servers: one that never answers, one that answers 200 with
an endless body, one that redirects."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pooler.alerts.payload import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass
class Receiver:
    secret: bytes = b""
    fail_first: int = 0
    stall_first_s: float = 0.0  # the first request waits this long before its answer
    attempts: int = 0
    bad_signatures: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def events(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r["event"], r["incident"]["rule"]) for r in self.received]


@contextmanager
def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def webhook_receiver(fail_first: int = 0, stall_first_s: float = 0.0) -> Iterator[Receiver]:
    receiver = Receiver(fail_first=fail_first, stall_first_s=stall_first_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.attempts += 1
                attempt = receiver.attempts
            stall = receiver.stall_first_s if attempt == 1 else 0.0
            if stall:
                time.sleep(stall)
            with receiver.lock:
                if attempt <= receiver.fail_first:
                    status = 503
                elif not verify(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                ):
                    receiver.bad_signatures += 1
                    status = 401
                else:
                    receiver.received.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    status = 204
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook?x=1"
    with _serve(server):
        yield receiver


@dataclass
class Mailbox:
    messages: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0


@contextmanager
def smtp_sink() -> Iterator[Mailbox]:
    """Speaks just enough SMTP for smtplib (no STARTTLS, no AUTH)."""
    box = Mailbox()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 sink ESMTP\r\n")
            while line := self.rfile.readline(1000):
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    self.wfile.write(b"250 sink\r\n")
                elif verb == b"RCPT":
                    with box.lock:
                        box.recipients.append(line.decode().split(":", 1)[1].strip(" <>\r\n"))
                    self.wfile.write(b"250 ok\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = self.rfile.readline(100_000)
                        if not chunk:
                            return
                        data += chunk
                    with box.lock:
                        box.messages.append(data.decode(errors="replace"))
                    self.wfile.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.port = server.server_address[1]
    with _serve(server):
        yield box


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers; its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


@dataclass
class Hostile:
    url: str = ""
    requests: int = 0
    sent_bytes: int = 0


@contextmanager
def hostile_server(kind: str, target: str = "") -> Iterator[Hostile]:
    """`huge`: 200 with a 10 GB body it keeps sending while the client reads; `redirect`:
    a 307 to `target`."""
    state = Hostile()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests += 1
            if kind == "redirect":
                self.send_response(307)
                self.send_header("location", target)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-length", str(10 * 1024**3))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(10 * 1024**3 // len(chunk)):
                    self.wfile.write(chunk)
                    state.sent_bytes += len(chunk)
            except OSError:
                return

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with _serve(server):
        yield state
