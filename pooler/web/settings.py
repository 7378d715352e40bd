"""Gateway runtime settings: limits and deadlines applied where requests enter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    max_body_bytes: int = 64 * 1024 * 1024
    upstream_connect_timeout_s: float = 15.0
    # From sending the request to the upstream's response head (covers a stalled upstream).
    upstream_first_byte_timeout_s: float = 120.0
    # Longest silence between two chunks of a streaming response.
    upstream_idle_timeout_s: float = 300.0
    lease_timeout_s: float = 5.0
    refresh_wait_timeout_s: float = 30.0
    max_error_body_bytes: int = 64 * 1024
    no_backend_retry_after_s: float = 5.0
    continuity_ttl_s: float = 6 * 3600.0
    # A websocket Responses connection with no frame either way for this long is closed.
    websocket_idle_timeout_s: float = 30 * 60.0
    # The upstream websocket is pinged this often; a pong missing for as long ends it (1011).
    websocket_ping_interval_s: float = 25.0
    # The Codex model that hosts the image_generation tool for /v1/images requests (the
    # image model itself goes in the tool).
    images_host_model: str = "gpt-5.5"
    # After SIGTERM, the listener still accepts this long (pooler.drain; 0 in tests that
    # stop a gateway without a load balancer in front).
    drain_accept_grace_s: float = 3.0
