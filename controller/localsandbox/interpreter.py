"""The toolbox code interpreter (``sandbox.code_interpreter``): stateful Python contexts.

Does::

    POST   /process/interpreter/context        {cwd?, language?} -> InterpreterContext (python only)
    GET    /process/interpreter/context        -> {contexts: [...]} (the default context not listed)
    DELETE /process/interpreter/context/{id}   -> {message} (400 for "default", 404 unknown)
    GET    /process/interpreter/execute        websocket: the client sends {code, contextId?, envs?,
                                               timeout?}; the server streams text frames
                                               {"type": "stdout"|"stderr", "text"} and
                                               {"type": "error", name, value, traceback}, then
                                               closes 1000; 4008 when the timeout expired

as ``apps/daemon/pkg/toolbox/process/interpreter`` does: a bad first message closes the socket
with the reason as close message (1002 not JSON, 1008 no code / negative timeout / unknown
context). Each context is one `interpreter_worker` process started on first use, so variables
persist between executions of that context; executions of one context run one at a time; a
timeout kills the worker (the context starts afresh next time).

Does not: support languages other than Python (neither does the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .context import Route, ctx, json_body, json_response
from .errors import daemon_error
from .isolation import build_argv
from .models import iso
from .paths import ensure_inside, resolve
from .processes import SandboxProcesses
from .sessions import signal_group

PREFIX = "/toolbox/{sandbox}"
TIMEOUT_CLOSE = 4008
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interpreter_worker.py")
_CHUNK = 64 * 1024


@dataclass
class Context:
    """One interpreter context and its (lazily started) worker."""

    id: str
    cwd: str  # in-sandbox path
    created_at: float
    proc: asyncio.subprocess.Process | None = None
    control: asyncio.StreamReader | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``InterpreterContext`` JSON."""
        return {"id": self.id, "active": True, "createdAt": iso(self.created_at), "cwd": self.cwd,
                "language": "python"}  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the worker's process group."""
        if self.proc is not None and self.proc.returncode is None:
            signal_group(self.proc.pid, signal.SIGKILL)
        self.proc = None


def _held_back(data: bytes, marker: bytes) -> int:
    """How many trailing bytes of `data` could be the start of `marker` (kept until more arrives)."""
    for size in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-size:]):
            return size
    return 0


def _contexts(procs: SandboxProcesses) -> dict[str, Context]:
    return procs.interpreters  # type: ignore[return-value]


async def create_context(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise daemon_error(400, "invalid request payload")
    language = body.get("language") or "python"
    if language != "python":
        raise daemon_error(400, f"unsupported language: {language} (only 'python' is supported currently)")
    cwd = body.get("cwd") or c.store.home(rec)
    if not isinstance(cwd, str):
        raise daemon_error(400, "invalid request payload: cwd must be a string")
    context = Context(str(uuid.uuid4()), resolve(os.path.join(c.store.root, rec.id), c.store.home(rec), cwd)[0],
                      time.time())  # fmt: skip
    _contexts(procs)[context.id] = context
    return json_response(context.to_json())


async def list_contexts(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    return json_response({"contexts": [x.to_json() for x in _contexts(procs).values() if x.id != "default"]})


async def delete_context(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    context_id = request.match_info["context"]
    if context_id == "default":
        raise daemon_error(400, "cannot delete default context")
    context = _contexts(procs).pop(context_id, None)
    if context is None:
        raise daemon_error(404, f"context not found: {context_id}")
    context.kill()
    return json_response({"message": "Context deleted successfully"})


async def _start_worker(request: web.Request, context: Context) -> None:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    root = os.path.join(c.store.root, rec.id)
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    copy = os.path.join(tmp, ".localsandbox-interpreter.py")
    await asyncio.to_thread(shutil.copyfile, WORKER, copy)
    script = "/tmp/.localsandbox-interpreter.py" if c.store.sees_sandbox_paths(rec) else copy  # noqa: S108
    _, host_cwd = resolve(root, c.store.home(rec), context.cwd)
    ensure_inside(root, host_cwd)
    cwd = context.cwd if await asyncio.to_thread(os.path.isdir, host_cwd) else c.store.home(rec)
    read_fd, write_fd = os.pipe()
    env = {"LOCALSANDBOX_INTERPRETER_TOKEN": context.token, "LOCALSANDBOX_INTERPRETER_FD": str(write_fd)}
    launch = build_argv(c.isolation, c.store.launch_context(rec, cwd, env), ["python3", "-u", script])
    try:
        context.proc = await asyncio.create_subprocess_exec(
            *launch.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=launch.cwd, env=launch.env, start_new_session=True,
            pass_fds=(write_fd,),
        )  # fmt: skip
    finally:
        os.close(write_fd)
    procs.groups.add(context.proc.pid)
    loop = asyncio.get_running_loop()
    context.control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(context.control),  # type: ignore[arg-type]
                                 os.fdopen(read_fd, "rb", buffering=0))  # fmt: skip


async def _refuse(ws: web.WebSocketResponse, message: str, code: int) -> web.WebSocketResponse:
    await ws.close(code=code, message=message.encode())
    return ws


async def execute(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    _, procs = c.store.running(request.match_info["sandbox"])
    ws = web.WebSocketResponse()
    if not ws.can_prepare(request).ok:
        raise daemon_error(400, "a websocket upgrade is required")
    await ws.prepare(request)
    first = await ws.receive()
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return await _refuse(ws, "failed to read first message", 1002)
    try:
        req = json.loads(first.data)
    except ValueError:
        return await _refuse(ws, "invalid JSON payload", 1002)
    if not isinstance(req, dict) or not isinstance(req.get("code"), str) or not req["code"]:
        return await _refuse(ws, "code is required", 1008)
    timeout = req.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
        return await _refuse(ws, "timeout must be greater than or equal to 0", 1008)
    envs = req.get("envs") or {}
    contexts = _contexts(procs)
    context_id = req.get("contextId") or "default"
    if context_id == "default" and "default" not in contexts:
        rec = c.store.get(request.match_info["sandbox"])
        contexts["default"] = Context("default", c.store.home(rec), time.time())
    context = contexts.get(context_id)
    if context is None:
        return await _refuse(ws, f"context not found: {context_id}", 1008)
    async with context.lock:
        if context.proc is None or context.proc.returncode is not None:
            await _start_worker(request, context)
        await _run(ws, context, req["code"], envs if isinstance(envs, dict) else {}, timeout or None)
    return ws


async def _run(ws: web.WebSocketResponse, context: Context, code: str, envs: dict[str, Any],
               timeout: float | None) -> None:  # fmt: skip
    proc = context.proc
    assert proc is not None and proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    assert context.control is not None
    context.seq += 1
    marker = f"\x00{context.token}:{context.seq}\x00".encode()
    proc.stdin.write(json.dumps({"id": context.seq, "code": code, "envs": envs}).encode() + b"\n")
    await proc.stdin.drain()

    async def stream(reader: asyncio.StreamReader, kind: str) -> None:
        pending = b""
        while chunk := await reader.read(_CHUNK):
            pending += chunk
            end = pending.find(marker)
            cut = end if end >= 0 else len(pending) - _held_back(pending, marker)
            if cut:
                await ws.send_str(json.dumps({"type": kind, "text": pending[:cut].decode("utf-8", "replace")}))
                pending = pending[cut:]
            if end >= 0:
                return

    async def control() -> None:
        assert context.control is not None
        while line := await context.control.readline():
            msg = json.loads(line)
            if msg.get("type") == "error":
                await ws.send_str(json.dumps({"type": "error", "name": msg.get("name", ""),
                                              "value": msg.get("value", ""), "traceback": msg.get("traceback", "")}))
            elif msg.get("type") == "done":
                return

    jobs = [asyncio.ensure_future(j) for j in (stream(proc.stdout, "stdout"), stream(proc.stderr, "stderr"), control())]
    try:
        _, pending = await asyncio.wait(jobs, timeout=timeout)
        if pending:
            context.kill()
            await ws.close(code=TIMEOUT_CLOSE, message=b"execution timed out")
            return
        await ws.close(code=1000)
    except (ConnectionResetError, RuntimeError):
        context.kill()
    finally:
        for job in jobs:
            job.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*jobs, return_exceptions=True)


ROUTES: list[Route] = [
    Route("POST", PREFIX + "/process/interpreter/context", "interpreter_context_create", create_context),
    Route("GET", PREFIX + "/process/interpreter/context", "interpreter_context_list", list_contexts),
    Route("DELETE", PREFIX + "/process/interpreter/context/{context}", "interpreter_context_delete", delete_context),
    Route("GET", PREFIX + "/process/interpreter/execute", "interpreter_execute", execute),
]
