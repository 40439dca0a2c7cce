"""The toolbox file operations beyond upload/download/list (``apps/daemon/pkg/toolbox/fs``).

Does::

    GET  /files/search?path&pattern       file names matching a glob, recursively -> {files: [paths]}
    GET  /files/find?path&pattern         lines containing the text in text files -> Match[] {file, line, content}
    POST /files/replace                   {files, pattern, newValue} plain-text replace -> ReplaceResult[]
    POST /files/move?source&destination   rename (409 if the destination exists, 404 if its parent is missing)
    POST /files/permissions?path&mode&owner&group   chmod (octal) / chown
    POST /files/upload?path (and /upload-v2, the SDKs' name)   multipart part ``file`` -> 200
    GET  /files/download?path             the file's bytes (application/octet-stream)

with the daemon's rules: ``find`` skips files whose first 512 bytes hold a NUL byte, ``search``
matches the base name only, ``replace`` reports per-file failures instead of failing the call.
Paths are in-sandbox paths and never leave the sandbox (`paths`); answers carry in-sandbox paths.

Does not: follow symlinks out of the sandbox, or buffer uploads in memory.
"""

from __future__ import annotations

import asyncio
import fnmatch
import grp
import os
import pwd
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from .context import Route, ctx, json_body, json_response
from .errors import ApiError, daemon_error
from .files import _locate, _receive, _sandbox

PREFIX = "/toolbox/{sandbox}/files"
_CHUNK = 256 * 1024


def _virtual(root: str, host: str) -> str:
    rel = os.path.relpath(host, root)
    return "/" if rel == "." else "/" + rel


def _walk(root: str, top: str) -> list[tuple[str, list[str], list[str]]]:
    real_root = os.path.realpath(root)
    out = []
    for base, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(base, d)).startswith(real_root)]
        out.append((base, dirs, names))
    return out


def _required(request: web.Request, *names: str) -> list[str]:
    values = [request.query.get(n, "") for n in names]
    if not all(values):
        raise daemon_error(400, f"{' and '.join(names)} are required")
    return values


def search(root: str, top: str, pattern: str) -> list[str]:
    """``SearchFiles``: every path under `top` whose base name matches the glob `pattern`."""
    found = []
    if fnmatch.fnmatchcase(os.path.basename(top), pattern):
        found.append(_virtual(root, top))
    for base, dirs, names in _walk(root, top):
        found += [_virtual(root, os.path.join(base, n)) for n in sorted([*dirs, *names])
                  if fnmatch.fnmatchcase(n, pattern)]  # fmt: skip
    return found


def find(root: str, top: str, text: str) -> list[dict[str, Any]]:
    """``FindInFiles``: lines of regular text files under `top` that contain `text`."""
    matches: list[dict[str, Any]] = []
    files = [top] if os.path.isfile(top) else [os.path.join(b, n) for b, _, ns in _walk(root, top) for n in sorted(ns)]
    for path in files:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                if b"\0" in fh.read(512):
                    continue
                fh.seek(0)
                for number, raw in enumerate(fh, start=1):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if text in line:
                        matches.append({"file": _virtual(root, path), "line": number, "content": line})
        except OSError:
            continue
    return matches


async def search_files(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    path, pattern = _required(request, "path", "pattern")
    _, host = _locate(root, home, path)
    return json_response({"files": await asyncio.to_thread(search, root, host, pattern)})


async def find_in_files(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    path, pattern = _required(request, "path", "pattern")
    _, host = _locate(root, home, path)
    return json_response(await asyncio.to_thread(find, root, host, pattern))


def _replace_one(root: str, home: str, path: str, pattern: str, new: str) -> dict[str, Any]:
    virtual = path
    try:
        virtual, host = _locate(root, home, path)
        with open(host, encoding="utf-8", errors="surrogateescape") as fh:
            content = fh.read()
        with open(host, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(content.replace(pattern, new))
    except OSError as exc:  # the error names the in-sandbox path, never the host's
        return {"file": path, "success": False, "error": f"open {virtual}: {(exc.strerror or str(exc)).lower()}"}
    except ApiError as exc:  # from _locate: the path is not allowed
        return {"file": path, "success": False, "error": exc.message}
    return {"file": path, "success": True}


async def replace_in_files(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    body = await json_body(request)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or not isinstance(
        body.get("pattern"), str
    ):
        raise daemon_error(400, "invalid request body: files and pattern are required", "INVALID_REQUEST_BODY")
    new = body.get("newValue") or ""
    if not isinstance(new, str):
        raise daemon_error(400, "invalid request body: newValue must be a string", "INVALID_REQUEST_BODY")
    results = [await asyncio.to_thread(_replace_one, root, home, f, body["pattern"], new) for f in body["files"]]
    return json_response(results)


def _move(src_virtual: str, src: str, destination: str, dst: str) -> None:
    if not os.path.lexists(src):
        raise daemon_error(404, f"{src_virtual}: no such file or directory", "FILE_NOT_FOUND")
    if not os.path.isdir(os.path.dirname(dst)):
        raise daemon_error(404, f"{os.path.dirname(destination)}: no such file or directory", "FILE_NOT_FOUND")
    if os.path.lexists(dst):
        raise daemon_error(409, "destination already exists")
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise daemon_error(400, f"failed to move file: {exc.strerror or exc}") from exc


async def move_file(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    source, destination = _required(request, "source", "destination")
    src_virtual, src = _locate(root, home, source)
    _, dst = _locate(root, home, destination)
    await asyncio.to_thread(_move, src_virtual, src, destination, dst)
    return web.Response(status=200)


def _uid(owner: str, user_ids: dict[str, int]) -> int:
    if owner in user_ids:
        return user_ids[owner]
    try:
        return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError as exc:
        raise daemon_error(400, f"invalid owner: {owner}") from exc


def _gid(group: str, user_ids: dict[str, int]) -> int:
    if group in user_ids:
        return user_ids[group]
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise daemon_error(400, f"invalid group: {group}") from exc


async def set_permissions(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    root, home = _sandbox(request)
    virtual, host = _locate(root, home, request.query.get("path", "") or "")
    mode, owner, group = (request.query.get(k, "") for k in ("mode", "owner", "group"))
    ids = c.store.user_ids(c.store.get(request.match_info["sandbox"]))
    await asyncio.to_thread(_chperm, virtual, host, mode, owner, group, ids)
    return web.Response(status=200)


def _chperm(virtual: str, host: str, mode: str, owner: str, group: str, ids: dict[str, int]) -> None:
    if not os.path.lexists(host):
        raise daemon_error(404, f"{virtual}: no such file or directory", "FILE_NOT_FOUND")
    try:
        if mode:
            try:
                os.chmod(host, int(mode, 8) & 0o7777)
            except ValueError:
                raise daemon_error(400, "invalid mode format") from None
        if owner or group:
            os.chown(host, _uid(owner, ids) if owner else -1, _gid(group, ids) if group else -1, follow_symlinks=False)
    except OSError as exc:
        raise daemon_error(400, f"failed to change permissions: {exc.strerror or exc}") from exc


async def upload_file(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    path = request.query.get("path", "")
    if not path:
        raise daemon_error(400, "path is required")
    _, host = _locate(root, home, path)
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == "file":
            await _receive(part, host)
            return web.Response(status=200)
        if isinstance(part, BodyPartReader):
            await part.release()
    raise daemon_error(400, "http: no such file")


def _file_size(virtual: str, host: str) -> int:
    if not os.path.exists(host):
        raise daemon_error(404, f"{virtual}: no such file or directory", "FILE_NOT_FOUND")
    if not os.path.isfile(host):
        raise daemon_error(400, "path must be a file")
    return os.path.getsize(host)


async def download_file(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    path = request.query.get("path", "")
    if not path:
        raise daemon_error(400, "path is required")
    virtual, host = _locate(root, home, path)
    size = await asyncio.to_thread(_file_size, virtual, host)
    name = quote(os.path.basename(virtual), safe="")
    headers = {"Content-Type": "application/octet-stream",
               "Content-Disposition": f"attachment; filename=\"{name}\"; filename*=utf-8''{name}"}  # fmt: skip
    resp = web.StreamResponse(headers=headers)
    resp.content_length = size
    await resp.prepare(request)
    with open(host, "rb") as fh:  # noqa: ASYNC230 - chunks of a local file
        while chunk := fh.read(_CHUNK):
            await resp.write(chunk)
    await resp.write_eof()
    return resp


ROUTES: list[Route] = [
    Route("GET", PREFIX + "/search", "file_search", search_files),
    Route("GET", PREFIX + "/find", "file_find", find_in_files),
    Route("POST", PREFIX + "/replace", "file_replace", replace_in_files),
    Route("POST", PREFIX + "/move", "file_move", move_file),
    Route("POST", PREFIX + "/permissions", "file_permissions", set_permissions),
    Route("POST", PREFIX + "/upload", "file_upload", upload_file),
    Route("POST", PREFIX + "/upload-v2", "file_upload", upload_file),
    Route("GET", PREFIX + "/download", "file_download", download_file),
]
