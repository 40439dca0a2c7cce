"""The toolbox as Daytona's daemon serves it, through the real Python SDK: long-lived session shells
(exports and cd carry over, stdin input, exec replaces the shell), code-run, the stateful code
interpreter, file search/find/replace/move/permissions, git beyond clone, PTYs over websockets,
volumes, linked sandboxes and network enforcement."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CodeRunParams,
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaTimeoutError,
    FileUpload,
    PtySize,
    SessionExecuteRequest,
    VolumeMount,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import eventually

CONNECT = ('python3 -c "import socket,sys; s=socket.socket(); s.settimeout(3); '
           's.connect((sys.argv[1], int(sys.argv[2])))"')


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(daytona: AsyncDaytona) -> AsyncIterator[AsyncSandbox]:
    sb = await daytona.create(CreateSandboxFromSnapshotParams(name=f"parity-{uuid.uuid4().hex[:8]}"))
    yield sb
    await sb.delete()


async def exit_code_of(sandbox: AsyncSandbox, session: str, command_id: str) -> int:
    async def done() -> int | None:
        code = (await sandbox.process.get_session_command(session, command_id)).exit_code
        return None if code is None else code + 1000  # truthy even for 0

    return await eventually(done, timeout=15) - 1000


async def test_a_session_is_one_shell_exports_and_cd_carry_over(sandbox: AsyncSandbox) -> None:
    process = sandbox.process
    await process.create_session("shell")
    first = await process.execute_session_command("shell", SessionExecuteRequest(command="export FOO=BAR; cd ~/.."))
    assert first.exit_code == 0
    second = await process.execute_session_command("shell", SessionExecuteRequest(command="echo $FOO; basename $PWD"))
    assert (second.exit_code, second.stdout) == (0, "BAR\nhome\n")
    failed = await process.execute_session_command("shell", SessionExecuteRequest(command="echo oops >&2; false"))
    assert (failed.exit_code, failed.stderr) == (1, "oops\n")

    asked = await process.execute_session_command("shell", SessionExecuteRequest(
        command='printf "name? "; read name; echo "hello $name"', run_async=True))  # fmt: skip

    async def prompted() -> bool:
        return (await process.get_session_command_logs("shell", asked.cmd_id)).stdout == "name? "

    await eventually(prompted)
    await process.send_session_command_input("shell", asked.cmd_id, "Alice")
    assert await exit_code_of(sandbox, "shell", asked.cmd_id) == 0
    logs = await process.get_session_command_logs("shell", asked.cmd_id)
    assert logs.stdout == "name? Alice\nhello Alice\n"  # the input is echoed into the log, as the daemon does
    with pytest.raises(DaytonaError, match="already completed"):
        await process.send_session_command_input("shell", asked.cmd_id, "again")
    await process.delete_session("shell")


async def test_exec_in_a_session_replaces_the_shell_and_loses_the_exit_code(sandbox: AsyncSandbox) -> None:
    """Daytona sources session commands in the session shell: ``exec`` replaces that shell, so the
    wrapper that would record the exit code never runs. Output is kept; the exit code stays null."""
    await sandbox.process.create_session("replaced")
    cmd = await sandbox.process.execute_session_command("replaced", SessionExecuteRequest(
        command="exec python3 -c 'print(\"from python\"); raise SystemExit(3)'", run_async=True))  # fmt: skip

    async def printed() -> bool:
        return (await sandbox.process.get_session_command_logs("replaced", cmd.cmd_id)).stdout == "from python\n"

    await eventually(printed)

    async def shell_gone() -> bool:  # once python has exited, nothing reads the session's commands
        try:
            request = SessionExecuteRequest(command="true", run_async=True)
            await sandbox.process.execute_session_command("replaced", request)
        except DaytonaBadRequestError as exc:
            return "session shell has exited" in str(exc)
        return False

    await eventually(shell_gone, timeout=15, interval=0.1)
    assert (await sandbox.process.get_session_command("replaced", cmd.cmd_id)).exit_code is None
    await sandbox.process.delete_session("replaced")


async def test_code_run_and_the_stateful_interpreter(sandbox: AsyncSandbox) -> None:
    ran = await sandbox.process.code_run("import sys, os; print(sys.argv[1:], os.environ['X'])",
                                         params=CodeRunParams(argv=["a", "$HOME"], env={"X": "y"}))  # fmt: skip
    assert (ran.exit_code, ran.result) == (0, "['a', '$HOME'] y\n")  # argv is not shell-expanded
    assert (await sandbox.process.code_run("raise SystemExit(4)")).exit_code == 4

    interpreter = sandbox.code_interpreter
    await interpreter.run_code("counter = 41")
    out: list[str] = []
    result = await interpreter.run_code("counter += 1\nprint(counter)\nimport sys; print('warn', file=sys.stderr)",
                                        on_stdout=lambda m: out.append(m.output))  # fmt: skip
    assert (result.stdout, result.stderr, result.error) == ("42\n", "warn\n", None)
    assert "".join(out) == "42\n"
    failed = await interpreter.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    context = await interpreter.create_context()
    assert (await interpreter.run_code("print('counter' in dir())", context=context)).stdout == "False\n"
    assert [c.id for c in await interpreter.list_contexts()] == [context.id]
    with pytest.raises(DaytonaTimeoutError):
        await interpreter.run_code("import time; time.sleep(30)", context=context, timeout=1)
    await interpreter.delete_context(context)
    assert await interpreter.list_contexts() == []


async def test_file_search_find_replace_move_permissions(sandbox: AsyncSandbox) -> None:
    fs = sandbox.fs
    await fs.upload_files([FileUpload(source=b'{"debug": true}\n', destination="ops/conf.json"),
                           FileUpload(source=b"one hello\ntwo\nhello three\n", destination="ops/notes.txt"),
                           FileUpload(source=b"\0binary hello", destination="ops/blob.bin")])  # fmt: skip
    assert (await fs.search_files("ops", "*.json")).files == ["/home/daytona/ops/conf.json"]
    found = await fs.find_files("ops", "hello")
    assert [(m.file, m.line, m.content) for m in found] == [("/home/daytona/ops/notes.txt", 1, "one hello"),
                                                              ("/home/daytona/ops/notes.txt", 3, "hello three")]
    results = await fs.replace_in_files(["ops/conf.json", "ops/missing"], '"debug": true', '"debug": false')
    assert [(r.file, r.success) for r in results] == [("ops/conf.json", True), ("ops/missing", False)]
    assert "/tmp" not in (results[1].error or "")  # the error names the sandbox path only
    assert await fs.download_file("ops/conf.json") == b'{"debug": false}\n'
    await fs.move_files("ops/notes.txt", "ops/moved.txt")
    with pytest.raises(DaytonaError):
        await fs.move_files("ops/moved.txt", "ops/conf.json")  # the destination exists: 409
    await fs.set_file_permissions("ops/moved.txt", mode="600")
    assert (await fs.get_file_info("ops/moved.txt")).permissions == "0600"


async def test_git_status_add_commit_branches_checkout_push_pull(sandbox: AsyncSandbox, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git = sandbox.git
    await git.clone(str(bare), "repo")
    await sandbox.fs.upload_file(b"content\n", "repo/file.txt")
    status = await git.status("repo")
    assert [(f.name, f.staging.value, f.worktree.value) for f in status.file_status] == [
        ("file.txt", "Untracked", "Untracked")]
    await git.add("repo", ["."])
    assert (await git.status("repo")).file_status[0].staging.value == "Added"
    commit = await git.commit("repo", "first commit", "Ann Example", "ann@example.com")
    assert len(commit.sha) == 40
    await git.push("repo")
    log = subprocess.run(["git", "-C", str(bare), "log", "--format=%an|%s"], capture_output=True, text=True, check=True)
    assert log.stdout == "Ann Example|first commit\n"
    await git.create_branch("repo", "feature")
    branches = await git.branches("repo")
    assert sorted(branches.branches) == ["feature", "main"]
    await git.checkout_branch("repo", "main")
    await git.delete_branch("repo", "feature")
    assert (await git.branches("repo")).branches == ["main"]
    status = await git.status("repo")
    assert (status.current_branch, status.branch_published, status.ahead) == ("main", True, 0)
    await git.pull("repo")


async def test_pty_sessions_echo_resize_exit_and_kill(sandbox: AsyncSandbox) -> None:
    out = bytearray()
    handle = await sandbox.process.create_pty_session(id="term", pty_size=PtySize(cols=100, rows=30),
                                                      on_data=out.extend, envs={"GREETING": "hi"})  # fmt: skip
    await handle.send_input('read name && echo "$GREETING $name" && stty size\n')
    await handle.send_input("Bob\n")

    async def greeted() -> bool:
        return "hi Bob" in out.decode(errors="replace") and "30 100" in out.decode(errors="replace")

    await eventually(greeted)
    info = await sandbox.process.resize_pty_session("term", PtySize(cols=80, rows=25))
    assert (info.cols, info.rows) == (80, 25)
    assert [s.id for s in await sandbox.process.list_pty_sessions()] == ["term"]
    await handle.send_input("exit 3\n")
    result = await handle.wait()
    assert (result.exit_code, result.error) == (3, "non-zero exit")
    killed = await sandbox.process.create_pty_session(id="killed", on_data=lambda _: None)
    await killed.kill()
    assert (await killed.wait()).exit_code == 137


async def test_volumes_are_shared_between_sandboxes(daytona: AsyncDaytona) -> None:
    volume = await daytona.volume.get(f"vol-{uuid.uuid4().hex[:6]}", create=True)
    assert volume.state == "pending_create"
    with pytest.raises(DaytonaBadRequestError, match="is not in a ready state"):
        await daytona.create(CreateSandboxFromSnapshotParams(volumes=[VolumeMount(volume_id=volume.id,
                                                                                  mount_path="/data")]))  # fmt: skip

    async def ready() -> bool:
        return (await daytona.volume.get(volume.name)).state == "ready"

    await eventually(ready)
    writer = await daytona.create(CreateSandboxFromSnapshotParams(
        volumes=[VolumeMount(volume_id=volume.name, mount_path="/home/daytona/shared")]))  # fmt: skip
    await writer.fs.upload_file(b"across sandboxes", "/home/daytona/shared/note.txt")
    reader = await daytona.create(CreateSandboxFromSnapshotParams(
        volumes=[VolumeMount(volume_id=volume.id, mount_path="/mnt/vol")]))  # fmt: skip
    assert await reader.fs.download_file("/mnt/vol/note.txt") == b"across sandboxes"
    with pytest.raises(DaytonaError, match="in use by one or more sandboxes"):
        await daytona.volume.delete(volume)
    for sb in (writer, reader):
        await sb.delete(wait=True)
    await daytona.volume.delete(volume)
    with pytest.raises(DaytonaNotFoundError):
        await daytona.create(CreateSandboxFromSnapshotParams(volumes=[VolumeMount(volume_id="no-such-volume",
                                                                                  mount_path="/x")]))  # fmt: skip


async def test_network_block_all_allow_list_and_linked_sandboxes(server: LocalSandboxServer,
                                                                 daytona: AsyncDaytona) -> None:  # fmt: skip
    if server.stats()["network"] != "netns":
        pytest.skip("network namespaces are not available here (needs root and iproute2)")
    target = f"{CONNECT} 127.0.0.1 {server.port}"  # the server itself, on the host's loopback
    free = await daytona.create(CreateSandboxFromSnapshotParams())
    assert (await free.process.exec(target)).exit_code == 0
    blocked = await daytona.create(CreateSandboxFromSnapshotParams(network_block_all=True))
    assert (await blocked.process.exec(target)).exit_code != 0
    assert (await blocked.process.exec("ip -o link | wc -l")).result.strip() == "1"  # loopback only
    await blocked.update_network_settings(network_block_all=False)
    assert (await blocked.process.exec(target)).exit_code == 0  # new commands see the new settings

    allowed = await daytona.create(CreateSandboxFromSnapshotParams(network_allow_list="10.213.0.0/16"))
    routes = (await allowed.process.exec("ip route")).result
    assert "10.213.0.0/16 via 10.213." in routes
    outside = await allowed.process.exec(f"{CONNECT} 192.0.2.1 80 2>&1")
    assert outside.exit_code != 0
    assert "Network is unreachable" in outside.result

    owner = await daytona.create(CreateSandboxFromSnapshotParams(name=f"owner-{uuid.uuid4().hex[:6]}"))
    follower = await daytona.create(CreateSandboxFromSnapshotParams(linked_sandbox=owner.id, auto_delete_interval=0))
    assert follower.linked_sandbox_id == owner.id
    await owner.process.exec("nohup python3 -m http.server 3917 --bind 127.0.0.1 >/dev/null 2>&1 &")

    async def reached() -> bool:
        fetched = await follower.process.exec(f"curl -sf --max-time 2 http://{owner.name}:3917/ >/dev/null")
        return fetched.exit_code == 0

    await eventually(reached, timeout=15, interval=0.3)
    await owner.delete()

    async def follower_gone() -> bool:
        try:
            await daytona.get(follower.id)
        except DaytonaNotFoundError:
            return True
        return False

    await eventually(follower_gone)  # linked followers go with their owner
    for sb in (free, blocked, allowed):
        await sb.delete(wait=True)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for sb in (blocked, allowed):
        assert f"lsb-{sb.id[:8]}" not in namespaces  # removed with the sandbox
    await asyncio.sleep(0)
