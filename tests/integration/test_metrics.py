"""The operator's /metrics as real tools see it: docs/metrics.md is exact (names, types, labels,
help), `promtool check metrics` accepts the exposition, and a real Prometheus server scrapes a
running operator and answers a query about it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import metrics
from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, free_port, make_repo, sandbox_server, wait_for
from .test_operator import CHANGE_AGENT, create_task, wait_phase

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
ADMISSION_LIMIT = 7


def documented() -> dict[str, tuple[str, frozenset[str], str]]:
    """name -> (type, labels, help) from the table in docs/metrics.md."""
    rows: dict[str, tuple[str, frozenset[str], str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`agenttask_\w+`", cells[0]):
            labels = frozenset(re.findall(r"`(\w+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels, cells[3])
    assert rows, "no metrics table found in docs/metrics.md"
    return rows


def family_name(name: str, kind: str) -> str:
    """The name the text parser reports (counters without their `_total` suffix)."""
    return name.removesuffix("_total") if kind == "counter" else name


def test_docs_list_exactly_the_registered_metrics() -> None:
    registered = {}
    for collector in list(metrics.REGISTRY._collector_to_names):
        for family in collector.describe():
            name = family.name + ("_total" if family.type == "counter" else "")
            registered[name] = (family.type, frozenset(getattr(collector, "_labelnames", ())),
                                family.documentation)
    # gauges computed at scrape time (registered by the running operator, from its index and health)
    state = metrics.StateCollector(phases=dict, admitted=lambda: 0, degraded=list, causes=["DaytonaAuthFailed"],
                                   all_phases=["Pending"])
    for family in state.collect():
        labels = frozenset(key for sample in family.samples for key in sample.labels)
        registered[family.name] = (family.type, labels, family.documentation)
    assert documented() == registered


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("metrics-sandboxes")) as server:
        yield server


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> str:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(controlplane: DevCluster, crd: Path, daytona: SandboxServer, namespace: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(kubeconfig=controlplane.kubeconfig, server=daytona, namespace=namespace,
                  log_path=tmp_path_factory.mktemp("metrics-operator") / "operator.log",
                  instance_id=f"metrics-{namespace}",
                  env_overrides={"AGENTTASK_MAX_ACTIVE_SANDBOXES": str(ADMISSION_LIMIT),
                                 "AGENTTASK_GC_INTERVAL_SECONDS": "1", "AGENTTASK_GC_GRACE_SECONDS": "0"})
    op.start()
    try:
        yield op
    finally:
        op.stop()


def exercise(operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    """One task end to end and one orphaned sandbox for the sweep, so most label sets have samples."""
    _, url = make_repo(tmp_path)
    create_task(kubectl, namespace, "measured", {"repository": {"url": url}, "issue": {"number": 1, "title": "m"},
                                                 "agent": {"command": agent_script(tmp_path, "agent", CHANGE_AGENT)}})
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    daytona._request("POST", "/api/sandbox", {"name": orphan, "labels": {
        "agenttask.io/instance": operator.instance_id, "agenttask.io/task-uid": str(uuid.uuid4()),
        "agenttask.io/namespace": namespace, "agenttask.io/name": "gone", "agenttask.io/attempt": "1"}})
    task = wait_phase(kubectl, namespace, "measured", {"Succeeded", "Failed"}, timeout=120)
    assert task["status"]["phase"] == "Succeeded", operator.logs()[-3000:]
    wait_for(lambda: daytona.get(orphan) is None, timeout=30, what="the sweep to delete the orphan")
    wait_for(lambda: 'agenttask_gc_deletions_total{reason="orphaned"} 1.0' in operator.metrics(), timeout=10,
             what="gc deletion counted")


def test_exposition_matches_the_docs_and_passes_promtool(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    exercise(operator, daytona, kubectl, namespace, tmp_path)
    text = operator.metrics()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    docs = documented()
    exported = {n for n in families if n.startswith("agenttask_")}
    expected = {family_name(n, kind) for n, (kind, _, _) in docs.items()}
    # prometheus_client adds a `<family>_created` gauge per counter/histogram (documented on the page)
    created = {f"{family_name(n, kind)}_created" for n, (kind, _, _) in docs.items()
               if kind in ("counter", "histogram")}
    assert exported - created == expected, "undocumented or missing metrics"
    for name in exported & created:
        assert families[name].type == "gauge", name
    with_samples = 0
    for name, (kind, labels, help_text) in docs.items():
        family = families[family_name(name, kind)]
        assert family.type == kind, name
        assert family.documentation == help_text, name
        assert f"# HELP {name} {help_text}" in text, name
        assert f"# TYPE {name} {kind}" in text, name
        seen = {frozenset(set(s.labels) - {"le"}) for s in family.samples if not s.name.endswith("_created")}
        if seen:
            with_samples += 1
            assert seen == {labels}, f"{name}: labels {seen} in the exposition, {labels} documented"
    assert with_samples >= 12, f"only {with_samples} metrics had samples; the exercise should fill most"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("agenttask_admission_limit", ())] == ADMISSION_LIMIT
    finished = {k: v for k, v in samples.items() if k[0] == "agenttask_tasks_finished_total"}
    assert list(finished.values()) == [1], finished
    assert samples[("agenttask_gc_deletions_total", (("reason", "orphaned"),))] == 1
    assert samples[("agenttask_tasks", (("phase", "Succeeded"),))] == 1
    assert samples[("agenttask_time_to_running_seconds_count", (("path", "cold"),))] == 1

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run hack/system-deps.sh (Debian package prometheus)"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_a_real_prometheus_scrapes_the_operator(operator: Operator, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: run hack/system-deps.sh (Debian package prometheus)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: agenttask\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{operator.http_port}']}}]\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=30, what="prometheus ready")
        up = wait_for(lambda: query(base, 'up{job="agenttask"} == 1'), timeout=30, what="a successful scrape")
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{operator.http_port}"
        limit = wait_for(lambda: query(base, "agenttask_admission_limit"), timeout=15, what="the series")
        assert float(limit[0]["value"][1]) == ADMISSION_LIMIT
        # the task of the previous test is there too (same operator): one Succeeded
        phases = wait_for(lambda: query(base, 'max by (phase) (agenttask_tasks{phase="Succeeded"})'), timeout=15,
                          what="the phase gauge")
        assert float(phases[0]["value"][1]) == 1
        wait_for(lambda: query(base, "sum(rate(agenttask_daytona_requests_total[1m])) >= 0"), timeout=20,
                 what="a rate() over the Daytona request counter (two scrapes)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
