"""The processes of one sandbox: one-shot exec, sessions and their logged commands.

Does: start every command as its own process group (``start_new_session``) so it and its
children can be signalled together; run ``/process/execute`` commands to completion with a
timeout and a capped combined output; run session commands in the background with stdout and
stderr appended to an on-disk `logstore` file, recording the exit code when the command ends;
and signal all groups when the sandbox stops or is destroyed.

A command counts as finished when its main process exits; output still written afterwards by
background children that kept the pipes open is read for `PIPE_GRACE` seconds more. Exit
codes of commands killed by a signal are reported shell-style (128 + signal). Sessions are a
grouping of commands: working directory and exported variables do NOT carry over from one
session command to the next (each is a fresh ``bash -c``).

Does not: decide where or how to launch (see `isolation`), or speak HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from dataclasses import dataclass, field

from .errors import daemon_error
from .isolation import Launch
from .logstore import STDERR, STDOUT, LogWriter, Pulse

PIPE_GRACE = 0.5
EXEC_OUTPUT_CAP = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class ExecTimeout(Exception):
    """`SandboxProcesses.execute` ran out of time; the command's group was killed."""


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell exit status (-9 -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class CommandRecord:
    """A session command and where its log lives."""

    id: str
    command: str
    session_id: str
    log_path: str
    pid: int | None = None
    exit_code: int | None = None
    kill_reason: str | None = None  # why the server killed it (stop, delete, session deleted)
    pulse: Pulse = field(default_factory=Pulse)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, object]:
        """The toolbox ``Command`` JSON (``exitCode`` is null while running)."""
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SandboxProcesses:
    """Process groups, sessions and commands of one sandbox."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.sessions: dict[str, list[str]] = {}
        self.commands: dict[str, CommandRecord] = {}
        self.groups: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _spawn(self, launch: Launch, *, merge_stderr: bool) -> asyncio.subprocess.Process:
        self.groups = {g for g in self.groups if _signal_group(g, 0)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise daemon_error(400, f"cannot start command: {exc.strerror or exc}") from exc
        self.groups.add(proc.pid)
        return proc

    async def execute(self, launch: Launch, timeout: float | None) -> tuple[int, str]:
        """Run to completion; (exit status, combined output). Raises `ExecTimeout`."""
        proc = await self._spawn(launch, merge_stderr=True)
        buf = bytearray()

        async def read() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(_CHUNK):
                room = EXEC_OUTPUT_CAP - len(buf)
                if room > 0:
                    buf.extend(chunk[:room])

        reader = asyncio.create_task(read())
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout) if timeout else await proc.wait()
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ExecTimeout from None
        finally:
            done, _ = await asyncio.wait({reader}, timeout=PIPE_GRACE)
            if not done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        return exit_status(returncode), bytes(buf).decode("utf-8", "replace")

    def create_session(self, session_id: str) -> None:
        """Register a session; 409 if it exists."""
        if session_id in self.sessions:
            raise daemon_error(409, f"session {session_id} already exists", "CONFLICT")
        self.sessions[session_id] = []

    def session_json(self, session_id: str) -> dict[str, object]:
        """The toolbox ``Session`` JSON; 404 for an unknown session."""
        if session_id not in self.sessions:
            raise daemon_error(404, f"session {session_id} not found")
        cmds = [self.commands[c].to_json() for c in self.sessions[session_id] if c in self.commands]
        return {"sessionId": session_id, "commands": cmds}

    def delete_session(self, session_id: str) -> None:
        """Kill the session's running commands and forget it; 404 if unknown."""
        if session_id not in self.sessions:
            raise daemon_error(404, f"session {session_id} not found")
        for cid in self.sessions.pop(session_id):
            cmd = self.commands.get(cid)
            if cmd is not None and cmd.pid is not None and not cmd.done.is_set():
                cmd.kill_reason = "session deleted"
                _signal_group(cmd.pid, signal.SIGKILL)

    def command(self, session_id: str, command_id: str) -> CommandRecord:
        """A command of a session; 404 if either is unknown."""
        if session_id not in self.sessions:
            raise daemon_error(404, f"session {session_id} not found")
        cmd = self.commands.get(command_id)
        if cmd is None or cmd.session_id != session_id:
            raise daemon_error(404, f"command {command_id} not found", "PROCESS_NOT_FOUND")
        return cmd

    async def start_command(self, launch: Launch, session_id: str, command: str) -> CommandRecord:
        """Start a session command in the background, logging to disk."""
        if session_id not in self.sessions:
            raise daemon_error(404, f"session {session_id} not found")
        os.makedirs(self.log_dir, exist_ok=True)
        cid = str(uuid.uuid4())
        cmd = CommandRecord(cid, command, session_id, os.path.join(self.log_dir, f"{cid}.log"))
        writer = LogWriter(cmd.log_path)
        try:
            proc = await self._spawn(launch, merge_stderr=False)
        except BaseException:
            writer.close()
            raise
        cmd.pid = proc.pid
        self.commands[cid] = cmd
        self.sessions[session_id].append(cid)
        task = asyncio.create_task(self._supervise(cmd, proc, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return cmd

    async def _supervise(self, cmd: CommandRecord, proc: asyncio.subprocess.Process, writer: LogWriter) -> None:
        async def pump(stream: asyncio.StreamReader | None, kind: int) -> None:
            assert stream is not None
            while chunk := await stream.read(_CHUNK):
                writer.append(kind, chunk)
                cmd.pulse.fire()

        pumps = {asyncio.create_task(pump(proc.stdout, STDOUT)), asyncio.create_task(pump(proc.stderr, STDERR))}
        returncode: int | None = None
        try:
            returncode = await proc.wait()
            _, pending = await asyncio.wait(pumps, timeout=PIPE_GRACE)
            pumps = set(pending)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            cmd.exit_code = exit_status(returncode) if returncode is not None else 137
            cmd.done.set()
            cmd.pulse.fire()

    def kill_all(self, reason: str, sig: int = signal.SIGKILL) -> None:
        """Signal every process group of the sandbox; running commands record `reason`."""
        for cmd in self.commands.values():
            if not cmd.done.is_set() and cmd.kill_reason is None:
                cmd.kill_reason = reason
        for pgid in list(self.groups):
            if not _signal_group(pgid, sig):
                self.groups.discard(pgid)

    async def terminate_all(self, reason: str, grace: float) -> None:
        """SIGTERM every group, wait up to `grace` seconds for commands to end, then SIGKILL."""
        self.kill_all(reason, signal.SIGTERM)
        running = [c.done.wait() for c in self.commands.values() if not c.done.is_set()]
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*running), grace)
        self.kill_all(reason, signal.SIGKILL)
        self.sessions.clear()
        self.commands.clear()

    async def close(self) -> None:
        """SIGKILL everything and wait (briefly) for the supervisors to notice."""
        self.kill_all("sandbox destroyed")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
