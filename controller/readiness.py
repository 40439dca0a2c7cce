"""What `/readyz` answers: the operator is configured and kopf's own connection reaches the API.

kopf's `ready_flag` is raised as soon as the startup handlers return, before kopf has made a
single API request: a Pod that could not reach the apiserver (wrong address, no DNS, bad token,
missing RBAC or CRD) used to be Ready, and `helm install --wait` succeeded. Here, Ready means:

- the startup handler finished (`configured()`), and
- kopf has logged in (`login.py` hands every connection it gives kopf to `use()`), and
- a `list agenttasks?limit=1` with exactly that connection (same server, CA, token) succeeded
  within the last `fresh_for` seconds. That request fails whenever kopf's watch would: DNS,
  TCP, TLS, authentication, RBAC and the CRD are all on its path.

An active replica is then watching and reconciling; a standby replica (kopf peering) is watching
the peering object and can take over, which is what a rolling update with `maxUnavailable: 0`
needs from it. A check runs when a probe asks and the last success is stale; one at a time.

It does not prove kopf's watch loop itself is healthy (a hung loop is the liveness probe's job)
and it never logs the token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import kopf

from .api import GROUP, PLURAL, VERSION


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str


def probe_path(namespaces: Sequence[str]) -> str:
    """The list request kopf's watch of AgentTasks needs: cluster-wide, or in the first namespace."""
    if namespaces:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespaces[0]}/{PLURAL}?limit=1"
    return f"/apis/{GROUP}/{VERSION}/{PLURAL}?limit=1"


class Readiness:
    def __init__(self, *, configured: Callable[[], bool], namespaces: Sequence[str] = (),
                 fresh_for: float = 5.0, timeout: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self._configured = configured
        self._path = probe_path(namespaces)
        self._fresh_for, self._timeout, self._clock = fresh_for, timeout, clock
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stale: list[aiohttp.ClientSession] = []
        self._last_ok: float | None = None
        self._lock = asyncio.Lock()

    def use(self, info: kopf.ConnectionInfo) -> None:
        """The connection kopf logged in with (called from the login handler, any thread)."""
        self._info = info
        if self._session is not None:
            self._stale.append(self._session)
            self._session = None
        self._last_ok = None

    async def check(self) -> Verdict:
        if not self._configured():
            return Verdict(False, "starting: the operator is not configured yet")
        if self._info is None:
            return Verdict(False, "starting: kopf has not logged in to Kubernetes yet")
        async with self._lock:
            await self._close_stale()
            now = self._clock()
            if self._last_ok is not None and now - self._last_ok < self._fresh_for:
                return Verdict(True, "watching")
            info = self._info
            try:
                status = await self._get(info)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return Verdict(False, f"Kubernetes API {info.server} unreachable: {type(exc).__name__}: {exc}")
            if status >= 300:
                return Verdict(False, f"Kubernetes API {info.server} answered {status} to list {PLURAL}")
            self._last_ok = now
            return Verdict(True, "watching")

    async def _get(self, info: kopf.ConnectionInfo) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context(), limit=1),
                headers=info.as_http_headers(), trust_env=info.trust_env,
                timeout=aiohttp.ClientTimeout(total=self._timeout))
        async with self._session.get(info.server.rstrip("/") + self._path) as resp:
            await resp.read()
            return resp.status

    async def _close_stale(self) -> None:
        while self._stale:
            await self._stale.pop().close()

    async def close(self) -> None:
        await self._close_stale()
        if self._session is not None:
            await self._session.close()
            self._session = None
