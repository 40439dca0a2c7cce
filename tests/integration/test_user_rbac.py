"""The chart's ClusterRoles for users (`agenttask-view`, `agenttask-edit`) on a real kube-apiserver.

Aggregation into the built-in `view`/`edit`/`admin` roles is done by kube-controller-manager's
clusterrole-aggregation controller, which the test control plane does not run (kube-apiserver
alone creates the built-in roles with their `aggregationRule` but never fills them). So the test
proves the two halves separately:
- the built-in roles' own aggregation selectors (read from the apiserver) select our roles'
  labels, i.e. a cluster with a controller-manager adds them to `view`/`edit`/`admin`;
- the rules do what users need, with users bound the way they would be in such a cluster: to the
  built-in role AND (standing in for the aggregation) to ours, in one namespace only. They use
  real ServiceAccount tokens and the real `kubectl agenttask` plugin.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.devcluster import DevCluster
from controller.devcluster.cluster import TokenUser

from ..chart.conftest import CHART, tool_path
from ..conftest import Kubectl
from .test_kubectl_plugin import no_traceback, run_plugin

AGG = "rbac.authorization.k8s.io/aggregate-to-"


def user_roles() -> list[dict[str, Any]]:
    out = subprocess.run([str(tool_path("helm")), "template", "agenttask-operator", str(CHART), "--namespace",
                          "agenttask-system"], check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole"
            and d["metadata"]["name"] in ("agenttask-view", "agenttask-edit")]


@pytest.fixture(scope="module")
def roles(kubectl: Kubectl, crd: Path) -> dict[str, dict[str, Any]]:
    docs = user_roles()
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return {d["metadata"]["name"]: d for d in docs}


def token_user(controlplane: DevCluster, kubectl: Kubectl, namespace: str, name: str, path: Path) -> Path:
    kubectl("create", "serviceaccount", name, "-n", namespace)
    token = kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    user = TokenUser(f"system:serviceaccount:{namespace}:{name}", token)
    return controlplane.kubeconfig_for(user, path, namespace=namespace)


def bind(kubectl: Kubectl, namespace: str, role: str, sa: str) -> None:
    kubectl("create", "rolebinding", f"{sa}-{role}", f"--clusterrole={role}", f"--serviceaccount={namespace}:{sa}",
            "-n", namespace)


def task(name: str) -> str:
    return json.dumps({"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
                       "spec": {"repository": {"url": "https://example.invalid/r.git"}, "suspend": True}})


def test_built_in_roles_select_the_chart_roles(kubectl: Kubectl, roles: dict[str, dict[str, Any]]) -> None:
    wanted = {"view": {"agenttask-view"}, "edit": {"agenttask-view", "agenttask-edit"},
              "admin": {"agenttask-view", "agenttask-edit"}}
    for builtin, ours in wanted.items():
        role = json.loads(kubectl("get", "clusterrole", builtin, "-o", "json").stdout)
        selectors = [s.get("matchLabels", {}) for s in role["aggregationRule"]["clusterRoleSelectors"]]
        selected = {name for name, r in roles.items()
                    if any(sel and sel.items() <= r["metadata"]["labels"].items() for sel in selectors)}
        assert selected == ours, (builtin, selectors)


def test_edit_user_works_in_its_namespace_only_and_never_touches_status(
    controlplane: DevCluster, kubectl: Kubectl, roles: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    home, elsewhere = f"team-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    for ns in (home, elsewhere):
        kubectl("create", "namespace", ns)
    alice = token_user(controlplane, kubectl, home, "alice", tmp_path / "alice.kubeconfig")
    bind(kubectl, home, "edit", "alice")
    bind(kubectl, home, "agenttask-edit", "alice")  # what aggregation into `edit` grants in a full cluster
    kubectl("create", "-n", elsewhere, "-f", "-", input=task("theirs"))

    def as_alice(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(*args, kubeconfig=alice, check=False, input=input)

    assert as_alice("create", "-n", home, "-f", "-", input=task("mine")).returncode == 0
    for verb in ("suspend", "resume", "cancel"):
        done = run_plugin(controlplane, verb, "mine", "-n", home, kubeconfig=alice)
        assert done.returncode == 0, (verb, done.stderr)
    got = json.loads(as_alice("get", "at", "mine", "-n", home, "-o", "json").stdout)
    assert got["spec"]["cancel"] is True and got["spec"]["suspend"] is False
    rerun = run_plugin(controlplane, "rerun", "mine", "-n", home, kubeconfig=alice)
    assert rerun.returncode == 0, rerun.stderr
    listed = run_plugin(controlplane, "list", "-o", "name", kubeconfig=alice)  # the context's namespace
    assert sorted(listed.stdout.split()) == ["agenttask.agenttask.io/mine", "agenttask.agenttask.io/mine-rerun-1"]

    status = as_alice("patch", "at", "mine", "-n", home, "--subresource=status", "--type=merge",
                      "-p", '{"status":{"phase":"Succeeded"}}')
    assert status.returncode != 0 and "forbidden" in status.stderr.lower(), status.stderr
    # elsewhere: nothing
    assert as_alice("create", "-n", elsewhere, "-f", "-", input=task("intruder")).returncode != 0
    for args in (("list", "-n", elsewhere), ("cancel", "theirs", "-n", elsewhere),
                 ("describe", "theirs", "-n", elsewhere), ("list", "-A")):
        done = run_plugin(controlplane, *args, kubeconfig=alice)
        assert done.returncode == 1 and done.stderr.startswith("Error from server (Forbidden)"), (args, done.stderr)
        no_traceback(done)
    theirs = json.loads(kubectl("get", "at", "theirs", "-n", elsewhere, "-o", "json").stdout)
    assert theirs["spec"]["cancel"] is False


def test_view_user_reads_but_cannot_change(
    controlplane: DevCluster, kubectl: Kubectl, roles: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    home = f"team-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", home)
    bob = token_user(controlplane, kubectl, home, "bob", tmp_path / "bob.kubeconfig")
    bind(kubectl, home, "view", "bob")
    bind(kubectl, home, "agenttask-view", "bob")
    kubectl("create", "-n", home, "-f", "-", input=task("watched"))
    for args in (("list",), ("describe", "watched"), ("logs", "watched"), ("list", "-o", "yaml")):
        done = run_plugin(controlplane, *args, kubeconfig=bob)
        assert done.returncode == 0, (args, done.stderr)
    for args in (("cancel", "watched"), ("suspend", "watched"), ("resume", "watched"), ("rerun", "watched")):
        done = run_plugin(controlplane, *args, kubeconfig=bob)
        if args[0] == "suspend":  # already suspended: nothing to send, so nothing refused
            assert done.returncode == 0 and "already suspended" in done.stdout
            continue
        assert done.returncode == 1 and done.stderr.startswith("Error from server (Forbidden)"), (args, done.stderr)
        assert "cannot patch" in done.stderr or "cannot create" in done.stderr
        no_traceback(done)
