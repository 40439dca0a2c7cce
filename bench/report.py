"""Pure helpers of the benchmark report: percentiles, summaries and the markdown page.

`bench.run` collects raw numbers into one JSON-ready dict (`bench/results/latest.json`); this
module turns such a dict into `docs/performance.md`. Nothing here measures, plots or touches
files, so `tests/unit/test_bench_report.py` can check it without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

QUANTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default method); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """count, p50/p95/p99, max and mean of the values that are not None (`missing` counts the rest)."""
    given = list(values)
    present = [float(v) for v in given if v is not None]
    out: dict[str, float | int | None] = {"count": len(present), "missing": len(given) - len(present)}
    for q in QUANTILES:
        out[f"p{q}"] = percentile(present, q)
    out["max"] = max(present) if present else None
    out["mean"] = sum(present) / len(present) if present else None
    return out


def per_task(counts: Mapping[str, int], tasks: int) -> dict[str, float]:
    """Counters divided by the number of tasks, rounded to 2 decimals; those that round to zero
    (e.g. the apiserver's own informers re-opening watches during the run) dropped."""
    if tasks <= 0:
        raise ValueError("tasks must be positive")
    rounded = {k: round(v / tasks, 2) for k, v in sorted(counts.items())}
    return {k: v for k, v in rounded.items() if v}


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, int]:
    """after - before for every key (missing keys count as 0); zero deltas dropped."""
    keys = set(before) | set(after)
    delta = {k: round(after.get(k, 0) - before.get(k, 0)) for k in keys}
    return {k: v for k, v in sorted(delta.items()) if v}


def parse_request_totals(exposition: str) -> dict[str, float]:
    """`apiserver_request_total` from a Prometheus text exposition, summed by "VERB resource[/sub]"
    (codes, scopes and versions merged). Non-resource requests (e.g. /metrics itself) are left out."""
    totals: dict[str, float] = {}
    for line in exposition.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{"):].rpartition("} ")
        labels = _labels(labels_text)
        resource = labels.get("resource", "")
        if not resource:
            continue
        sub = labels.get("subresource", "")
        key = f"{labels.get('verb', '?')} {resource}{'/' + sub if sub else ''}"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # skip ="
        value = []
        while text[j] != '"':
            if text[j] == "\\":
                j += 1
            value.append(text[j])
            j += 1
        out[name] = "".join(value)
        i = j + 1
    return out


# ----------------------------------------------------------------------- markdown


def fmt(value: float | int | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _latency_cells(summary: Mapping[str, Any] | None) -> list[str]:
    summary = summary or {}
    return [fmt(summary.get(f"p{q}"), " s") for q in QUANTILES]


def scale_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One row per N: wall times and ratio, latency percentiles, RSS, calls and API requests per task."""
    rows = []
    for run in runs:
        base, op = run["baseline"], run["operator"]
        ratio = op["wall_seconds"] / base["wall_seconds"] if base["wall_seconds"] else None
        rows.append([
            str(run["n"]), fmt(base["wall_seconds"], " s", 1), fmt(op["wall_seconds"], " s", 1),
            fmt(ratio, "x"),
            fmt(op["rss_peak_mib"], " MiB", 0),
            fmt(op.get("cpu_seconds"), " s", 1),
            fmt(op["cpu_seconds"] / run["n"] if op.get("cpu_seconds") is not None else None, " s", 3),
            fmt(op.get("control_plane_cpu_seconds"), " s", 1),
            fmt(sum(base["daytona_calls_per_task"].values()), "", 1),
            fmt(sum(op["daytona_calls_per_task"].values()), "", 1),
            fmt(sum(op["kube_requests_per_task"].values()), "", 1),
        ])
    return table(["N", "baseline wall", "operator wall", "ratio", "operator peak RSS", "operator CPU",
                  "operator CPU/task", "apiserver + etcd CPU", "Daytona calls/task (baseline)",
                  "Daytona calls/task (operator)", "API requests/task"], rows)


def latency_table(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for run in runs:
        for who in ("baseline", "operator"):
            lat = run[who]["latency"]
            rows.append([str(run["n"]), who, *_latency_cells(lat.get("to_first_create")),
                         *_latency_cells(lat.get("to_running"))])
    return table(["N", "run", "→create p50", "→create p95", "→create p99",
                  "→running p50", "→running p95", "→running p99"], rows)


def running_text(r: Mapping[str, Any]) -> str:
    return (f"{r['n']} AgentTasks applied in one burst with `AGENTTASK_MAX_ACTIVE_SANDBOXES={r['n']}`, each agent "
            f"`sleep {r['sleep_seconds']}` (an hour-long agent as far as the operator can tell: a session command "
            "that prints nothing and runs on). The steady state is the window from the moment every agent runs "
            "until the first could exit; CPU is the operator process's (user + system) over that window, in percent "
            "of one core; requests and calls are per minute over the same window.")


def running_table(r: Mapping[str, Any]) -> str:
    create = r.get("to_first_create") or {}
    rows = [
        ["apply → first create p50 / p95 / max",
         f"{fmt(create.get('p50'), ' s')} / {fmt(create.get('p95'), ' s')} / {fmt(create.get('max'), ' s')}"],
        ["every agent running after", fmt(r.get("all_running_after_seconds"), " s", 1)],
        ["steady state measured for", fmt(r.get("steady_seconds"), " s", 0)],
        ["operator CPU, steady state", fmt(r.get("steady_cpu_percent"), " % of one core", 2)],
        ["apiserver + etcd CPU, steady state", fmt(r.get("steady_control_plane_cpu_percent"), " % of one core", 2)],
        ["operator RSS, steady state / peak",
         f"{fmt(r.get('steady_rss_mib'), ' MiB', 0)} / {fmt(r.get('rss_peak_mib'), ' MiB', 0)}"],
        ["Kubernetes API requests per minute, steady state",
         _per_minute(r.get("kube_requests_per_minute") or {})],
        ["Daytona calls per minute, steady state", _per_minute(r.get("daytona_calls_per_minute") or {})],
        ["all finished and cleaned up after", fmt(r.get("finished_after_seconds"), " s", 0)],
        ["Succeeded, sandbox deleted", f"{r.get('succeeded')} of {r['n']}"],
    ]
    return table(["figure", "value"], rows)


def _per_minute(rates: Mapping[str, float]) -> str:
    total = sum(rates.values())
    parts = ", ".join(f"`{k}` {v:g}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1]))
    return f"{total:g}" + (f" ({parts})" if parts else "")


def _run_at(runs: Sequence[Mapping[str, Any]] | None, n: int) -> Mapping[str, Any] | None:
    return next((r for r in runs or () if r["n"] == n), None)


def goals_table(results: Mapping[str, Any]) -> str:
    """Each goal of the performance issue next to what this run measured."""
    rows: list[list[str]] = []

    def goal(name: str, target: str, value: float | None, ok: bool | None, unit: str = "", digits: int = 2) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "**not met**")
        rows.append([name, target, fmt(value, unit, digits), verdict])

    for n, limit in ((1000, 1.15), (100, 1.10)):
        run = _run_at(results.get("scale"), n)
        ratio = run["operator"]["wall_seconds"] / run["baseline"]["wall_seconds"] if run else None
        goal(f"wall ratio, N={n}", f"≤ {limit}", ratio, None if ratio is None else ratio <= limit, "x")
    for n in (100, 1000):
        run = _run_at(results.get("scale_sleep"), n)
        ratio = run["operator"]["wall_seconds"] / run["baseline"]["wall_seconds"] if run else None
        goal(f"wall ratio, N={n}, agents sleep 5 s", "(reported)", ratio, None, "x")
    big = _run_at(results.get("scale"), 1000) or (results.get("scale") or [None])[-1]
    if big:
        op, n = big["operator"], big["n"]
        requests = sum(op["kube_requests_per_task"].values())
        goal(f"Kubernetes API requests per task (N={n})", "≤ 6", requests, requests <= 6, "", 1)
        cpu = op["cpu_seconds"] / n if op.get("cpu_seconds") is not None else None
        goal(f"operator CPU-seconds per task (N={n})", "≤ 0.04", cpu, None if cpu is None else cpu <= 0.04, " s", 3)
        calls = sum(op["daytona_calls_per_task"].values())
        base = sum(big["baseline"]["daytona_calls_per_task"].values())
        goal(f"Daytona calls per task (N={n}), baseline {base:.1f}", f"≤ {base + 1:.1f}", calls, calls <= base + 1.05,
             "", 1)
    many = results.get("running")
    if many:
        p95 = (many.get("to_first_create") or {}).get("p95")
        goal(f"apply → first create p95, {many['n']} applied at once", "≤ 1 s", p95,
             None if p95 is None else p95 <= 1.0, " s")
        goal(f"operator RSS, {many['n']} running at once", "≤ 300 MiB", many.get("rss_peak_mib"),
             None if many.get("rss_peak_mib") is None else many["rss_peak_mib"] <= 300, " MiB", 0)
        cpu = many.get("steady_cpu_percent")
        goal(f"operator CPU, {many['n']} running at once", "≤ 5 %", cpu, None if cpu is None else cpu <= 5, " %")
    sweep = results.get("sweep")
    if sweep:
        goal(f"orphan sweep over {sweep['sandboxes']} sandboxes (deleting sweep)", "≤ 5 s", sweep["wall_seconds"],
             sweep["wall_seconds"] <= 5, " s", 1)
    return table(["goal", "target", "measured", ""], rows)


def sharded_text(r: Mapping[str, Any]) -> str:
    return (f"The largest run again (N={r['n']}, the same total limit {r['concurrency']}) with {r['shards']} operator "
            f"processes in sharded mode (`AGENTTASK_SHARDS={r['shards']}`, [sharding](sharding.md)): each supervises "
            "the tasks of its shard and admits its share of the limit. CPU is summed over the processes, RSS is "
            "the largest process's peak. A replica's ceiling is one core: at the CPU-seconds per task measured "
            "here, that is the tasks per second it can finish at most, whatever the concurrency.")


def sharded_table(r: Mapping[str, Any]) -> str:
    base = r["baseline"]["wall_seconds"]
    rows = []
    for label, op, replicas in (("one replica", r["one"], 1), (f"{r['shards']} shards", r["sharded"], r["shards"])):
        wall, cpu = op["wall_seconds"], op.get("cpu_seconds")
        per_task = cpu / r["n"] if cpu is not None else None
        rows.append([label, fmt(wall, " s", 1), fmt(wall / base, "x"), fmt(r["n"] / wall, "/s", 1),
                     fmt(cpu, " s", 0), fmt(100 * cpu / wall / replicas if cpu is not None else None, " %", 0),
                     fmt(per_task, " s", 3), fmt(1 / per_task if per_task else None, "/s", 0),
                     fmt(op.get("rss_peak_mib"), " MiB", 0), fmt(sum(op["kube_requests_per_task"].values()), "", 1),
                     fmt(sum(op["daytona_calls_per_task"].values()), "", 1)])
    return table(["run", "wall", "ratio to baseline", "tasks finished", "operator CPU", "CPU per replica (of a core)",
                  "CPU-s per task", "ceiling of one replica", "peak RSS (one process)", "API requests/task",
                  "Daytona calls/task"], rows)


def breakdown_table(runs: Sequence[Mapping[str, Any]], key: str) -> str:
    """Per-task counts by operation (Daytona) or by verb/resource (Kubernetes), one column per run."""
    columns = [(run["n"], who) for run in runs for who in ("baseline", "operator")
               if key in run[who]]
    names = sorted({name for run in runs for who in ("baseline", "operator")
                    for name in run[who].get(key, {})})
    rows = []
    for name in names:
        cells = []
        for n, who in columns:
            run = next(r for r in runs if r["n"] == n)
            cells.append(fmt(run[who][key].get(name)))
        rows.append([f"`{name}`", *cells])
    return table(["per task", *(f"{who} N={n}" for n, who in columns)], rows)


def render(results: Mapping[str, Any], *, plot: str | None) -> str:
    """The whole docs/performance.md."""
    machine = results["machine"]
    params = results["parameters"]
    runs = results["scale"]
    out = [
        "# Performance",
        "",
        "Generated by `python -m bench.run` (do not edit by hand; the prose around the numbers lives in",
        "`bench/report.py`). Raw numbers: `bench/results/latest.json` (not committed).",
        "",
        "## What is measured",
        "",
        "- **baseline** — the physical limit: one asyncio script drives the same N tasks straight",
        "  through the `daytona` SDK (`AsyncDaytona`) against the embedded server, no Kubernetes:",
        "  create (name + the operator's labels), upload the operator's context files (runner zipapp",
        "  included), clone the repository, start the same async session command, follow its log",
        "  stream until it exits, read the exit code and `result.json`, delete — at most",
        f"  {params['concurrency']} tasks at a time.",
        "- **operator** — the same N tasks as `AgentTask`s created in one batch on the real local",
        "  control plane (etcd + kube-apiserver), reconciled by `agenttask run` (a subprocess,",
        "  standalone, namespaced, default settings) with `AGENTTASK_MAX_ACTIVE_SANDBOXES="
        f"{params['concurrency']}`.",
        f"- Both against `agenttask sandbox-server` with injected latency {params['latency']} (seconds",
        f"  per call), and the same trivial agent `{params['agent']}` run by the same in-sandbox runner.",
        "  Everything the sandbox server starts (clones, runners, agents) runs at nice "
        f"{params.get('sandbox_nice', 0)}:",
        "  in production sandboxes run on Daytona's machines, not next to the operator or Daytona's API.",
        "- *wall*: first submission → the last task is finished (baseline: deleted; operator: its",
        "  status says Succeeded and its sandbox deleted). *→create*: the task's submission (the",
        "  create POST returned) → its first create request at the sandbox server (`first_create_at`",
        "  of `/_admin/stats`). *→running*: submission → the agent command started (baseline: the",
        "  async exec returned; operator: `status.runningTime`).",
        "- *API requests/task*: the apiserver's own `apiserver_request_total` before/after, by verb",
        "  and resource, minus the benchmark's own requests (its creates and progress lists).",
        "  *Daytona calls/task*: `/_admin/stats` `calls`.",
        "",
        "## Machine",
        "",
        table(["", ""], [[k, str(v)] for k, v in machine.items()]),
        "",
        "## Scale: operator vs baseline",
        "",
        scale_table(runs),
        "",
        "### Latency per task",
        "",
        latency_table(runs),
        "",
    ]
    if plot:
        out += [f"![time to running]({plot})", ""]
    out += ["### Daytona calls per task", "", breakdown_table(runs, "daytona_calls_per_task"), "",
            "### Kubernetes API requests per task (operator only)", "",
            breakdown_table(runs, "kube_requests_per_task"), ""]
    sleepy = results.get("scale_sleep")
    if sleepy:
        out += ["## Scale, agents whose work costs nothing", "",
                f"The same comparison with the agent `{params.get('sleeper', 'sleep 5')}`: the sandboxes' work no "
                "longer competes with the operator for this machine's CPU, so the ratio is orchestration overhead "
                "alone (the baseline's wall is then mostly the agents' sleep).", "",
                scale_table(sleepy), "", latency_table(sleepy), ""]
    shard = results.get("sharded")
    if shard:
        out += ["## Sharded: several replicas", "", sharded_text(shard), "", sharded_table(shard), ""]
    many = results.get("running")
    if many:
        out += ["## Many tasks running at once", "", running_text(many), "", running_table(many), ""]
    out += ["## Goals", "", goals_table(results), ""]
    sweep = results.get("sweep")
    if sweep:
        out += ["## Orphan sweep", "",
                f"`controller.gc.Sweeper` in-process over {sweep['sandboxes']} sandboxes of this installation "
                f"({sweep['orphans']} of them orphans, the rest owned by {sweep.get('owned_tasks', 'n/a')} existing "
                "AgentTasks), same injected latency. An orphan is deleted only when two sweeps found it (grace 0 "
                "here): the first lists the sandboxes (metadata only, pages of 200, through the SDK's generated "
                f"REST client) and the tasks (pages of {sweep.get('task_page_size', 'n/a')}, only what the rule "
                "needs kept of each) and records the orphans as suspects, the second lists again and deletes them "
                "by id (no lookup; "
                f"{sweep.get('delete_concurrency', 'n/a')} at a time). The heap peak is from a second identical "
                "pair of sweeps under tracemalloc.", "",
                table(["first sweep (suspects)", "second sweep (deletes)", "listed", "deleted",
                       "Python heap peak (tracemalloc)", "RSS growth"],
                      [[fmt(sweep.get("suspect_sweep_seconds"), " s", 1), fmt(sweep["wall_seconds"], " s", 1),
                        str(sweep["seen"]), str(sweep["deleted"]),
                        fmt(sweep["tracemalloc_peak_mib"], " MiB", 1), fmt(sweep["rss_growth_mib"], " MiB", 1)]]),
                ""]
    warm = results.get("warm_pool")
    if warm:
        out += ["## Warm pool vs cold", "",
                f"{warm['tasks']} tasks on snapshot `{warm['snapshot']}` with a warm pool of {warm['pool_size']} "
                f"(`AGENTTASK_WARM_POOLS`); cold create latency {warm['create_latency']} s, pool create latency "
                f"{warm['pool_create_latency']} s. Time to running = submission → `status.runningTime`; the warm run",
                f"served {warm.get('pool_hits', 'n/a')} of its tasks from the pool.", "",
                table(["path", "tasks", "p50", "max"],
                      [[path, str(s["count"]), fmt(s["p50"], " s"), fmt(s["max"], " s")]
                       for path, s in warm["to_running"].items()]),
                ""]
    history = results.get("optimisations")
    if history:
        out += ["## Optimisations", "",
                "Measured one at a time with the same benchmark (N and settings given per row).", "",
                table(["change", "before", "after"], [[h["change"], h["before"], h["after"]] for h in history]),
                ""]
    notes = results.get("notes")
    if notes:
        out += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    out += ["## Reproduce", "",
            "```sh",
            ".venv/bin/pip install -e '.[dev,bench]' -c constraints.txt",
            ".venv/bin/python -m bench.run                 # N = 100 and 1000, sweep, warm pool (~20 min on 2 cores)",
            ".venv/bin/python -m bench.run --quick         # N = 20 and 100, smaller sweep (~3 min)",
            ".venv/bin/python -m bench.run --sizes 100,1000 --concurrency 50",
            "```", "",
            "The control plane is the one the tests use (`controller.devcluster`, built once into",
            "`~/.cache/agenttask/controlplane/`). Other load on the machine shows up in the numbers:",
            "run it on an idle machine.", ""]
    return "\n".join(out)
