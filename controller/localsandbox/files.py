"""The toolbox file endpoints under ``/toolbox/{sandboxId}/files``.

Does::

    POST   /files/bulk-upload    multipart as the SDK sends it: text part ``files[i].path`` then
                                 ``files[i].file`` (octet-stream; its filename, URL-encoded, is
                                 the fallback path); each file is streamed to a temp file and
                                 renamed into place -> 200 UploadFilesResponse, 400 {errors: [...]}
    POST   /files/bulk-download  JSON {paths} -> streamed multipart/form-data, one part per path:
                                 ``name="file"; filename="<path exactly as requested>"`` or
                                 ``name="error"`` with a JSON daemon error (the header is written
                                 by hand: aiohttp would percent-encode the filename, and the SDK
                                 matches parts to requests by the exact string)
    POST   /files/folder?path&mode   mkdir -p (mode is octal, default 755) -> 201
    DELETE /files?path&recursive     rm (directories need recursive=true) -> 204
    GET    /files?path               -> FileInfo[] of a directory
    GET    /files/info?path          -> FileInfo

Does not: buffer whole files in memory, or follow symlinks out of the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import re
import stat
import time
import uuid
from functools import cache
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web

from .context import Route, ctx, json_body, json_response
from .errors import ApiError, daemon_error
from .layout import remove_tree
from .models import iso
from .paths import ensure_inside, resolve

PREFIX = "/toolbox/{sandbox}"
_CHUNK = 256 * 1024
_PART_RE = re.compile(r"^files\[(\d+)\]\.(path|file)$")
_SAFE_FILENAME = re.compile(r"^[\x20-\x7e]*$")


def _sandbox(request: web.Request) -> tuple[str, str]:
    """(host root, in-sandbox home) of the running sandbox the request is for."""
    c = ctx(request)
    rec, _ = c.store.running(request.match_info["sandbox"])
    return os.path.join(c.store.root, rec.id), c.store.home(rec)


def _locate(root: str, home: str, path: str) -> tuple[str, str]:
    virtual, host = resolve(root, home, path)
    ensure_inside(root, host)
    return virtual, host


async def upload(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    reader = await request.multipart()
    paths: dict[str, str] = {}
    errors: list[str] = []
    done: list[dict[str, Any]] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise daemon_error(400, "nested multipart is not supported")
        match = _PART_RE.match(part.name or "")
        if match is None:
            await part.release()
            continue
        index, kind = match.groups()
        if kind == "path":
            paths[index] = await part.text()
            continue
        requested = paths.get(index) or unquote(part.filename or "")
        try:
            virtual, host = _locate(root, home, requested)
            written = await _receive(part, host)
            done.append({"path": virtual, "bytes": written})
        except ApiError as exc:
            await part.release()
            errors.append(f"{requested}: {exc.message}")
    if errors:
        return json_response({"errors": errors, "files": done}, status=400)
    return json_response({"files": done})


def _open_upload(host: str) -> tuple[str, BinaryIO]:
    """Open a temp file next to `host` for an upload (parents created)."""
    if os.path.isdir(host):
        raise daemon_error(400, "destination is a directory", "INVALID_FILE_PATH")
    tmp = f"{host}.upload-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(host), exist_ok=True)
        return tmp, open(tmp, "wb")  # closed by _receive
    except OSError as exc:
        raise daemon_error(400, f"cannot write file: {exc.strerror or exc}", "FILE_ACCESS_DENIED") from exc


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


async def _receive(part: BodyPartReader, host: str) -> int:
    """Stream one file part to `host` through a temp file; returns the bytes written."""
    tmp, fh = _open_upload(host)
    written = 0
    try:
        with fh:
            while chunk := await part.read_chunk(_CHUNK):
                fh.write(chunk)
                written += len(chunk)
        os.replace(tmp, host)
    except OSError as exc:
        raise daemon_error(400, f"cannot write file: {exc.strerror or exc}", "FILE_ACCESS_DENIED") from exc
    finally:
        _discard(tmp)
    return written


def content_disposition(name: str, filename: str) -> str:
    """``form-data; name=...; filename=...`` with the filename kept byte-exact for the SDK."""
    if _SAFE_FILENAME.match(filename):
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        return f'form-data; name="{name}"; filename="{escaped}"'
    return f"form-data; name=\"{name}\"; filename*=utf-8''{quote(filename, safe='')}"


def _open_download(root: str, home: str, path: str) -> BinaryIO:
    """Open a requested file for download, or raise the daemon error for its part."""
    _, host = _locate(root, home, path)
    if os.path.isdir(host):
        raise daemon_error(400, f"{path}: is a directory", "INVALID_FILE_PATH")
    if not os.path.isfile(host):
        raise daemon_error(404, f"{path}: file not found", "FILE_NOT_FOUND")
    try:
        return open(host, "rb")  # streamed and closed by download()
    except OSError as exc:
        raise daemon_error(400, f"{path}: {exc.strerror or exc}", "FILE_READ_FAILED") from exc


def _part_head(boundary: str, name: str, path: str, content_type: str, length: int) -> bytes:
    return (
        f"--{boundary}\r\nContent-Disposition: {content_disposition(name, path)}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode("latin-1")


async def download(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    body = await json_body(request)
    paths = body.get("paths") if isinstance(body, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise daemon_error(400, "paths must be a list of strings")
    boundary = uuid.uuid4().hex
    resp = web.StreamResponse(headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    await resp.prepare(request)
    for path in paths:
        try:
            fh = _open_download(root, home, path)
        except ApiError as err:
            payload = json.dumps(err.body(request.path_qs, request.method)).encode()
            await resp.write(_part_head(boundary, "error", path, "application/json", len(payload)) + payload + b"\r\n")
            continue
        with fh:
            size = os.fstat(fh.fileno()).st_size
            await resp.write(_part_head(boundary, "file", path, "application/octet-stream", size))
            while chunk := fh.read(_CHUNK):
                await resp.write(chunk)
            await resp.write(b"\r\n")
    await resp.write(f"--{boundary}--\r\n".encode())
    await resp.write_eof()
    return resp


async def folder_create(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    _, host = _locate(root, home, request.query.get("path", ""))
    mode_text = request.query.get("mode") or "755"
    try:
        mode = int(mode_text, 8)
    except ValueError:
        raise daemon_error(400, f"invalid mode {mode_text!r}") from None
    try:
        os.makedirs(host, exist_ok=True)
        os.chmod(host, mode & 0o7777)
    except OSError as exc:
        raise daemon_error(400, f"cannot create folder: {exc.strerror or exc}", "FILE_ACCESS_DENIED") from exc
    return web.Response(status=201)


def _delete(host: str, virtual: str, recursive: bool) -> None:
    if not os.path.lexists(host):
        raise daemon_error(404, f"{virtual}: file not found", "FILE_NOT_FOUND")
    if os.path.isdir(host) and not os.path.islink(host):
        if not recursive:
            raise daemon_error(400, f"{virtual} is a directory (use recursive=true)", "INVALID_FILE_PATH")
        remove_tree(host)
    else:
        os.unlink(host)


async def file_delete(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    virtual, host = _locate(root, home, request.query.get("path", ""))
    if virtual == "/":
        raise daemon_error(400, "refusing to delete the sandbox root", "INVALID_FILE_PATH")
    await asyncio.to_thread(_delete, host, virtual, request.query.get("recursive", "").lower() == "true")
    return web.Response(status=204)


@cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@cache
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def file_info(virtual: str, host: str) -> dict[str, Any]:
    """The toolbox ``FileInfo`` JSON of one path."""
    st = os.lstat(host)
    return {
        "name": os.path.basename(virtual.rstrip("/")) or "/",
        "path": virtual,
        "size": st.st_size,
        "isDir": stat.S_ISDIR(st.st_mode),
        "mode": stat.filemode(st.st_mode),
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "modTime": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(st.st_mtime)),
        "modifiedAt": iso(st.st_mtime),
        "owner": _user(st.st_uid),
        "group": _group(st.st_gid),
    }


def _list_dir(virtual: str, host: str) -> list[dict[str, Any]]:
    if not os.path.isdir(host):
        code, status = ("FILE_NOT_FOUND", 404) if not os.path.exists(host) else ("INVALID_FILE_PATH", 400)
        raise daemon_error(status, f"{virtual} is not a directory", code)
    entries = []
    for name in sorted(os.listdir(host)):
        try:
            entries.append(file_info(virtual.rstrip("/") + "/" + name, os.path.join(host, name)))
        except OSError:
            continue
    return entries


def _stat(virtual: str, host: str) -> dict[str, Any]:
    if not os.path.lexists(host):
        raise daemon_error(404, f"{virtual}: file not found", "FILE_NOT_FOUND")
    return file_info(virtual, host)


async def file_list(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    virtual, host = _locate(root, home, request.query.get("path") or home)
    return json_response(await asyncio.to_thread(_list_dir, virtual, host))


async def file_stat(request: web.Request) -> web.StreamResponse:
    root, home = _sandbox(request)
    virtual, host = _locate(root, home, request.query.get("path", ""))
    return json_response(_stat(virtual, host))


ROUTES: list[Route] = [
    Route("POST", PREFIX + "/files/bulk-upload", "upload", upload),
    Route("POST", PREFIX + "/files/bulk-download", "download", download),
    Route("POST", PREFIX + "/files/folder", "folder_create", folder_create),
    Route("DELETE", PREFIX + "/files", "file_delete", file_delete),
    Route("GET", PREFIX + "/files", "file_list", file_list),
    Route("GET", PREFIX + "/files/info", "file_info", file_stat),
]
