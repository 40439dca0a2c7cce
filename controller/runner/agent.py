"""Running the coding agent: its environment, its stdin, streaming its output, its exit code.

The agent gets the prompt on stdin and the paths of the context files in its environment; the
runner's own environment minus every variable that may hold the git token. Its stdout and
stderr are copied line by line (redacted) to the runner's stdout and stderr as they arrive, and
the last `TAIL_BYTES` of stdout are kept as its answer. Issue text is never put in argv and no
shell is involved. When the agent exits, whatever it left running in its process group is
killed so that nothing changes the working tree while the runner commits.

This module does not read task.json and does not touch git.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from .context import SECRET_ENV, Context
from .log import REDACTOR, log

TAIL_BYTES = 4096
_LINE_LIMIT = 64 * 1024  # a "line" longer than this is forwarded in pieces
_DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class AgentRun:
    exit_code: int  # shell convention: 127 not found, 126 not executable, 128+N killed by signal N
    stdout_tail: bytes
    error: str | None = None


def agent_env(environ: Mapping[str, str], ctx: Context) -> dict[str, str]:
    """The runner's environment without token-bearing variables, plus the context file paths."""
    env = {k: v for k, v in environ.items() if k not in SECRET_ENV}
    env["AGENTTASK_CONTEXT_DIR"] = str(ctx.dir)  # absolute: the agent's cwd differs
    env["AGENTTASK_PROMPT_FILE"] = str(ctx.prompt_file)
    env["AGENTTASK_SUMMARY_FILE"] = str(ctx.summary_file)
    if ctx.issue is not None:
        env["AGENTTASK_ISSUE_FILE"] = str(ctx.issue_file)
    return env


def run_agent(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdin_file: Path) -> AgentRun:
    """Run the agent to completion, streaming its output; SIGTERM/SIGINT are forwarded to it."""
    log(f"running the agent: {argv[0]} (cwd {cwd})")
    try:
        with stdin_file.open("rb") as stdin:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=dict(env), stdin=stdin,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
    except FileNotFoundError:
        return AgentRun(127, b"", f"agent command not found: {argv[0]}")
    except PermissionError:
        return AgentRun(126, b"", f"agent command is not executable: {argv[0]}")
    assert proc.stdout is not None
    assert proc.stderr is not None
    tail = bytearray()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, sys.stdout.buffer, tail), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, sys.stderr.buffer, None), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def forward(signum: int, frame: FrameType | None) -> None:
        _killpg(proc.pid, signum)

    for sig in previous:
        signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _killpg(proc.pid, signal.SIGKILL)  # leftovers of the agent must not keep editing files
        for pump in pumps:
            pump.join(_DRAIN_SECONDS)
    exit_code = 128 - code if code < 0 else code
    log(f"the agent exited with code {exit_code}")
    return AgentRun(exit_code, bytes(tail))


def _pump(src: IO[bytes], dst: IO[bytes], tail: bytearray | None) -> None:
    with src:
        for line in iter(lambda: src.readline(_LINE_LIMIT), b""):
            line = REDACTOR.bytes(line)
            try:
                dst.write(line)
                dst.flush()
            except (OSError, ValueError):
                pass  # our own output is gone; keep draining so the agent never blocks
            if tail is not None:
                tail += line
                del tail[:-TAIL_BYTES]


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
