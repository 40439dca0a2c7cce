"""The benchmark's pure report helpers (bench/report.py); the benchmark itself never runs in tests."""

from __future__ import annotations

import pytest

from bench import report


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.percentile(values, 0) == 1.0
    assert report.percentile(values, 100) == 4.0
    assert report.percentile(values, 50) == 2.5
    assert report.percentile(values, 95) == pytest.approx(3.85)
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        report.percentile(values, 101)


def test_summarize_counts_missing_values_separately() -> None:
    summary = report.summarize([1.0, None, 3.0, 2.0])
    assert summary["count"] == 3 and summary["missing"] == 1
    assert summary["p50"] == 2.0 and summary["max"] == 3.0 and summary["mean"] == 2.0
    assert report.summarize(iter([None]))["p99"] is None


def test_counters_per_task_and_deltas() -> None:
    assert report.counter_delta({"GET a": 5, "LIST a": 1}, {"GET a": 9, "LIST a": 1, "PATCH a": 2}) == {
        "GET a": 4, "PATCH a": 2}
    assert report.per_task({"get": 300, "list": 0, "watch": 1, "create": 100}, 1000) == {"create": 0.1, "get": 0.3}
    with pytest.raises(ValueError, match="positive"):
        report.per_task({}, 0)


def test_apiserver_request_totals_by_verb_and_resource() -> None:
    exposition = "\n".join([
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests",
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="agenttask.io",resource="agenttasks",'
        'scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 12',
        'apiserver_request_total{code="409",component="apiserver",dry_run="",group="agenttask.io",resource="agenttasks",'
        'scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 3',
        'apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="events",'
        'scope="namespace",subresource="",verb="POST",version="v1"} 4',
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",'
        'scope="",subresource="/metrics",verb="GET",version=""} 9',
        'apiserver_request_duration_seconds_count{verb="GET"} 1',
    ])
    assert report.parse_request_totals(exposition) == {"PATCH agenttasks/status": 15.0, "POST events": 4.0}


def test_render_has_the_tables_and_the_plot() -> None:
    lat = {"to_first_create": report.summarize([0.1, 0.2]), "to_running": report.summarize([1.0, 2.0])}
    side = {"wall_seconds": 10.0, "latency": lat, "daytona_calls_per_task": {"create": 1.0}}
    results = {
        "machine": {"cpus (nproc)": 2},
        "parameters": {"concurrency": 50, "latency": {"create": 0.09}, "agent": "python3 -c print('ok')"},
        "scale": [{"n": 100, "baseline": side,
                   "operator": {**side, "wall_seconds": 15.0, "rss_peak_mib": 120.0, "cpu_seconds": 9.0,
                                "kube_requests_per_task": {"PATCH agenttasks/status": 7.0}}}],
        "optimisations": [{"change": "x", "before": "1 s", "after": "0.5 s"}],
    }
    text = report.render(results, plot="performance-time-to-running.png")
    assert "| 100 | 10.0 s | 15.0 s | 1.50x | 120 MiB | 9.0 s | 0.090 s | n/a |" in text
    assert "![time to running](performance-time-to-running.png)" in text
    assert "`PATCH agenttasks/status`" in text and "| x | 1 s | 0.5 s |" in text


def test_the_sharded_run_sits_next_to_the_one_replica_run() -> None:
    def op(wall: float, cpu: float) -> dict[str, object]:
        return {"wall_seconds": wall, "cpu_seconds": cpu, "rss_peak_mib": 100.0,
                "kube_requests_per_task": {"PATCH agenttasks/status": 4.0, "POST events": 2.0},
                "daytona_calls_per_task": {"create": 1.0, "get": 2.0}}

    shard = {"n": 1000, "concurrency": 50, "shards": 2, "baseline": {"wall_seconds": 100.0},
             "one": op(200.0, 100.0), "sharded": op(125.0, 110.0)}
    text = report.sharded_table(shard)
    # wall, ratio, tasks/s, CPU, CPU per replica in % of a core, CPU-s/task, the ceiling that gives
    assert "| one replica | 200.0 s | 2.00x | 5.0/s | 100 s | 50 % | 0.100 s | 10/s | 100 MiB | 6.0 | 3.0 |" in text
    assert "| 2 shards | 125.0 s | 1.25x | 8.0/s | 110 s | 44 % | 0.110 s | 9/s |" in text
