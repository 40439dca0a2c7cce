"""The chart's Prometheus alerts, checked by Prometheus' own tool: `promtool check rules` on the
rendered PrometheusRule and `promtool test rules` unit tests (alerts_test.yaml) firing each alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import Render, one

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs"


@pytest.fixture
def rules(render: Render, tmp_path: Path) -> Path:
    rule = one(render(sets=("prometheusRule.enabled=true",)), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: run hack/system-deps.sh (Debian package prometheus)"
    return path


def test_rules_pass_promtool_check(rules: Path) -> None:
    done = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_every_alert_fires_in_a_promtool_unit_test(rules: Path) -> None:
    tests = rules.parent / "alerts_test.yaml"
    shutil.copy(HERE / "alerts_test.yaml", tests)
    done = subprocess.run([promtool(), "test", "rules", tests.name], capture_output=True, text=True, timeout=120,
                          cwd=rules.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    spec = yaml.safe_load(tests.read_text())
    fired = {case["alertname"] for test in spec["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == alerts, f"alerts without a firing test: {alerts - fired}"


def test_alert_runbook_links_resolve(rules: Path) -> None:
    """Each alert points at a section of docs/operations.md that exists."""
    text = rules.read_text()
    anchors = {line.split("#", 1)[1].rstrip(".'\" ") for line in text.splitlines() if "docs/operations.md#" in line}
    headings = {
        "-".join(h.lstrip("#").strip().lower().replace("`", "").split()).strip("-")
        for h in (DOCS / "operations.md").read_text().splitlines() if h.startswith("#")}
    slugs = {"".join(c for c in h if c.isalnum() or c == "-") for h in headings}
    assert anchors and anchors <= slugs, f"missing runbook sections: {anchors - slugs}"
