"""`agenttask demo`: the whole product on one machine, no cloud account, no cluster.

Starts a real local control plane (etcd + kube-apiserver), the embedded Daytona-compatible
sandbox server (or real Daytona when DAYTONA_API_KEY is set), installs the CRD, runs the
operator, creates a demo git repository with a bug and an AgentTask for the issue describing
it, shows the phase transitions as they happen, prints the result, and cleans everything up.

The agent is a small scripted program (the real default agent, Claude Code, needs an
Anthropic key); everything else — sandbox, runner, git push — is the production path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .devcluster import DevCluster
from .devcluster.cluster import free_port, terminate

CRD = Path(__file__).resolve().parent / "crds" / "agenttask.yaml"

# The scripted agent: reads the issue the operator put in the sandbox and fixes the typo it names.
DEMO_AGENT = r"""
import os, pathlib, re
issue = pathlib.Path(os.environ["AGENTTASK_ISSUE_FILE"]).read_text()
print("demo-agent: read the issue:", issue.splitlines()[0])
path = pathlib.Path("greet.py")
source = path.read_text()
wrong, right = re.search(r"says '(\w+)' instead of '(\w+)'", issue).groups()
path.write_text(source.replace(wrong, right))
print(f"demo-agent: replaced {wrong!r} with {right!r} in greet.py")
pathlib.Path(os.environ["AGENTTASK_SUMMARY_FILE"]).write_text(f"Fixed the greeting: {wrong} -> {right}.\n")
"""

DEMO_SOURCE = 'def greet(name: str) -> str:\n    return f"Helo, {name}!"\n'
ISSUE_BODY = "Running `greet('world')` says 'Helo' instead of 'Hello'. Please fix the typo."


def add_parser(sub: Any, name: str) -> None:
    parser = sub.add_parser(name, help="run the whole product locally on embedded defaults")
    parser.add_argument("--keep", action="store_true",
                        help="leave the control plane, sandbox server and operator running at the end")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the task (default 180)")


def _say(text: str) -> None:
    print(text, flush=True)


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_demo_repo(root: Path) -> Path:
    work, bare = root / "demo-src", root / "demo-repo.git"
    _git("init", "-q", "-b", "main", str(work))
    (work / "greet.py").write_text(DEMO_SOURCE)
    (work / "README.md").write_text("# demo\n\nA tiny project with a bug for the AgentTask demo.\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", "initial", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(bare))
    return bare


@contextlib.contextmanager
def _process(argv: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=out, text=True,
                                start_new_session=True)
    try:
        yield proc
    finally:
        terminate([proc.pid], grace=20)
        proc.wait()


def _kubectl(cluster: DevCluster, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", *args],
                          input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited early; its log:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the operator did not become healthy in {timeout:.0f}s; see {log}")


def _watch(cluster: DevCluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    last: tuple[str | None, str | None] = (None, None)
    while time.monotonic() - started < timeout:
        task: dict[str, Any] = json.loads(_kubectl(cluster, "get", "at", name, "-n", namespace, "-o", "json"))
        status = task.get("status") or {}
        now = (status.get("phase"), status.get("message"))
        if now != last and now[0]:
            _say(f"  [{time.monotonic() - started:6.2f}s] {now[0]:<12} {now[1] or ''}")
            last = now
        if now[0] in ("Succeeded", "Failed"):
            return task
        time.sleep(0.1)
    raise RuntimeError(f"the task did not finish within {timeout:.0f}s")


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="agenttask-demo-"))
    try:
        code = _run(args, work)
        if code == 0 and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return code
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        _say(f"\ndemo failed: {exc}")
        _say(f"logs are in {work}")
        return 1


def _run(args: argparse.Namespace, work: Path) -> int:
    _say("AgentTask demo: a local control plane, a sandbox server, the operator and one task.\n")
    cluster = DevCluster(state_dir=work / "controlplane", owned=not args.keep)
    t0 = time.monotonic()
    cluster.start(log=lambda m: _say(f"- {m}"))
    _say(f"- control plane ready in {time.monotonic() - t0:.1f}s (KUBECONFIG={cluster.kubeconfig})")
    try:
        return _with_cluster(args, work, cluster)
    finally:
        if not args.keep:
            cluster.stop()
            _say("- control plane stopped")


def _with_cluster(args: argparse.Namespace, work: Path, cluster: DevCluster) -> int:
    _kubectl(cluster, "apply", "--server-side", "-f", str(CRD))
    cluster.wait_established("agenttasks.agenttask.io")
    _kubectl(cluster, "create", "namespace", "demo")
    _say("- AgentTask CRD installed, namespace 'demo' created")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTTASK_")}
    cli = [sys.executable, "-m", "controller.cli"]
    with contextlib.ExitStack() as stack:
        if os.environ.get("DAYTONA_API_KEY"):
            _say("- using Daytona (DAYTONA_API_KEY is set)")
        else:
            key = os.urandom(16).hex()
            server = stack.enter_context(_process(
                [*cli, "sandbox-server", "--port", "0", "--api-key", key, "--root", str(work / "sandboxes")],
                env=env, log=work / "sandbox-server.log"))
            assert server.stdout is not None
            line = server.stdout.readline().strip()
            if not line.startswith("DAYTONA_API_URL="):
                raise RuntimeError(f"sandbox server failed: {(work / 'sandbox-server.log').read_text()[-1000:]}")
            env.update(DAYTONA_API_URL=line.removeprefix("DAYTONA_API_URL="), DAYTONA_API_KEY=key)
            _say(f"- embedded Daytona-compatible server at {env['DAYTONA_API_URL']}")
        port = free_port()
        env.update(KUBECONFIG=str(cluster.kubeconfig), AGENTTASK_STANDALONE="true",
                   AGENTTASK_HTTP_HOST="127.0.0.1", AGENTTASK_HTTP_PORT=str(port),
                   AGENTTASK_POLL_INTERVAL_SECONDS="0.5", AGENTTASK_INSTANCE_ID="demo")
        oplog = work / "operator.log"
        operator = stack.enter_context(_process([*cli, "run", "--namespace", "demo"], env=env, log=oplog))
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60, operator, oplog)
        _say(f"- operator running (metrics: http://127.0.0.1:{port}/metrics, log: {oplog})")

        bare = make_demo_repo(work)
        _say(f"- demo repository {bare} (greet.py says 'Helo')\n")
        task = {
            "apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "fix-greeting"},
            "spec": {"repository": {"url": f"file://{bare}"},
                     "issue": {"number": 1, "title": "Greeting has a typo", "body": ISSUE_BODY, "author": "demo"},
                     "agent": {"command": ["python3", "-c", DEMO_AGENT]},
                     "audit": {"requestedBy": "demo", "source": "agenttask-demo"}},
        }
        _kubectl(cluster, "create", "-n", "demo", "-f", "-", stdin=json.dumps(task))
        _say("kubectl create agenttask/fix-greeting; phases as they happen:")
        final = _watch(cluster, "demo", "fix-greeting", args.timeout)
        status = final["status"]
        _say("")
        _say(_kubectl(cluster, "get", "at", "-n", "demo", "-o", "wide").rstrip())
        _say("")
        if status["phase"] != "Succeeded":
            _say(f"the task failed: {status.get('reason')}: {status.get('message')}")
            _say(f"log tail:\n{status.get('logTail', '')}")
            return 1
        result = status.get("result") or {}
        _say("result:")
        _say(f"  outcome:       {result.get('outcome')}")
        _say(f"  branch:        {result.get('branch')}")
        _say(f"  commit:        {result.get('commit')}")
        _say(f"  changed files: {', '.join(result.get('changedFiles') or [])}")
        _say(f"  summary:       {(result.get('summary') or '').strip()}")
        _say("\nthe pushed change:")
        _say(_git("--git-dir", str(bare), "show", "--stat", "--patch", "--format=%h %s", result["branch"]))
        _say("inspect it with:")
        _say(f"  kubectl --kubeconfig {cluster.kubeconfig} get at -n demo fix-greeting -o yaml")
        _say(f"  git --git-dir {bare} log --oneline --all")
        if args.keep:
            _say("\nleft running (--keep). Stop with: agenttask dev-cluster down --state-dir "
                 f"{cluster.state_dir}  (and kill the operator / sandbox server processes)")
            stack.pop_all()
            return 0
        _kubectl(cluster, "delete", "at", "-n", "demo", "fix-greeting", "--wait=true", "--timeout=60s")
        _say("\n- AgentTask deleted (finalizer cleaned up its sandbox); stopping everything")
    return 0
