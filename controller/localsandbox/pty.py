"""Interactive terminals over websockets (``sandbox.process.create_pty_session``).

Does::

    POST   /process/pty                 {id, cwd?, envs?, cols?, rows?, lazyStart?} -> 201 {sessionId}
    GET    /process/pty                 -> {sessions: [PtySessionInfo]}
    GET    /process/pty/{id}            -> PtySessionInfo (404 unknown)
    DELETE /process/pty/{id}            kill it -> {message}
    POST   /process/pty/{id}/resize     {cols, rows} (1..1000) -> PtySessionInfo
    GET    /process/pty/{id}/connect    websocket
    GET    /process/pty/create-connect?id&cols&rows&cwd   websocket; create and connect in one go
                                        (envs in the ``X-Daytona-Pty-Envs~<base64url JSON>`` subprotocol)

as ``apps/daemon/pkg/toolbox/process/pty`` does: the session is ``bash -i -l`` on a pseudo
terminal (its own session, the terminal its controlling tty) in the sandbox; on connect the
server sends ``{"type": "control", "status": "connected"}``, then the terminal's output as binary
frames, and writes every frame it receives to the terminal; when the shell exits, clients that
offered the ``X-Daytona-Pty-Exit-Control`` subprotocol get ``{"type": "control", "status":
"exited", "exitCode", "exitReason"}``, then every client gets a close frame (1000 for exit code
0, else 1011) whose reason is ``{"exitCode", "exitReason"}``, and the session is forgotten.
Errors use the daemon's error shape, not the PTY controller's bare ``{"error"}``.

Does not: keep output for clients that connect later (as the daemon, it streams live only).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import signal
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .context import Route, ctx, json_body, json_response
from .errors import daemon_error
from .isolation import build_argv, shell
from .models import iso
from .paths import resolve
from .processes import SandboxProcesses
from .sessions import signal_group

PREFIX = "/toolbox/{sandbox}/process/pty"
EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS_PROTOCOL = "X-Daytona-Pty-Envs~"
_CHUNK = 64 * 1024


def exit_reason(code: int) -> str | None:
    """The daemon's human-readable reason for a non-zero exit code."""
    if code == 0:
        return None
    return {130: "Ctrl+C", 137: "SIGKILL", 143: "SIGTERM"}.get(code) or (
        f"signal {code - 128}" if code > 128 else "non-zero exit"
    )


@dataclass
class PtySession:
    """One terminal and its connected clients."""

    id: str
    cwd: str
    envs: dict[str, str]
    cols: int
    rows: int
    lazy: bool
    created_at: float = field(default_factory=time.time)
    proc: asyncio.subprocess.Process | None = None
    master: int | None = None
    clients: dict[web.WebSocketResponse, bool] = field(default_factory=dict)  # ws -> wants the exit message
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    output: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Any) -> None:
        """Keep a background task of this session referenced."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def info(self) -> dict[str, Any]:
        """The ``PtySessionInfo`` JSON."""
        return {"id": self.id, "cwd": self.cwd, "envs": dict(self.envs), "cols": self.cols, "rows": self.rows,
                "createdAt": iso(self.created_at), "active": self.proc is not None and not self.ended.is_set(),
                "lazyStart": self.lazy}  # fmt: skip

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size (the kernel tells the shell with SIGWINCH)."""
        self.cols, self.rows = cols, rows
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def kill(self) -> None:
        """SIGKILL the terminal's process group."""
        if self.proc is not None and self.proc.returncode is None:
            signal_group(self.proc.pid, signal.SIGKILL)


def _ptys(procs: SandboxProcesses) -> dict[str, PtySession]:
    return procs.ptys  # type: ignore[return-value]


def _size(value: Any, what: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise daemon_error(400, f"invalid value for {what}") from None
    if not 1 <= size <= 1000:
        raise daemon_error(400, f"invalid value for {what} - must be less than 1000")
    return size


def _new_session(request: web.Request, spec: dict[str, Any]) -> PtySession:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    sid = spec.get("id")
    if not isinstance(sid, str) or not sid:
        raise daemon_error(400, "session ID is required")
    if sid in _ptys(procs):
        raise daemon_error(409, f"PTY session with ID '{sid}' already exists", "CONFLICT")
    envs = spec.get("envs") or {}
    if not isinstance(envs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in envs.items()):
        raise daemon_error(400, "envs must be an object of strings")
    cwd = spec.get("cwd") or c.store.home(rec)
    if not isinstance(cwd, str):
        raise daemon_error(400, "cwd must be a string")
    virtual, _ = resolve(os.path.join(c.store.root, rec.id), c.store.home(rec), cwd)
    session = PtySession(sid, virtual, envs, _size(spec.get("cols"), "cols", 80), _size(spec.get("rows"), "rows", 24),
                         bool(spec.get("lazyStart")))  # fmt: skip
    _ptys(procs)[sid] = session
    return session


async def _start(request: web.Request, session: PtySession) -> None:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    master, slave = os.openpty()
    try:
        session.master = master
        session.resize(session.cols, session.rows)
        env = {"TERM": "xterm-256color", **session.envs}
        launch = build_argv(c.isolation, c.store.launch_context(rec, session.cwd, env),
                            ["setsid", "--ctty", shell(), "-i", "-l"])  # fmt: skip
        if not await asyncio.to_thread(os.path.isdir, launch.cwd):
            launch = build_argv(c.isolation, c.store.launch_context(rec, c.store.home(rec), env),
                                ["setsid", "--ctty", shell(), "-i", "-l"])  # fmt: skip
        session.proc = await asyncio.create_subprocess_exec(*launch.argv, stdin=slave, stdout=slave, stderr=slave,
                                                            cwd=launch.cwd, env=launch.env)  # fmt: skip
    except OSError as exc:
        os.close(master)
        session.master = None
        raise daemon_error(500, f"failed to start PTY session: {exc.strerror or exc}") from exc
    finally:
        os.close(slave)
    procs.groups.add(session.proc.pid)
    os.set_blocking(master, False)
    asyncio.get_running_loop().add_reader(master, _pump, session)
    session.spawn(_send(session))
    session.spawn(_reap(session, procs))


async def _send(session: PtySession) -> None:
    """Deliver the terminal's output to every client, in order."""
    while (data := await session.output.get()) is not None:
        for ws in list(session.clients):
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_bytes(data)


def _pump(session: PtySession) -> None:
    assert session.master is not None
    try:
        data = os.read(session.master, _CHUNK)
    except BlockingIOError:
        return
    except OSError:  # EIO: the terminal's last process is gone
        data = b""
    if not data:
        asyncio.get_running_loop().remove_reader(session.master)
        session.output.put_nowait(None)
        return
    session.output.put_nowait(data)


async def _reap(session: PtySession, procs: SandboxProcesses) -> None:
    assert session.proc is not None
    code = await session.proc.wait()
    code = 128 - code if code < 0 else code
    session.ended.set()
    session.output.put_nowait(None)  # after whatever output is queued
    senders = [t for t in session.tasks if t is not asyncio.current_task()]
    if senders:
        await asyncio.wait(senders, timeout=2.0)
    reason = exit_reason(code)
    close_reason = json.dumps({"exitCode": code, **({"exitReason": reason} if reason else {})})
    for ws, wants_exit in list(session.clients.items()):
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            if wants_exit:
                exited = {"type": "control", "status": "exited", "exitCode": code}
                await ws.send_str(json.dumps({**exited, **({"exitReason": reason} if reason else {})}))
            await ws.close(code=1000 if code == 0 else 1011, message=close_reason.encode())
    if session.master is not None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(session.master)
        os.close(session.master)
        session.master = None
    if _ptys(procs).get(session.id) is session:
        del _ptys(procs)[session.id]


async def create(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise daemon_error(400, "invalid request body")
    session = _new_session(request, body)
    if not session.lazy:
        await _start(request, session)
    return json_response({"sessionId": session.id}, status=201)


async def list_sessions(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    return json_response({"sessions": [s.info() for s in _ptys(procs).values()]})


def _session(request: web.Request) -> PtySession:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    session = _ptys(procs).get(request.match_info["pty"])
    if session is None:
        raise daemon_error(404, "PTY session not found")
    return session


async def get(request: web.Request) -> web.StreamResponse:
    return json_response(_session(request).info())


async def delete(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    if session.proc is None:
        _ptys(procs).pop(session.id, None)
    session.kill()
    return json_response({"message": "PTY session deleted"})


async def resize(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise daemon_error(400, "invalid request body")
    if session.ended.is_set():
        raise daemon_error(410, "PTY session has exited", "GONE")
    session.resize(_size(body.get("cols"), "cols", session.cols), _size(body.get("rows"), "rows", session.rows))
    return json_response(session.info())


async def _attach(request: web.Request, session: PtySession) -> web.WebSocketResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    ws = web.WebSocketResponse(protocols=[EXIT_CONTROL] if EXIT_CONTROL in offered else ())
    await ws.prepare(request)
    if session.proc is None:
        await _start(request, session)
    session.clients[ws] = EXIT_CONTROL in offered
    await ws.send_str(json.dumps({"type": "control", "status": "connected"}))
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT) and session.master is not None:
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                with contextlib.suppress(OSError):
                    os.write(session.master, data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        session.clients.pop(ws, None)
    return ws


async def connect(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    if session.ended.is_set():
        raise daemon_error(410, "PTY session has exited", "GONE")
    return await _attach(request, session)


async def create_connect(request: web.Request) -> web.StreamResponse:
    spec: dict[str, Any] = dict(request.query)
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(ENVS_PROTOCOL):
            raw = proto[len(ENVS_PROTOCOL) :]
            try:
                spec["envs"] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            except (ValueError, binascii.Error):
                raise daemon_error(400, "invalid envs subprotocol") from None
    return await _attach(request, _new_session(request, spec))


ROUTES: list[Route] = [
    Route("GET", PREFIX + "/create-connect", "pty_create_connect", create_connect),
    Route("POST", PREFIX, "pty_create", create),
    Route("GET", PREFIX, "pty_list", list_sessions),
    Route("GET", PREFIX + "/{pty}", "pty_get", get),
    Route("DELETE", PREFIX + "/{pty}", "pty_delete", delete),
    Route("POST", PREFIX + "/{pty}/resize", "pty_resize", resize),
    Route("GET", PREFIX + "/{pty}/connect", "pty_connect", connect),
]
