"""The operator's own Kubernetes client (`controller.kube`) on the real apiserver: the calls only
the GitHub flow makes (the App-mode token Secret, server-side apply, create then update; the
progress-comment annotation) and what a 401 does."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from controller.devcluster import DevCluster
from controller.errors import Cause, OperatorWide
from controller.kube import Kube
from tests.fakes.kubeproxy import KubeProxy

from ..conftest import Kubectl


async def test_apply_secret_and_annotate_task(controlplane: DevCluster, crd: Path, kubectl: Kubectl,
                                             namespace: str) -> None:
    kube = await Kube.connect(str(controlplane.kubeconfig))
    for token in ("first-installation-token", "second-installation-token"):
        await kube.apply_secret(namespace, "agenttask-github-installation-5", string_data={"token": token},
                                labels={"app.kubernetes.io/managed-by": "agenttask-operator"})
        value = await kube.read_secret_key(namespace, "agenttask-github-installation-5", "token")
        assert value == token
    secret = json.loads(kubectl("get", "secret", "agenttask-github-installation-5", "-n", namespace,
                                "-o", "json").stdout)
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "agenttask-operator"}
    assert base64.b64decode(secret["data"]["token"]) == b"second-installation-token"

    body = {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "annotated"},
            "spec": {"repository": {"url": "https://github.com/acme/widgets.git"}}}
    await kube.create_task(namespace, body)
    patched = await kube.annotate_task(namespace, "annotated", {"agenttask.io/github-comment-id": "1001"})
    assert patched is not None
    assert patched["metadata"]["annotations"]["agenttask.io/github-comment-id"] == "1001"
    assert await kube.annotate_task(namespace, "missing", {"a": "b"}) is None
    await kube.close()


async def test_a_401_reloads_the_credentials_once_and_a_lasting_one_is_operator_wide(
        controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=token=s3cr3t-value")
    with KubeProxy(controlplane) as proxy:
        kube = await Kube.connect(str(proxy.kubeconfig(tmp_path / "proxied.kubeconfig")))
        try:
            secret = rf"/api/v1/namespaces/{namespace}/secrets/creds$"
            proxy.fault("GET", secret, status=401, times=1)  # a rotated token: once, then accepted again
            assert await kube.read_secret_key(namespace, "creds", "token") == "s3cr3t-value"
            assert [status for method, path, status in proxy.requests if path.endswith("/creds")] == [401, 200]
            proxy.fault("GET", secret, status=401)  # revoked: the operator's own credentials, no task's fault
            with pytest.raises(OperatorWide) as refused:
                await kube.read_secret_key(namespace, "creds", "token")
            assert refused.value.cause == Cause.KUBERNETES_FORBIDDEN
            assert "s3cr3t" not in str(refused.value)
        finally:
            await kube.close()
