"""Toolbox sessions as Daytona's daemon runs them: one long-lived shell per session.

Does: start one ``bash`` per session (its own process group) reading commands from a pipe, as
``apps/daemon/pkg/session/create.go`` does; run each command by *sourcing* it in that shell
(``execute.go``: ``{ . cmd.sh; } < in > out 2> err``), so ``export`` and ``cd`` carry over to the
next command, commands of one session run one after another, and ``exit`` or ``exec`` in a
command end the session shell itself, after which no exit code is ever reported for it (as in
Daytona, where the exit-code file is then never written). The command text goes to a file the
shell sources; the wrapper the server writes to the shell's input holds only paths and ids it
generated. Output reaches the server through per-command FIFOs and is kept in the `logstore`
format; the exit code is reported on the shell's own stdout after a per-session random token.
An asynchronous command's stdin is a FIFO the server keeps open, so ``/input`` can feed it
(``input.go``: a newline is added, the input is echoed into the log as stdout unless
``suppressInputEcho``); a synchronous command reads ``/dev/null``. A command counts as finished
once its exit code is known and its output has ended (a background child keeping the output
open delays it, as Daytona's labelers do), with `PIPE_GRACE` seconds of grace.

Does not: decide how the shell is launched (`isolation`), or speak HTTP (`toolbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import daemon_error
from .isolation import Launch
from .logstore import STDERR, STDOUT, LogWriter, Pulse

PIPE_GRACE = 0.5
TERMINATE_GRACE = 2.0
_CHUNK = 64 * 1024


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class CommandRecord:
    """A session command and where its log lives."""

    id: str
    command: str
    session_id: str
    log_path: str
    run_async: bool = False
    suppress_input_echo: bool = False
    exit_code: int | None = None
    kill_reason: str | None = None  # why the server killed it (stop, delete, session deleted)
    input_fd: int | None = None
    writer: LogWriter | None = None
    pulse: Pulse = field(default_factory=Pulse)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # exit code known and output drained
    output_ended: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, object]:
        """The toolbox ``Command`` JSON (``exitCode`` is null while running)."""
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


class SessionShell:
    """One session: a long-lived shell and the commands it ran."""

    def __init__(self, session_id: str, work_dir: str) -> None:
        self.id = session_id
        self.dir = work_dir
        self.commands: dict[str, CommandRecord] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._token = secrets.token_hex(16)
        self._tasks: set[asyncio.Task[None]] = set()
        self._status: dict[str, asyncio.Future[int]] = {}
        self.closed = asyncio.Event()  # deleted, or the sandbox stopped
        self._seen: Callable[[str], str] = lambda path: path  # host path -> as the shell sees it

    @property
    def alive(self) -> bool:
        """Whether the session shell still runs."""
        return self.proc is not None and self.proc.returncode is None

    async def start(self, launch: Launch) -> None:
        """Start the session shell (`launch.argv` must be a shell reading commands from stdin)."""
        os.makedirs(self.dir, exist_ok=True)
        self._seen = launch.seen
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *launch.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, cwd=launch.cwd, env=launch.env, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise daemon_error(400, f"cannot start the session shell: {exc.strerror or exc}") from exc
        self._spawn(self._read_status())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_status(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        prefix = self._token.encode() + b" "
        while line := await self.proc.stdout.readline():
            if not line.startswith(prefix):
                continue
            parts = line[len(prefix) :].split()
            if len(parts) == 2 and parts[0].decode() in self._status and parts[1].lstrip(b"-").isdigit():
                fut = self._status.pop(parts[0].decode())
                if not fut.done():
                    fut.set_result(int(parts[1]))
        await self.proc.wait()  # the shell is gone: commands still waiting never get an exit code

    async def execute(self, command: str, log_path: str, *, run_async: bool, suppress_echo: bool) -> CommandRecord:
        """Queue `command` in the session shell; returns at once (see `CommandRecord.done`)."""
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise daemon_error(400, "failed to write command: the session shell has exited")
        cid = str(uuid.uuid4())
        cmd = CommandRecord(cid, command, self.id, log_path, run_async=run_async, suppress_input_echo=suppress_echo)
        cdir = os.path.join(self.dir, cid)
        os.makedirs(cdir)
        script = os.path.join(cdir, "cmd.sh")
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(command + "\n")
        for name in ("out", "err", *(("in",) if run_async else ())):
            os.mkfifo(os.path.join(cdir, name), 0o600)
        # read ends first (non-blocking opens never wait), then a writer of our own on each so that
        # the readers see no end of file before the command has opened them
        out_r = os.open(os.path.join(cdir, "out"), os.O_RDONLY | os.O_NONBLOCK)
        err_r = os.open(os.path.join(cdir, "err"), os.O_RDONLY | os.O_NONBLOCK)
        holders = [os.open(os.path.join(cdir, n), os.O_WRONLY | os.O_NONBLOCK) for n in ("out", "err")]
        if run_async:
            cmd.input_fd = os.open(os.path.join(cdir, "in"), os.O_RDWR | os.O_NONBLOCK)
        seen = self._seen  # in a namespace the shell sees the server's directory elsewhere
        stdin = shlex.quote(seen(os.path.join(cdir, "in"))) if run_async else "/dev/null"
        wrapper = (
            f"{{ . {shlex.quote(seen(script))}; }} < {stdin} > {shlex.quote(seen(os.path.join(cdir, 'out')))} "
            f"2> {shlex.quote(seen(os.path.join(cdir, 'err')))}\n"
            f"printf '%s %s %s\\n' {self._token} {cid} \"$?\"\n"
        )
        status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._status[cid] = status
        cmd.writer = LogWriter(log_path)
        self.commands[cid] = cmd
        self._spawn(self._supervise(cmd, out_r, err_r, holders, status, cdir))
        try:
            self.proc.stdin.write(wrapper.encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise daemon_error(400, "failed to write command: the session shell has exited") from exc
        return cmd

    async def _supervise(self, cmd: CommandRecord, out_r: int, err_r: int, holders: list[int],
                         status: asyncio.Future[int], cdir: str) -> None:  # fmt: skip
        assert cmd.writer is not None
        writer = cmd.writer

        async def pump(fd: int, kind: int) -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
            )
            try:
                while chunk := await reader.read(_CHUNK):
                    writer.append(kind, chunk)
                    cmd.pulse.fire()
            finally:
                transport.close()

        pumps = {asyncio.ensure_future(pump(out_r, STDOUT)), asyncio.ensure_future(pump(err_r, STDERR))}
        shell_gone = asyncio.ensure_future(self.closed.wait())
        code: int | None = None
        try:
            ended = asyncio.ensure_future(self._shell_exit())
            waits: set[asyncio.Future[Any]] = {status, ended, shell_gone}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if status.done():
                code = status.result()
            for fd in holders:  # the command has ended (or never will report): let EOF through
                os.close(fd)
            holders.clear()
            _, pending = await asyncio.wait(pumps, timeout=None if code is not None else PIPE_GRACE)
            if pending and code is not None:
                _, pending = await asyncio.wait(pending, timeout=PIPE_GRACE)
            pumps = set(pending)
            ended.cancel()
        finally:
            shell_gone.cancel()
            for fd in holders:
                os.close(fd)
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            if cmd.input_fd is not None:
                os.close(cmd.input_fd)
                cmd.input_fd = None
            for name in ("out", "err", "in"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(cdir, name))
            if code is not None:
                cmd.exit_code = code
            elif cmd.kill_reason is not None:
                cmd.exit_code = 128 + signal.SIGKILL
            cmd.output_ended.set()
            if cmd.exit_code is not None:
                cmd.done.set()
            cmd.pulse.fire()

    async def _shell_exit(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    def send_input(self, cmd: CommandRecord, data: str) -> None:
        """``SendInput``: write `data` (newline-terminated) to a running command's stdin."""
        if not self.alive:
            raise daemon_error(410, "session process has exited", "GONE")
        if cmd.exit_code is not None:
            raise daemon_error(410, f"command has already completed with exit code {cmd.exit_code}",
                               "COMMAND_ALREADY_COMPLETED")  # fmt: skip
        if cmd.input_fd is None:
            raise daemon_error(500, "failed to open input pipe: the command does not read input")
        if not data.endswith("\n"):
            data += "\n"
        try:
            os.write(cmd.input_fd, data.encode())
        except OSError as exc:
            raise daemon_error(500, f"failed to write to input pipe: {exc.strerror or exc}") from exc
        if not cmd.suppress_input_echo and cmd.writer is not None:
            cmd.writer.append(STDOUT, data.encode())
            cmd.pulse.fire()

    def signal(self, sig: int) -> bool:
        """Signal the session's process group; False when it is gone."""
        return self.proc is not None and signal_group(self.proc.pid, sig)

    def mark_killed(self, reason: str) -> None:
        """Running commands record why the server is killing them."""
        for cmd in self.commands.values():
            if not cmd.done.is_set() and cmd.kill_reason is None:
                cmd.kill_reason = reason

    async def terminate(self, reason: str, grace: float = TERMINATE_GRACE) -> None:
        """Daytona's ``terminateSession``: SIGTERM the group, SIGKILL after `grace` seconds."""
        self.mark_killed(reason)
        if self.signal(signal.SIGTERM) and self.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        self.kill(reason)
        await self.close()

    def kill(self, reason: str) -> None:
        """SIGKILL the session's process group now."""
        self.mark_killed(reason)
        self.signal(signal.SIGKILL)

    async def close(self) -> None:
        """Forget the shell: wait (briefly) for the supervisors to finish."""
        self.closed.set()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)
