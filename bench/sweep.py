"""The orphan sweep (`controller.gc.Sweeper`, in-process) over many sandboxes of this installation.

Setup: `owned` AgentTasks on the control plane, one sandbox per task (labels as the operator
writes them) plus `orphans` sandboxes whose task does not exist, all created through raw
concurrent HTTP POSTs to the embedded server. A sandbox is deleted only when two sweeps found it
orphaned (`gc.confirm`), so one measurement is two sweeps of one `Sweeper` (grace 0): the first
(suspecting: `suspect_sweep_seconds`) only lists, the sandboxes then the tasks, and records the
orphans as suspects; the second (deleting: `wall_seconds`) lists again and deletes them by id,
`delete_concurrency` at a time. That runs twice over the same set-up: once for time, RSS growth
and the embedded server's calls by operation (`server_calls`, of the timed pair only), once under
tracemalloc for the Python heap peak (the orphans are created again in between).

`python -m bench.sweep [--total N] [--orphans K] [--delete-concurrency C]` runs only this
measurement on a control plane and an embedded server of its own, started as `bench.run` starts
them, and prints the JSON with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc as pygc
import json
import os
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from controller import gc
from controller.devcluster import DevCluster
from controller.kube import Kube
from controller.sandboxes import LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID, Sandboxes
from controller.settings import Settings
from tests.integration.harness import SandboxServer, make_repo

from .operator_run import Api
from .workload import DEFAULT_LATENCY, RssSampler, task_body

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
              namespace: str, repo_url: str, delete_concurrency: int | None = None) -> dict[str, Any]:
    """Set up, sweep twice (timed), set the orphans up again, sweep twice (under tracemalloc).
    `delete_concurrency`: the sweep's deletes in flight (default: the operator's default)."""
    if delete_concurrency is None:
        delete_concurrency = Settings.model_fields["gc_delete_concurrency"].default
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
                                 grace_seconds=0, delete_concurrency=delete_concurrency)  # fmt: skip
            now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            started = time.monotonic()
            suspecting = await sweeper.sweep(now=now)
            middle = time.monotonic()
            deleting = await sweeper.sweep(now=now)
            return suspecting, middle - started, deleting, time.monotonic() - middle

        pygc.collect()
        rss_before = me.memory_info().rss
        calls_before = (await asyncio.to_thread(server.stats))["calls"]
        with RssSampler(os.getpid(), interval=0.05) as rss:
            suspecting, list_wall, first, wall = await sweeps()
        calls = _calls_since(calls_before, (await asyncio.to_thread(server.stats))["calls"])
        await _create_sandboxes(server, orphan_specs())
        pygc.collect()
        tracemalloc.start()
        _, _, second, _ = await sweeps()
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await sandboxes.close()
    return {"sandboxes": total, "orphans": orphans, "owned_tasks": owned, "setup_seconds": round(setup, 1),
            "delete_concurrency": delete_concurrency, "task_page_size": gc.TASK_PAGE_SIZE,
            "wall_seconds": wall, "suspect_sweep_seconds": list_wall, "suspected": len(suspecting.suspected),
            "seen": first.seen, "deleted": len(first.deleted),
            "deleted_second": len(second.deleted),
            "rss_growth_mib": (rss.peak - rss_before) / 2**20, "tracemalloc_peak_mib": heap_peak / 2**20,
            "server_calls": calls, "server_list_pages": calls.get("list", 0), "server_gets": calls.get("get", 0),
            "server_deletes": calls.get("delete", 0)}


def _calls_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The embedded server's calls by operation between two of its stats (the timed pair of sweeps)."""
    return {op: n - before.get(op, 0) for op, n in sorted(after.items()) if n - before.get(op, 0)}


async def _standalone(*, total: int, orphans: int, delete_concurrency: int | None) -> dict[str, Any]:
    """`run` on a fresh control plane and embedded server, both started as `bench.run` does."""
    from . import run as bench_run  # bench.run imports this module: only import it when run on its own

    with tempfile.TemporaryDirectory(prefix="agenttask-bench-sweep-") as tmpdir:
        tmp = Path(tmpdir)
        _, repo_url = make_repo(tmp)
        with DevCluster(state_dir=tmp / "controlplane", owned=True) as cluster:
            bench_run.install_crd(cluster)
            with bench_run.niced_server(tmp / "sb-sweep", dict(DEFAULT_LATENCY)) as server:
                load_before = os.getloadavg()
                result = await run(cluster=cluster, server=server, total=total, orphans=orphans,
                                   namespace="bench-sweep", repo_url=repo_url, delete_concurrency=delete_concurrency)
    result["latency"] = dict(DEFAULT_LATENCY)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=10000, help="sandboxes of this installation")
    parser.add_argument("--orphans", type=int, default=None, help="of them orphans (default: a tenth)")
    parser.add_argument("--delete-concurrency", type=int, default=None,
                        help="deletes in flight (default: the operator's gc_delete_concurrency default)")
    args = parser.parse_args(argv)
    orphans = args.total // 10 if args.orphans is None else args.orphans
    result = asyncio.run(_standalone(total=args.total, orphans=orphans, delete_concurrency=args.delete_concurrency))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
