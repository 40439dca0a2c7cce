"""Helpers for the GitHub-flow end-to-end test: an event loop thread for the in-process fakes,
signed webhook deliveries, a /proc argv sampler, a sandbox-log follower, and PNG inspection.

The fakes (FakeGitHub, the git-over-HTTPS server) are aiohttp servers; they run on their own
event loop in a thread so that the (blocking, subprocess-driven) test code can talk to the
operator while they keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from controller.github.events import sign

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-fakes", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def issues_event(owner: str, repo: str, number: int, title: str, body: str, *, clone_url: str,
                 action: str = "opened", installation: int = 99, **extra: Any) -> dict[str, Any]:
    """An `issues` webhook payload as GitHub sends it for a labelled issue by a repository owner."""
    return {
        "action": action,
        "issue": {"number": number, "title": title, "body": body, "state": "open",
                  "html_url": f"https://github.example/{owner}/{repo}/issues/{number}",
                  "user": {"login": "octocat", "type": "User"}, "author_association": "OWNER",
                  "labels": [{"name": "agenttask"}]},
        "repository": {"id": 1, "name": repo, "full_name": f"{owner}/{repo}", "owner": {"login": owner},
                       "clone_url": clone_url, "default_branch": "main", "private": True},
        "sender": {"login": "octocat", "type": "User"},
        "installation": {"id": installation},
        **extra,
    }


def deliver(url: str, body: bytes, *, event: str = "issues", secret: bytes | None, delivery: str,
            signature: str | None = None) -> tuple[int, Any]:
    """POST a webhook delivery; returns (status, parsed JSON body or None)."""
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
               "User-Agent": "GitHub-Hookshot/e2e"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret, body)
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, (json.loads(raw) if raw else None)


class ArgvSampler:
    """Reads every process's argv from /proc every few milliseconds; keeps those containing `needle`."""

    def __init__(self, needle: str, interval: float = 0.005):
        self.needle = needle.encode()
        self.interval = interval
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="argv-sampler", daemon=True)

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    argv = Path(entry.path, "cmdline").read_bytes()
                    if self.needle in argv:
                        self.hits.append(argv.replace(b"\0", b" ").decode("utf-8", "replace"))
            self.samples += 1
            time.sleep(self.interval)


async def follow_command_log(base_url: str, api_key: str, *, sandbox_id: str, session_id: str,
                             command_id: str, connected: threading.Event) -> bytes:
    """The complete output of a sandbox command, replayed from its start until it exits."""
    url = (f"{base_url}/toolbox/{sandbox_id}/process/session/{session_id}/command/{command_id}/logs"
           "?follow=true")
    output = bytearray()
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers={"Authorization": f"Bearer {api_key}"}) as ws:
        connected.set()
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                output += message.data[3:]
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                break
    return bytes(output)


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """(width, height, the set of distinct pixel values) of an 8-bit RGB/RGBA PNG, with zlib."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), f"unsupported PNG (depth {depth}, colour type {colour})"
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:  # every 4th row is plenty to tell a page from a blank
            colours.update(bytes(line[x:x + bpp]) for x in range(0, stride, bpp))
        previous = line
    return width, height, colours


@contextlib.contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
