"""Toolbox API through the SDK: exec, sessions, files (and path confinement), git clone."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    DaytonaError,
    DaytonaGitAuthFailedError,
    DaytonaGitRepoNotFoundError,
    DaytonaProcessExecutionTimeoutError,
    FileUpload,
    SessionExecuteRequest,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import eventually, sandbox_path
from .test_sdk_acceptance import make_repo


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(daytona: AsyncDaytona) -> AsyncIterator[AsyncSandbox]:
    sb = await daytona.create(
        CreateSandboxFromSnapshotParams(name=f"tb-{uuid.uuid4().hex[:8]}", env_vars={"FROM_SANDBOX": "yes"})
    )
    yield sb
    await sb.delete()


async def test_exec_env_cwd_and_timeout(server: LocalSandboxServer, sandbox: AsyncSandbox) -> None:
    home = sandbox_path(server, sandbox.id, "home", "daytona")
    res = await sandbox.process.exec('echo "$FROM_SANDBOX $EXTRA"; pwd; echo oops >&2; exit 4', env={"EXTRA": "x"})
    assert res.exit_code == 4
    assert res.result == f"yes x\n{home}\noops\n"
    res = await sandbox.process.exec('echo "$HOME"; env | grep -c DAYTONA_API_KEY || true')
    assert res.result == f"{home}\n0\n"  # the server's environment does not leak in
    await sandbox.fs.create_folder("/workspace/sub", "755")
    res = await sandbox.process.exec("pwd", cwd="/workspace/sub")
    assert res.result == sandbox_path(server, sandbox.id, "workspace", "sub") + "\n"
    started = time.monotonic()
    with pytest.raises(DaytonaProcessExecutionTimeoutError):
        await sandbox.process.exec("sleep 30", timeout=1)
    assert time.monotonic() - started < 5
    with pytest.raises(DaytonaError):
        await sandbox.process.exec("true", cwd="/does/not/exist")


async def test_sessions_sync_async_and_delete(server: LocalSandboxServer, sandbox: AsyncSandbox) -> None:
    await sandbox.process.create_session("one")
    with pytest.raises(DaytonaError):
        await sandbox.process.create_session("one")
    sync = await sandbox.process.execute_session_command(
        "one", SessionExecuteRequest(command="echo out; echo err >&2; (exit 3)", run_async=False)
    )
    assert (sync.exit_code, sync.stdout, sync.stderr) == (3, "out\n", "err\n")
    long = await sandbox.process.execute_session_command("one", SessionExecuteRequest(command="sleep 100",
                                                                                       run_async=True))
    session = await sandbox.process.get_session("one")
    assert [c.exit_code for c in session.commands] == [3, None]
    assert [s.session_id for s in await sandbox.process.list_sessions()] == ["one"]

    follows = server.stats()["calls"].get("command_logs_follow", 0)
    follower = asyncio.create_task(sandbox.process.get_session_command_logs_async("one", long.cmd_id, print, print))

    async def following() -> bool:
        return server.stats()["calls"].get("command_logs_follow", 0) > follows

    await eventually(following)
    await sandbox.process.delete_session("one")  # kills the running command: the follower ends
    await asyncio.wait_for(follower, 5)
    with pytest.raises(DaytonaError):
        await sandbox.process.get_session("one")


async def test_files_roundtrip_list_delete_and_confinement(server: LocalSandboxServer, sandbox: AsyncSandbox) -> None:
    big = os.urandom(3 * 1024 * 1024 + 7)
    weird = '/workspace/we"ird \\name é.txt'
    await sandbox.fs.upload_files([
        FileUpload(source=big, destination="/workspace/big.bin"),
        FileUpload(source=b"w", destination=weird),
        FileUpload(source=b"r", destination="relative/r.txt"),
    ])
    assert await sandbox.fs.download_file("/workspace/big.bin") == big
    assert await sandbox.fs.download_file(weird) == b"w"
    assert await sandbox.fs.download_file("/home/daytona/relative/r.txt") == b"r"
    assert os.path.getsize(sandbox_path(server, sandbox.id, "workspace", "big.bin")) == len(big)

    info = await sandbox.fs.get_file_info("/workspace/big.bin")
    host_mode = os.stat(sandbox_path(server, sandbox.id, "workspace", "big.bin")).st_mode & 0o777
    assert (info.size, info.is_dir, info.permissions) == (len(big), False, f"{host_mode:04o}")
    assert await sandbox.get_user_home_dir() == "/home/daytona"
    assert await sandbox.get_work_dir() == "/home/daytona"
    names = {f.name: f for f in await sandbox.fs.list_files("/workspace")}
    assert names["big.bin"].size == len(big)
    assert not names["big.bin"].is_dir
    with pytest.raises(DaytonaError):
        await sandbox.fs.delete_file("/home/daytona/relative")  # a directory needs recursive
    await sandbox.fs.delete_file("/home/daytona/relative", recursive=True)
    with pytest.raises(DaytonaError, match="not found"):
        await sandbox.fs.download_file("/home/daytona/relative/r.txt")

    outside = Path(server.root).parent / f"escape-{uuid.uuid4().hex}.txt"
    for bad in ("/../../" + outside.name, "../../../../" + outside.name):
        with pytest.raises(DaytonaError):
            await sandbox.fs.upload_file(b"x", bad)
        with pytest.raises(DaytonaError):
            await sandbox.fs.download_file(bad)
    assert not outside.exists()
    # a symlink planted inside the sandbox does not lead the file APIs out
    await sandbox.process.exec(f"ln -s {Path(server.root).parent} escape-link")
    with pytest.raises(DaytonaError, match="outside"):
        await sandbox.fs.upload_file(b"x", "escape-link/" + outside.name)
    assert not outside.exists()


async def test_git_clone_sources(sandbox: AsyncSandbox, tmp_path: Path) -> None:
    repo = tmp_path / "origin"
    repo.mkdir()
    make_repo(repo)
    subprocess.run(["git", "-C", str(repo), "branch", "feature"], check=True)
    await sandbox.git.clone(f"file://{repo}", "/workspace/by-url", branch="feature")
    res = await sandbox.process.exec("git -C ../../workspace/by-url rev-parse --abbrev-ref HEAD")
    assert res.result == "feature\n"
    for bad in ("ssh://example.com/x.git", "git@example.com:x/y.git", "ext::sh -c touch% /tmp/pwned",
                "-u", "git://example.com/x", "relative/path"):
        with pytest.raises(DaytonaBadRequestError):
            await sandbox.git.clone(bad, f"/workspace/bad-{uuid.uuid4().hex[:6]}")
    with pytest.raises(DaytonaGitRepoNotFoundError):
        await sandbox.git.clone(str(tmp_path / "missing"), "/workspace/missing")
    with pytest.raises(DaytonaError):
        await sandbox.git.clone(str(repo), "/workspace/by-url")  # destination not empty


class DumbGitHttp:
    """Serves a bare repository over git's "dumb" HTTP protocol behind Basic auth."""

    def __init__(self, bare: Path, user: str, password: str) -> None:
        self.bare, self.token = bare, base64.b64encode(f"{user}:{password}".encode()).decode()
        self.authorization: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        self.authorization.append(header)
        if header != f"Basic {self.token}":
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        path = (self.bare / request.match_info["path"]).resolve()
        if not path.is_file() or self.bare.resolve() not in path.parents:
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="text/plain")


async def test_git_clone_with_credentials_uses_askpass(sandbox: AsyncSandbox, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    make_repo(work)
    bare = tmp_path / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    git_http = DumbGitHttp(bare, "alice", "s3cret-pass")
    app = web.Application()
    app.router.add_get("/repo.git/{path:.*}", git_http.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/repo.git"
    try:
        await sandbox.git.clone(url, "/workspace/private", username="alice", password="s3cret-pass")
        readme = await sandbox.fs.download_file("/workspace/private/README.md")
        assert readme == b"hello from the repo\n"
        config = (await sandbox.fs.download_file("/workspace/private/.git/config")).decode()
        assert "s3cret" not in config
        assert f"Basic {git_http.token}" in git_http.authorization
        with pytest.raises(DaytonaGitAuthFailedError):
            await sandbox.git.clone(url, "/workspace/private2", username="alice", password="wrong")
        with pytest.raises(DaytonaGitAuthFailedError):
            await sandbox.git.clone(url, "/workspace/private3")  # no credentials: no prompt, a clean error
    finally:
        await runner.cleanup()


async def test_follow_replays_finished_command(sandbox: AsyncSandbox) -> None:
    await sandbox.process.create_session("done")
    cmd = await sandbox.process.execute_session_command(
        "done", SessionExecuteRequest(command="printf 'a\\nb\\n'; printf 'e' >&2", run_async=True)
    )

    async def finished() -> bool:
        return (await sandbox.process.get_session_command("done", cmd.cmd_id)).exit_code == 0

    await eventually(finished)
    out: list[str] = []
    err: list[str] = []
    await sandbox.process.get_session_command_logs_async("done", cmd.cmd_id, out.append, err.append)
    assert ("".join(out), "".join(err)) == ("a\nb\n", "e")
