"""Follows an agent command's output over Daytona's log websocket and keeps a bounded tail.

The tail is what `status.logTail` shows (redacted by the supervisor before it is written).
Following replays the output from the start, so a restarted operator rebuilds the same tail.
`exited` is set when the stream ends, which wakes the supervisor as soon as the command exits
instead of waiting for its next poll; `changed` when new output arrived (the supervisor clears
it when it takes the tail), `interrupted` when an attempt to follow failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import logs
from .errors import OperatorError

_RETRY_SECONDS = 2.0


class LogFollower:
    def __init__(self, sandboxes: Any, sandbox: Any, session_id: str, command_id: str, *, limit: int,
                 logger: logging.Logger | logging.LoggerAdapter[Any]):
        self._sandboxes = sandboxes
        self._sandbox = sandbox
        self.session_id = session_id
        self.command_id = command_id
        self._limit = limit
        self._buffer = ""
        self._task: asyncio.Task[None] | None = None
        self._logger = logger
        self.exited = asyncio.Event()
        self.changed = asyncio.Event()
        self.interrupted = asyncio.Event()
        self.failures = 0  # stream attempts that failed

    @property
    def streaming(self) -> bool:
        """The stream is being followed and its last attempt did not fail: its end will say when
        the command exits."""
        return self._task is not None and not self._task.done() and self.failures == 0

    def _append(self, chunk: str) -> None:
        self._buffer = (self._buffer + chunk)[-self._limit * 2:]
        self.changed.set()

    def replace(self, output: str) -> None:
        self._buffer = output[-self._limit * 2:]

    def tail(self) -> str:
        text = logs.redact(self._buffer)
        return text[-self._limit:]

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            if self.exited.is_set():
                return
            self._task = asyncio.create_task(self._run(), name=f"logs-{self.command_id}")

    async def _run(self) -> None:
        while True:
            self._buffer = ""  # the stream replays from the start
            try:
                await self._sandboxes.follow_logs(self._sandbox, self.session_id, self.command_id, self._append)
                self.exited.set()
                return
            except OperatorError as exc:
                self.failures += 1
                self.interrupted.set()
                self._logger.debug("log stream interrupted: %s", logs.redact(str(exc)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the SDK raises plain errors on odd closes
                self.failures += 1
                self.interrupted.set()
                self._logger.debug("log stream failed: %s", logs.redact(repr(exc)))
            await asyncio.sleep(_RETRY_SECONDS)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
