"""The real Claude Code CLI through the real runner (zipapp) against the project's fake Messages API.

Claude Code is the pinned npm release (`hack/tools.sh claude`); the model is `FakeAnthropic`
playing a scripted conversation over real HTTP/SSE. The runner runs as it does in a sandbox:
the zipapp under `python -I -S`, env.json carrying the API key and base URL, real git against a
local bare origin, the fake GitHub for the pull request.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic import DEFAULT_MODEL, Fail, FakeAnthropic, Usage, say, use
from tests.fakes.github import FakeGitHub
from tests.runner.claude_support import (
    API_KEY,
    BRANCH,
    FIXED,
    RUN_TESTS,
    TESTS,
    assert_usage_matches,
    fix_script,
    with_claude,
)
from tests.runner.conftest import _SHIM, OWNER, REAL_GIT, REPO, Origin, RunResult, Sandbox, make_origin


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    (tmp_path / "remote").mkdir()
    return make_origin(tmp_path / "remote", extra=TESTS)


async def test_claude_code_fixes_the_issue_runs_the_tests_and_reports_usage(
    gh_sandbox: Sandbox, github: FakeGitHub, claude_bin: Path,
) -> None:
    sb = gh_sandbox
    sb.write_context(command=None)
    async with FakeAnthropic(fix_script(sb.checkout), api_key=API_KEY) as api:
        with_claude(sb, claude_bin, api)

        run = await asyncio.to_thread(sb.run, zipapp=True)

    out = run.stdout.decode()
    assert run.returncode == 0, run.stderr.decode() + out
    result = run.result
    assert result is not None
    assert result["outcome"] == "PullRequestOpened"
    assert result["failureClass"] is None
    assert result["summary"] == FIXED
    # The tests really ran, on the fixed code, and their output is in the runner's log.
    [*_, bash] = api.tool_results()
    assert not bash.is_error
    assert "Ran 1 test" in bash.text and "OK" in bash.text
    assert f"agent: → Bash: {RUN_TESTS}" in out
    assert "agent: ← Bash: " in out and "test_save_returns_true" in out
    assert "agent: → Edit: " in out
    # The fix is pushed and the pull request carries the agent's answer.
    assert "return True" in sb.origin.show(f"{BRANCH}:src/app.py")
    [pull] = github.pulls(OWNER, REPO)
    assert FIXED in pull["body"]
    assert result["changedFiles"] == ["src/app.py"]
    # What Claude Code reported, as the fake reported it.
    agent = result["agent"]
    sessions = {r.headers["x-claude-code-session-id"] for r in api.message_requests()}
    assert agent["sessionId"] in sessions and len(sessions) == 1
    assert agent["isError"] is False
    assert agent["numTurns"] == 4
    assert agent["model"] == DEFAULT_MODEL
    assert agent["models"] == [DEFAULT_MODEL]
    assert agent["durationMs"] > 0
    assert agent["permissionDenials"] == []
    assert_usage_matches(result, api)
    assert len(api.reported) == 4
    # No traffic but the Messages API; nothing written outside the checkout and the context dir.
    assert {(r.method, r.path) for r in api.requests} == {("POST", "/v1/messages")}
    assert sorted(os.listdir(sb.home)) == ["agenttask", "repo"]
    assert list(sb.tmp.iterdir()) == []
    transcripts = list((sb.ctx / "home" / ".claude" / "projects").glob(f"*/{agent['sessionId']}.jsonl"))
    assert len(transcripts) == 1  # kept, so a later run can --resume the session
    assert API_KEY not in out + run.stderr.decode() + json.dumps(result)


async def test_a_bad_key_fails_fast_as_model_auth(sandbox: Sandbox, claude_bin: Path) -> None:
    sandbox.write_context(command=None, github=False)
    async with FakeAnthropic(fix_script(sandbox.checkout), api_key=API_KEY) as api:
        with_claude(sandbox, claude_bin, api, key="sk-ant-api03-revoked-" + secrets.token_hex(8))
        started = time.monotonic()

        run = await asyncio.to_thread(sandbox.run, zipapp=True)

    assert time.monotonic() - started < 30
    assert run.returncode == 68, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "ModelAuthFailed"
    assert "the model API refused the credentials (HTTP 401)" in run.result["error"]
    assert run.result["agent"]["isError"] is True
    assert len(api.requests) == 5  # the first call and CLAUDE_CODE_MAX_RETRIES=4 retries, then it gave up
    assert "agent: model API error 401" in run.stdout.decode()
    assert sandbox.origin.branches() == ["main"]


async def test_an_api_outage_is_model_unavailable_and_env_json_overrides_the_retries(
    sandbox: Sandbox, claude_bin: Path,
) -> None:
    sandbox.write_context(command=None, github=False)
    async with FakeAnthropic([Fail(529, "overloaded_error", "Overloaded")], api_key=API_KEY) as api:
        with_claude(sandbox, claude_bin, api, CLAUDE_CODE_MAX_RETRIES="1")

        run = await asyncio.to_thread(sandbox.run, zipapp=True)

    assert run.returncode == 71, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "ModelUnavailable"
    assert "HTTP 529" in run.result["error"]
    assert len(api.requests) == 2


async def test_a_denied_tool_call_is_reported(sandbox: Sandbox, claude_bin: Path) -> None:
    sb = sandbox
    sb.write_context(command=None, github=False, agent_options={"disallowedTools": ["Bash(git push:*)"]})
    readme = str(sb.checkout / "README.md")
    script = [
        use("Bash", command="git push origin HEAD:main", description="Push"),
        use("Read", file_path=readme),
        use("Write", file_path=readme, content="# widgets\n\nSaving works.\n"),
        say("Updated the README; pushing was not allowed."),
    ]
    async with FakeAnthropic(script, api_key=API_KEY) as api:
        with_claude(sb, claude_bin, api)

        run = await asyncio.to_thread(sb.run, zipapp=True)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "ChangesPushed"
    assert run.result["agent"]["permissionDenials"] == [
        {"tool": "Bash", "input": json.dumps({"command": "git push origin HEAD:main", "description": "Push"},
                                             sort_keys=True)}]
    [denied, *_] = api.tool_results()
    assert denied.is_error and "denied" in denied.text
    assert "agent: permission denied: Bash" in run.stdout.decode()


async def test_the_cost_limit_stops_claude_code(sandbox: Sandbox, claude_bin: Path) -> None:
    sb = sandbox
    sb.write_context(command=None, github=False, agent_options={"maxCostUsd": 1})
    expensive = Usage(input_tokens=200_000, output_tokens=1_000, cache_read_input_tokens=0,
                      cache_creation_input_tokens=0)  # $0.82 a call at list price
    script = [use("Bash", command=f"echo step {i}", description=f"step {i}", usage=expensive) for i in range(4)]
    async with FakeAnthropic([*script, say("done")], api_key=API_KEY) as api:
        with_claude(sb, claude_bin, api)

        run = await asyncio.to_thread(sb.run, zipapp=True)

    assert run.returncode == 67, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "LimitReached"
    assert "agent.maxCostUsd" in run.result["error"]
    assert run.result["agent"]["costUsd"] > 1
    assert len(api.reported) == 2  # it stopped after the call that crossed the limit
    assert sb.origin.branches() == ["main"]


async def test_agent_options_reach_claude_code(sandbox: Sandbox, claude_bin: Path) -> None:
    sb = sandbox
    (sb.ctx).mkdir(parents=True, exist_ok=True)
    (sb.ctx / "mcp.json").write_text(json.dumps({"mcpServers": {"probe": {"command": "/bin/false", "args": []}}}))
    sb.write_context(command=None, github=False, agent_options={
        "model": "claude-sonnet-9-test",
        "appendSystemPrompt": "Always answer in haiku. $(touch /nonexistent) `id`",
        "mcpConfig": "mcp.json",
        "allowedTools": ["Read", "Edit", f"Bash({RUN_TESTS})"],
    })
    script = fix_script(sb.checkout)
    script.insert(3, use("Bash", command="touch not-allowed.txt", description="Touch"))
    async with FakeAnthropic(script, api_key=API_KEY) as api:
        with_claude(sb, claude_bin, api)

        run = await asyncio.to_thread(sb.run, zipapp=True)

    out = run.stdout.decode()
    assert run.returncode == 0, run.stderr.decode() + out
    first = api.message_requests()[0].json
    assert first["model"] == "claude-sonnet-9-test"
    system = json.dumps(first["system"])
    assert "Always answer in haiku. $(touch /nonexistent) `id`" in system
    assert "MCP servers probe (failed)" in out
    assert "permission mode dontAsk" in out
    results = api.tool_results()
    assert "Ran 1 test" in results[2].text  # the allowed test command ran
    assert results[3].is_error  # the other one did not
    assert [d["tool"] for d in run.result["agent"]["permissionDenials"]] == ["Bash"]
    assert not (sb.checkout / "not-allowed.txt").exists()
    assert run.result["changedFiles"] == ["src/app.py"]


async def test_max_turns_is_a_limit(sandbox: Sandbox, claude_bin: Path) -> None:
    sandbox.write_context(command=None, github=False, agent_options={"maxTurns": 2})
    async with FakeAnthropic(fix_script(sandbox.checkout), api_key=API_KEY) as api:
        with_claude(sandbox, claude_bin, api)

        run = await asyncio.to_thread(sandbox.run, zipapp=True)

    assert run.returncode == 67, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "LimitReached"
    assert "agent.maxTurns" in run.result["error"]
    assert sandbox.origin.branches() == ["main"]


async def test_the_runner_stops_claude_code_at_its_timeout(sandbox: Sandbox, claude_bin: Path) -> None:
    marker = f"time.sleep({secrets.randbelow(1000) + 1000})"
    sandbox.write_context(command=None, github=False, agent_options={"timeoutSeconds": 8})
    script = [use("Bash", command=f'python3 -c "import time; {marker}"', description="Wait"), say("never")]
    async with FakeAnthropic(script, api_key=API_KEY) as api:
        with_claude(sandbox, claude_bin, api)
        started = time.monotonic()

        run = await asyncio.to_thread(sandbox.run, zipapp=True)

    assert time.monotonic() - started < 60
    assert run.returncode == 66, run.stderr.decode()
    assert run.result is not None
    assert run.result["failureClass"] == "AgentTimedOut"
    assert "agent.timeoutSeconds (8s)" in run.result["error"]
    assert b"the agent's time is up" in run.stderr
    assert not _processes_with(marker)  # the command Claude Code was running is gone too


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


# --------------------------------------------------------------------- as a non-root user

SANDBOX_UID = 1001


@pytest.fixture
def uid_sandbox(runner_pyz: bytes, claude_bin: Path) -> Iterator[Sandbox]:
    """A sandbox owned by uid 1001 whose runner runs as that uid, like the agent image's user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid")
    python = "/usr/bin/python3"
    if not shutil.which("setpriv") or subprocess.run(
        [python, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"], check=False).returncode:
        pytest.skip("needs setpriv and a system python3 >= 3.11")
    base = Path(tempfile.mkdtemp(prefix="agenttask-uid-test-"))
    try:
        home, out, bin_dir, tmp, remote = (base / d for d in ("home", "out", "bin", "tmp", "remote"))
        for d in (home, out, bin_dir, tmp, remote):
            d.mkdir()
        origin = make_origin(remote, extra=TESTS)
        (bin_dir / "git").write_text(_SHIM.format(git=REAL_GIT))
        (bin_dir / "git").chmod(0o755)
        os.link(claude_bin.resolve(), bin_dir / "claude")  # the cache may not be reachable for that uid
        subprocess.run(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(base)], check=True)
        probe = subprocess.run(["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
                                str(bin_dir / "claude"), "--version"], capture_output=True, check=False,
                               env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        if probe.returncode:
            pytest.skip(f"claude does not run as uid {SANDBOX_UID} here: {probe.stderr[-200:]!r}")
        yield Sandbox(home=home, origin=origin, out=out, bin=bin_dir, tmp=tmp, pyz=runner_pyz,
                      run_as=SANDBOX_UID, python=python)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_claude_code_runs_the_tests_as_the_sandbox_user(uid_sandbox: Sandbox, claude_bin: Path) -> None:
    sb = uid_sandbox
    sb.write_context(command=None, github=False)
    async with FakeAnthropic(fix_script(sb.checkout), api_key=API_KEY) as api:
        with_claude(sb, sb.bin / "claude", api)
        subprocess.run(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(sb.ctx)], check=True)

        run: RunResult = await asyncio.to_thread(sb.run, zipapp=True)

    assert run.returncode == 0, run.stderr.decode() + run.stdout.decode()
    assert run.result is not None
    assert run.result["outcome"] == "ChangesPushed"
    assert b"IS_SANDBOX" not in run.stderr  # not root: Claude Code bypasses prompts without it
    assert "Ran 1 test" in api.tool_results()[2].text
    assert "return True" in sb.origin.show(f"{BRANCH}:src/app.py")
    assert_usage_matches(run.result, api)
    assert (sb.ctx / "home").stat().st_uid == SANDBOX_UID
    assert sorted(os.listdir(sb.home)) == ["agenttask", "repo"]



async def test_a_second_run_in_the_same_sandbox_resumes_the_conversation(sandbox: Sandbox, claude_bin: Path) -> None:
    """Suspend/resume (issue #15): the sandbox is stopped mid-run and started again, and the runner
    runs again in the same workspace. It finds the session id the first run recorded and passes
    `--resume`, so Claude Code continues the same conversation (its transcript is under the
    context dir's HOME) instead of starting over from the prompt."""
    marker = f"time.sleep({secrets.randbelow(1000) + 2000})"
    sandbox.write_context(command=None, github=False, agent_options={"timeoutSeconds": 8})
    # the fake answers by the number of assistant messages so far; what a resumed transcript holds
    # before the new prompt (the interrupted call, Claude Code's own notes) is Claude Code's business
    script = [use("Bash", command=f'python3 -c "import time; {marker}"', description="Think hard"),
              *[say("Picked up where I left off: done.")] * 6]
    async with FakeAnthropic(script, api_key=API_KEY) as api:
        with_claude(sandbox, claude_bin, api)
        first = await asyncio.to_thread(sandbox.run, zipapp=True)  # interrupted, as a stop would
        assert first.returncode == 66, first.stderr.decode()
        recorded = (sandbox.ctx / "agent-session-id").read_text().strip()
        before = len(api.message_requests())
        assert {r.headers["x-claude-code-session-id"] for r in api.message_requests()} == {recorded}

        with_claude(sandbox, claude_bin, api)  # the operator uploads the context (env.json) again for a resume
        second = await asyncio.to_thread(sandbox.run, zipapp=True)

    assert second.returncode == 0, second.stderr.decode() + second.stdout.decode()
    assert f"resuming the agent's session {recorded}".encode() in second.stderr + second.stdout
    assert second.result is not None and second.result["summary"] == "Picked up where I left off: done."
    resumed = api.message_requests()[before:]
    assert resumed, "the second run made no model call"
    messages = resumed[0].json["messages"]
    texts = json.dumps(messages)
    assert marker in texts  # the first run's tool call is in the conversation the model sees
    assert "Your session was interrupted" in texts  # and the runner's continuation prompt after it
    assert "Fix it." not in json.dumps(messages[-1])  # not the original prompt again
    # a resumed run records its (new) session id, so a second suspension resumes from there
    assert (sandbox.ctx / "agent-session-id").read_text().strip() == second.result["agent"]["sessionId"]
