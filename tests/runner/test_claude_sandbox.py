"""Claude Code through the runner inside the embedded server's sandbox, driven by the real daytona SDK.

The steps are the operator's: create a sandbox, upload the context (task.json, prompt, env.json,
the token file, runner.pyz) relative to the sandbox user's home, start `python3
agenttask/runner.pyz` (the operator's command: no `exec`, which would replace the session shell
and lose the exit code) as an asynchronous session command, follow its logs over the websocket
until it ends, read its exit code, download result.json. The model is the fake Messages API, the
repository a local bare origin, the pull request goes to the fake GitHub.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig, SessionExecuteRequest

from controller.localsandbox import LocalSandboxServer
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.github import FakeGitHub
from tests.runner.claude_support import (
    API_KEY,
    BRANCH,
    FIXED,
    TESTS,
    assert_usage_matches,
    fix_script,
    operator_context,
)
from tests.runner.conftest import OWNER, REPO, TOKEN, Origin, make_origin

CTX = "agenttask"
SERVER_KEY = "sandbox-test-key-0123456789"


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    (tmp_path / "remote").mkdir()
    return make_origin(tmp_path / "remote", extra=TESTS)


@pytest.fixture
async def daytona(tmp_path: Path) -> AsyncIterator[AsyncDaytona]:
    # plain: the sandbox sees host paths, so the cached Claude Code and Python are usable as they are
    server = LocalSandboxServer(api_key=SERVER_KEY, root=tmp_path / "sandboxes", isolation="plain")
    async with server, AsyncDaytona(DaytonaConfig(api_url=server.api_url, api_key=SERVER_KEY)) as client:
        yield client


async def test_claude_code_runs_in_the_sandbox_as_the_operator_drives_it(
    daytona: AsyncDaytona, origin: Origin, github: FakeGitHub, runner_pyz: bytes, claude_bin: Path,
) -> None:
    sandbox = await daytona.create(CreateSandboxFromSnapshotParams(name=f"at-{uuid.uuid4()}",
                                                                   labels={"test": "claude"}))
    try:
        home = (await sandbox.process.exec("pwd")).result.strip()  # the working directory, as the agent sees it
        checkout = Path(home) / "workspace" / "repo"
        async with FakeAnthropic(fix_script(checkout), api_key=API_KEY) as api:
            env = {
                "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api.url, "AGENTTASK_GITHUB_API_URL": github.url,
                "PATH": f"{claude_bin.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            }
            await sandbox.fs.upload_files(operator_context(origin.url, env, ctx=CTX, runner=runner_pyz))
            await sandbox.process.create_session("agent-1")
            command = await sandbox.process.execute_session_command(
                "agent-1", SessionExecuteRequest(command=f"python3 {CTX}/runner.pyz", run_async=True))
            stdout: list[str] = []
            stderr: list[str] = []
            await sandbox.process.get_session_command_logs_async("agent-1", command.cmd_id, stdout.append,
                                                                 stderr.append)
            finished = await sandbox.process.get_session_command("agent-1", command.cmd_id)
            result = json.loads(await sandbox.fs.download_file(f"{CTX}/result.json"))

        out, err = "".join(stdout), "".join(stderr)
        assert finished.exit_code == 0, err + out
        assert result["outcome"] == "PullRequestOpened"
        assert result["failureClass"] is None
        assert result["summary"] == FIXED
        assert "agent: ← Bash: " in out and "Ran 1 test" in out  # the tests ran, and the log shows it
        assert "agenttask-runner: done: PullRequestOpened (exit 0)" in err
        assert "return True" in origin.show(f"{BRANCH}:src/app.py")
        assert_usage_matches(result, api)
        assert result["agent"]["numTurns"] == 4
        [pull] = github.pulls(OWNER, REPO)
        assert pull["head"]["ref"] == BRANCH
        assert API_KEY not in out + err + json.dumps(result)
        assert TOKEN not in out + err + json.dumps(result)
    finally:
        await sandbox.delete()
