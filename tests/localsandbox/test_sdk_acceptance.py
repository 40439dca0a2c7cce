"""The whole operator journey through the REAL daytona SDK against the embedded server.

create (name, labels, env) -> get by name -> list by labels over several pages -> upload ->
git clone of a local repository -> a session command that runs for more than 60 s, printing
as it goes, followed to the end over the websocket (replay first, then live) -> exit code ->
download a file the command wrote -> delete -> get raises DaytonaNotFoundError.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    DaytonaNotFoundError,
    FileUpload,
    ListSandboxesQuery,
    SandboxState,
    SessionExecuteRequest,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import eventually

TICKS = 62  # seconds; the command must outlive a minute


def make_repo(path: Path) -> str:
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(path)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("hello from the repo\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


async def test_operator_journey(server: LocalSandboxServer, daytona: AsyncDaytona, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    labels = {"suite": "acceptance", "run": run}
    name = f"acceptance-{run}"

    # create with name, labels and env: like Daytona's, the create request returns once the sandbox
    # has started but answers it as inserted (`creating`), so the SDK refreshes it once
    gets_before = server.stats()["calls"].get("get", 0)
    sandbox = await daytona.create(
        CreateSandboxFromSnapshotParams(name=name, labels=labels, env_vars={"GREETING": "hello"}, auto_stop_interval=0)
    )
    assert sandbox.state == SandboxState.STARTED
    assert server.stats()["calls"].get("get", 0) == gets_before + 1
    assert server.stats()["creates_by_name"][name] == 1

    # get by name
    fetched = await daytona.get(name)
    assert fetched.id == sandbox.id
    assert fetched.env == {"GREETING": "hello"}
    assert fetched.labels["run"] == run

    # list by labels across pages
    others = await asyncio.gather(
        *(daytona.create(CreateSandboxFromSnapshotParams(name=f"{name}-{i}", labels=labels)) for i in range(4))
    )
    list_calls = server.stats()["calls"].get("list", 0)
    listed = [s async for s in daytona.list(ListSandboxesQuery(labels=labels, limit=2))]
    assert sorted(s.id for s in listed) == sorted([sandbox.id, *(o.id for o in others)])
    assert server.stats()["calls"]["list"] - list_calls == 3  # 2 + 2 + 1
    await asyncio.gather(*(o.delete() for o in others))

    # upload: bytes and a local file, to absolute and home-relative paths
    local = tmp_path / "input.txt"
    local.write_text("uploaded input\n")
    await sandbox.fs.upload_files([
        FileUpload(source=str(local), destination="/home/daytona/input.txt"),
        FileUpload(source=b"\x00binary\xff", destination="/workspace/data/blob.bin"),
    ])
    assert await sandbox.fs.download_file("/workspace/data/blob.bin") == b"\x00binary\xff"

    # git clone of a local repository (plain path) at a pinned commit
    repo = tmp_path / "repo"
    repo.mkdir()
    head = make_repo(repo)
    await sandbox.git.clone(str(repo), "/workspace/repo", commit_id=head)
    assert await sandbox.fs.download_file("/workspace/repo/README.md") == b"hello from the repo\n"

    # a session command that runs > 60 s, printing as it goes
    await sandbox.process.create_session("agent")
    script = (
        "cat input.txt; echo \"greeting=$GREETING\"; "
        f"for i in $(seq 1 {TICKS}); do echo \"tick $i\"; "
        "if [ $((i % 20)) -eq 0 ]; then echo \"warn $i\" >&2; fi; sleep 1; done; "
        "echo \"all $i ticks\" > result.txt; (exit 7)"  # a plain `exit` would end the session shell itself
    )
    started = time.monotonic()
    cmd = await sandbox.process.execute_session_command("agent", SessionExecuteRequest(command=script, run_async=True))
    assert (await sandbox.process.get_session_command("agent", cmd.cmd_id)).exit_code is None

    async def printed_tick_2() -> bool:
        logs = await sandbox.process.get_session_command_logs("agent", cmd.cmd_id)
        return "tick 2\n" in logs.stdout

    await eventually(printed_tick_2, timeout=15, interval=0.2)  # start following mid-way: replay + live
    stdout: list[str] = []
    stderr: list[str] = []
    await sandbox.process.get_session_command_logs_async("agent", cmd.cmd_id, stdout.append, stderr.append)
    elapsed = time.monotonic() - started
    out, err = "".join(stdout), "".join(stderr)
    assert elapsed > 60, elapsed
    assert out.startswith("uploaded input\ngreeting=hello\ntick 1\n"), out[:200]  # replayed
    assert f"tick {TICKS}\n" in out  # streamed live
    assert [line for line in out.splitlines() if line.startswith("tick")] == [f"tick {i}" for i in range(1, TICKS + 1)]
    assert err == "warn 20\nwarn 40\nwarn 60\n"

    # exit code, then the file the command wrote
    finished = await sandbox.process.get_session_command("agent", cmd.cmd_id)
    assert finished.exit_code == 7
    assert await sandbox.fs.download_file("/home/daytona/result.txt") == f"all {TICKS} ticks\n".encode()

    # delete, then the sandbox is gone for the SDK
    await sandbox.delete()
    with pytest.raises(DaytonaNotFoundError):
        await daytona.get(name)
