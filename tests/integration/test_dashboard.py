"""The chart's Grafana dashboard against a real Prometheus: Debian's `prometheus` scrapes a running
operator while it runs tasks (one succeeds, one fails, Daytona answers some calls with 429), then
every panel's PromQL, taken from the dashboard JSON with Grafana's variables filled in as Grafana
would, must return data, with the labels its legend names."""

from __future__ import annotations

import contextlib
import json
import math
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

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, free_port, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import CHANGE_AGENT, FAIL_AGENT, create_task, wait_phase

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "agenttask-operator" / "dashboards" / "agenttask-operator.json"
# panels whose metric does not exist yet, explicitly: the cost counter comes with issue #14 part B.
# The test fails once such a panel returns data, so that this entry is removed then.
PENDING: dict[str, str] = {}  # panel title -> why its metric cannot have data yet
RATE_INTERVAL = "2m"  # Grafana's $__rate_interval for a short range at a 1 s scrape interval is smaller


def targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(found) >= 14
    return found


def fill(expr: str) -> str:
    """Grafana's variables as Grafana substitutes them (the `job` variable at its default: All)."""
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$job", ".+")


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: run hack/system-deps.sh (Debian package prometheus)"
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      "scrape_configs:\n  - job_name: agenttask\n"
                      f"    static_configs: [{{targets: ['{target}']}}]\n")
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> list[dict[str, Any]] | None:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                return query(base, 'up{job="agenttask"} == 1')
            except OSError:
                return None

        wait_for(up, timeout=60, what="prometheus scraping the operator")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("dashboard-sandboxes")) as server:
        yield server


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl) -> str:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(controlplane: DevCluster, crd: Path, daytona: SandboxServer, ns: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    # no in-call retries: a 429 reaches the supervisor, so reconcile errors are counted too
    op = operator_for(controlplane.kubeconfig, daytona, ns, tmp_path_factory.mktemp("dashboard-operator"),
                      AGENTTASK_DAYTONA_RETRIES="0")
    op.start()
    try:
        yield op
    finally:
        op.stop()


def test_every_panel_query_returns_data_from_a_real_prometheus(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, ns: str, tmp_path: Path
) -> None:
    with prometheus(tmp_path, f"127.0.0.1:{operator.http_port}") as base:
        _, url = make_repo(tmp_path)
        # one task first, so that its series exist before the measured run: rate() and increase() do not
        # count the first observation of a series that starts with it (e.g. right after an operator start)
        create_task(kubectl, ns, "first", {"repository": {"url": url}, "issue": {"number": 1, "title": "d"},
                                           "agent": {"command": agent_script(tmp_path, "first", CHANGE_AGENT)}})
        wait_phase(kubectl, ns, "first", {"Succeeded", "Failed"}, timeout=180)
        wait_for(lambda: query(base, "agenttask_time_to_running_seconds_count"), timeout=30, what="first series")
        # (the operator asks few of them: a get after the create is its own, the rest per task is one
        # session look-up at the exit, a look at the destroyed sandbox and the create itself). The seed
        # decides which calls are refused, in the order they come: with seed 1 the first one is (seed 5
        # refused none of the first six, which can be all the calls the two tasks make)
        limited = daytona.stats()["rate_limited"]
        daytona.set_faults({"rate_limit": {"rate": 0.5, "retry_after": 1,
                                           "ops": ["create", "get", "session_get", "command_get"]}, "seed": 1})
        try:
            create_task(kubectl, ns, "good", {"repository": {"url": url}, "issue": {"number": 1, "title": "d"},
                                              "agent": {"command": agent_script(tmp_path, "good", CHANGE_AGENT)}})
            create_task(kubectl, ns, "bad", {"repository": {"url": url},
                                             "agent": {"command": agent_script(tmp_path, "bad", FAIL_AGENT)}})
            assert wait_phase(kubectl, ns, "good", {"Succeeded", "Failed"}, timeout=180)["status"]["phase"] == \
                "Succeeded", operator.logs()[-3000:]
            bad = wait_phase(kubectl, ns, "bad", {"Succeeded", "Failed"}, timeout=180)
            assert bad["status"]["phase"] == "Failed"
        finally:
            daytona.set_faults({})
        assert daytona.stats()["rate_limited"] > limited  # (what the error panels are to show)
        wait_for(lambda: query(base, 'agenttask_tasks_finished_total{phase="Failed"}'), timeout=30,
                 what="the finished tasks scraped")
        # the dashboard's `job` variable finds the scrape job
        with urllib.request.urlopen(f"{base}/api/v1/label/job/values?match[]=agenttask_admission_limit",
                                    timeout=10) as resp:
            assert json.loads(resp.read())["data"] == ["agenttask"]

        empty, pending_with_data = [], []
        for title, target in targets():
            promql = fill(target["expr"])
            assert "$" not in promql, f"{title}: unfilled variable in {promql}"
            result = wait_for(lambda q=promql: query(base, q) or None, timeout=20, what=title) \
                if title not in PENDING else query(base, promql)
            if title in PENDING:
                if result:
                    pending_with_data.append(title)
                continue
            values = [float(r["value"][1]) for r in result]
            if not result or all(math.isnan(v) for v in values):
                empty.append(f"{title}: {promql}")
                continue
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert all(label in r["metric"] for r in result), f"{title}: legend label {label} missing"
        assert not empty, "panels without data:\n" + "\n".join(empty)
        assert not pending_with_data, f"these panels have data now; remove them from PENDING: {pending_with_data}"
        # and the data says what happened
        failures = query(base, fill('sum by (reason) (agenttask_tasks_finished_total{job=~"$job", phase="Failed"})'))
        assert {r["metric"]["reason"] for r in failures} == {bad["status"]["reason"]}, failures
        errors = query(base, 'sum(agenttask_daytona_requests_total{outcome="retryable"})')
        assert float(errors[0]["value"][1]) > 0
