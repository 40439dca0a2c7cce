"""The operator's Kubernetes login (controller/login.py): the in-cluster service environment
first, kopf's own logins as fallbacks, in kubectl's order."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from controller import login


def service_account(tmp_path: Path, *, namespace: str | None = "ops") -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("tok-123\n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    if namespace is not None:
        (sa / "namespace").write_text(namespace)
    return sa


def test_in_cluster_uses_the_service_env_not_a_dns_name(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    info = login.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, sa)
    assert info is not None
    assert info.server == "https://10.96.0.1:443"
    assert info.token == "tok-123"
    assert info.ca_path == str(sa / "ca.crt")
    assert info.default_namespace == "ops"


@pytest.mark.parametrize(("host", "port", "url"), [
    ("fd00::1", "6443", "https://[fd00::1]:6443"),
    ("10.0.0.1", "", "https://10.0.0.1:443"),
    ("api.internal", "8443", "https://api.internal:8443"),
])
def test_service_url(tmp_path: Path, host: str, port: str, url: str) -> None:
    sa = service_account(tmp_path)
    info = login.in_cluster({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}, sa)
    assert info is not None and info.server == url


def test_not_in_a_pod(tmp_path: Path) -> None:
    assert login.in_cluster({}, service_account(tmp_path)) is None
    assert login.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path / "absent") is None


def test_token_is_reread_on_every_login(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    (sa / "token").write_text("rotated")
    info = login.in_cluster(env, sa)
    assert info is not None and info.token == "rotated"


def _named(server: str) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=server)


def test_explicit_kubeconfig_wins_over_the_pod_environment(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = {"KUBECONFIG": "/k", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    info = login.choose(env, kubeconfig=lambda: _named("https://from-kubeconfig"),
                        service_account=lambda: _named("https://kubernetes.default.svc"), sa_dir=sa)
    assert info is not None and info.server == "https://from-kubeconfig"


def test_pod_environment_wins_over_home_kubeconfig_and_kopfs_dns_name(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    info = login.choose(env, kubeconfig=lambda: _named("https://home"),
                        service_account=lambda: _named("https://kubernetes.default.svc"), sa_dir=sa)
    assert info is not None and info.server == "https://10.0.0.1:6443"


def test_fallbacks_in_order(tmp_path: Path) -> None:
    absent = tmp_path / "none"
    info = login.choose({}, kubeconfig=lambda: None,
                        service_account=lambda: _named("https://kubernetes.default.svc"), sa_dir=absent)
    assert info is not None and info.server == "https://kubernetes.default.svc"
    assert login.choose({}, kubeconfig=lambda: None, service_account=lambda: None, sa_dir=absent) is None
