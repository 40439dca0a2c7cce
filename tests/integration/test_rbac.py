"""The chart's RBAC, proven on a real kube-apiserver: the operator runs with nothing but the
ServiceAccount token the chart's roles grant, passes the happy path and the deletion path, and is
denied everything it does not need.

- Cluster mode (the chart's default, here with two replicas' peering on): a private control plane,
  so that a cluster-wide operator sees no other test's AgentTasks; the operator runs exactly as
  the Deployment does (its rendered environment, no --namespace).
- Namespaced mode (`watchNamespaces`): the shared control plane; Secrets outside the watched
  namespace are out of reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.devcluster import DevCluster
from controller.devcluster.cluster import TokenUser

from ..chart.conftest import CHART, tool_path
from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, sandbox_server, wait_for
from .test_operator import CHANGE_AGENT, SLOW_AGENT, create_task, get_task, wait_phase

SYSTEM_NS = "agenttask-system"
# the harness' fast timings win over the chart's production defaults; everything else is the chart's
FAST = ("AGENTTASK_POLL_INTERVAL_SECONDS", "AGENTTASK_MAX_POLL_INTERVAL_SECONDS",
        "AGENTTASK_LOG_TAIL_INTERVAL_SECONDS", "AGENTTASK_RETRY_BASE_SECONDS", "AGENTTASK_RETRY_MAX_SECONDS")
WIRING = ("AGENTTASK_HTTP_HOST", "AGENTTASK_HTTP_PORT", "AGENTTASK_INSTANCE_ID", "HOME")


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("rbac-sandboxes")) as server:
        yield server


def render(*sets: str, release: str) -> list[dict[str, Any]]:
    args = [str(tool_path("helm")), "template", release, str(CHART), "--namespace", SYSTEM_NS]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def docs_of(docs: list[dict[str, Any]], *kinds: str) -> str:
    return yaml.safe_dump_all([d for d in docs if d["kind"] in kinds])


def chart_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's literal environment as the chart renders it (minus wiring/timing)."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if "value" in e and e["name"] not in FAST + WIRING}


def service_account_kubeconfig(controlplane: DevCluster, kubectl: Kubectl, sa: str, path: Path) -> Path:
    token = kubectl("create", "token", sa, "-n", SYSTEM_NS, "--duration=1h").stdout.strip()
    assert token.count(".") == 2, "expected a JWT from the TokenRequest API"
    return controlplane.kubeconfig_for(TokenUser(f"system:serviceaccount:{SYSTEM_NS}:{sa}", token), path)


def can_i(kubectl: Kubectl, sa: str, *args: str) -> bool:
    done = kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{SYSTEM_NS}:{sa}", check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), done.stderr
    return answer == "yes"


def assert_no_permission_trouble(operator: Operator) -> None:
    logs = operator.logs()
    for needle in ("Forbidden", "forbidden", "Not enough permissions", "HTTP 403", " 403 "):
        assert needle not in logs, f"{needle!r} in the operator log:\n" + "\n".join(
            line for line in logs.splitlines() if needle in line)[:3000]


def happy_and_deletion_paths(kubectl: Kubectl, daytona: SandboxServer, namespace: str, tmp_path: Path,
                             operator: Operator) -> None:
    _, url = make_repo(tmp_path)
    create_task(kubectl, namespace, "happy", {
        "repository": {"url": url}, "issue": {"number": 7, "title": "RBAC", "body": "b"},
        "agent": {"command": agent_script(tmp_path, "agent", CHANGE_AGENT)}})
    slow = agent_script(tmp_path, "slow", SLOW_AGENT)
    create_task(kubectl, namespace, "doomed", {"repository": {"url": url}, "agent": {"command": [*slow, "300"]}})

    done = wait_phase(kubectl, namespace, "happy", {"Succeeded", "Failed"}, timeout=120)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"])[:2000] + operator.logs()[-3000:]
    happy_box = done["status"]["sandbox"]["name"]
    wait_for(lambda: daytona.get(happy_box) is None, timeout=30, what="happy sandbox deleted")
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert {"AgentStarted", "AgentSucceeded"} <= {e["reason"] for e in events}, "events need `create events`"

    running = wait_phase(kubectl, namespace, "doomed", {"Running"}, timeout=90)
    doomed_box = running["status"]["sandbox"]["name"]
    assert daytona.get(doomed_box) is not None
    kubectl("delete", "at", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    assert get_task(kubectl, namespace, "doomed") is None
    assert daytona.get(doomed_box) is None


def assert_least_privilege(kubectl: Kubectl, sa: str, namespace: str) -> None:
    # what it needs
    assert can_i(kubectl, sa, "get", "secrets", "-n", namespace)
    assert can_i(kubectl, sa, "patch", "agenttasks.agenttask.io", "--subresource=status", "-n", namespace)
    assert can_i(kubectl, sa, "create", "events", "-n", namespace)
    assert can_i(kubectl, sa, "create", "agenttasks.agenttask.io", "-n", namespace)  # GitHub webhook
    assert can_i(kubectl, sa, "delete", "agenttasks.agenttask.io", "-n", namespace)  # ttlSecondsAfterFinished
    # never: writing or enumerating Secrets, deleting namespaces, running pods, granting itself more
    for verb in ("create", "update", "patch", "delete", "list", "watch"):
        assert not can_i(kubectl, sa, verb, "secrets", "-n", namespace), f"{verb} secrets"
    assert not can_i(kubectl, sa, "delete", "namespaces")
    assert not can_i(kubectl, sa, "delete", f"namespaces/{namespace}")
    assert not can_i(kubectl, sa, "create", "pods", "-n", namespace)
    assert not can_i(kubectl, sa, "create", "pods", "--subresource=exec", "-n", namespace)
    assert not can_i(kubectl, sa, "create", "clusterrolebindings")
    assert not can_i(kubectl, sa, "escalate", "clusterroles")
    assert not can_i(kubectl, sa, "update", "customresourcedefinitions")
    assert not can_i(kubectl, sa, "update", "agenttasks.agenttask.io", "-n", namespace)


def assert_token_denied(kubectl: Kubectl, kubeconfig: Path, namespace: str) -> None:
    """The same denials with the real token, not just the authorizer's opinion."""
    done = kubectl("create", "secret", "generic", "x", "--from-literal=k=v", "-n", namespace,
                   kubeconfig=kubeconfig, check=False)
    assert done.returncode != 0 and "forbidden" in done.stderr.lower(), done.stderr
    done = kubectl("delete", "namespace", namespace, "--wait=false", kubeconfig=kubeconfig, check=False)
    assert done.returncode != 0 and "forbidden" in done.stderr.lower(), done.stderr


# ----------------------------------------------------------------------------------- cluster mode


@dataclass
class ClusterWideOperator(Operator):
    """`agenttask run` without --namespace, as the chart's Deployment runs it in cluster mode."""

    def start(self) -> ClusterWideOperator:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
            cwd=Path(__file__).resolve().parents[2])
        log.close()
        wait_for(self._healthy, timeout=60, what="operator /healthz")
        return self


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, Kubectl]]:
    cluster = DevCluster(state_dir=tmp_path_factory.mktemp("rbac-controlplane"), owned=True)
    cluster.start()

    def kubectl(*args: str, check: bool = True, input: str | None = None,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(cluster.kubectl), f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    try:
        yield cluster, kubectl
    finally:
        cluster.stop()


def test_cluster_mode_rbac_runs_the_operator_and_nothing_more(
    private_cluster: tuple[DevCluster, Kubectl], daytona: SandboxServer, tmp_path: Path
) -> None:
    cluster, kubectl = private_cluster
    docs = render("replicaCount=2", release="agenttask-operator")
    sa = "agenttask-operator"
    kubectl("apply", "--server-side", "-f", str(CHART / "crds" / "agenttask.yaml"))
    kubectl("create", "namespace", SYSTEM_NS)
    kubectl("apply", "-f", "-", input=docs_of(docs, "CustomResourceDefinition"))
    cluster.wait_established("agenttasks.agenttask.io", "clusterkopfpeerings.kopf.dev")
    kubectl("apply", "-f", "-", input=docs_of(docs, "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                 "ClusterKopfPeering"))
    config = service_account_kubeconfig(cluster, kubectl, sa, tmp_path / "sa.kubeconfig")
    work = "work"
    kubectl("create", "namespace", work)

    env = chart_env(docs)
    assert env["AGENTTASK_STANDALONE"] == "false" and env["AGENTTASK_NAMESPACES"] == ""
    operator = ClusterWideOperator(kubeconfig=config, server=daytona, namespace=work,
                                   log_path=tmp_path / "operator.log", instance_id="rbac-cluster",
                                   env_overrides=env)
    operator.start()
    try:
        happy_and_deletion_paths(kubectl, daytona, work, tmp_path, operator)
        # peering works with the granted verbs: the replica's keep-alive is in the ClusterKopfPeering
        peering = json.loads(kubectl("get", "clusterkopfpeering", "agenttask-operator", "-o", "json").stdout)
        assert peering.get("status"), "no keep-alive written to the ClusterKopfPeering"
    finally:
        operator.stop()
    assert_no_permission_trouble(operator)
    assert_least_privilege(kubectl, sa, work)
    assert_token_denied(kubectl, config, work)
    # only its own peering object
    assert not can_i(kubectl, sa, "patch", "clusterkopfpeerings.kopf.dev/someone-else")
    assert can_i(kubectl, sa, "patch", "clusterkopfpeerings.kopf.dev/agenttask-operator")


# -------------------------------------------------------------------------------- namespaced mode


def test_namespaced_mode_confines_the_operator_to_its_namespaces(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, daytona: SandboxServer, tmp_path: Path
) -> None:
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    docs = render(f"watchNamespaces={{{namespace}}}", release=release)
    sa = f"{release}-agenttask-operator"
    outside = f"outside-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", outside)
    kubectl("create", "secret", "generic", "not-yours", "-n", outside, "--from-literal=k=v")
    kubectl("create", "namespace", SYSTEM_NS, check=False)
    kubectl("apply", "-f", "-", input=docs_of(docs, "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                 "Role", "RoleBinding"))
    roles = [d for d in docs if d["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == [namespace]
    config = service_account_kubeconfig(controlplane, kubectl, sa, tmp_path / "sa.kubeconfig")

    env = chart_env(docs)
    assert env["AGENTTASK_NAMESPACES"] == namespace and env["AGENTTASK_STANDALONE"] == "true"
    operator = Operator(kubeconfig=config, server=daytona, namespace=namespace, log_path=tmp_path / "operator.log",
                        instance_id=f"rbac-{namespace}", env_overrides=env)
    operator.start()
    try:
        happy_and_deletion_paths(kubectl, daytona, namespace, tmp_path, operator)
    finally:
        operator.stop()
    assert_no_permission_trouble(operator)
    assert_least_privilege(kubectl, sa, namespace)
    assert_token_denied(kubectl, config, namespace)
    # nothing outside the watched namespace: no Secrets, no AgentTasks, no events
    assert not can_i(kubectl, sa, "get", "secrets", "-n", outside)
    assert not can_i(kubectl, sa, "list", "agenttasks.agenttask.io", "-n", outside)
    assert not can_i(kubectl, sa, "list", "agenttasks.agenttask.io", "--all-namespaces")
    assert not can_i(kubectl, sa, "create", "events", "-n", outside)
    done = kubectl("get", "secret", "not-yours", "-n", outside, kubeconfig=config, check=False)
    assert done.returncode != 0 and "forbidden" in done.stderr.lower(), done.stderr




def test_github_app_mode_may_write_token_secrets_only_in_the_github_namespace(
    controlplane: DevCluster, kubectl: Kubectl, namespace: str
) -> None:
    """With a GitHub App the operator writes installation-token Secrets, in githubNamespace only."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    other = f"other-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", other)
    kubectl("create", "namespace", SYSTEM_NS, check=False)
    docs = render(f"watchNamespaces={{{namespace},{other}}}", f"settings.githubNamespace={namespace}",
                  "settings.githubAppSecret=agenttask-github-app", release=release)
    sa = f"{release}-agenttask-operator"
    kubectl("apply", "-f", "-", input=docs_of(docs, "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                 "Role", "RoleBinding"))
    for verb in ("create", "patch"):
        assert can_i(kubectl, sa, verb, "secrets", "-n", namespace)
        assert not can_i(kubectl, sa, verb, "secrets", "-n", other)
    for verb in ("list", "watch", "delete", "update"):
        assert not can_i(kubectl, sa, verb, "secrets", "-n", namespace)
    assert can_i(kubectl, sa, "get", "secrets", "-n", other)  # watched: tasks there may reference Secrets
