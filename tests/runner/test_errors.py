"""Failure paths of the runner: each maps to its documented exit code and a `Failed` result.json."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.github import FakeGitHub
from tests.runner.conftest import AGENT_PRELUDE, TOKEN, UID, Sandbox


async def test_missing_context_dir_exits_64_without_a_result(sandbox: Sandbox) -> None:
    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 64
    assert run.result is None
    assert b"agenttask-runner: failed:" in run.stderr
    assert b"task.json does not exist" in run.stderr


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            doc = doc[key]
        doc[leaf] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set("repository", None), "repository must be an object"),
    (_set("task.attempt", "1"), "task.attempt must be an integer"),
    (_set("issue.number", True), "issue.number must be an integer"),
    (_set("agent.command", "claude -p"), "agent.command must be a non-empty list"),
    (_set("pullRequest.draft", "yes"), "pullRequest.draft must be a boolean"),
    (_set("repository.url", "https://user:secret@github.com/acme/widgets"), "must not carry credentials"),
    (_set("pullRequest.branchPrefix", "bad..prefix/"), "is not a valid branch name"),
    (_set("agent.workingDir", "no/such/dir"), "is not a directory"),
    (_set("agent.maxTurns", "10"), "agent.maxTurns must be an integer"),
])
async def test_bad_task_json_exits_64(
    sandbox: Sandbox, edit: Callable[[dict[str, Any]], None], message: str,
) -> None:
    sandbox.write_context(command=sandbox.agent("pass"))
    task_file = sandbox.ctx / "task.json"
    doc = json.loads(task_file.read_text())
    edit(doc)
    task_file.write_text(json.dumps(doc))

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 64, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "BadContext"
    assert message in run.result["error"]
    assert "secret@" not in run.result["error"]


@pytest.mark.parametrize("missing", ["prompt.md", "issue.md"])
async def test_missing_context_file_exits_64(sandbox: Sandbox, missing: str) -> None:
    sandbox.write_context(command=sandbox.agent("pass"))
    (sandbox.ctx / missing).unlink()

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 64
    assert run.result is not None
    assert missing in run.result["error"]


async def test_unparseable_task_json_exits_64(sandbox: Sandbox) -> None:
    sandbox.write_context(command=sandbox.agent("pass"))
    (sandbox.ctx / "task.json").write_bytes(b"{not json")

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 64
    assert run.result is not None
    assert "cannot read task.json" in run.result["error"]


async def test_clone_failure_exits_73(sandbox: Sandbox) -> None:
    sandbox.write_context(command=sandbox.agent("pass"), repo_url=(sandbox.home / "nowhere.git").as_uri())

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 73
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "GitFailed"
    assert run.result["error"].startswith("git clone failed")


async def test_push_failure_exits_74_after_the_agent_succeeded(sandbox: Sandbox) -> None:
    sandbox.extra_env["ORIGIN"] = str(sandbox.origin.bare)
    sandbox.write_context(command=sandbox.agent("""
        os.rename(os.environ["ORIGIN"], os.environ["ORIGIN"] + ".gone")
        pathlib.Path("README.md").write_text("changed\\n")
        print("made a change")
    """))

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 74
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "GitPushFailed"
    assert run.result["error"].startswith("git push failed")
    assert run.stderr.count(b"git push failed") == 3  # two retries, then the final failure
    assert run.result["agentExitCode"] == 0
    assert run.result["summary"] == "made a change"
    assert run.result["branch"] is None


async def test_github_failure_exits_69_and_keeps_the_pushed_branch(
    gh_sandbox: Sandbox, github: FakeGitHub,
) -> None:
    github.token = "another-token"  # the runner's token is refused by the API
    gh_sandbox.write_context(command=gh_sandbox.agent("""
        pathlib.Path("README.md").write_text("changed\\n")
    """))

    run = await asyncio.to_thread(gh_sandbox.run)

    assert run.returncode == 69
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "GitHubFailed"
    assert "HTTP 401: Bad credentials" in run.result["error"]
    assert run.result["branch"] == f"agenttask/42-{UID[:8]}"
    assert run.result["commit"]
    assert len(github.requests) == 1  # a 401 is not retried
    assert TOKEN.encode() not in run.stderr


@pytest.mark.parametrize(("agent", "code"), [("missing", 127), ("killed", 137)])
async def test_agent_that_cannot_start_or_is_killed(sandbox: Sandbox, agent: str, code: int) -> None:
    killed = sandbox.agent("import signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    sandbox.write_context(command=["/nonexistent/agent"] if agent == "missing" else killed)

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 65
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "AgentFailed"
    assert run.result["agentExitCode"] == code
    assert run.result["agent"] is None


async def test_default_agent_is_claude_code_headless(sandbox: Sandbox) -> None:
    claude = sandbox.bin / "claude"  # first on PATH: stands in for Claude Code
    claude.write_text(f"#!{sys.executable}\n" + AGENT_PRELUDE + (
        "(OUT / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "(OUT / 'env.json').write_text(json.dumps(dict(os.environ)))\n"
        "(OUT / 'stdin').write_bytes(sys.stdin.buffer.read())\n"
        "print('nothing to change')\n"
    ))
    claude.chmod(0o755)
    sandbox.write_context(command=None, github=False)

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 0, run.stderr.decode()
    assert json.loads((sandbox.out / "argv.json").read_text()) == [
        "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"]
    assert (sandbox.out / "stdin").read_bytes() == (sandbox.ctx / "prompt.md").read_bytes()
    env = json.loads((sandbox.out / "env.json").read_text())
    assert env["HOME"] == str(sandbox.ctx / "home")
    assert env["TMPDIR"] == env["CLAUDE_CODE_TMPDIR"] == str(sandbox.ctx / "tmp")
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "4"
    assert env.get("IS_SANDBOX") == ("1" if os.geteuid() == 0 else None)
    assert b"nothing to change\n" in run.stdout  # not JSON: passed through as it is
    claude.unlink()

    missing = await asyncio.to_thread(sandbox.run)

    assert missing.returncode == 65
    assert missing.result is not None
    assert missing.result["agentExitCode"] == 127
    assert missing.result["error"] == "agent command not found: claude"


async def test_sigterm_is_forwarded_to_the_agent(sandbox: Sandbox) -> None:
    sandbox.write_context(command=sandbox.agent("""
        import time
        (OUT / "started").write_text("yes")
        time.sleep(60)
    """))
    proc = subprocess.Popen(sandbox.argv(), cwd=sandbox.home, env=sandbox.env(zipapp=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(500):
        if (sandbox.out / "started").exists():
            break
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)

    _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)

    assert proc.returncode == 65, stderr.decode()
    result = json.loads((sandbox.ctx / "result.json").read_text())
    assert result["outcome"] == "Failed"
    assert result["agentExitCode"] == 128 + signal.SIGTERM


async def test_processes_the_agent_leaves_behind_are_killed(sandbox: Sandbox) -> None:
    sandbox.write_context(github=False, command=sandbox.agent("""
        # A straggler that holds our stdout and would write into the checkout after the commit.
        straggler = subprocess.Popen([sys.executable, "-c",
            "import pathlib, time; time.sleep(30); pathlib.Path('late.txt').write_text('late')"])
        (OUT / "straggler").write_text(str(straggler.pid))
        pathlib.Path("README.md").write_text("changed\\n")
    """))
    started = time.monotonic()

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 0, run.stderr.decode()
    assert time.monotonic() - started < 5  # not waiting for the straggler's pipe to close
    assert run.result is not None
    assert run.result["changedFiles"] == ["README.md"]
    status = Path(f"/proc/{(sandbox.out / 'straggler').read_text()}/status")

    def dead() -> bool:  # gone, or a zombie nobody has reaped yet
        try:
            return "State:\tZ" in status.read_text()
        except FileNotFoundError:
            return True

    for _ in range(100):
        if dead():
            break
        await asyncio.sleep(0.02)
    assert dead()


async def test_an_agent_that_ignores_sigterm_at_its_timeout_is_killed(sandbox: Sandbox) -> None:
    sandbox.write_context(github=False, agent_options={"timeoutSeconds": 2}, command=sandbox.agent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path("README.md").write_text("half done\\n")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
    """))
    started = time.monotonic()

    run = await asyncio.to_thread(sandbox.run, timeout=120)

    assert time.monotonic() - started < 60
    assert run.returncode == 66, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "AgentTimedOut"
    assert run.result["agentExitCode"] == 128 + signal.SIGKILL
    assert b"did not stop within 10s of SIGTERM; killing it" in run.stderr
    assert sandbox.origin.branches() == ["main"]  # nothing half-done is pushed


async def test_the_runner_stops_a_stream_json_agent_whose_cost_passes_the_limit(sandbox: Sandbox) -> None:
    sandbox.write_context(github=False, agent_options={"maxCostUsd": 1.0}, command=[*sandbox.agent("""
        import time
        usage = {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 4}
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "still going",
                          "total_cost_usd": 5.0, "num_turns": 9, "usage": usage}), flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # and never stops by itself
            time.sleep(0.05)
    """), "--output-format", "stream-json"])

    run = await asyncio.to_thread(sandbox.run, timeout=120)

    assert run.returncode == 67, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "LimitReached"
    assert run.result["error"] == "the agent was stopped: its reported cost $5.0000 passed agent.maxCostUsd"
    assert run.result["agent"]["costUsd"] == 5.0
    assert run.result["agent"]["usage"]["cacheCreationInputTokens"] == 4
    assert b"agent: finished (ok, success): 9 turns" in run.stdout


async def test_processes_the_agent_started_in_other_sessions_are_killed(sandbox: Sandbox) -> None:
    sandbox.write_context(github=False, command=sandbox.agent("""
        # What Claude Code's Bash tool does: each command in a session (and process group) of its own.
        straggler = subprocess.Popen([sys.executable, "-c",
            "import pathlib, time; time.sleep(30); pathlib.Path('late.txt').write_text('late')"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (OUT / "straggler").write_text(str(straggler.pid))
        pathlib.Path("README.md").write_text("changed\\n")
    """))

    run = await asyncio.to_thread(sandbox.run)

    assert run.returncode == 0, run.stderr.decode()
    status = Path(f"/proc/{(sandbox.out / 'straggler').read_text()}/status")

    def dead() -> bool:
        try:
            return "State:\tZ" in status.read_text()
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not dead() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert dead()
    assert not (sandbox.checkout / "late.txt").exists()


async def test_the_agent_is_stopped_at_agent_deadline(sandbox: Sandbox) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    sandbox.write_context(github=False, agent_options={"deadline": soon.isoformat().replace("+00:00", "Z")},
                          command=sandbox.agent("""
        import time
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
    """))

    run = await asyncio.to_thread(sandbox.run, timeout=120)

    assert run.returncode == 66, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "AgentTimedOut"
    assert run.result["error"].startswith("the agent did not finish within agent.deadline (")
