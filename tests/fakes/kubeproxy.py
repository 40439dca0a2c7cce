"""A fault-injecting reverse proxy in front of the real kube-apiserver (tests only).

Listens on 127.0.0.1 (plain HTTP), forwards every request to the apiserver over TLS (verifying
its CA) and streams the answer back — watches included — unless a fault rule matches: then it
answers with the rule's status and a Kubernetes `Status` body, `times` times. Everything that is
not faulted is the real apiserver's answer, so clients behind it meet real resourceVersions,
real validation and real RBAC, plus the failures a test asks for.

    with KubeProxy(cluster) as proxy:
        proxy.fault("GET", r"/agenttasks$", status=404)
        kubeconfig = proxy.kubeconfig(tmp_path / "kubeconfig")
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from controller.devcluster.cluster import DevCluster

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "content-encoding"}


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int
    times: int | None
    hits: int = 0


class KubeProxy:
    def __init__(self, cluster: DevCluster):
        self.cluster = cluster
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubeproxy", daemon=True)
        self.port = 0

    # ------------------------------------------------------------------ control

    def fault(self, method: str, path: str, *, status: int, times: int | None = None) -> Rule:
        """Answer `status` to requests whose path (and query) matches the regex `path`."""
        rule = Rule(method=method.upper(), path=re.compile(path), status=status, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "admin", "user": {"token": self.cluster.admin.token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "admin"}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> KubeProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        self._client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._client.close()

    # ------------------------------------------------------------------ proxying

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path.search(path) and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
        return None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        target = request.rel_url.path_qs
        rule = self._match(request.method, target)
        if rule is not None:
            self.requests.append((request.method, target, rule.status))
            body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": f"injected by the test proxy: HTTP {rule.status}",
                                    "code": rule.status}
            return web.Response(status=rule.status, text=json.dumps(body), content_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = await request.read()
        async with self._client.request(request.method, f"{self.cluster.server}{target}", headers=headers,
                                        data=data or None, allow_redirects=False) as upstream:
            self.requests.append((request.method, target, upstream.status))
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
