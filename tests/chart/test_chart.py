"""The Helm chart, rendered by the real helm binary: lint, templates with default values and with
every option set, the values schema, and the contract with the operator's settings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.settings import Settings

from .conftest import CHART, ROOT, VALUES_ALL, Render, by_kind, one, run_helm, values_paths
from .settings_map import SPECIAL, camel, env_names, helm_value


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def operator_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's own ClusterRole (the others are the users' view/edit roles)."""
    roles = [r for r in by_kind(docs, "ClusterRole") if not r["metadata"]["name"].endswith(("-view", "-edit"))]
    assert len(roles) == 1, [r["metadata"]["name"] for r in roles]
    return roles[0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs)["env"]}


def test_chart_ships_the_exact_crd() -> None:
    for crd in ("agenttask.yaml", "agenttaskquota.yaml"):
        assert (CHART / "crds" / crd).read_bytes() == (ROOT / "crds" / crd).read_bytes()


def test_lint_is_clean_with_default_values_and_with_every_option(helm: Path) -> None:
    for extra in ([], ["-f", str(VALUES_ALL)]):
        done = run_helm(helm, "lint", "--strict", str(CHART), *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
        assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_default_install_is_cluster_wide_single_replica_and_hardened(render: Render) -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                            "Service", "Deployment",
                            "NetworkPolicy"])
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "agenttask-system", doc["kind"]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["securityContext"] == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert c["image"] == "ghcr.io/agenttask-operator/agenttask-operator:0.1.0"
    env = env_of(docs)
    assert env["AGENTTASK_STANDALONE"]["value"] == "true"
    assert env["AGENTTASK_NAMESPACES"]["value"] == ""
    # no credentials by default, and never a secret value anywhere in the manifests
    assert "DAYTONA_API_KEY" not in env and "AGENTTASK_GITHUB_WEBHOOK_SECRET" not in env
    assert not by_kind(docs, "Secret")
    rules = operator_role(docs)["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in rules
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    assert not any(g == "kopf.dev" for r in rules for g in r["apiGroups"]), "no peering RBAC when standalone"


def test_every_option_renders(render: Render) -> None:
    docs = render(VALUES_ALL)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "PodDisruptionBudget", "ServiceAccount", "CustomResourceDefinition", "CustomResourceDefinition",
        "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Role", "Role", "Role", "RoleBinding",
        "RoleBinding", "RoleBinding", "ConfigMap",
        "Service", "Deployment", "NetworkPolicy", "PrometheusRule", "ServiceMonitor", "KopfPeering", "KopfPeering"])
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(docs)
    assert deployment["metadata"]["name"] == "agenttask-op"
    assert deployment["spec"]["replicas"] == 2
    assert c["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    assert c["image"].startswith("registry.example.com/platform/agenttask-operator@")
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == ["--log-format=text", "--verbose"]
    assert c["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert pod["serviceAccountName"] == "agenttask-sa"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "512Mi"
    env = env_of(docs)
    assert env["AGENTTASK_STANDALONE"]["value"] == "false"
    assert env["AGENTTASK_NAMESPACES"]["value"] == "team-a,team-b"
    assert env["DAYTONA_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "daytona", "key": "key"}}
    assert env["AGENTTASK_GITHUB_WEBHOOK_SECRET"]["valueFrom"] == {
        "secretKeyRef": {"name": "github-webhook", "key": "secret"}}
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.example.com:3128"
    assert c["envFrom"] == [{"configMapRef": {"name": "agenttask-extra"}}]
    # namespaced mode: Roles only in the watched namespaces; the ClusterRole keeps cluster-scoped reads
    cluster_rules = operator_role(docs)["rules"]
    assert {r["resources"][0] for r in cluster_rules} == {"customresourcedefinitions", "namespaces"}
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in cluster_rules)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {("team-a", "agenttask-op"), ("team-b", "agenttask-op"),
                          ("team-a", "agenttask-op-github-tokens")}
    assert roles["team-a", "agenttask-op-github-tokens"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]}]
    peering_rules = [r for r in roles["team-a", "agenttask-op"]["rules"] if r["apiGroups"] == ["kopf.dev"]]
    assert peering_rules == [
        {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["list", "watch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "resourceNames": ["agenttask-ha"],
         "verbs": ["get", "patch"]}]
    peerings = by_kind(docs, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("team-a", "agenttask-ha"), ("team-b", "agenttask-ha")}
    assert all(p["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade" for p in peerings)
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s",
                                             "scrapeTimeout": "5s"}]
    service = one(docs, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["egress"][1]["ports"][-1] == {"port": 3128, "protocol": "TCP"}


def test_cluster_mode_with_peering_uses_a_cluster_peering(render: Render) -> None:
    docs = render(sets=("replicaCount=3",))
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert env_of(docs)["AGENTTASK_STANDALONE"]["value"] == "false"
    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "agenttask-operator"
    assert one(docs, "PodDisruptionBudget")
    anti = one(docs, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == (
        "kubernetes.io/hostname")
    rules = operator_role(docs)["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "resourceNames": ["agenttask-operator"], "verbs": ["get", "patch"]} in rules
    # another kopf operator already installed kopf's CRDs: do not fight over them
    docs = render(sets=("replicaCount=2", "peering.installCRDs=false"))
    assert not by_kind(docs, "CustomResourceDefinition")


def test_sharded_mode_is_a_statefulset_whose_pods_share_the_tasks(render: Render) -> None:
    docs = render(sets=("sharding.shards=3", "sharding.leaseSeconds=10", "replicaCount=5", "peering.enabled=true"))
    assert not by_kind(docs, "Deployment")
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AGENTTASK_SHARDS"]["value"] == "3" and env["AGENTTASK_SHARD_LEASE_SECONDS"]["value"] == "10"
    assert env["AGENTTASK_STANDALONE"]["value"] == "true"  # no kopf peering: the shards' Leases coordinate
    assert env["AGENTTASK_LEASE_NAMESPACE"]["value"] == "agenttask-system"
    assert env["AGENTTASK_REPLICA_ID"]["value"] == "$(POD_NAME)"  # agenttask-operator-<ordinal>: its shard
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "KopfPeering")
    assert one(docs, "PodDisruptionBudget")
    role = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-shards")]
    assert len(role) == 1 and role[0]["metadata"]["namespace"] == "agenttask-system"
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "resourceNames": [f"agenttask-default-shard-{i}" for i in range(3)], "verbs": ["get", "update"]} in (
        role[0]["rules"])
    binding = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"].endswith("-shards")]
    assert binding and binding[0]["roleRef"]["name"] == role[0]["metadata"]["name"]
    # not sharded (the default): no Lease permissions at all
    assert not [r for r in by_kind(render(), "Role") if r["metadata"]["name"].endswith("-shards")]


def test_every_operator_setting_is_a_helm_value(render: Render) -> None:
    """Each Settings field is set by the chart (values-all sets them all), under the documented name."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    env = env_of(render(VALUES_ALL))
    missing = []
    for field in Settings.model_fields:
        if env_names(field)[0] not in env:
            missing.append(f"{field} ({env_names(field)[0]})")
        path = helm_value(field)
        if path is not None and field not in SPECIAL:
            assert camel(field) in values["settings"], f"settings.{camel(field)} missing from values.yaml"
    assert not missing, f"settings the chart does not set: {missing}"
    extra = set(values["settings"]) - {camel(f) for f in Settings.model_fields}
    assert not extra, f"values.yaml settings without an operator setting: {extra}"


def test_rendered_environment_is_what_the_operator_parses(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("AGENTTASK_", "DAYTONA_")):
            monkeypatch.delenv(key)
    for name, entry in env_of(render(VALUES_ALL)).items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            monkeypatch.setenv(name, f"secret-from-{entry['valueFrom']['secretKeyRef']['name']}")
    s = Settings()
    assert s.namespaces == ["team-a", "team-b"]
    assert s.standalone is False and s.peering_name == "agenttask-ha"
    assert s.max_active_sandboxes == 1_000_000 and s.poll_interval_seconds == 1.5
    assert s.default_ttl_seconds_after_finished == 86400
    assert s.http_port == 9090 and s.http_host == "0.0.0.0"  # noqa: S104 - the pod listens on all addresses
    assert s.daytona_api_url == "https://daytona.example.com/api" and s.daytona_target == "eu"
    assert s.daytona_api_key is not None and s.daytona_api_key.get_secret_value() == "secret-from-daytona"
    values = yaml.safe_load(VALUES_ALL.read_text())["settings"]
    for field in Settings.model_fields:
        if field in SPECIAL:
            continue
        expected = values[camel(field)]
        got = getattr(s, field)
        if field == "github_allowed_associations":
            expected = expected.split(",")
        assert got == expected, f"{field}: chart value {expected!r} reached the operator as {got!r}"


BAD_VALUES = """\
replicaCount: two
settings:
  maxActiveSandboxes: 0
  maxActiveSandbox: 3
logFormat: xml
daytona:
  apiKey: sk-do-not-put-keys-here
"""


def test_schema_rejects_bad_values_with_readable_errors(helm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_VALUES)
    done = run_helm(helm, "template", "x", str(CHART), "-f", str(bad), check=False)
    assert done.returncode != 0
    message = done.stderr
    assert "values don't meet the specifications of the schema" in message
    assert "at '/replicaCount': got string, want integer" in message
    assert "at '/settings/maxActiveSandboxes': minimum: got 0, want 1" in message
    assert "additional properties 'maxActiveSandbox' not allowed" in message
    assert "at '/logFormat': value must be one of 'json', 'text'" in message
    assert "additional properties 'apiKey' not allowed" in message  # keys go in Secrets, not values
    # combinations the schema cannot express fail with a message that says what to change
    done = run_helm(helm, "template", "x", str(CHART), "-f", str(VALUES_ALL), "--set",
                    "settings.githubNamespace=elsewhere", check=False)
    assert done.returncode != 0
    assert 'settings.githubNamespace "elsewhere" must be one of watchNamespaces [team-a team-b]' in done.stderr


def test_values_are_documented_line_by_line() -> None:
    """Every key in values.yaml has a comment right above it (nested defaults of free-form maps aside)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    free_form = ("resources:", "podSecurityContext:")
    undocumented, skip_indent = [], None
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):(.*)$", line)
        if not match:
            continue
        indent = len(match.group(1))
        if skip_indent is not None and indent > skip_indent:
            continue
        skip_indent = None
        nested = match.group(3).strip() == ""
        previous = lines[i - 1].strip() if i else ""
        if not nested and not previous.startswith("#"):
            undocumented.append(line.strip())
        if line.strip() in free_form:
            skip_indent = indent
            if not previous.startswith("#"):
                undocumented.append(line.strip())
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_values_all_sets_every_option() -> None:
    """tests/chart/values-all.yaml really exercises every key of values.yaml."""
    everything = yaml.safe_load(VALUES_ALL.read_text())
    missing = []
    for path in values_paths():
        node: Any = everything
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(path)
                break
            node = node[part]
    assert not missing, f"values-all.yaml does not set: {missing}"


def test_chart_defaults_are_the_operator_defaults() -> None:
    """values.yaml does not silently override the operator: each default equals Settings' own."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["settings"]
    differ = []
    for field, info in Settings.model_fields.items():
        if field in SPECIAL:
            continue
        chart = values[camel(field)]
        default = info.get_default(call_default_factory=True)
        if chart in ("", None, {}) and default in (None, {}, ""):
            continue
        if field == "github_allowed_associations":
            chart = chart.split(",")
        if chart != default:
            differ.append(f"settings.{camel(field)}: chart {chart!r}, operator {default!r}")
    assert not differ, differ


def test_peering_crds_match_the_repository_copy(render: Render) -> None:
    """The chart's kopf peering CRDs are the same API as crds/kopf-peering.yaml (kopf's own)."""
    docs = yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text())
    repo = {d["metadata"]["name"]: d["spec"] for d in docs if d}
    chart = {d["metadata"]["name"]: d["spec"] for d in by_kind(render(sets=("replicaCount=2",)),
                                                               "CustomResourceDefinition")}
    assert chart == repo


def test_user_roles_aggregate_into_the_built_in_roles_and_never_grant_status(render: Render) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    view, edit = roles["agenttask-view"], roles["agenttask-edit"]
    agg = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith(agg)} == {
        f"{agg}view": "true", f"{agg}edit": "true", f"{agg}admin": "true"}
    assert {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith(agg)} == {
        f"{agg}edit": "true", f"{agg}admin": "true"}
    assert view["rules"] == [{"apiGroups": ["agenttask.io"], "resources": ["agenttasks"],
                              "verbs": ["get", "list", "watch"]}]
    for role in (view, edit):
        assert all(res == "agenttasks" for r in role["rules"] for res in r["resources"]), "never agenttasks/status"
    # disabled, or not aggregated
    assert not [r for r in by_kind(render(sets=("userRoles.create=false",)), "ClusterRole")
                if r["metadata"]["name"] in ("agenttask-view", "agenttask-edit")]
    plain = {r["metadata"]["name"]: r for r in by_kind(render(VALUES_ALL), "ClusterRole")}
    assert not [k for k in plain["platform-agenttask-edit"]["metadata"]["labels"] if k.startswith(agg)]


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(render: Render) -> None:
    assert not by_kind(render(), "ConfigMap"), "off by default"
    cm = one(render(sets=("grafanaDashboard.enabled=true",)), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "agenttask-system"
    shipped = (CHART / "dashboards" / "agenttask-operator.json").read_text()
    assert json.loads(cm["data"]["agenttask-operator.json"]) == json.loads(shipped)
    custom = one(render(VALUES_ALL), "ConfigMap")
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "AgentTask"}
