"""The toolbox git operations besides clone (``apps/daemon/pkg/toolbox/git``, ``pkg/git``).

Does::

    GET    /git/status?path          -> GitStatus {currentBranch, ahead, behind, branchPublished, fileStatus, ...}
    POST   /git/add                  {path, files}                            -> 200
    POST   /git/commit               {path, message, author, email, allow_empty} -> {hash}
    GET    /git/branches?path        -> {branches, current}
    POST   /git/branches             {path, name}   create                    -> 201
    DELETE /git/branches             {path, name}                             -> 204
    POST   /git/checkout             {path, branch}                           -> 200
    POST   /git/pull, /git/push      {path, username?, password?, remote?, branch?} -> 200

with the real ``git`` CLI run *as a sandbox command* (same isolation and user as the sandbox's own
processes, so a repository's own configuration and hooks never run with the server's rights),
arguments as argv lists with ``--`` before paths, prompts disabled, credentials only through a
temporary ``GIT_ASKPASS`` helper inside the sandbox that reads them from its environment.
File states map git's porcelain codes to the daemon's names (``Modified``, ``Untracked``, ...).
Failures answer 400 with git's last line; authentication failures 401 ``GIT_AUTH_FAILED``.

Does not: clone (`gitclone`), or allow remote transports other than file and http(s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import stat
from typing import Any

from aiohttp import web

from .context import Route, ctx, json_body, json_response
from .errors import daemon_error
from .gitclone import check_ref, classify_failure, redact
from .isolation import build_argv
from .paths import ensure_inside, resolve

PREFIX = "/toolbox/{sandbox}/git"
GIT_TIMEOUT = 600.0
STATUS_NAMES = {" ": "Unmodified", "?": "Untracked", "M": "Modified", "A": "Added", "D": "Deleted",
                "R": "Renamed", "C": "Copied", "U": "Updated but unmerged", "T": "Modified"}  # fmt: skip
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$LOCALSANDBOX_GIT_USERNAME" ;;
  *) printf '%s\\n' "$LOCALSANDBOX_GIT_PASSWORD" ;;
esac
"""


def _str(body: Any, key: str, *, required: bool = True) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise daemon_error(400, f"invalid request body: {key} is required", "INVALID_REQUEST_BODY")
    return value


async def _git(request: web.Request, path: str, args: list[str], *, creds: tuple[str, str] | None = None,
               allow_fail: bool = False) -> tuple[int, str, str]:  # fmt: skip
    """Run ``git -C <path> <args>`` in the sandbox; (exit code, stdout, stderr)."""
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    root = os.path.join(c.store.root, rec.id)
    virtual, host = resolve(root, c.store.home(rec), path)
    ensure_inside(root, host)
    if not await asyncio.to_thread(os.path.isdir, host):
        raise daemon_error(400, f"repository not found at {virtual}", "GIT_REPO_NOT_FOUND")
    env = {"GIT_TERMINAL_PROMPT": "0", "LANG": "C", "LC_ALL": "C", "GIT_ALLOW_PROTOCOL": "file:http:https"}
    helper = None
    if creds is not None:
        name = f".localsandbox-askpass-{secrets.token_hex(8)}.sh"
        helper = os.path.join(root, "tmp", name)
        await asyncio.to_thread(_write_helper, helper)
        env.update(GIT_ASKPASS=f"/tmp/{name}" if c.store.sees_sandbox_paths(rec) else helper,  # noqa: S108 - its own /tmp
                   LOCALSANDBOX_GIT_USERNAME=creds[0], LOCALSANDBOX_GIT_PASSWORD=creds[1])  # fmt: skip
    workdir = virtual if c.store.sees_sandbox_paths(rec) else host
    launch = build_argv(c.isolation, c.store.launch_context(rec, c.store.home(rec), env),
                        ["git", "-C", workdir, *args])  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=launch.cwd, env=launch.env, start_new_session=True,
        )  # fmt: skip
        procs.groups.add(proc.pid)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise daemon_error(408, "git timed out", "REQUEST_TIMEOUT") from None
    finally:
        if helper is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(helper)
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    code = proc.returncode if proc.returncode is not None else 1
    if code != 0 and not allow_fail:
        low = stderr.lower()
        if creds is not None or "authentication failed" in low or "could not read username" in low:
            raise classify_failure(stderr)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"git {args[0]} failed"
        raise daemon_error(400, redact(last))
    return code, stdout, stderr


def _write_helper(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(_ASKPASS)
    os.chmod(path, stat.S_IRWXU)


def parse_status(porcelain: str) -> dict[str, Any]:
    """``git status --porcelain=v1 --branch -z`` -> the daemon's ``GitStatus`` JSON."""
    entries = porcelain.split("\0")
    head = entries[0][3:] if entries and entries[0].startswith("## ") else ""
    branch, _, rest = head.partition("...")
    upstream, _, counts = rest.partition(" [")
    detached = branch.startswith("HEAD (no branch)")
    if branch.startswith("No commits yet on "):
        branch = branch.removeprefix("No commits yet on ")
    ahead = behind = 0
    for part in counts.rstrip("]").split(", "):
        key, _, number = part.partition(" ")
        if key == "ahead" and number.isdigit():
            ahead = int(number)
        elif key == "behind" and number.isdigit():
            behind = int(number)
    files = []
    items = iter(entries[1:] if head or (entries and entries[0].startswith("## ")) else entries)
    for item in items:
        if len(item) < 4:
            continue
        x, y, name = item[0], item[1], item[3:]
        extra = next(items, "") if x in "RC" else ""
        files.append({"name": name, "extra": extra, "staging": STATUS_NAMES.get(x, "Unmodified"),
                      "worktree": STATUS_NAMES.get(y, "Unmodified")})  # fmt: skip
    return {"currentBranch": "HEAD" if detached else branch.split(" ")[0], "fileStatus": files,
            "branchPublished": bool(upstream), "ahead": ahead, "behind": behind, "upstream": upstream,
            "detached": detached}  # fmt: skip


async def status(request: web.Request) -> web.StreamResponse:
    path = request.query.get("path", "")
    if not path:
        raise daemon_error(400, "path is required")
    _, out, _ = await _git(request, path, ["status", "--porcelain=v1", "--branch", "-z", "--untracked-files=all"])
    return json_response(parse_status(out))


async def add(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise daemon_error(400, "invalid request body: files is required", "INVALID_REQUEST_BODY")
    await _git(request, _str(body, "path"), ["add", "--", *files])
    return web.Response(status=200)


async def commit(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    path, message = _str(body, "path"), _str(body, "message")
    author, email = _str(body, "author"), _str(body, "email")
    args = ["-c", f"user.name={author}", "-c", f"user.email={email}", "commit", "--no-verify", "-q",
            "-m", message, f"--author={author} <{email}>"]  # fmt: skip
    if body.get("allow_empty") or body.get("allowEmpty"):
        args.append("--allow-empty")
    await _git(request, path, args)
    _, out, _ = await _git(request, path, ["rev-parse", "HEAD"])
    return json_response({"hash": out.strip()})


async def branches(request: web.Request) -> web.StreamResponse:
    path = request.query.get("path", "")
    if not path:
        raise daemon_error(400, "path is required")
    _, out, _ = await _git(request, path, ["branch", "--format=%(refname:short)"])
    _, current, _ = await _git(request, path, ["branch", "--show-current"])
    return json_response({"branches": [b for b in out.splitlines() if b], "current": current.strip()})


async def create_branch(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    name = check_ref(_str(body, "name"), "branch")
    await _git(request, _str(body, "path"), ["switch", "-c", name])
    return web.Response(status=201)


async def delete_branch(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    name = check_ref(_str(body, "name"), "branch")
    await _git(request, _str(body, "path"), ["branch", "-D", "--", name])
    return web.Response(status=204)


async def checkout(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    branch = check_ref(_str(body, "branch"), "branch")
    await _git(request, _str(body, "path"), ["checkout", "-q", branch, "--"])
    return web.Response(status=200)


def _remote_args(body: Any) -> list[str]:
    remote = _str(body, "remote", required=False)
    branch = _str(body, "branch", required=False)
    args = [check_ref(remote, "remote")] if remote else []
    if branch:
        args = [*(args or ["origin"]), check_ref(branch, "branch")]
    return args


def _creds(body: Any) -> tuple[str, str] | None:
    username, password = _str(body, "username", required=False), _str(body, "password", required=False)
    return (username, password) if username or password else None


async def pull(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    await _git(request, _str(body, "path"), ["pull", "-q", "--no-rebase", *_remote_args(body)], creds=_creds(body))
    return web.Response(status=200)


async def push(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    args = ["push", "-q", *(["--set-upstream"] if body.get("set_upstream") else []), *_remote_args(body)]
    await _git(request, _str(body, "path"), args, creds=_creds(body))
    return web.Response(status=200)


ROUTES: list[Route] = [
    Route("GET", PREFIX + "/status", "git_status", status),
    Route("POST", PREFIX + "/add", "git_add", add),
    Route("POST", PREFIX + "/commit", "git_commit", commit),
    Route("GET", PREFIX + "/branches", "git_branches", branches),
    Route("POST", PREFIX + "/branches", "git_branch_create", create_branch),
    Route("DELETE", PREFIX + "/branches", "git_branch_delete", delete_branch),
    Route("POST", PREFIX + "/checkout", "git_checkout", checkout),
    Route("POST", PREFIX + "/pull", "git_pull", pull),
    Route("POST", PREFIX + "/push", "git_push", push),
]
