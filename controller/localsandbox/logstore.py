"""On-disk command logs: an append-only file of framed stdout/stderr chunks.

Does: store each chunk a command prints as one record ``[stream:1][length:4, big-endian]
[bytes]`` (stream 1 = stdout, 2 = stderr) so the order of stdout and stderr is kept and a
follower can resume from a byte offset; read records back from an offset (complete records
only); render a log as the ``{output, stdout, stderr}`` snapshot, keeping at most the last
`cap` bytes of each; and `Pulse`, a wake-up signal followers wait on between appends.

Does not: keep log contents in memory beyond one read, or know about processes or HTTP.
"""

from __future__ import annotations

import asyncio
import os
import struct

STDOUT = 1
STDERR = 2
_HEADER = struct.Struct(">BI")
SNAPSHOT_CAP = 8 * 1024 * 1024


class LogWriter:
    """Appends records to one log file (creating it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, stream: int, data: bytes) -> None:
        """Write one record; a single write() so readers never see half a header."""
        if self._fd is None or not data:
            return
        os.write(self._fd, _HEADER.pack(stream, len(data)) + data)

    def close(self) -> None:
        """Close the file; further appends are ignored."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_records(path: str, offset: int, max_bytes: int = 1 << 20) -> tuple[list[tuple[int, bytes]], int]:
    """Complete records from byte `offset` (about `max_bytes` of them) and the offset after them."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            buf = fh.read(max_bytes + _HEADER.size)
            # make sure a large record that straddles max_bytes is read completely
            if len(buf) >= _HEADER.size:
                _, first_len = _HEADER.unpack_from(buf, 0)
                if first_len + _HEADER.size > len(buf):
                    buf += fh.read(first_len + _HEADER.size - len(buf))
    except FileNotFoundError:
        return [], offset
    records: list[tuple[int, bytes]] = []
    pos = 0
    while pos + _HEADER.size <= len(buf):
        stream, length = _HEADER.unpack_from(buf, pos)
        end = pos + _HEADER.size + length
        if end > len(buf):
            break
        records.append((stream, buf[pos + _HEADER.size : end]))
        pos = end
    return records, offset + pos


def read_snapshot(path: str, cap: int = SNAPSHOT_CAP) -> tuple[str, str, str]:
    """(output, stdout, stderr) as text, each limited to its last `cap` bytes."""
    out, err, both = bytearray(), bytearray(), bytearray()
    offset = 0
    while True:
        records, offset = read_records(path, offset)
        if not records:
            break
        for stream, data in records:
            (out if stream == STDOUT else err).extend(data)
            both.extend(data)
            for buf in (out, err, both):
                if len(buf) > 2 * cap:
                    del buf[: len(buf) - cap]

    def text(buf: bytearray) -> str:
        return bytes(buf[-cap:]).decode("utf-8", "replace")

    return text(both), text(out), text(err)


class Pulse:
    """A repeatable wake-up: `wait()` returns a future that the next `fire()` resolves."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def wait(self) -> asyncio.Future[None]:
        """Register interest now (before checking for data), await the result later."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        fut.add_done_callback(self._waiters.discard)
        return fut

    def fire(self) -> None:
        """Wake every current waiter."""
        for fut in list(self._waiters):
            if not fut.done():
                fut.set_result(None)
