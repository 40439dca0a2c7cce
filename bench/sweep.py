"""One orphan sweep (`controller.gc.sweep`, in-process) over many sandboxes of this installation.

Setup: `owned` AgentTasks on the control plane, one sandbox per task (labels as the operator
writes them) plus `orphans` sandboxes whose task does not exist, all created through raw
concurrent HTTP POSTs to the embedded server. A sandbox is deleted only when two sweeps found it
orphaned (`gc.confirm`), so one measurement is two sweeps of one `Sweeper` (grace 0): the first
lists everything and records the orphans as suspects, the second lists again and deletes them.
That runs twice over the same set-up: once for time and RSS, once under tracemalloc for the
Python heap peak (the orphans are created again in between).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc as pygc
import os
import time
import tracemalloc
import uuid
from typing import Any

import aiohttp
import psutil

from controller import gc
from controller.devcluster import DevCluster
from controller.kube import Kube
from controller.sandboxes import LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID, Sandboxes
from tests.integration.harness import SandboxServer

from .operator_run import Api
from .workload import RssSampler, task_body

INSTANCE = "bench-sweep"
CREATE_CONCURRENCY = 200


async def _create_sandboxes(server: SandboxServer, specs: list[tuple[str, dict[str, str]]]) -> None:
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CREATE_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        async def one(name: str, labels: dict[str, str]) -> None:
            async with gate, http.post(f"{server.api_url}/sandbox", json={"name": name, "labels": labels}) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"create {name}: HTTP {resp.status}: {await resp.text()}")

        await asyncio.gather(*(one(n, labels) for n, labels in specs))


def _labels(namespace: str, name: str, uid: str) -> dict[str, str]:
    return {LABEL_INSTANCE: INSTANCE, LABEL_NAMESPACE: namespace, LABEL_NAME: name, LABEL_UID: uid,
            LABEL_ATTEMPT: "1"}


async def run(*, cluster: DevCluster, server: SandboxServer, total: int, orphans: int,
              namespace: str, repo_url: str) -> dict[str, Any]:
    api = Api(cluster)
    owned = total - orphans
    try:
        await api.create_namespace(namespace)
        gate = asyncio.Semaphore(16)

        async def task(i: int) -> tuple[str, dict[str, str]]:
            async with gate:
                body = await api.create_task(task_body(name=f"owned-{i:05d}", namespace=namespace,
                                                       repo_url=repo_url))
            meta = body["metadata"]
            return f"at-{meta['uid']}-1", _labels(namespace, meta["name"], meta["uid"])

        setup = time.monotonic()
        specs = list(await asyncio.gather(*(task(i) for i in range(owned))))
        await _create_sandboxes(server, specs)

        def orphan_specs() -> list[tuple[str, dict[str, str]]]:
            out = []
            for i in range(orphans):
                uid = str(uuid.uuid4())
                out.append((f"at-{uid}-1", _labels(namespace, f"gone-{i:05d}", uid)))
            return out

        await _create_sandboxes(server, orphan_specs())
        setup = time.monotonic() - setup
    finally:
        await api.close()

    kube = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
    sandboxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key)
    me = psutil.Process(os.getpid())
    try:
        async def sweeps() -> tuple[gc.SweepReport, float, gc.SweepReport, float]:
            sweeper = gc.Sweeper(sandboxes=sandboxes, kube=kube, instance_id=INSTANCE, namespaces=[namespace],
                                 grace_seconds=0)  # fmt: skip
            now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            started = time.monotonic()
            suspecting = await sweeper.sweep(now=now)
            middle = time.monotonic()
            deleting = await sweeper.sweep(now=now)
            return suspecting, middle - started, deleting, time.monotonic() - middle

        pygc.collect()
        rss_before = me.memory_info().rss
        with RssSampler(os.getpid(), interval=0.05) as rss:
            suspecting, list_wall, first, wall = await sweeps()
        await _create_sandboxes(server, orphan_specs())
        pygc.collect()
        tracemalloc.start()
        _, _, second, _ = await sweeps()
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await sandboxes.close()
    stats = await asyncio.to_thread(server.stats)
    return {"sandboxes": total, "orphans": orphans, "owned_tasks": owned, "setup_seconds": round(setup, 1),
            "wall_seconds": wall, "suspect_sweep_seconds": list_wall, "suspected": len(suspecting.suspected),
            "seen": first.seen, "deleted": len(first.deleted),
            "deleted_second": len(second.deleted),
            "rss_growth_mib": (rss.peak - rss_before) / 2**20, "tracemalloc_peak_mib": heap_peak / 2**20,
            "server_list_pages": stats["calls"].get("list", 0), "server_gets": stats["calls"].get("get", 0),
            "server_deletes": stats["calls"].get("delete", 0)}
