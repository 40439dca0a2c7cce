"""Container mode: a sandbox of a snapshot backed by the agent image runs in a container of it.

The embedded server (``isolation="container"``, podman's store of the project, bubblewrap) gets a
snapshot whose image is the agent image `agenttask images build agent` made from
images/agent/Dockerfile.slim. Driven by the real daytona SDK as the operator drives it, Claude
Code and the runner come from the image: nothing of the host's (no PATH into the tool cache, the
runner baked into the image at /usr/local/lib/agenttask/runner.pyz), as the image's non-root
user. The repository is served over smart HTTP on loopback (the sandbox's /tmp is its own, so a
host path would not do), the model is the fake Messages API. Once the sandbox is deleted and the
server stopped, no container of it and no mount of its root filesystem is left.

Needs root, podman and bubblewrap (./hack/node-deps.sh installs them); the image build is cached.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaConfig,
    SessionExecuteRequest,
)

from controller.images.build import ensure_image
from controller.images.podman import Podman
from controller.localsandbox import LocalSandboxServer
from controller.localsandbox.containers import LABEL
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.githttp import GitHttpServer
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

SERVER_KEY = "container-test-key-0123456789"
CTX = "agenttask"


@pytest.fixture(scope="module")
def agent_image() -> str:
    if os.geteuid() != 0:
        pytest.fail("container mode needs root (podman mounts the containers' filesystems)")
    missing = [tool for tool in ("podman", "bwrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"container mode needs {', '.join(missing)}: run ./hack/node-deps.sh")
    image = ensure_image("agent", log=print)
    print(f"\nagent image {image.ref}: {image.size / 1e6:.0f} MB ({'built' if image.built else 'cached'})")
    return image.ref


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    (tmp_path / "remote").mkdir()
    return make_origin(tmp_path / "remote", extra=TESTS)


@pytest.fixture
async def server(tmp_path: Path, agent_image: str) -> AsyncIterator[LocalSandboxServer]:
    podman = Podman.default()
    podman.prepare()
    srv = LocalSandboxServer(api_key=SERVER_KEY, root=tmp_path / "sandboxes", isolation="container",
                             podman_env=podman.env())  # fmt: skip
    async with srv:
        yield srv
    assert _containers_of(str(tmp_path / "sandboxes")) == [], "a container outlived the server"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        assert "localsandbox-" not in mounts.read()


def _containers_of(root: str) -> list[str]:
    podman = Podman.default()
    out = podman.run("ps", "--all", "--filter", f"label={LABEL}={os.path.realpath(root)}", "--format", "{{.Names}}")
    return out.split()


async def test_a_sandbox_of_the_agent_image_runs_claude_code_and_the_runner_from_the_image(
    server: LocalSandboxServer, agent_image: str, origin: Origin, tmp_path: Path,
) -> None:
    async with (
        AsyncDaytona(DaytonaConfig(api_url=server.api_url, api_key=SERVER_KEY)) as daytona,
        FakeGitHub(token=TOKEN) as github,
        GitHttpServer(origin.bare.parent, username="x-access-token", password=TOKEN) as git_http,
    ):
        github.add_repo(OWNER, REPO, git_dir=origin.bare)
        await daytona.snapshot.create(CreateSnapshotParams(name="agenttask-agent", image=agent_image))
        sandbox = await daytona.create(CreateSandboxFromSnapshotParams(snapshot="agenttask-agent",
                                                                       name=f"at-{uuid.uuid4()}"))  # fmt: skip
        try:
            assert _containers_of(server.root) == [f"localsandbox-{sandbox.id}"]
            probe = await sandbox.process.exec(
                'id -u; id -g; command -v claude python3 git; . /etc/os-release; echo "$VERSION_CODENAME"; '
                'echo "$HOME"; pwd; echo "$AGENTTASK_RUNNER"; test -e /root/.cache && echo host-cache || true'
            )
            assert probe.exit_code == 0, probe.result
            assert probe.result.split() == [
                "1001", "1001", "/usr/local/bin/claude", "/usr/bin/python3", "/usr/bin/git", "bookworm",
                "/home/daytona", "/home/daytona", "/usr/local/lib/agenttask/runner.pyz",
            ]  # fmt: skip

            checkout = Path("/home/daytona/workspace/repo")
            async with FakeAnthropic(fix_script(checkout), api_key=API_KEY) as api:
                env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api.url,
                       "AGENTTASK_GITHUB_API_URL": github.url}  # fmt: skip
                await sandbox.fs.upload_files(operator_context(git_http.repo_url(origin.bare.name), env, ctx=CTX))
                await sandbox.process.create_session("agent-1")
                command = await sandbox.process.execute_session_command(
                    "agent-1", SessionExecuteRequest(command='python3 "$AGENTTASK_RUNNER"', run_async=True)
                )
                stdout: list[str] = []
                stderr: list[str] = []
                await sandbox.process.get_session_command_logs_async("agent-1", command.cmd_id, stdout.append,
                                                                     stderr.append)  # fmt: skip
                finished = await sandbox.process.get_session_command("agent-1", command.cmd_id)
                result = json.loads(await sandbox.fs.download_file(f"{CTX}/result.json"))

            out, err = "".join(stdout), "".join(stderr)
            assert finished.exit_code == 0, err + out
            assert result["outcome"] == "PullRequestOpened", result
            assert result["summary"] == FIXED
            assert "Ran 1 test" in out  # the agent ran the repository's tests with the image's python3
            assert "return True" in origin.show(f"{BRANCH}:src/app.py")
            assert_usage_matches(result, api)
            [pull] = github.pulls(OWNER, REPO)
            assert pull["head"]["ref"] == BRANCH
            assert API_KEY not in out + err + json.dumps(result)
            assert TOKEN not in out + err + json.dumps(result)
            # the files the agent wrote belong to the image's user inside, to the server's user outside
            owner = await sandbox.process.exec(f"stat -c %u {checkout}/src/app.py")
            assert owner.result.strip() == "1001"
        finally:
            await sandbox.delete()
        await _wait_gone(server.root)


async def test_a_snapshot_whose_image_is_not_local_fails_the_create_with_the_reason(
    server: LocalSandboxServer,
) -> None:
    async with AsyncDaytona(DaytonaConfig(api_url=server.api_url, api_key=SERVER_KEY)) as daytona:
        await daytona.snapshot.create(CreateSnapshotParams(name="nowhere", image="localhost/not-built-here:1"))
        with pytest.raises(Exception, match="localhost/not-built-here:1 is not in the local podman store"):
            await daytona.create(CreateSandboxFromSnapshotParams(snapshot="nowhere"))
        # the default snapshot has no image: it runs as host processes, as in plain mode
        sandbox = await daytona.create()
        try:
            assert (await sandbox.process.exec("echo ok")).result.strip() == "ok"
        finally:
            await sandbox.delete()
    assert _containers_of(server.root) == []


async def _wait_gone(root: str) -> None:
    deadline = time.monotonic() + 60
    while _containers_of(root):
        assert time.monotonic() < deadline, "the deleted sandbox's container is still there"
        await asyncio.sleep(0.2)



async def test_bwrap_mode_sessions_run_in_the_sandboxs_own_paths(tmp_path: Path) -> None:
    """In the namespaced modes the session shell sees in-sandbox paths only: its commands' scripts
    and FIFOs reach it through the server's directory bound at /.localsandbox (they were host
    paths it could not see, so every session command failed with no output)."""
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap mode needs bubblewrap: run ./hack/node-deps.sh")
    srv = LocalSandboxServer(api_key=SERVER_KEY, root=tmp_path / "sandboxes", isolation="bwrap")
    async with srv, AsyncDaytona(DaytonaConfig(api_url=srv.api_url, api_key=SERVER_KEY)) as daytona:
        sandbox = await daytona.create()
        try:
            await sandbox.process.create_session("s")
            first = await sandbox.process.execute_session_command(
                "s", SessionExecuteRequest(command="echo hi > /tmp/x && cd /tmp && export A=carried && pwd"))
            second = await sandbox.process.execute_session_command("s", SessionExecuteRequest(command='echo "$A"; pwd'))
            assert (first.exit_code, first.output) == (0, "/tmp\n")
            assert (second.exit_code, second.output) == (0, "carried\n/tmp\n")
            assert await sandbox.fs.download_file("/tmp/x") == b"hi\n"  # the sandbox's /tmp, not the host's
            assert not Path("/tmp/x").exists() or Path("/tmp/x").read_bytes() != b"hi\n"
        finally:
            await sandbox.delete()
