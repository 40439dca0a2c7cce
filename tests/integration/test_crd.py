"""The AgentTask CRD on a real kube-apiserver: schema, defaults, CEL messages, columns, RBAC."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api import AgentTask
from controller.devcluster import DevCluster

from ..conftest import ROOT, Kubectl

VALID: dict[str, Any] = {
    "apiVersion": "agenttask.io/v1alpha1",
    "kind": "AgentTask",
    "metadata": {"name": "x"},
    "spec": {"repository": {"url": "https://example.test/org/repo.git"}, "issue": {"number": 7}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = doc["spec"]
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


_DELETE = object()

INVALID = [
    ("repository.url", "http://example.test/repo.git",
     "repository.url must start with https:// or file://"),
    ("repository.url", "https://user:secret@example.test/repo.git",
     "repository.url must not embed credentials; use repository.credentialsSecretRef"),
    ("repository", _DELETE, "spec.repository: Required value"),
    ("issue.number", 0, "spec.issue.number: Invalid value: 0: spec.issue.number in body should be "
                        "greater than or equal to 1"),
    ("backoffLimit", 11, "spec.backoffLimit: Invalid value: 11: spec.backoffLimit in body should be "
                         "less than or equal to 10"),
    ("activeDeadlineSeconds", -5, "spec.activeDeadlineSeconds in body should be greater than or equal to 1"),
    ("ttlSecondsAfterFinished", -1, "spec.ttlSecondsAfterFinished in body should be greater than or equal to 0"),
    ("sandbox", {"snapshot": "s", "image": "i"}, "sandbox.snapshot and sandbox.image are mutually exclusive"),
    ("sandbox", {"snapshot": "s", "resources": {"cpu": 2}},
     "sandbox.resources can only be set together with sandbox.image"),
    ("sandbox.network", {"allowList": ["not-a-cidr"]},
     "network.allowList entries must be CIDRs such as 10.0.0.0/8"),
    ("agent.env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
     "env entries may set value or valueFrom, not both"),
    ("agent.env", [{"name": "1BAD", "value": "1"}],
     "env name must be a valid environment variable name"),
    ("agent.env", [{"name": "AGENTTASK_TOKEN", "value": "1"}],
     "env names starting with AGENTTASK_ are reserved for the operator"),
    ("pullRequest.branchPrefix", "x;$(rm -rf /)",
     "pullRequest.branchPrefix may only contain letters, digits, '.', '_', '/' and '-'"),
    ("repository.baseBranch", "--upload-pack=evil",
     "repository.baseBranch must be a valid git branch name"),
    ("agent.workingDir", "relative/dir", "agent.workingDir must be an absolute path without '..'"),
    ("agent.command", [], "spec.agent.command in body should have at least 1 items"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[f"{p}:{m[:30]}" for p, _, m in INVALID])
def test_invalid_agenttask_is_rejected_with_a_readable_message(
    crd: Path, kubectl: Kubectl, namespace: str, path: str, value: Any, message: str
) -> None:
    done = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(_with(path, value)), check=False)
    assert done.returncode != 0
    assert "is invalid" in done.stderr
    assert message in done.stderr
    # nothing was stored
    listed = kubectl("get", "agenttasks", "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == ""


def test_examples_are_accepted_with_defaults_applied(crd: Path, kubectl: Kubectl, namespace: str) -> None:
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        kubectl("create", "-n", namespace, "-f", str(example))
    items = json.loads(kubectl("get", "agenttasks", "-n", namespace, "-o", "json").stdout)["items"]
    tasks = {t["metadata"]["name"]: AgentTask.from_body(t) for t in items}
    assert set(tasks) == {"fix-issue-1", "fix-issue-42"}

    minimal = tasks["fix-issue-1"]
    raw = next(t for t in items if t["metadata"]["name"] == "fix-issue-1")
    # defaults come from the apiserver, not from the models
    assert raw["spec"]["repository"]["baseBranch"] == "main"
    assert raw["spec"]["backoffLimit"] == 3
    assert raw["spec"]["suspend"] is False
    assert minimal.spec.backoff_limit == 3

    full = tasks["fix-issue-42"]
    raw_full = next(t for t in items if t["metadata"]["name"] == "fix-issue-42")
    assert raw_full["spec"]["agent"]["env"][0]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert full.spec.backoff_limit == 2
    assert full.spec.repository.credentials_secret_ref is not None
    assert full.spec.repository.credentials_secret_ref.key == "token"
    assert full.spec.sandbox.keep_on_failure is True
    assert full.spec.audit.installation_id == 12345


def test_kubectl_get_at_shows_the_printer_columns(
    crd: Path, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "-n", namespace, "-f", str(ROOT / "examples" / "minimal.yaml"))
    out = kubectl("get", "at", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "REPOSITORY", "ISSUE", "SANDBOX", "AGE"]
    assert out[1].split()[:3] == ["fix-issue-1", "https://github.com/example-org/example-repo.git", "1"]
    # the singular names one resource type (the category must not shadow it: with AgentTaskQuota
    # in a category called `agenttask`, `kubectl get agenttask NAME -o jsonpath` answered "you
    # must specify only one resource")
    assert kubectl("get", "agenttask", "fix-issue-1", "-n", namespace, "-o",
                   "jsonpath={.spec.issue.number}").stdout == "1"
    # the category lists both kinds
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTaskQuota", "metadata": {"name": "team"},
        "spec": {"maxConcurrentTasks": 3}}))
    listed = kubectl("get", "agenttask-all", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == ["agenttask.agenttask.io/fix-issue-1", "agenttaskquota.agenttask.io/team"]


def test_status_is_a_subresource(crd: Path, kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "-n", namespace, "-f", str(ROOT / "examples" / "minimal.yaml"))
    # writing status through the main resource is ignored ...
    kubectl("patch", "at", "fix-issue-1", "-n", namespace, "--type=merge", "-p",
            '{"status": {"phase": "Running"}}')
    got = json.loads(kubectl("get", "at", "fix-issue-1", "-n", namespace, "-o", "json").stdout)
    assert "status" not in got or "phase" not in got["status"]
    # ... and works through /status, with the enum enforced
    kubectl("patch", "at", "fix-issue-1", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", '{"status": {"phase": "Running"}}')
    bad = kubectl("patch", "at", "fix-issue-1", "-n", namespace, "--subresource=status", "--type=merge",
                  "-p", '{"status": {"phase": "Dancing"}}', check=False)
    assert bad.returncode != 0
    assert 'Unsupported value: "Dancing"' in bad.stderr


def test_user_without_bindings_is_forbidden(
    crd: Path, kubectl: Kubectl, namespace: str, controlplane: DevCluster, tmp_path: Path
) -> None:
    config = controlplane.kubeconfig_for(controlplane.unprivileged, tmp_path / "nobody.kubeconfig")
    done = kubectl("get", "agenttasks", "-n", namespace, kubeconfig=config, check=False)
    assert done.returncode != 0
    assert "Forbidden" in done.stderr
    assert f'User "{controlplane.unprivileged.name}" cannot list resource "agenttasks"' in done.stderr
    created = kubectl("create", "-n", namespace, "-f", str(ROOT / "examples" / "minimal.yaml"),
                      kubeconfig=config, check=False)
    assert created.returncode != 0
    assert "forbidden" in created.stderr.lower()


def test_crd_is_a_structural_schema_with_descriptions() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "agenttask.yaml").read_text())
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["at"]
    assert crd["spec"]["names"]["categories"] == ["agenttask-all"]
