"""The GitHub flow end to end: signed webhook -> AgentTask -> sandbox -> runner -> branch + draft
PR on a fake GitHub -> progress comment edited in place -> Succeeded; plus the refusals, hostile
issue text, token hygiene and the status page in headless Chromium.

Real pieces: the local kube-apiserver, the operator (`agenttask run` subprocess), the embedded
sandbox server, git and git http-backend. The repository is served over **HTTPS** by
`GitHttpServer` (Basic auth: username `x-access-token`, password = the token), because the CRD
only admits `https://` (and `file://`) repository URLs; a throw-away CA signs its certificate,
and git trusts it through `GIT_SSL_CAINFO` — in the sandbox server's environment for the clone
(the toolbox git clone the operator asks for) and in the agent environment
(`AGENTTASK_GITHUB_AGENT_ENV`) for the runner's push. GitHub's REST API is `FakeGitHub` (plain
HTTP, token auth).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster, certs
from controller.github.events import BODY_LIMIT, task_name
from tests.fakes.githttp import GitHttpServer
from tests.fakes.github import FakeGitHub

from ..conftest import Kubectl
from ..integration.harness import Operator, SandboxServer, make_repo, sandbox_server, wait_for
from .githubflow import ArgvSampler, LoopThread, deliver, env_var, follow_command_log, issues_event, png_pixels

OWNER, REPO = "acme", "widgets"
TOKEN = "e2e-git-token-" + secrets.token_hex(12)  # no well-known token shape: only registration masks it
WEBHOOK_SECRET = "e2e-webhook-secret-" + secrets.token_hex(8)
CHROMIUM = "/usr/bin/chromium"

AGENT = """
import json, os, pathlib, subprocess, sys, time
OUT = pathlib.Path({out!r})
ctx = pathlib.Path(os.environ["AGENTTASK_CONTEXT_DIR"])
task = json.loads((ctx / "task.json").read_text())
number, title = task["issue"]["number"], task["issue"]["title"]
out = OUT / str(number)
out.mkdir(parents=True, exist_ok=True)
(out / "issue.md").write_bytes(pathlib.Path(os.environ["AGENTTASK_ISSUE_FILE"]).read_bytes())
(out / "prompt.md").write_bytes(sys.stdin.buffer.read())
(out / "env.json").write_text(json.dumps(dict(os.environ)))
git = subprocess.run(["git", "remote", "-v"], capture_output=True).stdout
git += subprocess.run(["git", "config", "--list", "--show-origin"], capture_output=True).stdout
(out / "git.txt").write_bytes(git)
deadline = time.time() + 60
while "[wait]" in title and not (out / "go").exists() and time.time() < deadline:
    time.sleep(0.05)
if "[question]" in title:
    print("The answer is 42: nothing in the code needs to change.")
    sys.exit(0)
pathlib.Path("FIX.md").write_text("fixed issue %d\\n" % number)
print("agent: wrote FIX.md")
"""


@dataclass
class Flow:
    kubectl: Kubectl
    namespace: str
    operator: Operator
    daytona: SandboxServer
    github: FakeGitHub
    git: GitHttpServer
    bare: Path
    out: Path
    loop: LoopThread
    sampler: ArgvSampler
    deliveries: list[str] = field(default_factory=list)

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.operator.http_port}/github/webhook"

    @property
    def clone_url(self) -> str:
        return f"{self.git.url}/{OWNER}/{REPO}.git"

    def send(self, payload: dict[str, Any], *, event: str = "issues", **kwargs: Any) -> tuple[int, Any]:
        delivery = kwargs.pop("delivery", None) or str(uuid.uuid4())
        self.deliveries.append(delivery)
        body = json.dumps(payload).encode()  # ASCII with \\u escapes: lone surrogates survive as escapes
        return deliver(self.webhook, body, event=event, secret=WEBHOOK_SECRET.encode(), delivery=delivery, **kwargs)

    def task(self, name: str) -> dict[str, Any] | None:
        done = self.kubectl("get", "at", name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def task_names(self) -> list[str]:
        done = self.kubectl("get", "at", "-n", self.namespace, "-o", "json")
        return sorted(item["metadata"]["name"] for item in json.loads(done.stdout)["items"])

    def finished(self, name: str, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            task = self.task(name)
            return task if (task or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None
        return wait_for(check, timeout=timeout, what=f"{name} to finish")

    def payload(self, number: int, title: str, body: str, *, action: str = "opened",
                **extra: Any) -> dict[str, Any]:
        return issues_event(OWNER, REPO, number, title, body, clone_url=self.clone_url, action=action, **extra)

    def assert_no_token_leaks(self) -> None:
        assert self.sampler.samples > 10
        assert not self.sampler.hits, f"the token was in a process's argv: {self.sampler.hits[:3]}"
        log = self.operator.logs()
        assert TOKEN not in log and WEBHOOK_SECRET not in log


@pytest.fixture(scope="module")
def flow(controlplane: DevCluster, crd: Path, kubectl: Kubectl,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    tmp = tmp_path_factory.mktemp("github-flow")
    tls = certs.generate(tmp / "tls")
    ca = str(tls.ca_cert)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.serving_cert, tls.serving_key)

    bare_seed, _ = make_repo(tmp / "seed", files={"README.md": "# widgets\n", "greet.py": "print('helo')\n"})
    root = tmp / "git"
    (root / OWNER).mkdir(parents=True)
    bare = root / OWNER / f"{REPO}.git"
    shutil.move(bare_seed, bare)

    out = tmp / "agent-out"
    out.mkdir()
    agent = tmp / "agent.py"
    agent.write_text(AGENT.format(out=str(out)))

    namespace = f"gh-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "github-token"},
              "stringData": {"token": TOKEN}}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))  # stdin: not in kubectl's argv

    loop = LoopThread()
    github = FakeGitHub(token=TOKEN)
    git = GitHttpServer(root, username="x-access-token", password=TOKEN)
    git.ssl_context = context
    loop.run(github.__aenter__())
    loop.run(git.__aenter__())
    github.add_repo(OWNER, REPO, git_dir=bare)
    for number in range(1, 8):
        github.add_issue(OWNER, REPO, number, title=f"issue {number}")
    try:
        with env_var("GIT_SSL_CAINFO", ca), sandbox_server(tmp / "sandboxes") as daytona, \
                ArgvSampler(TOKEN) as sampler:
            operator = Operator(
                kubeconfig=controlplane.kubeconfig, server=daytona, namespace=namespace,
                log_path=tmp / "operator.log", instance_id=f"gh-{namespace}",
                env_overrides={
                    "AGENTTASK_GITHUB_API_URL": github.url,
                    "AGENTTASK_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "AGENTTASK_GITHUB_NAMESPACE": namespace,
                    "AGENTTASK_GITHUB_TOKEN_SECRET": "github-token",
                    "AGENTTASK_GITHUB_AGENT_COMMAND": json.dumps([sys.executable, str(agent)]),
                    "AGENTTASK_GITHUB_AGENT_ENV": json.dumps({"GIT_SSL_CAINFO": ca}),
                })
            operator.start()
            try:
                yield Flow(kubectl=kubectl, namespace=namespace, operator=operator, daytona=daytona,
                           github=github, git=git, bare=bare, out=out, loop=loop, sampler=sampler)
            finally:
                operator.stop()
    finally:
        loop.run(git.__aexit__(None, None, None))
        loop.run(github.__aexit__(None, None, None))
        loop.close()


def comments_of(flow: Flow, number: int) -> list[dict[str, Any]]:
    return flow.github.comments(OWNER, REPO, number)


def test_issue_opened_leads_to_a_draft_pull_request(flow: Flow) -> None:
    status, answer = flow.send(flow.payload(1, "[wait] Fix the greeting typo", "It says helo."))
    name = task_name(f"{OWNER}/{REPO}", 1, "issue")
    assert (status, answer) == (202, {"task": name, "namespace": flow.namespace, "created": True})

    task = wait_for(lambda: (t := flow.task(name)) and (t.get("status", {}).get("agent") or {}).get("commandId")
                    and t, timeout=90, what="the runner to start")
    spec = task["spec"]
    assert spec["repository"] == {"url": flow.clone_url, "baseBranch": "main",
                                  "credentialsSecretRef": {"name": "github-token", "key": "token"}}
    assert spec["audit"] == {"requestedBy": "octocat", "installationId": 99, "source": "github-webhook",
                             "deliveryId": flow.deliveries[-1]}
    assert spec["issue"]["title"] == "[wait] Fix the greeting typo" and spec["pullRequest"]["draft"] is True

    # the whole runner log, followed from the first byte while the agent waits for us
    st = task["status"]
    connected = threading.Event()
    logs_future = asyncio.run_coroutine_threadsafe(follow_command_log(
        flow.daytona.base, flow.daytona.api_key, sandbox_id=st["sandbox"]["id"], session_id=st["agent"]["sessionId"],
        command_id=st["agent"]["commandId"], connected=connected), flow.loop.loop)
    assert connected.wait(30)
    (flow.out / "1").mkdir(parents=True, exist_ok=True)
    (flow.out / "1" / "go").touch()

    task = flow.finished(name)
    status_ = task["status"]
    assert status_["phase"] == "Succeeded", json.dumps(status_, indent=1) + flow.operator.logs()[-3000:]
    runner_log = logs_future.result(60)
    result = status_["result"]
    [pull] = [p for p in flow.github.pulls(OWNER, REPO) if p["title"].startswith("Fix #1:")]
    assert result["outcome"] == "PullRequestOpened" and result["pullRequestUrl"] == pull["html_url"]
    assert pull["draft"] is True and pull["head"]["ref"] == result["branch"] and pull["base"]["ref"] == "main"
    assert pull["title"] == "Fix #1: [wait] Fix the greeting typo" and "Closes #1" in pull["body"]

    # the branch really is in the bare repository, with the agent's change
    show = subprocess.run(["git", "--git-dir", str(flow.bare), "show", f"{result['branch']}:FIX.md"],
                          capture_output=True, text=True, check=True)
    assert show.stdout == "fixed issue 1\n"
    head = subprocess.run(["git", "--git-dir", str(flow.bare), "rev-parse", result["branch"]],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == result["commit"]

    # clone and push went over HTTPS with the token, through askpass (401 first, then Basic auth)
    fetches = [r for r in flow.git.requests if r.path.endswith("/info/refs")]
    assert any(r.username is None for r in fetches), "git never had to ask for credentials"
    assert any(r.username == "x-access-token" and r.path.startswith(f"/{OWNER}/{REPO}.git") for r in fetches)
    assert any(r.method == "POST" and r.path.endswith("/git-receive-pack") and r.username for r in flow.git.requests)

    # acknowledgement first, then the same comment edited to the outcome
    [comment] = comments_of(flow, 1)
    writes = [r for r in flow.github.requests if "/comments" in r.path and r.method in ("POST", "PATCH")]
    assert [r.method for r in writes] == ["POST", "PATCH"]
    assert "is working on this issue" in writes[0].json["body"]
    assert writes[1].path == f"/repos/{OWNER}/{REPO}/issues/comments/{comment['id']}"
    assert pull["html_url"] in comment["body"] and f"{flow.namespace}/{name}" in comment["body"]
    assert task["metadata"]["annotations"]["agenttask.io/github-comment-id"] == str(comment["id"])

    # the token: not in argv (sampled all along), the runner's log, git's remotes/config, the agent's env
    assert b"agenttask-runner" in runner_log and b"pushing" in runner_log
    assert TOKEN.encode() not in runner_log
    git_view = (flow.out / "1" / "git.txt").read_text()
    assert flow.clone_url in git_view and TOKEN not in git_view
    assert TOKEN not in (flow.out / "1" / "env.json").read_text()
    flow.assert_no_token_leaks()


def test_agent_without_changes_answers_in_a_comment(flow: Flow) -> None:
    status, answer = flow.send(flow.payload(2, "[question] Why is the greeting printed?", "Just curious."))
    assert status == 202
    task = flow.finished(answer["task"])
    st = task["status"]
    assert st["phase"] == "Succeeded" and st["reason"] == "NoChanges", json.dumps(st, indent=1)
    assert st["result"]["outcome"] == "NoChanges" and "pullRequestUrl" not in st["result"]
    assert not [p for p in flow.github.pulls(OWNER, REPO) if p["title"].startswith("Fix #2:")]
    bodies = [c["body"] for c in comments_of(flow, 2)]
    assert len(bodies) == 2
    assert "finished without changes" in bodies[0]
    assert "The answer is 42" in bodies[1]
    flow.assert_no_token_leaks()


def test_redelivery_and_refusals_create_nothing_new(flow: Flow) -> None:
    opened = flow.payload(4, "[question] Redelivered", "Same event twice.")
    status, first = flow.send(opened, delivery="delivery-4")
    assert status == 202 and first["created"] is True
    before = flow.task_names()
    # GitHub "Redeliver", and the labeled event GitHub sends along with an opened-with-label issue
    assert flow.send(opened, delivery="delivery-4") == (202, {**first, "created": False})
    labeled = flow.payload(4, "[question] Redelivered", "Same event twice.", action="labeled",
                           label={"name": "agenttask"})
    assert flow.send(labeled) == (202, {**first, "created": False})

    fresh = flow.payload(5, "Never created", "no")
    body = json.dumps(fresh).encode()
    forged = deliver(flow.webhook, body, secret=b"not-the-secret", delivery="f")
    missing = deliver(flow.webhook, body, secret=None, delivery="m")
    big = b'{"pad": "' + b"x" * (1024 * 1024 + 512 * 1024) + b'"}'
    oversized = deliver(flow.webhook, big, secret=WEBHOOK_SECRET.encode(), delivery="o")
    malformed = deliver(flow.webhook, b'{"action": "opened", ', secret=WEBHOOK_SECRET.encode(), delivery="j")
    wrong_shape = deliver(flow.webhook, b'{"action": "opened"}', secret=WEBHOOK_SECRET.encode(), delivery="s")
    for (code, doc), expected in ((forged, 401), (missing, 401), (oversized, 413), (malformed, 400),
                                  (wrong_shape, 400)):
        assert code == expected and isinstance(doc, dict) and doc.get("error"), (code, doc)
    assert deliver(flow.webhook, b"{}", event="push", secret=WEBHOOK_SECRET.encode(), delivery="p")[0] == 204
    assert deliver(flow.webhook, b'{"zen": "x"}', event="ping", secret=WEBHOOK_SECRET.encode(),
                   delivery="z")[0] == 200
    assert flow.task_names() == before
    assert flow.task(task_name(f"{OWNER}/{REPO}", 5, "issue")) is None
    assert flow.finished(first["task"])["status"]["phase"] == "Succeeded"


def test_hostile_issue_text_is_data(flow: Flow) -> None:
    canary = flow.out / "CANARY"
    title = (f"Fix $(touch {canary}) `touch {canary}` \"; touch {canary}; echo ' | tee {canary} && "
             f"$HOME %s {{}} \\ <b>x</b>")
    head = (f"$(touch {canary})\n`touch {canary}`\n'; touch {canary}; '\n\"; touch {canary}; \"\n"
            f"${{IFS}}touch${{IFS}}{canary}\n; touch {canary} #\n| touch {canary}\n&& touch {canary}\n"
            "NUL:\x00 bell:\x07 tab\there\r\ncarriage return\r\x1b[31mANSI\x1b[0m\n"
            "\u202eRTL\u202c \u00e9\u00fc\u20ac \U0001f600\n"
            "not UTF-8: \udcff\udcfe (escaped in the JSON)\n"
            "```sh\nrm -rf ~\n```\n")
    body = head + "A" * (BODY_LIMIT - len(head))  # exactly the CRD's limit: 1 MiB of characters
    assert len(body) == BODY_LIMIT
    status, answer = flow.send(flow.payload(3, title, body))
    assert status == 202, answer
    task = flow.finished(answer["task"], timeout=150)
    assert task["status"]["phase"] == "Succeeded", json.dumps(task["status"], indent=1)

    expected_body = body.replace("\udcff", "\ufffd").replace("\udcfe", "\ufffd")
    assert task["spec"]["issue"]["title"] == title
    assert task["spec"]["issue"]["body"] == expected_body
    received = (flow.out / "3" / "issue.md").read_bytes()
    assert received == f"# {title}\n\n".encode() + expected_body.encode()
    prompt = (flow.out / "3" / "prompt.md").read_bytes()
    assert expected_body.encode() in prompt and title.encode() in prompt
    assert not canary.exists(), "issue text was executed"
    pulls = [p for p in flow.github.pulls(OWNER, REPO) if p["title"].startswith("Fix #3:")]
    assert [p["title"] for p in pulls] == [f"Fix #3: {' '.join(title.split())[:200]}"]  # the runner's cap
    assert pulls[0]["html_url"] in comments_of(flow, 3)[0]["body"]
    assert body[:200] not in flow.operator.logs()  # the payload is never logged
    flow.assert_no_token_leaks()


def test_status_page_in_headless_chromium(flow: Flow, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (hack/system-deps.sh installs it)")
    url = f"http://127.0.0.1:{flow.operator.http_port}/status"
    if not flow.task_names():  # run on its own: make one task to show
        flow.finished(flow.send(flow.payload(6, "[question] Status page", "?"))[1]["task"])
    tasks_now = {name: flow.task(name) or {} for name in flow.task_names()}
    names = sorted(tasks_now)
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name, task in tasks_now.items():
        row = f'data-task="{flow.namespace}/{name}" data-phase="{task["status"]["phase"]}"'
        assert row in dom.stdout, f"{name} missing from the status page"
        link = (task["status"].get("result") or {}).get("pullRequestUrl")
        assert link is None or f'href="{link}"' in dom.stdout
    assert "<script" not in dom.stdout
    assert TOKEN not in dom.stdout

    png = tmp_path / "status.png"
    shot = subprocess.run([*base, f"--screenshot={png}", "--window-size=1280,800", url], capture_output=True,
                          text=True, timeout=90)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    width, height, colours = png_pixels(png.read_bytes())
    assert (width, height) == (1280, 800)
    assert len(colours) > 20, f"the screenshot looks blank ({len(colours)} colours)"

    with urllib.request.urlopen(url.replace("/status", "/api/tasks"), timeout=10) as resp:
        tasks = {t["name"]: t for t in json.loads(resp.read())["tasks"] if t["namespace"] == flow.namespace}
    assert set(names) <= set(tasks)
    for name, task in tasks_now.items():
        shown = tasks[name]
        assert shown["phase"] == task["status"]["phase"] and shown["sandbox_id"] == task["status"]["sandbox"]["id"]
        assert shown["result_url"] == (task["status"].get("result") or {}).get("pullRequestUrl")
