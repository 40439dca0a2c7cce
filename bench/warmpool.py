"""Warm pool vs cold: time to running of tasks whose sandbox comes from a warm pool
(`AGENTTASK_WARM_POOLS`) and of the same tasks created cold, with a slow cold create.

Two operator runs against one embedded server (`create` latency = the cold path,
`pool_create` latency = handing out a pooled sandbox): first with a pool as large as the batch
(filled before the tasks are applied: every task is a hit), then without a pool (every task
creates its sandbox cold).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from controller.devcluster import DevCluster
from tests.integration.harness import SandboxServer

from . import operator_run, report

SNAPSHOT = "daytona-small"


async def _pool_full(server: SandboxServer, size: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = await asyncio.to_thread(server._request, "GET", "/api/warm-pools")
        if any(p["snapshot"] == SNAPSHOT and p["currentSize"] >= size for p in pools):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the warm pool did not fill")


def _to_running(result: dict[str, Any]) -> list[float | None]:
    return [m["running"] - m["applied"] if m.get("running") else None for m in result["tasks"].values()]


async def run(*, cluster: DevCluster, server: SandboxServer, tasks: int, create_latency: float,
              pool_create_latency: float, repo_url: str, logs: Path, timeout: float) -> dict[str, Any]:
    spec = {"sandbox": {"snapshot": SNAPSHOT}}
    warm = await operator_run.run(
        cluster=cluster, server=server, namespace="bench-warm", n=tasks, concurrency=tasks, repo_url=repo_url,
        log_path=logs / "operator-warm.log", timeout=timeout, spec=spec,
        env={"AGENTTASK_WARM_POOLS": json.dumps({SNAPSHOT: tasks})},
        before_apply=lambda: _pool_full(server, tasks))
    hits = (await asyncio.to_thread(server.stats))["pool_hits"]
    # the pool stays configured on the server (the operator only sizes it): empty it for the cold run
    pools = await asyncio.to_thread(server._request, "GET", "/api/warm-pools")
    for pool in pools:
        await asyncio.to_thread(server._request, "DELETE", f"/api/warm-pools/{pool['id']}")
    cold = await operator_run.run(
        cluster=cluster, server=server, namespace="bench-cold", n=tasks, concurrency=tasks, repo_url=repo_url,
        log_path=logs / "operator-cold.log", timeout=timeout, spec=spec)
    return {"tasks": tasks, "snapshot": SNAPSHOT, "pool_size": tasks, "create_latency": create_latency,
            "pool_create_latency": pool_create_latency, "pool_hits": hits,
            "to_running": {"warm-pool": report.summarize(_to_running(warm)),
                           "cold": report.summarize(_to_running(cold))}}
