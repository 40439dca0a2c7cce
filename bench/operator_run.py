"""The operator run: N AgentTasks created in one batch on the real control plane, reconciled by
`agenttask run` (a subprocess: standalone, one namespace, default settings) against the
embedded sandbox server.

Measures per task: submission (the create POST returned) -> first create request at the sandbox
server -> `status.runningTime`; the wall time until every task is Succeeded with its sandbox
deleted; the operator's peak RSS; the apiserver's request counters before/after (minus this
module's own requests) and the sandbox server's call counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from controller import plan
from controller.api import GROUP, PLURAL, VERSION
from controller.devcluster import DevCluster
from controller.settings import Settings
from tests.integration.harness import Operator, SandboxServer

from . import report
from .workload import RssSampler, apiserver_metrics, task_body

# The integration harness speeds the operator up for tests; the benchmark runs the defaults.
_DEFAULTS = ("poll_interval_seconds", "max_poll_interval_seconds", "stream_recheck_seconds",
             "log_tail_interval_seconds", "retry_base_seconds", "retry_max_seconds")
APPLY_CONCURRENCY = 16


def default_env() -> dict[str, str]:
    return {f"AGENTTASK_{name.upper()}": str(Settings.model_fields[name].default) for name in _DEFAULTS}


def _when(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Api:
    """The benchmark's own apiserver client; counts its requests by the apiserver's verb names."""

    def __init__(self, cluster: DevCluster):
        ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
        self.http = httpx.AsyncClient(base_url=cluster.server, verify=ctx, timeout=60,
                                      headers={"Authorization": f"Bearer {cluster.admin.token}"},
                                      limits=httpx.Limits(max_connections=APPLY_CONCURRENCY))
        self.counts: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    async def create_namespace(self, name: str) -> None:
        resp = await self.http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": name}})
        resp.raise_for_status()
        self._count("POST namespaces")

    async def create_task(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        resp = await self.http.post(f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}", json=body)
        self._count(f"POST {PLURAL}")
        resp.raise_for_status()
        created: dict[str, Any] = resp.json()
        return created

    async def list_tasks(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            resp = await self.http.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", params=params)
            self._count(f"LIST {PLURAL}")
            resp.raise_for_status()
            page = resp.json()
            items += page["items"]
            cont = page["metadata"].get("continue")
            if not cont:
                return items
            params = {"limit": "500", "continue": cont}

    async def close(self) -> None:
        await self.http.aclose()


async def _watching(cluster: DevCluster, namespace: str, timeout: float = 60) -> None:
    """Wait until the operator's watch on the namespace's AgentTasks is open (a freshly started
    apiserver may answer its first LIST with 429; tasks applied before that wait a retry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(apiserver_metrics, cluster)
        for line in text.splitlines():
            if (line.startswith("apiserver_longrunning_requests{") and f'resource="{PLURAL}"' in line
                    and 'verb="WATCH"' in line and not line.endswith(" 0")):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("the operator did not start watching AgentTasks")


def _cpu(op: Operator) -> float:
    """CPU seconds (user + system) the operator process used so far."""
    assert op.process is not None
    times = psutil.Process(op.process.pid).cpu_times()
    return float(times.user + times.system)


def control_plane_cpu(cluster: DevCluster) -> float:
    """CPU seconds kube-apiserver and etcd used so far: the work the operator's requests and
    watches cause there, which the baseline (no Kubernetes) never pays."""
    total = 0.0
    for pid in cluster.pids().values():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += float(times.user + times.system)
    return total


def _done(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return status.get("phase") in ("Succeeded", "Failed") and bool((status.get("sandbox") or {}).get("deleted"))


async def _apply(api: Api, bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)
    marks: dict[str, dict[str, Any]] = {}

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            created = await api.create_task(body)
            marks[created["metadata"]["name"]] = {"applied": time.time(), "uid": created["metadata"]["uid"]}

    await asyncio.gather(*(one(b) for b in bodies))
    return marks


async def _wait(api: Api, server: SandboxServer, namespace: str, n: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # cheap: the sandbox server's counters
        stats = await asyncio.to_thread(server.stats)
        if stats["sandboxes_deleted"] >= n:  # (warm-pool refills keep sandboxes alive)
            break
        await asyncio.sleep(0.5)
    while time.monotonic() < deadline:  # then the statuses (every task says Succeeded, sandbox deleted)
        items = await api.list_tasks(namespace)
        if len(items) >= n and all(_done(i) for i in items):
            return items
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{n} tasks did not finish in {timeout:.0f}s")


def _sharded_env(namespace: str, shards: int) -> dict[str, str]:
    return {"AGENTTASK_SHARDS": str(shards), "AGENTTASK_LEASE_NAMESPACE": namespace} if shards > 1 else {}


def _owns_a_shard(op: Operator) -> bool:
    return any(line.startswith("agenttask_shards_owned ") and float(line.split()[1]) >= 1
               for line in op.metrics().splitlines())


async def run(*, cluster: DevCluster, server: SandboxServer, namespace: str, n: int, concurrency: int,
              repo_url: str, log_path: Path, timeout: float, env: dict[str, str] | None = None,
              spec: dict[str, Any] | None = None, shards: int = 1,
              before_apply: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    """`shards` > 1: that many operator processes in sharded mode share the tasks (and the limit)."""
    api = Api(cluster)
    try:
        await api.create_namespace(namespace)
        # sharded: replica ids end in the ordinal (the harness derives them from the log file's name)
        paths = [log_path] if shards == 1 else [log_path.with_name(f"{log_path.stem}-shard-{i}.log")
                                                for i in range(shards)]
        ops = [Operator(kubeconfig=cluster.kubeconfig, server=server, namespace=namespace, log_path=path,
                        instance_id=f"bench-{namespace}",
                        env_overrides={**default_env(), "AGENTTASK_MAX_ACTIVE_SANDBOXES": str(concurrency),
                                       **_sharded_env(namespace, shards), **(env or {})}) for path in paths]
        try:
            for op in ops:
                await asyncio.to_thread(op.start)
            await _watching(cluster, namespace)
            if shards > 1:
                deadline = time.monotonic() + 60
                while not all([await asyncio.to_thread(_owns_a_shard, op) for op in ops]):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the shards' Leases were not all held within 60 s")
                    await asyncio.sleep(0.2)
            with contextlib.ExitStack() as stack:
                samplers = [stack.enter_context(RssSampler(op.process.pid)) for op in ops if op.process is not None]
                if before_apply is not None:
                    await before_apply()
                bodies = [task_body(name=f"bench-{i:05d}", namespace=namespace, repo_url=repo_url, **(spec or {}))
                          for i in range(n)]
                await asyncio.to_thread(server._request, "POST", "/_admin/reset-stats")
                before = report.parse_request_totals(await asyncio.to_thread(apiserver_metrics, cluster))
                api.counts.clear()
                cpu_before = [_cpu(op) for op in ops]
                plane_before = control_plane_cpu(cluster)
                started = time.time()
                marks = await _apply(api, bodies)
                items = await _wait(api, server, namespace, n, timeout)
                wall = time.time() - started
                after = report.parse_request_totals(await asyncio.to_thread(apiserver_metrics, cluster))
                stats = await asyncio.to_thread(server.stats)
                cpu = sum(_cpu(op) - b for op, b in zip(ops, cpu_before, strict=True))
                plane = control_plane_cpu(cluster) - plane_before
        finally:
            for op in ops:
                await asyncio.to_thread(op.stop)
    finally:
        await api.close()
    first_create = stats["first_create_at"]
    for item in items:
        mark = marks[item["metadata"]["name"]]
        status = item.get("status") or {}
        mark["first_create"] = first_create.get(plan.sandbox_name(mark["uid"], 1))
        mark["running"] = _when(status.get("runningTime"))
        mark["outcome"] = (status.get("result") or {}).get("outcome")
        mark["phase"] = status.get("phase")
    kube = report.counter_delta(before, after)
    own = api.counts
    operator_only = {k: v - own.get(k, 0) for k, v in kube.items() if v - own.get(k, 0)}
    return {"wall_seconds": wall, "tasks": marks, "rss_peak_bytes": max(r.peak for r in samplers),
            "cpu_seconds": round(cpu, 1), "control_plane_cpu_seconds": round(plane, 1), "shards": shards,
            "rss_samples": [(round(t - started, 2), b) for t, b in samplers[0].samples if t >= started],
            "kube_requests": operator_only, "daytona_calls": {k: v for k, v in stats["calls"].items()
                                                              if not k.startswith("admin_")}}
