"""The processes of one sandbox: one-shot exec commands and the sessions (see `sessions`).

Does: start every ``/process/execute`` command as its own process group (``start_new_session``)
so it and its children can be signalled together, run it to completion with a timeout and a
capped combined output; keep the sandbox's `SessionShell`s; and signal everything when the
sandbox stops (SIGTERM, then SIGKILL) or is destroyed (SIGKILL): every process group it started
and every other process still carrying the sandbox's ``DAYTONA_SANDBOX_ID`` in its environment
(a command that started its own session, as the runner does for the agent, left the groups the
server knows and outlived its sandbox; on Daytona the container takes everything with it) — that
scan reads every process's environment, so it is skipped for a sandbox that never launched
anything (`launched`: only a launch context carries the marker). A
one-shot command counts as
finished when its main process exits; output still written afterwards by background children
that kept the pipes open is read for `PIPE_GRACE` seconds more. Exit codes of commands killed
by a signal are reported shell-style (128 + signal).

Does not: decide where or how to launch (see `isolation`), or speak HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid

from .errors import daemon_error
from .isolation import Launch
from .sessions import CommandRecord, SessionShell, signal_group

PIPE_GRACE = 0.5
EXEC_OUTPUT_CAP = 16 * 1024 * 1024
_CHUNK = 64 * 1024


def processes_with(marker: bytes, proc: str = "/proc") -> list[int]:
    """Pids whose environment holds `marker` (``NAME=value\\0``), this process excluded; those
    of other users are unreadable and left alone. About 1 ms for a hundred processes."""
    found = []
    own = os.getpid()
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:
            continue
        if b"\0" + marker in environ:
            found.append(int(entry))
    return found


class ExecTimeout(Exception):
    """`SandboxProcesses.execute` ran out of time; the command's group was killed."""


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell exit status (-9 -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


class SandboxProcesses:
    """Process groups, sessions and commands of one sandbox."""

    def __init__(self, log_dir: str, sandbox_id: str | None = None) -> None:
        self.log_dir = log_dir
        self._marker = f"DAYTONA_SANDBOX_ID={sandbox_id}".encode() + b"\0" if sandbox_id else None
        self.launched = False  # set by `SandboxStore.launch_context`: a process may carry the marker
        self.sessions: dict[str, SessionShell] = {}
        self.commands: dict[str, CommandRecord] = {}
        self.groups: set[int] = set()
        self.interpreters: dict[str, object] = {}  # interpreter contexts (see `interpreter`)
        self.ptys: dict[str, object] = {}  # terminals (see `pty`)

    async def _spawn(self, launch: Launch, *, merge_stderr: bool, stdin: bool = False) -> asyncio.subprocess.Process:
        self.groups = {g for g in self.groups if signal_group(g, 0)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
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

    async def execute(self, launch: Launch, timeout: float | None, stdin: bytes | None = None) -> tuple[int, str]:
        """Run to completion (fed `stdin`); (exit status, combined output). Raises `ExecTimeout`."""
        proc = await self._spawn(launch, merge_stderr=True, stdin=stdin is not None)
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.drain()
            proc.stdin.close()
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
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ExecTimeout from None
        finally:
            done, _ = await asyncio.wait({reader}, timeout=PIPE_GRACE)
            if not done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        return exit_status(returncode), bytes(buf).decode("utf-8", "replace")

    async def create_session(self, session_id: str, launch: Launch) -> SessionShell:
        """Start a session shell; 409 if the session exists."""
        if session_id in self.sessions:
            raise daemon_error(409, "session already exists", "CONFLICT")
        shell = SessionShell(session_id, os.path.join(self.log_dir, "sessions", session_id))
        self.sessions[session_id] = shell
        try:
            await shell.start(launch)
        except BaseException:
            del self.sessions[session_id]
            raise
        return shell

    def session(self, session_id: str) -> SessionShell:
        """A session; 404 if unknown."""
        shell = self.sessions.get(session_id)
        if shell is None:
            raise daemon_error(404, "session not found")
        return shell

    def session_json(self, session_id: str) -> dict[str, object]:
        """The toolbox ``Session`` JSON; 404 for an unknown session."""
        shell = self.session(session_id)
        return {"sessionId": session_id, "commands": [c.to_json() for c in shell.commands.values()]}

    async def delete_session(self, session_id: str) -> None:
        """Terminate the session's process group and forget it; 404 if unknown."""
        shell = self.sessions.pop(session_id, None)
        if shell is None:
            raise daemon_error(404, "session not found")
        for cid in shell.commands:
            self.commands.pop(cid, None)
        await shell.terminate("session deleted")

    def command(self, session_id: str, command_id: str) -> CommandRecord:
        """A command of a session; 404 if either is unknown."""
        shell = self.session(session_id)
        cmd = shell.commands.get(command_id)
        if cmd is None:
            raise daemon_error(404, "command not found", "PROCESS_NOT_FOUND")
        return cmd

    async def start_command(self, session_id: str, command: str, *, run_async: bool,
                            suppress_echo: bool = False) -> CommandRecord:  # fmt: skip
        """Queue a command in a session shell (see `SessionShell.execute`)."""
        shell = self.session(session_id)
        os.makedirs(self.log_dir, exist_ok=True)
        log_path = os.path.join(self.log_dir, f"{uuid.uuid4()}.log")
        cmd = await shell.execute(command, log_path, run_async=run_async, suppress_echo=suppress_echo)
        self.commands[cmd.id] = cmd
        return cmd

    def kill_all(self, reason: str, sig: int = signal.SIGKILL) -> None:
        """Signal every process group of the sandbox; running session commands record `reason`."""
        for shell in self.sessions.values():
            shell.mark_killed(reason)
            shell.signal(sig)
        for pgid in list(self.groups):
            if not signal_group(pgid, sig):
                self.groups.discard(pgid)
        if self._marker is not None and self.launched:
            for pid in processes_with(self._marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    async def terminate_all(self, reason: str, grace: float) -> None:
        """SIGTERM every group, wait up to `grace` seconds for them to end, then SIGKILL."""
        self.kill_all(reason, signal.SIGTERM)
        running = [s.proc.wait() for s in self.sessions.values() if s.proc is not None and s.alive]
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*running), grace)
        self.kill_all(reason, signal.SIGKILL)
        shells = list(self.sessions.values())
        self.sessions.clear()
        self.commands.clear()
        self.interpreters.clear()
        self.ptys.clear()
        await asyncio.gather(*(s.close() for s in shells), return_exceptions=True)

    async def close(self) -> None:
        """SIGKILL everything and wait (briefly) for the supervisors to notice."""
        self.kill_all("sandbox destroyed")
        shells = list(self.sessions.values())
        await asyncio.gather(*(s.close() for s in shells), return_exceptions=True)
