"""A sandbox takes every process it started with it, also those that left its process groups.

The runner starts the agent in a session of its own (so that it can signal the agent's whole
tree); before, such a process outlived its sandbox's stop and delete, and even the server. On
Daytona the container takes everything with it; the embedded server finds them by the
sandbox's ``DAYTONA_SANDBOX_ID`` in their environment.
"""

from __future__ import annotations

import os
import time

from daytona import AsyncDaytona, SessionExecuteRequest

from .conftest import eventually

# a process in a session (and process group) of its own, that ignores SIGTERM and sleeps on
ESCAPE = ("python3 -c 'import os, signal, sys, time\n"
          "if os.fork(): sys.exit(0)\n"
          "os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "print(os.getpid(), flush=True); time.sleep(600)' > escaped.pid 2> /dev/null < /dev/null")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _escaped_pid(sandbox: object) -> int:
    async def read() -> int | None:
        out = (await sandbox.process.exec("cat escaped.pid")).result.strip()  # type: ignore[attr-defined]
        return int(out) if out.isdigit() else None
    return await eventually(read)


async def test_delete_and_stop_kill_processes_that_left_the_sandboxs_groups(daytona: AsyncDaytona) -> None:
    deleted = await daytona.create()
    await deleted.process.create_session("s")
    await deleted.process.execute_session_command("s", SessionExecuteRequest(command=ESCAPE))
    pid = await _escaped_pid(deleted)
    assert _alive(pid) and os.getsid(pid) == pid  # it is its own session: no group the server started
    await daytona.delete(deleted)
    await eventually(lambda: _gone(pid))

    stopped = await daytona.create()
    await stopped.process.exec(ESCAPE)
    pid = await _escaped_pid(stopped)
    started = time.monotonic()
    await stopped.stop()
    await eventually(lambda: _gone(pid))  # SIGTERM ignored: the SIGKILL after the grace got it
    assert time.monotonic() - started < 10
    await daytona.delete(stopped)


async def _gone(pid: int) -> bool:
    return not _alive(pid)
