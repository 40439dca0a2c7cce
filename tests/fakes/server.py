"""The one piece the fakes share: serving an aiohttp app on a free 127.0.0.1 port.

`LocalServer` is an async context manager; subclasses build their `web.Application` in
`build_app()`, and `url` is `http://127.0.0.1:<port>` while it runs (`https://` when an
`ssl_context` is set before entering). Nothing else lives here.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any, Self

from aiohttp import web


class LocalServer:
    runner_options: dict[str, Any] = {}  # extra `web.AppRunner` keyword arguments
    ssl_context: ssl.SSLContext | None = None  # serve https with this context

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.build_app(), access_log=None, **self.runner_options)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if self.ssl_context else 'http'}://{host}:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
