"""The emulator's control API (`/_emulator/...`, pooler/emulator/control.py) as the
failover and cache runs use it: reset, arm a fault, read the request log."""

from __future__ import annotations

from typing import Any

import httpx

CONTROL_TIMEOUT_S = 10.0


class EmulatorControl:
    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/_emulator"

    async def _call(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(timeout=CONTROL_TIMEOUT_S) as client:
            response = await client.request(method, f"{self.base_url}/{name}", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"emulator {method} {name}: {response.status_code} {response.text}")
        return response.json()

    async def reset(self) -> None:
        """Faults, usage, prompt caches and the request log."""
        await self._call("POST", "reset", {})

    async def arm(self, account_id: str, kind: str, times: int) -> None:
        await self._call("POST", "faults", {"account_id": account_id, "kind": kind, "times": times})

    async def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = (await self._call("GET", "requests"))["requests"]
        return log
