"""The Kubernetes calls only the GitHub flow makes, on the real apiserver: the App-mode token
Secret (server-side apply, create then update) and the progress-comment annotation."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from controller.devcluster import DevCluster
from controller.kube import Kube

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
