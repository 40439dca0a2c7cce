"""A local smart-HTTP git server with Basic auth, for tests of credential handling (aiohttp).

`GitHttpServer(root, username=..., password=...)` serves the bare repositories under `root`
through git's own CGI program, `git http-backend`, on a free 127.0.0.1 port. Requests without
the right Basic credentials get `401` + `WWW-Authenticate`, which is what makes a git client
ask its askpass helper — the same path as against github.com over https, minus TLS. Instead of
a fixed password, `password_check` can decide (e.g. `FakeGitHub.token_valid`, so that git
accepts exactly the installation tokens the fake GitHub considers unexpired). Every request is
recorded as (method, path, username or None) for assertions.

It does not do TLS, dumb HTTP, or per-repository permissions.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.fakes.server import LocalServer


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str
    username: str | None  # the Basic username if the credentials were right, else None


class GitHttpServer(LocalServer):
    def __init__(
        self, root: Path, *, username: str, password: str = "",
        password_check: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        self.username = username
        self.password = password
        self.password_check = password_check
        self.requests: list[GitRequest] = []

    # Request bodies go to git untouched; http-backend inflates gzip itself.
    runner_options = {"auto_decompress": False}

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        return app

    def repo_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        if not secrets.compare_digest(user, self.username):
            return False
        if self.password_check is not None:
            return self.password_check(password)
        return bool(self.password) and secrets.compare_digest(password, self.password)

    async def _handle(self, request: web.Request) -> web.Response:
        authorized = self._authorized(request.headers.get("Authorization"))
        self.requests.append(GitRequest(request.method, request.path, self.username if authorized else None))
        if not authorized:
            return web.Response(status=401, text="Authentication required\n",
                                headers={"WWW-Authenticate": 'Basic realm="fake-git"'})
        body = await request.read()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.username,
            "REMOTE_ADDR": "127.0.0.1",
        }
        if "Content-Encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if "Git-Protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend", env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(body)
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name and name.lower() != "content-length":
                headers[name.strip()] = value.strip()
        if proc.returncode and status == 200:
            return web.Response(status=500, text=err.decode("utf-8", "replace"))
        return web.Response(status=status, body=payload, headers=headers)
