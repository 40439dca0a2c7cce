"""`kubectl agenttask`, run the way users run it: the real kubectl finds `kubectl-agenttask` on
PATH (the package's console script) and executes it, against the real apiserver with the operator
running its tasks in the embedded Daytona-compatible server."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import CHANGE_AGENT, FAIL_AGENT, SLOW_AGENT, create_task, get_task, wait_phase

BIN = Path(sys.executable).parent
# 1000 numbered lines at once (more than a 4 KiB status tail), a pause, then the last line
BURST_AGENT = """
import sys, time
for i in range(1000):
    print(f"burst line {i:04d}", flush=True)
time.sleep(4)
print("agent: burst done", flush=True)
"""
# says it is ready, waits for the file named by its argument, then the same burst
GATED_BURST_AGENT = """
import os, sys, time
print("agent: ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
""" + BURST_AGENT
# a first line the status tail shows, then the same burst
LATE_BURST_AGENT = """
import time
print("agent: before the burst", flush=True)
time.sleep(5)
""" + BURST_AGENT
# numbered lines, slowly: every status-tail update carries a few new ones
TRICKLE_AGENT = """
import time
for i in range(12):
    print(f"trickle line {i:02d}", flush=True)
    time.sleep(0.5)
"""


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("plugin-sandboxes")) as server:
        yield server


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl) -> str:
    name = f"plugin-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(controlplane: DevCluster, crd: Path, daytona: SandboxServer, ns: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = operator_for(controlplane.kubeconfig, daytona, ns, tmp_path_factory.mktemp("plugin-operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_repo(tmp_path_factory.mktemp("plugin-repo"))


def plugin_env(kubeconfig: Path | str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAYTONA_", "AGENTTASK_", "KUBECONFIG"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["KUBECONFIG"] = str(kubeconfig)
    env.update(extra)
    return env


def run_plugin(controlplane: DevCluster, *args: str, kubeconfig: Path | None = None, timeout: float = 120,
               **env: str) -> subprocess.CompletedProcess[str]:
    """`kubectl agenttask ARGS` through kubectl's plugin mechanism."""
    return subprocess.run([str(controlplane.kubectl), "agenttask", *args], capture_output=True, text=True,
                          timeout=timeout, env=plugin_env(kubeconfig or controlplane.kubeconfig, **env))


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


def spec(url: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"repository": {"url": url}, "agent": {"command": command}, **extra}


def test_kubectl_finds_the_plugin(controlplane: DevCluster) -> None:
    listed = subprocess.run([str(controlplane.kubectl), "plugin", "list"], capture_output=True, text=True,
                            timeout=60, env=plugin_env(controlplane.kubeconfig))
    assert str(BIN / "kubectl-agenttask") in listed.stdout, listed.stdout + listed.stderr
    done = run_plugin(controlplane, "--help")
    assert done.returncode == 0 and "rerun" in done.stdout and "Exit codes" in done.stdout


def test_usage_errors_exit_2(controlplane: DevCluster) -> None:
    for args in (("frobnicate",), ("logs",), ("list", "--bogus"), ("list", "--phase", "Sleeping")):
        done = run_plugin(controlplane, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "error:" in done.stderr
        no_traceback(done)


def test_list_describe_and_logs_of_a_finished_task(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, repo: tuple[Path, str],
    tmp_path: Path
) -> None:
    _, url = repo
    create_task(kubectl, ns, "listed", spec(url, agent_script(tmp_path, "agent", CHANGE_AGENT),
                                            issue={"number": 4, "title": "Listed"},
                                            audit={"requestedBy": "octocat", "source": "kubectl"}))
    kubectl("label", "at", "listed", "-n", ns, "team=blue")
    done = wait_phase(kubectl, ns, "listed", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", operator.logs()[-3000:]

    table = run_plugin(controlplane, "list", "-n", ns)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "REASON", "REPOSITORY", "ISSUE", "REQUESTER", "AGE"]
    row = next(r.split() for r in rows if r.startswith("listed "))
    assert row[:3] == ["listed", "Succeeded", done["status"]["reason"]] and row[3:6] == [url, "4", "octocat"]

    def names(*args: str) -> list[str]:
        out = run_plugin(controlplane, "list", "-n", ns, "-o", "name", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert "agenttask.agenttask.io/listed" in names("--phase", "Succeeded")
    assert "agenttask.agenttask.io/listed" in names("--phase", "running,succeeded")
    assert "agenttask.agenttask.io/listed" not in names("--phase", "Running")
    assert names("-l", "team=blue") == ["agenttask.agenttask.io/listed"]
    assert names("-l", "team=red") == []
    assert "agenttask.agenttask.io/listed" in names("--requester", "octocat")
    assert "agenttask.agenttask.io/listed" not in names("--requester", "someone-else")
    everywhere = run_plugin(controlplane, "list", "-A", "-l", "team=blue")
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert everywhere.stdout.splitlines()[1].split()[:3] == [ns, "listed", "Succeeded"]
    as_json = json.loads(run_plugin(controlplane, "list", "-n", ns, "-l", "team=blue", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in as_json["items"]] == ["listed"]
    as_yaml = yaml.safe_load(run_plugin(controlplane, "list", "-n", ns, "-l", "team=blue", "-o", "yaml").stdout)
    assert as_yaml["items"][0]["status"]["phase"] == "Succeeded"
    wide = run_plugin(controlplane, "list", "-n", ns, "-l", "team=blue", "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-3:] == ["SANDBOX", "ATTEMPTS", "RESULT"]

    # describe: conditions, result, events (poll: the last events may trail the status)
    def described() -> str | None:
        out = run_plugin(controlplane, "describe", "listed", "-n", ns)
        assert out.returncode == 0, out.stderr
        return out.stdout if "AgentSucceeded" in out.stdout.split("Events:")[-1] else None

    page = wait_for(described, timeout=30, what="describe to show the AgentSucceeded event")
    assert "Phase:            Succeeded" in page
    assert "Requested by:     octocat" in page
    conditions = page.split("Conditions:")[1].split("Events:")[0]
    ready = next(line.split() for line in conditions.splitlines() if line.split()[:1] == ["Ready"])
    assert ready[1:3] == ["True", "AgentSucceeded"]
    assert "Outcome:" in page and done["status"]["result"]["outcome"] in page
    assert f"Branch:         {done['status']['result']['branch']}" in page
    events = page.split("Events:")[1]
    assert {"AgentStarted", "AgentSucceeded"} <= {  # one event per step that changed the phase
        line.split()[1] for line in events.splitlines()[1:] if len(line.split()) > 1}
    assert json.loads(run_plugin(controlplane, "describe", "listed", "-n", ns, "-o", "json").stdout)[
        "metadata"]["name"] == "listed"

    logs = run_plugin(controlplane, "logs", "listed", "-n", ns)
    assert logs.returncode == 0 and "agent: wrote FIX.md" in logs.stdout, logs.stderr
    followed = run_plugin(controlplane, "logs", "-f", "listed", "-n", ns)  # finished: prints and exits
    assert followed.returncode == 0 and "agent: wrote FIX.md" in followed.stdout


def test_not_found_and_forbidden_are_one_line_errors(
    controlplane: DevCluster, crd: Path, ns: str, tmp_path: Path
) -> None:
    for args in (("describe", "nope"), ("logs", "nope"), ("cancel", "nope"), ("rerun", "nope")):
        done = run_plugin(controlplane, *args, "-n", ns)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip() == f'Error from server (NotFound): agenttasks.agenttask.io "nope" not found in ' \
                                      f'namespace "{ns}"', done.stderr
        no_traceback(done)
    nobody = controlplane.kubeconfig_for(controlplane.unprivileged, tmp_path / "nobody.kubeconfig")
    for args in (("list",), ("describe", "x"), ("cancel", "x")):
        done = run_plugin(controlplane, *args, "-n", ns, kubeconfig=nobody)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("Error from server (Forbidden): ") and "cannot" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        no_traceback(done)
    done = run_plugin(controlplane, "list", kubeconfig=tmp_path / "missing.kubeconfig")
    assert done.returncode == 1 and done.stderr.startswith("error: "), done.stderr
    no_traceback(done)


def test_kubeconfig_list_and_context_select_cluster_user_and_namespace(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, ns: str, tmp_path: Path, repo: tuple[Path, str]
) -> None:
    """KUBECONFIG as a list (merged like kubectl), --context picks another context's user and namespace,
    --kubeconfig overrides the variable."""
    _, url = repo
    create_task(kubectl, ns, "ctx-visible", spec(url, ["true"], suspend=True))
    admin = yaml.safe_load(controlplane.kubeconfig.read_text())
    admin["contexts"][0]["context"]["namespace"] = ns
    first = tmp_path / "admin.kubeconfig"
    first.write_text(yaml.safe_dump(admin))
    nobody = yaml.safe_load(controlplane.kubeconfig_for(controlplane.unprivileged, tmp_path / "n.kubeconfig")
                            .read_text())
    nobody["contexts"][0]["name"] = nobody["current-context"] = "as-nobody"
    second = tmp_path / "nobody.kubeconfig"
    second.write_text(yaml.safe_dump(nobody))
    merged = f"{first}{os.pathsep}{second}"

    done = run_plugin(controlplane, "list", "-o", "name", KUBECONFIG=merged)  # first file's current context
    assert done.returncode == 0 and "agenttask.agenttask.io/ctx-visible" in done.stdout.split(), done.stderr
    done = run_plugin(controlplane, "list", "--context", "as-nobody", KUBECONFIG=merged)
    assert done.returncode == 1 and "Forbidden" in done.stderr and '"default"' in done.stderr, done.stderr
    done = run_plugin(controlplane, "list", "-o", "name", "--kubeconfig", str(first), KUBECONFIG=str(second))
    assert "agenttask.agenttask.io/ctx-visible" in done.stdout.split(), done.stderr
    done = run_plugin(controlplane, "list", "--context", "no-such-context", KUBECONFIG=merged)
    assert done.returncode == 1 and "no-such-context" in done.stderr, done.stderr
    no_traceback(done)


def follow(controlplane: DevCluster, name: str, ns: str, *extra: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(controlplane.kubectl), "agenttask", "logs", "-f", name, "-n", ns, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=plugin_env(controlplane.kubeconfig, **env))


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    """What `proc` printed up to (at least) the first `marker`, read straight from the pipe (so
    that `finish` goes on reading where this stopped)."""
    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            proc.kill()
            raise AssertionError(f"the follower never printed {marker!r}:\n{seen.decode()[-2000:]}\n"
                                 f"{proc.communicate()[1]}")
        seen += chunk
    return seen.decode()


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"logs -f did not end with the task:\n{out[-2000:]}\n{err[-2000:]}") from None
    return proc.returncode, out, err


def test_logs_follow_from_daytona_streams_everything_and_exits_with_the_outcome(
    operator: Operator, daytona: SandboxServer, controlplane: DevCluster, kubectl: Kubectl, ns: str,
    repo: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = repo
    gate = tmp_path / "burst-gate"
    create_task(kubectl, ns, "burst", spec(url, [*agent_script(tmp_path, "burst", GATED_BURST_AGENT), str(gate)]))
    create_task(kubectl, ns, "fails", spec(url, agent_script(tmp_path, "fail", FAIL_AGENT)))
    creds = {"DAYTONA_API_URL": daytona.api_url, "DAYTONA_API_KEY": daytona.api_key}
    burst = follow(controlplane, "burst", ns, **creds)  # started before the sandbox exists
    failing = follow(controlplane, "fails", ns, "--source=daytona", **creds)
    # the burst starts once the follower streams from Daytona (a follower that starts after the task
    # has finished only has the status tail: a slow start under load is no failure of the stream)
    head = read_until(burst, "agent: ready")
    gate.touch()
    code, out, err = finish(burst)
    out = head + out
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("burst line ")]
    assert lines == [f"burst line {i:04d}" for i in range(1000)], out[:300] + "\n---\n" + err
    assert out.rstrip().endswith("agent: burst done") or "agent: burst done" in out
    assert get_task(kubectl, ns, "burst")["status"]["phase"] == "Succeeded"  # type: ignore[index]
    code, out, err = finish(failing)
    assert code == 3, (code, out, err)
    assert "agent: last words" in out
    # once the sandbox is gone only the status tail is left, and the plugin says that it is only the end
    wait_for(lambda: ((get_task(kubectl, ns, "burst") or {}).get("status", {}).get("sandbox") or {}).get("deleted"),
             timeout=30, what="the burst sandbox's deletion recorded")
    done = run_plugin(controlplane, "logs", "burst", "-n", ns, "--source=daytona", **creds)
    assert done.returncode == 0 and "burst line 0999" in done.stdout and "burst line 0000" not in done.stdout
    assert "sandbox is gone; showing status.logTail, only the end of the agent's output" in done.stderr, done.stderr
    # a wrong key is a clear Daytona error, not a traceback
    done = run_plugin(controlplane, "logs", "burst", "-n", ns, "--source=daytona", DAYTONA_API_URL=daytona.api_url,
                      DAYTONA_API_KEY="wrong-key-0000")
    assert done.returncode in (0, 1), done.stderr  # the sandbox is gone: the status tail answers, or Daytona says no
    no_traceback(done)


def test_logs_follow_through_the_status_tail_with_kubectl_permissions_only(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, repo: tuple[Path, str],
    tmp_path: Path
) -> None:
    _, url = repo
    create_task(kubectl, ns, "trickle", spec(url, agent_script(tmp_path, "trickle", TRICKLE_AGENT)))
    create_task(kubectl, ns, "burst-tail", spec(url, agent_script(tmp_path, "late", LATE_BURST_AGENT)))
    trickle = follow(controlplane, "trickle", ns)
    burst = follow(controlplane, "burst-tail", ns, "--source=status")
    code, out, err = finish(trickle)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("trickle line ")]
    assert lines == [f"trickle line {i:02d}" for i in range(12)], out
    code, out, err = finish(burst)
    assert code == 0, err
    # 1000 lines at once do not fit one 4 KiB tail: the follower says output was skipped, then goes on
    assert "agent: before the burst" in out.split("output skipped")[0]
    assert "burst line 0999" in out and "agent: burst done" in out
    seen = [line for line in out.splitlines() if line.startswith("burst line ")]
    assert len(seen) == len(set(seen)), "no line printed twice"


def test_cancel_suspend_resume_patch_the_spec(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, repo: tuple[Path, str],
    tmp_path: Path
) -> None:
    _, url = repo
    create_task(kubectl, ns, "held", spec(url, ["true"], suspend=True))  # never admitted: no sandbox needed
    wait_phase(kubectl, ns, "held", {"Pending"}, timeout=60)
    done = run_plugin(controlplane, "resume", "held", "-n", ns)
    assert done.returncode == 0 and done.stdout == "agenttask.agenttask.io/held resumed\n", done.stderr
    kubectl("patch", "at", "held", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    done = run_plugin(controlplane, "suspend", "held", "-n", ns)
    assert done.returncode == 0 and "already suspended" in done.stdout
    done = run_plugin(controlplane, "cancel", "held", "-n", ns)
    assert done.returncode == 0 and done.stdout == "agenttask.agenttask.io/held cancelled\n", done.stderr
    assert get_task(kubectl, ns, "held")["spec"]["cancel"] is True  # type: ignore[index]
    again = run_plugin(controlplane, "cancel", "held", "-n", ns)
    assert again.returncode == 0 and "already cancelled" in again.stdout
    finished = wait_phase(kubectl, ns, "held", {"Succeeded", "Failed"}, timeout=60)
    assert "already cancelled" in run_plugin(controlplane, "cancel", "held", "-n", ns).stdout
    for verb in ("suspend", "resume"):
        refused = run_plugin(controlplane, verb, "held", "-n", ns)
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr.strip() == f"error: held already finished ({finished['status']['phase']}); " \
                                         f"nothing to {verb}", refused.stderr


def test_cancel_of_a_running_task_ends_it_cancelled_and_keeps_its_record(
    operator: Operator, daytona: SandboxServer, controlplane: DevCluster, kubectl: Kubectl, ns: str,
    repo: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = repo
    create_task(kubectl, ns, "doomed", spec(url, [*agent_script(tmp_path, "slow", SLOW_AGENT), "300"]))
    running = wait_phase(kubectl, ns, "doomed", {"Running"}, timeout=90)
    box = running["status"]["sandbox"]["name"]
    wait_for(lambda: "tick 1" in (get_task(kubectl, ns, "doomed") or {}).get("status", {}).get("logTail", ""),
             timeout=30, what="some output in the tail")
    follower = follow(controlplane, "doomed", ns)
    assert run_plugin(controlplane, "cancel", "doomed", "-n", ns).returncode == 0
    code, out, _ = finish(follower)
    assert code == 3 and "tick 0" in out
    task = wait_phase(kubectl, ns, "doomed", {"Failed"}, timeout=60)
    assert task["status"]["reason"] == "Cancelled"
    assert "tick 0" in task["status"]["logTail"]
    # events say the same reason as the status, and describe shows it
    page = wait_for(lambda: (lambda p: p if "Cancelled" in p.split("Events:")[-1] else None)(
        run_plugin(controlplane, "describe", "doomed", "-n", ns).stdout), timeout=30, what="a Cancelled event")
    assert "Reason:           Cancelled" in page
    wait_for(lambda: daytona.get(box) is None, timeout=60, what="the cancelled task's sandbox deleted")


def test_suspend_and_resume_of_a_running_task_through_the_plugin(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, repo: tuple[Path, str],
    tmp_path: Path
) -> None:
    _, url = repo
    create_task(kubectl, ns, "pausable", spec(url, [*agent_script(tmp_path, "slow", SLOW_AGENT), "6"]))
    wait_phase(kubectl, ns, "pausable", {"Running"}, timeout=90)
    assert run_plugin(controlplane, "suspend", "pausable", "-n", ns).returncode == 0
    suspended = wait_phase(kubectl, ns, "pausable", {"Suspended"}, timeout=60)
    box = suspended["status"]["sandbox"]["name"]
    follower = follow(controlplane, "pausable", ns)  # follows across the resume until it finishes
    assert run_plugin(controlplane, "resume", "pausable", "-n", ns).returncode == 0
    code, out, err = finish(follower)
    assert code == 0, (out[-2000:], err)
    done = get_task(kubectl, ns, "pausable")
    assert done is not None and done["status"]["phase"] == "Succeeded"
    assert done["status"]["sandbox"]["name"] == box, "one sandbox throughout"
    assert "agent: done" in out


def test_rerun_creates_a_new_task_from_the_old_spec(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, repo: tuple[Path, str],
    tmp_path: Path
) -> None:
    _, url = repo
    agent = agent_script(tmp_path, "agent", CHANGE_AGENT)
    create_task(kubectl, ns, "original", spec(url, agent, issue={"number": 9, "title": "Again"}, suspend=True,
                                              audit={"requestedBy": "octocat", "deliveryId": "d-1"}))
    kubectl("label", "at", "original", "-n", ns, "team=green")
    kubectl("patch", "at", "original", "-n", ns, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    old = wait_phase(kubectl, ns, "original", {"Failed"}, timeout=60)
    assert old["status"]["reason"] == "Cancelled"

    first = run_plugin(controlplane, "rerun", "original", "-n", ns)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "agenttask.agenttask.io/original-rerun-1 created (rerun of original)\n"
    second = run_plugin(controlplane, "rerun", "original", "-n", ns, "-o", "name")
    assert second.stdout == "agenttask.agenttask.io/original-rerun-2\n", second.stderr
    named = run_plugin(controlplane, "rerun", "original", "-n", ns, "--name", "by-hand", "-o", "json")
    assert json.loads(named.stdout)["metadata"]["name"] == "by-hand"
    clash = run_plugin(controlplane, "rerun", "original", "-n", ns, "--name", "by-hand")
    assert clash.returncode == 1 and "already exists" in clash.stderr, clash.stderr

    rerun = get_task(kubectl, ns, "original-rerun-1")
    assert rerun is not None
    assert rerun["metadata"]["labels"] == {"team": "green", "agenttask.io/rerun-of": "original"}
    annotations = rerun["metadata"]["annotations"]
    assert annotations["agenttask.io/rerun-of"] == "original"
    assert not [k for k in annotations if k.startswith("kubectl.kubernetes.io/")]
    assert rerun["spec"]["cancel"] is False and rerun["spec"]["suspend"] is False
    assert rerun["spec"]["audit"] == {"requestedBy": "octocat"}
    assert "repository" in rerun["spec"] and "issue" in rerun["spec"]
    for key in ("repository", "issue", "agent", "sandbox", "pullRequest", "backoffLimit"):
        assert rerun["spec"].get(key) == old["spec"].get(key), key
    ran = wait_phase(kubectl, ns, "original-rerun-1", {"Succeeded", "Failed"})
    assert ran["status"]["phase"] == "Succeeded"
    refused = run_plugin(controlplane, "cancel", "original-rerun-1", "-n", ns)
    assert (refused.returncode, refused.stderr) == (
        1, "error: original-rerun-1 already finished (Succeeded); nothing to cancel\n")
    listed = run_plugin(controlplane, "list", "-n", ns, "-l", "agenttask.io/rerun-of=original", "-o", "name")
    assert sorted(listed.stdout.split()) == [f"agenttask.agenttask.io/{n}" for n in (
        "by-hand", "original-rerun-1", "original-rerun-2")]
