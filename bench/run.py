"""`python -m bench.run [--sizes 100,1000] [--quick]`: the whole benchmark, then the report.

Starts a local control plane (`controller.devcluster`) and, per measurement, a fresh embedded
sandbox server with injected latency; runs the baseline and the operator for every N, one orphan
sweep and the warm-pool comparison; writes `bench/results/latest.json` and regenerates
`docs/performance.md` with `docs/performance-time-to-running.png`.

Everything the sandbox server starts (git clones, the runners and the agents) runs at nice 10
for both the baseline and the operator: on a real installation the sandboxes run on Daytona's
machines, neither next to the operator nor next to Daytona's API, and on a small benchmark
machine they would otherwise starve both.

Benchmarks are never pass/fail tests; nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from controller import plan
from controller.devcluster import DevCluster
from tests.integration.harness import SandboxServer, make_repo, sandbox_server

from . import baseline, operator_run, plot, report, running, sweep, warmpool
from .workload import AGENT, DEFAULT_CONCURRENCY, DEFAULT_LATENCY, SLEEPER, latency_flags

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "performance.md"
PLOT = ROOT / "docs" / "performance-time-to-running.png"
OPTIMISATIONS = ROOT / "bench" / "optimisations.json"
SANDBOX_NICE = 10


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(cluster: DevCluster) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    assert cluster.binaries is not None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus (nproc)": os.cpu_count(),
        "cpu model": cpu,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kopf / daytona SDK / kr8s": " / ".join(metadata.version(p) for p in ("kopf", "daytona", "kr8s")),
        "kube-apiserver / etcd": f"{cluster.binaries.kubernetes_version} / {cluster.binaries.etcd_version}",
        "load average at start (1 min)": f"{os.getloadavg()[0]:.1f}",
    }


class Renicer(threading.Thread):
    """Puts every process the sandbox server starts at `SANDBOX_NICE` (polls its children)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.parent, self.interval, self.done = psutil.Process(pid), interval, threading.Event()
        self.seen: set[int] = set()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                for child in self.parent.children(recursive=True):
                    if child.pid not in self.seen:
                        self.seen.add(child.pid)
                        with contextlib.suppress(psutil.Error):
                            child.nice(SANDBOX_NICE)


@contextlib.contextmanager
def niced_server(root: Path, latency: dict[str, float] | None = None,
                 faults: dict[str, Any] | None = None) -> Iterator[SandboxServer]:
    extra = latency_flags(latency) if latency else ()
    if faults:
        extra += ("--faults", json.dumps(faults))
    with sandbox_server(root, extra=extra) as server:
        renicer = Renicer(server.process.pid)
        renicer.start()
        try:
            yield server
        finally:
            renicer.done.set()
            renicer.join()


def _latencies(tasks: dict[str, dict[str, Any]], first_create: dict[str, float]) -> dict[str, list[float | None]]:
    to_create, to_running = [], []
    for name, mark in tasks.items():
        box = plan.sandbox_name(mark["uid"], 1) if "uid" in mark else name
        created = first_create.get(box)
        to_create.append(created - mark["applied"] if created else None)
        to_running.append(mark["running"] - mark["applied"] if mark.get("running") else None)
    return {"to_first_create": to_create, "to_running": to_running}


def _summary(raw: dict[str, Any], n: int, stats: dict[str, Any]) -> dict[str, Any]:
    lat = _latencies(raw["tasks"], stats["first_create_at"])
    calls = {k: v for k, v in stats["calls"].items() if not k.startswith("admin_")}
    out: dict[str, Any] = {
        "wall_seconds": raw["wall_seconds"],
        "latency": {k: report.summarize(v) for k, v in lat.items()},
        "to_running": [v for v in lat["to_running"] if v is not None],
        "to_first_create": [v for v in lat["to_first_create"] if v is not None],
        "daytona_calls_per_task": report.per_task(calls, n),
        "outcomes": sorted({str(m.get("outcome")) for m in raw["tasks"].values()}),
    }
    if "kube_requests" in raw:
        out["kube_requests_per_task"] = report.per_task(raw["kube_requests"], n)
        out["rss_peak_mib"] = raw["rss_peak_bytes"] / 2**20
        out["cpu_seconds"] = raw["cpu_seconds"]
        out["control_plane_cpu_seconds"] = raw.get("control_plane_cpu_seconds")
    return out


async def scale(cluster: DevCluster, tmp: Path, *, n: int, concurrency: int, repo_url: str,
                latency: dict[str, float], logs: Path, agent: list[str] | None = None) -> dict[str, Any]:
    spec = {"agent": {"command": agent}} if agent else None
    tag = f"{n}-sleep" if agent else str(n)
    say(f"baseline, N={n}{' ' + ' '.join(agent) if agent else ''}")
    with niced_server(tmp / f"sb-base-{tag}", latency) as server:
        await asyncio.to_thread(server._request, "POST", "/_admin/reset-stats")
        raw = await baseline.run(api_url=server.api_url, api_key=server.api_key, n=n, concurrency=concurrency,
                                 repo_url=repo_url, spec=spec)
        base = _summary(raw, n, await asyncio.to_thread(server.stats))
    say(f"baseline, N={n}: {base['wall_seconds']:.1f} s; operator, N={n}")
    with niced_server(tmp / f"sb-op-{tag}", latency) as server:
        raw = await operator_run.run(cluster=cluster, server=server, namespace=f"bench-{tag}", n=n,
                                     concurrency=concurrency, repo_url=repo_url, log_path=logs / f"operator-{tag}.log",
                                     timeout=max(600.0, n * 3.0), spec=spec)
        op = _summary(raw, n, await asyncio.to_thread(server.stats))
        op["rss_samples"] = raw["rss_samples"]
    say(f"operator, N={n}: {op['wall_seconds']:.1f} s ({op['wall_seconds'] / base['wall_seconds']:.2f}x baseline)")
    return {"n": n, "concurrency": concurrency, "baseline": base, "operator": op}


async def sharded(cluster: DevCluster, tmp: Path, *, one: dict[str, Any], shards: int, repo_url: str,
                  latency: dict[str, float], logs: Path) -> dict[str, Any]:
    """The largest scale run again with `shards` operator processes in sharded mode (the same
    total limit, split between them), next to the one-replica run and its baseline."""
    n, concurrency = one["n"], one["concurrency"]
    say(f"operator, N={n}, {shards} shards")
    with niced_server(tmp / f"sb-op-{n}-sharded", latency) as server:
        raw = await operator_run.run(cluster=cluster, server=server, namespace=f"bench-{n}-sharded", n=n,
                                     concurrency=concurrency, repo_url=repo_url,
                                     log_path=logs / f"operator-{n}-sharded.log", timeout=max(600.0, n * 3.0),
                                     shards=shards)
        op = _summary(raw, n, await asyncio.to_thread(server.stats))
    say(f"operator, N={n}, {shards} shards: {op['wall_seconds']:.1f} s "
        f"({op['wall_seconds'] / one['baseline']['wall_seconds']:.2f}x baseline)")
    return {"n": n, "concurrency": concurrency, "shards": shards, "baseline": one["baseline"],
            "one": one["operator"], "sharded": op}


def install_crd(cluster: DevCluster) -> None:
    kubectl = [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}"]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds" / "agenttask.yaml")],
                   check=True, capture_output=True)
    cluster.wait_established("agenttasks.agenttask.io")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    latency = dict(DEFAULT_LATENCY)
    with tempfile.TemporaryDirectory(prefix="agenttask-bench-") as tmpdir:
        tmp = Path(tmpdir)
        logs = Path(args.logs) if args.logs else tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _, repo_url = make_repo(tmp)
        say("starting the control plane")
        with DevCluster(state_dir=tmp / "controlplane", owned=True) as cluster:
            install_crd(cluster)
            results: dict[str, Any] = {
                "machine": machine(cluster),
                "parameters": {"concurrency": args.concurrency, "latency": latency, "agent": " ".join(AGENT),
                               "sizes": sizes, "sandbox_nice": SANDBOX_NICE},
                "scale": [],
            }
            for n in sizes:
                results["scale"].append(await scale(cluster, tmp, n=n, concurrency=args.concurrency,
                                                    repo_url=repo_url, latency=latency, logs=logs))
            if args.shards > 1 and results["scale"]:
                one = max(results["scale"], key=lambda r: r["n"])
                results["sharded"] = await sharded(cluster, tmp, one=one, shards=args.shards, repo_url=repo_url,
                                                   latency=latency, logs=logs)
            sleep_sizes = [int(s) for s in args.sleep_sizes.split(",") if s]
            if sleep_sizes:
                results["parameters"]["sleeper"] = " ".join(SLEEPER)
                results["scale_sleep"] = [await scale(cluster, tmp, n=n, concurrency=args.concurrency,
                                                      repo_url=repo_url, latency=latency, logs=logs,
                                                      agent=list(SLEEPER)) for n in sleep_sizes]
            if args.running:
                say(f"{args.running} tasks running at once, agents sleeping {args.running_sleep} s")
                with niced_server(tmp / "sb-running", latency) as server:
                    results["running"] = await running.run(
                        cluster=cluster, server=server, namespace="bench-running", n=args.running,
                        sleep_seconds=args.running_sleep, repo_url=repo_url, log_path=logs / "operator-running.log",
                        timeout=max(900.0, args.running * 2.0))
                say(f"running at once: {results['running']}")
            if args.sweep:
                say(f"orphan sweep over {args.sweep} sandboxes")
                with niced_server(tmp / "sb-sweep", latency) as server:
                    results["sweep"] = await sweep.run(cluster=cluster, server=server, total=args.sweep,
                                                       orphans=args.sweep // 10, namespace="bench-sweep",
                                                       repo_url=repo_url)
                say(f"sweep: {results['sweep']['wall_seconds']:.1f} s")
            if args.warm:
                say(f"warm pool vs cold, {args.warm} tasks each")
                create, pool = 2.0, 0.01
                with niced_server(tmp / "sb-warm", faults={"latency": {**latency, "create": create,
                                                                       "pool_create": pool}}) as server:
                    results["warm_pool"] = await warmpool.run(
                        cluster=cluster, server=server, tasks=args.warm, create_latency=create,
                        pool_create_latency=pool, repo_url=repo_url, logs=logs, timeout=300)
    return results


def write(results: dict[str, Any], *, results_path: Path, doc: Path, plot_path: Path) -> None:
    if OPTIMISATIONS.exists():
        results.setdefault("optimisations", json.loads(OPTIMISATIONS.read_text())["optimisations"])
        results.setdefault("notes", json.loads(OPTIMISATIONS.read_text()).get("notes", []))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    plot.time_to_running(results["scale"], plot_path)
    doc.write_text(report.render(results, plot=os.path.relpath(plot_path, doc.parent)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 100,1000; --quick: 20,100)")
    parser.add_argument("--quick", action="store_true", help="small sizes, small sweep: a smoke run (~3 min)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="tasks at a time (AGENTTASK_MAX_ACTIVE_SANDBOXES and the baseline's limit)")
    parser.add_argument("--sleep-sizes", default=None,
                        help="N for the regime whose agents sleep 5 s (default 100,1000; --quick: 20; '': skip)")
    parser.add_argument("--running", type=int, default=None,
                        help="tasks running at once (default 1000; --quick: 50; 0: skip)")
    parser.add_argument("--running-sleep", type=int, default=None,
                        help="how long those agents sleep (default 600 s; --quick: 60 s)")
    parser.add_argument("--shards", type=int, default=2,
                        help="operator processes of the sharded run at the largest N (default 2; 1: skip)")
    parser.add_argument("--sweep", type=int, default=None, help="sandboxes in the orphan sweep (0: skip)")
    parser.add_argument("--warm", type=int, default=None, help="tasks per warm-pool/cold run (0: skip)")
    parser.add_argument("--logs", default=None, help="keep the operators' logs in this directory")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument("--doc", default=str(DOC), help="the markdown report to regenerate")
    parser.add_argument("--plot", default=str(PLOT), help="the PNG plot to regenerate")
    parser.add_argument("--render-only", action="store_true", help="re-render the doc from --results")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads(Path(args.results).read_text())
        results.pop("optimisations", None)
        results.pop("notes", None)
    else:
        if args.sizes is None:
            args.sizes = "20,100" if args.quick else "100,1000"
        if args.sleep_sizes is None:
            args.sleep_sizes = "20" if args.quick else "100,1000"
        args.running = (50 if args.quick else 1000) if args.running is None else args.running
        args.running_sleep = args.running_sleep or (60 if args.quick else 600)
        args.sweep = (1000 if args.quick else 10000) if args.sweep is None else args.sweep
        args.warm = (5 if args.quick else 10) if args.warm is None else args.warm
        started = time.monotonic()
        results = asyncio.run(main_async(args))
        results["bench_seconds"] = round(time.monotonic() - started)
        say(f"done in {results['bench_seconds']} s")
    write(results, results_path=Path(args.results), doc=Path(args.doc), plot_path=Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
