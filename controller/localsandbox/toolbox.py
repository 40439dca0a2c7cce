"""The toolbox API under ``/toolbox/{sandboxId}``: process exec, sessions, logs, git, info.

Does::

    POST   /process/execute                         run `bash -c command` to completion -> ExecuteResponse
                                                    (timeout in s; 408 PROCESS_EXECUTION_TIMEOUT)
    POST   /process/session                         create a session (201; 409 if it exists)
    GET    /process/session                         -> Session[]
    GET    /process/session/{sid}                   -> Session
    DELETE /process/session/{sid}                   kill its commands, forget it (204)
    POST   /process/session/{sid}/exec              runAsync: 202 {cmdId} at once; else wait -> SessionExecuteResponse
    GET    /process/session/{sid}/command/{cid}     -> Command (exitCode null while running)
    GET    /process/session/{sid}/command/{cid}/logs
           JSON snapshot {output, stdout, stderr}, or with ?follow=true a websocket that first
           replays the log, then streams live output as binary frames (stdout chunks prefixed
           b"\\x01\\x01\\x01", stderr b"\\x02\\x02\\x02") and closes with 1000 when the command exits
           (1011 with a reason if the server killed it because the sandbox stopped/was destroyed)
    POST   /git/clone                               see `gitclone`
    GET    /user-home-dir, /work-dir                -> {dir}

Every call needs the sandbox to be ``started`` (404 unknown sandbox, 409 otherwise) and counts
as activity for auto-stop. Paths are in-sandbox paths (see `paths`).

Does not: serve file endpoints (see `files`) or authenticate (server middleware).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from aiohttp import WSMsgType, web

from .context import Route, ctx, json_body, json_response
from .errors import daemon_error
from .gitclone import clone
from .isolation import build_launch
from .logstore import STDOUT, read_records, read_snapshot
from .models import DAEMON_VERSION
from .paths import ensure_inside, resolve
from .processes import ExecTimeout
from .sessions import CommandRecord

PREFIX = "/toolbox/{sandbox}"
STDOUT_PREFIX = b"\x01\x01\x01"
STDERR_PREFIX = b"\x02\x02\x02"
FOLLOW_IDLE_CHECK = 5.0


def _str_dict(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise daemon_error(400, f"{what} must be an object of strings")
    return dict(value)


def _check_dir(root: str, virtual: str, host: str) -> None:
    ensure_inside(root, host)
    if not os.path.isdir(host):
        raise daemon_error(400, f"working directory {virtual} does not exist", "FILE_NOT_FOUND")


async def execute(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        raise daemon_error(400, "command is required")
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
        raise daemon_error(400, "timeout must be a non-negative integer")
    root = os.path.join(c.store.root, rec.id)
    cwd, host_cwd = resolve(root, c.store.home(rec), body.get("cwd") or c.store.home(rec))
    _check_dir(root, cwd, host_cwd)
    launch = build_launch(c.isolation, c.store.launch_context(rec, cwd, _str_dict(body.get("envs"), "envs")),
                          body["command"])  # fmt: skip
    try:
        code, output = await procs.execute(launch, float(timeout) if timeout else None)
    except ExecTimeout:
        raise daemon_error(408, f"command timed out after {timeout}s", "PROCESS_EXECUTION_TIMEOUT") from None
    return json_response({"exitCode": code, "result": output})


async def session_create(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    body = await json_body(request)
    sid = body.get("sessionId") if isinstance(body, dict) else None
    if not isinstance(sid, str) or not sid or "/" in sid or sid in (".", ".."):
        raise daemon_error(400, "sessionId is required")
    launch = build_launch(c.isolation, c.store.launch_context(rec, c.store.home(rec)), None)
    await procs.create_session(sid, launch)
    return web.Response(status=201)


async def session_list(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    return json_response([procs.session_json(s) for s in procs.sessions])


async def session_get(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    return json_response(procs.session_json(request.match_info["session"]))


async def session_delete(request: web.Request) -> web.StreamResponse:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    await procs.delete_session(request.match_info["session"])
    return web.Response(status=204)


async def session_exec(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    _, procs = c.store.running(request.match_info["sandbox"])
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        raise daemon_error(400, "command is required")
    run_async = bool(body.get("runAsync") or body.get("async"))
    cmd = await procs.start_command(request.match_info["session"], body["command"], run_async=run_async,
                                    suppress_echo=bool(body.get("suppressInputEcho")))  # fmt: skip
    c.stats.bump("commands_started")
    if run_async:
        return json_response({"cmdId": cmd.id}, status=202)
    shell = procs.session(request.match_info["session"])
    waits = {asyncio.ensure_future(cmd.done.wait()), asyncio.ensure_future(shell.closed.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if not cmd.done.is_set():
        raise daemon_error(400, "session cancelled")
    output, stdout, stderr = await asyncio.to_thread(read_snapshot, cmd.log_path)
    return json_response(
        {"cmdId": cmd.id, "exitCode": cmd.exit_code, "output": output, "stdout": stdout, "stderr": stderr}
    )


def _command(request: web.Request) -> CommandRecord:
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    return procs.command(request.match_info["session"], request.match_info["command"])


async def command_get(request: web.Request) -> web.StreamResponse:
    return json_response(_command(request).to_json())


async def command_input(request: web.Request) -> web.StreamResponse:
    """``SendInput``: feed a running asynchronous command's stdin (204)."""
    _, procs = ctx(request).store.running(request.match_info["sandbox"])
    body = await json_body(request)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, str):
        raise daemon_error(400, "data is required", "INVALID_REQUEST_BODY")
    cmd = procs.command(request.match_info["session"], request.match_info["command"])
    procs.session(request.match_info["session"]).send_input(cmd, data)
    return web.Response(status=204)


async def command_logs(request: web.Request) -> web.StreamResponse:
    cmd = _command(request)
    if request.query.get("follow", "").lower() == "true":
        ws = web.WebSocketResponse()
        if ws.can_prepare(request).ok:
            return await _follow(request, ws, cmd)
    output, stdout, stderr = await asyncio.to_thread(read_snapshot, cmd.log_path)
    return json_response({"output": output, "stdout": stdout, "stderr": stderr})


async def _follow(request: web.Request, ws: web.WebSocketResponse, cmd: CommandRecord) -> web.WebSocketResponse:
    """Replay the log from the start, then stream live output until the command ends."""
    await ws.prepare(request)

    async def drain_client() -> None:  # answers pings; ends when the client goes away
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    client = asyncio.create_task(drain_client())
    offset = 0
    try:
        while not ws.closed and not client.done():
            finished = cmd.done.is_set()  # read *after* this, so nothing written before it is missed
            woken = cmd.pulse.wait()
            records, offset = await asyncio.to_thread(read_records, cmd.log_path, offset)
            for stream, data in records:
                await ws.send_bytes((STDOUT_PREFIX if stream == STDOUT else STDERR_PREFIX) + data)
            if records:
                woken.cancel()
                continue
            if finished:
                woken.cancel()
                if cmd.kill_reason in ("sandbox stopped", "sandbox destroyed"):
                    await ws.close(code=1011, message=cmd.kill_reason.encode())
                else:
                    await ws.close(code=1000)
                break
            await asyncio.wait({woken, client}, timeout=FOLLOW_IDLE_CHECK, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away mid-send
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client
        if not ws.closed:
            await ws.close(code=1000)
    return ws


async def git_clone(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, _ = c.store.running(request.match_info["sandbox"])
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise daemon_error(400, "path is required")
    root = os.path.join(c.store.root, rec.id)
    _, dest = resolve(root, c.store.home(rec), body["path"])
    ensure_inside(root, dest)
    home = os.path.join(root, c.store.home(rec).lstrip("/"))
    await clone(body, dest, home)
    return web.Response(status=200)


async def home_dir(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, _ = c.store.running(request.match_info["sandbox"])
    return json_response({"dir": c.store.home(rec)})


async def version(request: web.Request) -> web.StreamResponse:
    ctx(request).store.running(request.match_info["sandbox"])
    return json_response({"version": DAEMON_VERSION})


ROUTES: list[Route] = [
    Route("POST", PREFIX + "/process/execute", "exec", execute),
    Route("POST", PREFIX + "/process/session", "session_create", session_create),
    Route("GET", PREFIX + "/process/session", "session_list", session_list),
    Route("GET", PREFIX + "/process/session/{session}", "session_get", session_get),
    Route("DELETE", PREFIX + "/process/session/{session}", "session_delete", session_delete),
    Route("POST", PREFIX + "/process/session/{session}/exec", "session_exec", session_exec),
    Route("GET", PREFIX + "/process/session/{session}/command/{command}", "command_get", command_get),
    Route("GET", PREFIX + "/process/session/{session}/command/{command}/logs", "command_logs", command_logs),
    Route("POST", PREFIX + "/process/session/{session}/command/{command}/input", "command_input", command_input),
    Route("POST", PREFIX + "/git/clone", "git_clone", git_clone),
    Route("GET", PREFIX + "/user-home-dir", "home_dir", home_dir),
    Route("GET", PREFIX + "/work-dir", "work_dir", home_dir),
    Route("GET", PREFIX + "/version", "version", version),
]
