"""Many tasks running at once: N AgentTasks whose agents sleep, all admitted together.

What hour-long agents mean at scale: the operator holds N supervisors, N log streams and N
sandboxes for as long as the agents run. Measured, with `AGENTTASK_MAX_ACTIVE_SANDBOXES=N`:

- apply -> first create request at the sandbox server (p50/p95/max) for the whole burst;
- the time until every agent runs (the sandbox server's `commands_started`);
- the steady state, from the moment every agent runs until the first one exits: the operator's
  CPU (percent of one core), its RSS, Kubernetes API requests per minute (apiserver counters,
  minus this module's own) and Daytona calls per minute (sandbox server counters), by kind;
- that all N finish Succeeded and every sandbox is deleted, and how long that took.

The benchmark watches the sandbox server's counters and the operator's `/metrics`
(`agenttask_tasks{phase=...}`), never a LIST of N tasks while it measures.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import psutil

from controller import plan
from controller.devcluster import DevCluster
from tests.integration.harness import Operator, SandboxServer

from . import report
from .operator_run import Api, _apply, _done, _watching, control_plane_cpu, default_env
from .workload import RssSampler, apiserver_metrics, task_body


def _phase(metrics: str, phase: str) -> int:
    match = re.search(rf'^agenttask_tasks{{phase="{phase}"}} (\S+)$', metrics, re.M)
    return int(float(match.group(1))) if match else 0


async def _until(check: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} did not happen in {timeout:.0f}s")


def _rate(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    return {k: round(v * 60 / seconds, 1) for k, v in report.counter_delta(before, after).items() if v}


async def run(*, cluster: DevCluster, server: SandboxServer, namespace: str, n: int, sleep_seconds: int,
              repo_url: str, log_path: Path, timeout: float) -> dict[str, Any]:
    api = Api(cluster)
    try:
        await api.create_namespace(namespace)
        op = Operator(kubeconfig=cluster.kubeconfig, server=server, namespace=namespace, log_path=log_path,
                      instance_id=f"bench-{namespace}",
                      env_overrides={**default_env(), "AGENTTASK_MAX_ACTIVE_SANDBOXES": str(n)})
        await asyncio.to_thread(op.start)
        assert op.process is not None
        proc = psutil.Process(op.process.pid)
        await _watching(cluster, namespace)
        try:
            with RssSampler(op.process.pid) as rss:
                bodies = [task_body(name=f"sleep-{i:05d}", namespace=namespace, repo_url=repo_url)
                          for i in range(n)]
                for b in bodies:
                    b["spec"]["agent"]["command"] = ["sleep", str(sleep_seconds)]
                await asyncio.to_thread(server._request, "POST", "/_admin/reset-stats")
                started = time.time()
                marks = await _apply(api, bodies)
                applied = time.time()
                await _until(lambda: server.stats()["commands_started"] >= n, timeout, "every agent started")
                await _until(lambda: _phase(op.metrics(), "Running") >= n, 120, "every task Running")
                all_running = time.time()
                # the steady state: every agent sleeps; measure until the first could exit
                window_end = started + sleep_seconds - 5
                kube0 = report.parse_request_totals(await asyncio.to_thread(apiserver_metrics, cluster))
                calls0 = dict((await asyncio.to_thread(server.stats))["calls"])
                cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
                plane0 = control_plane_cpu(cluster)
                rss_steady: list[int] = []
                while time.time() < window_end:
                    rss_steady.append(proc.memory_info().rss)
                    await asyncio.sleep(min(5.0, max(window_end - time.time(), 0.1)))
                cpu1, t1 = sum(proc.cpu_times()[:2]), time.monotonic()
                plane1 = control_plane_cpu(cluster)
                kube1 = report.parse_request_totals(await asyncio.to_thread(apiserver_metrics, cluster))
                calls1 = dict((await asyncio.to_thread(server.stats))["calls"])
                steady = t1 - t0
                # then all finish and are cleaned up
                await _until(lambda: server.stats()["sandboxes_deleted"] >= n, timeout, "every sandbox deleted", 1.0)
                items = await api.list_tasks(namespace)
                finished = time.time()
        finally:
            await asyncio.to_thread(op.stop)
    finally:
        await api.close()
    stats = await asyncio.to_thread(server.stats)
    first = stats["first_create_at"]
    to_create = [first[plan.sandbox_name(m["uid"], 1)] - m["applied"] for m in marks.values()
                 if plan.sandbox_name(m["uid"], 1) in first]
    return {
        "n": n, "sleep_seconds": sleep_seconds,
        "apply_seconds": round(applied - started, 1),
        "to_first_create": report.summarize(to_create),
        "all_running_after_seconds": round(all_running - started, 1),
        "steady_seconds": round(steady, 1),
        "steady_cpu_percent": round((cpu1 - cpu0) * 100 / steady, 2) if steady > 0 else None,
        "steady_control_plane_cpu_percent": round((plane1 - plane0) * 100 / steady, 2) if steady > 0 else None,
        "steady_rss_mib": round(max(rss_steady) / 2**20, 1) if rss_steady else None,
        "rss_peak_mib": round(rss.peak / 2**20, 1),
        "kube_requests_per_minute": _rate(kube0, kube1, steady),
        "daytona_calls_per_minute": _rate({k: float(v) for k, v in calls0.items()},
                                          {k: float(v) for k, v in calls1.items()}, steady),
        "finished_after_seconds": round(finished - started, 1),
        "succeeded": sum(1 for i in items if _done(i) and (i.get("status") or {}).get("phase") == "Succeeded"),
        "max_alive": stats["max_alive"],
    }
