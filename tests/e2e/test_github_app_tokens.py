"""A task that outlives its GitHub App installation token still pushes and opens its pull request.

Installation tokens last an hour; here the fake GitHub issues them for 20 s, and the HTTPS git
server accepts exactly the tokens the fake still considers valid. The operator (GitHub App
mode, `AGENTTASK_TOKEN_REFRESH_SECONDS=5`) mints the first token for the clone when the webhook
creates the task; the agent then works for longer than that token lives, so the push and the
pull request succeed only if the operator minted fresh tokens and uploaded them into the
sandbox's token file while the agent ran.

Real pieces: the local kube-apiserver, the operator (`agenttask run`), the embedded sandbox
server, git over HTTPS (git http-backend), the runner; GitHub's REST API is `FakeGitHub`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from controller.devcluster import DevCluster, certs
from controller.github.events import task_name
from tests.fakes.githttp import GitHttpServer
from tests.fakes.github import FakeGitHub

from ..conftest import Kubectl
from ..integration.harness import Operator, make_repo, register_secret, sandbox_server, wait_for
from .githubflow import LoopThread, deliver, env_var, issues_event

OWNER, REPO, APP_ID, INSTALLATION = "acme", "widgets", 4242, 99
LIFETIME = 20.0  # seconds an installation token is valid
WEBHOOK_SECRET = "app-webhook-secret-" + secrets.token_hex(8)
SLOW_AGENT = f"""
import pathlib, time
time.sleep({LIFETIME} + 12)  # the clone's token has expired by now
pathlib.Path("FIX.md").write_text("fixed after a long think\\n")
print("agent: wrote FIX.md", flush=True)
"""


def test_a_task_outliving_its_installation_token_still_pushes_and_opens_the_pull_request(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, tmp_path: Path,
) -> None:
    tls = certs.generate(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.serving_cert, tls.serving_key)
    bare_seed, _ = make_repo(tmp_path / "seed", files={"README.md": "# widgets\n"})
    root = tmp_path / "git"
    (root / OWNER).mkdir(parents=True)
    bare = root / OWNER / f"{REPO}.git"
    shutil.move(bare_seed, bare)
    agent = tmp_path / "agent.py"
    agent.write_text(SLOW_AGENT)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    namespace = f"app-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "github-app"},
        "stringData": {"app-id": str(APP_ID), "private-key": key}}))

    loop = LoopThread()
    github = FakeGitHub(token=None, app_id=APP_ID, app_private_key_pem=key, token_lifetime=LIFETIME)
    git = GitHttpServer(root, username="x-access-token", password_check=github.token_valid)
    git.ssl_context = context
    loop.run(github.__aenter__())
    loop.run(git.__aenter__())
    github.add_repo(OWNER, REPO, git_dir=bare)
    github.add_issue(OWNER, REPO, 7, title="Fix it, slowly")
    clone_url = f"{git.url}/{OWNER}/{REPO}.git"
    try:
        with env_var("GIT_SSL_CAINFO", str(tls.ca_cert)), sandbox_server(tmp_path / "sandboxes") as daytona:
            operator = Operator(
                kubeconfig=controlplane.kubeconfig, server=daytona, namespace=namespace,
                log_path=tmp_path / "operator.log", instance_id=f"app-{namespace}",
                env_overrides={
                    "AGENTTASK_GITHUB_API_URL": github.url,
                    "AGENTTASK_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "AGENTTASK_GITHUB_NAMESPACE": namespace,
                    "AGENTTASK_GITHUB_APP_SECRET": "github-app",
                    "AGENTTASK_GITHUB_AGENT_COMMAND": json.dumps([sys.executable, str(agent)]),
                    "AGENTTASK_GITHUB_AGENT_ENV": json.dumps({"GIT_SSL_CAINFO": str(tls.ca_cert)}),
                    "AGENTTASK_TOKEN_REFRESH_SECONDS": "5",
                }).start()
            try:
                payload = issues_event(OWNER, REPO, 7, "Fix it, slowly", "", clone_url=clone_url,
                                       installation=INSTALLATION)
                status, answer = deliver(f"http://127.0.0.1:{operator.http_port}/github/webhook",
                                         json.dumps(payload).encode(), secret=WEBHOOK_SECRET.encode(),
                                         delivery=str(uuid.uuid4()))
                assert status == 202, answer
                name = task_name(f"{OWNER}/{REPO}", 7, "issue")

                def finished() -> dict[str, object] | None:
                    done = kubectl("get", "at", name, "-n", namespace, "-o", "json", check=False)
                    task = json.loads(done.stdout) if done.returncode == 0 else None
                    return task if (task or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None

                task = wait_for(finished, timeout=180, what="the slow task to finish")
                log = operator.logs()
            finally:
                operator.stop()
    finally:
        loop.run(git.__aexit__(None, None, None))
        loop.run(github.__aexit__(None, None, None))
        loop.close()

    status_ = task["status"]
    assert isinstance(status_, dict)
    assert status_["phase"] == "Succeeded", json.dumps(status_, indent=1) + log[-3000:]
    assert status_["result"]["outcome"] == "PullRequestOpened"
    [pull] = github.pulls(OWNER, REPO)
    assert pull["head"]["ref"] == status_["result"]["branch"]
    shown = subprocess.run(["git", "--git-dir", str(bare), "show", f"{pull['head']['ref']}:FIX.md"],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "fixed after a long think\n"
    # the push came after the first token had expired, so it used one minted during the run
    tokens = sorted(github.issued_tokens.items(), key=lambda kv: kv[1])
    assert len(tokens) >= 3, "the operator did not mint tokens while the agent ran"
    assert not github.token_valid(tokens[0][0])
    assert "repository token refreshed in the sandbox" in log
    for token, _ in tokens:
        register_secret(token)  # the session-wide scan checks nothing the operator emitted holds them
        assert token not in log
