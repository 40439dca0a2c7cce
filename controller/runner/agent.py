"""Running the coding agent: its environment, its stdin, streaming its output, stopping it, its exit code.

The agent gets the prompt on stdin and the paths of the context files in its environment; the
runner's own environment minus every variable that may hold the git token. Issue text is never
put in argv and no shell is involved.

Output: with `stream=True` (Claude Code's stream-json) stdout is read line by line into a
`StreamParser`, and only the readable progress it makes of each line is printed (redacted); a
line longer than `STREAM_LINE_LIMIT` is skipped, so memory stays bounded whatever the agent
prints. Otherwise stdout and stderr are copied line by line (redacted) as they arrive and the
last `TAIL_BYTES` of stdout are kept as the agent's answer. stderr is always copied through.

Stopping: SIGTERM/SIGINT to the runner are forwarded to the agent's process group. At the
`deadline` (monotonic), or `COST_GRACE_SECONDS` after the stream reported a cost above
`max_cost_usd` without the agent ending by itself, the group gets SIGTERM and, `KILL_GRACE_SECONDS`
later, SIGKILL. When the agent exits, whatever it left running is killed so that nothing changes
the working tree while the runner commits: its process group, and — because Claude Code runs
each Bash command in a session of its own — every other descendant too. On Linux the runner
makes itself a child subreaper (prctl), so orphans of the agent become the runner's children
and are found by walking /proc from the runner's pid.

This module does not read task.json, does not decide what a failure means, and does not touch git.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from .context import SECRET_ENV, Context
from .log import REDACTOR, log
from .stream import StreamParser

TAIL_BYTES = 4096
STREAM_LINE_LIMIT = 4 * 1024 * 1024  # a stream-json event longer than this is skipped
COST_GRACE_SECONDS = 5.0
KILL_GRACE_SECONDS = 10.0
_LINE_LIMIT = 64 * 1024  # a text "line" longer than this is forwarded in pieces
_DRAIN_SECONDS = 10.0
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class AgentRun:
    exit_code: int  # shell convention: 127 not found, 126 not executable, 128+N killed by signal N
    stdout_tail: bytes
    error: str | None = None  # why it could not be started
    stream: StreamParser | None = None  # with stream=True
    timed_out_after: float | None = None  # seconds it was allowed, when stopped at the deadline
    stopped_at_cost: float | None = None  # the cost it had reported, when stopped for it


def agent_env(environ: Mapping[str, str], ctx: Context) -> dict[str, str]:
    """The runner's environment without token-bearing variables, plus the context file paths."""
    env = {k: v for k, v in environ.items() if k not in SECRET_ENV}
    env["AGENTTASK_CONTEXT_DIR"] = str(ctx.dir)  # absolute: the agent's cwd differs
    env["AGENTTASK_PROMPT_FILE"] = str(ctx.prompt_file)
    env["AGENTTASK_SUMMARY_FILE"] = str(ctx.summary_file)
    if ctx.issue is not None:
        env["AGENTTASK_ISSUE_FILE"] = str(ctx.issue_file)
    return env


def run_agent(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdin_file: Path, stream: bool = False,
    deadline: float | None = None, max_cost_usd: float | None = None, session_file: Path | None = None,
) -> AgentRun:
    """Run the agent to completion (or until it is stopped), streaming its output. With a stream
    and `session_file`, the session id is written there as soon as the stream names it."""
    log(f"running the agent: {argv[0]} (cwd {cwd})")
    started = time.monotonic()
    _become_subreaper()
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
    parser = StreamParser() if stream else None
    out = (threading.Thread(target=_pump_stream, args=(proc.stdout, sys.stdout.buffer, parser, session_file),
                            daemon=True)
           if parser is not None else
           threading.Thread(target=_pump, args=(proc.stdout, sys.stdout.buffer, tail), daemon=True))
    pumps = [out, threading.Thread(target=_pump, args=(proc.stderr, sys.stderr.buffer, None), daemon=True)]
    for pump in pumps:
        pump.start()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def forward(signum: int, frame: FrameType | None) -> None:
        _killpg(proc.pid, signum)

    for sig in previous:
        signal.signal(sig, forward)
    try:
        returncode, timed_out, cost_stop = _wait(
            proc, parser, deadline=deadline, max_cost_usd=max_cost_usd, started=started)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _killpg(proc.pid, signal.SIGKILL)  # leftovers of the agent must not keep editing files
        _kill_descendants()
        for pump in pumps:
            pump.join(_DRAIN_SECONDS)
    exit_code = 128 - returncode if returncode < 0 else returncode
    log(f"the agent exited with code {exit_code}")
    return AgentRun(exit_code, bytes(tail), stream=parser, timed_out_after=timed_out, stopped_at_cost=cost_stop)


def _wait(
    proc: subprocess.Popen[bytes], parser: StreamParser | None, *, deadline: float | None,
    max_cost_usd: float | None, started: float,
) -> tuple[int, float | None, float | None]:
    """(returncode, seconds allowed if stopped at the deadline, cost if stopped for it)."""
    timed_out: float | None = None
    cost_stop: float | None = None
    over_cost_since: float | None = None
    kill_at: float | None = None
    while True:
        try:
            return proc.wait(timeout=_POLL_SECONDS), timed_out, cost_stop
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if kill_at is not None:
            if now >= kill_at:
                log(f"the agent did not stop within {KILL_GRACE_SECONDS:.0f}s of SIGTERM; killing it")
                _killpg(proc.pid, signal.SIGKILL)
                kill_at = float("inf")
            continue
        if deadline is not None and now >= deadline:
            timed_out = deadline - started
            log(f"the agent's time is up ({timed_out:.0f}s); stopping it")
        cost = parser.cost_seen if parser is not None else None
        if timed_out is None and max_cost_usd is not None and cost is not None and cost > max_cost_usd:
            over_cost_since = over_cost_since if over_cost_since is not None else now
            if now - over_cost_since >= COST_GRACE_SECONDS:
                cost_stop = cost
                log(f"the agent reported a cost of ${cost:.4f}, above agent.maxCostUsd; stopping it")
        if timed_out is not None or cost_stop is not None:
            _killpg(proc.pid, signal.SIGTERM)
            kill_at = now + KILL_GRACE_SECONDS


def _pump(src: IO[bytes], dst: IO[bytes], tail: bytearray | None) -> None:
    with src:
        for line in iter(lambda: src.readline(_LINE_LIMIT), b""):
            line = REDACTOR.bytes(line)
            _write(dst, line)
            if tail is not None:
                tail += line
                del tail[:-TAIL_BYTES]


def _pump_stream(src: IO[bytes], dst: IO[bytes], parser: StreamParser, session_file: Path | None) -> None:
    skipping = False
    recorded: str | None = None
    with src:
        for line in iter(lambda: src.readline(STREAM_LINE_LIMIT), b""):
            complete = line.endswith(b"\n")
            if skipping or (not complete and len(line) >= STREAM_LINE_LIMIT):
                if not skipping:
                    log(f"skipped a stream-json line longer than {STREAM_LINE_LIMIT} bytes")
                skipping = not complete
                continue
            try:
                progress = parser.feed(line)
            except Exception as e:  # a parser bug must not stop the agent's output
                progress = [f"(unreadable stream-json line: {e!r})"]
            for text in progress:
                _write(dst, (REDACTOR.text(text) + "\n").encode("utf-8", "replace"))
            if session_file is not None and parser.session_id and parser.session_id != recorded:
                recorded = parser.session_id
                _record_session(session_file, recorded)


def _record_session(path: Path, session_id: str) -> None:
    """Write the session id beside, then rename over: a reader never sees half of it."""
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(session_id + "\n")
        os.replace(tmp, path)
    except OSError as e:
        log(f"could not record the agent's session id: {e}")


def _write(dst: IO[bytes], data: bytes) -> None:
    try:
        dst.write(data)
        dst.flush()
    except (OSError, ValueError):
        pass  # our own output is gone; keep draining so the agent never blocks


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    """Make orphaned descendants of the agent children of the runner (Linux); False if not possible."""
    try:
        import ctypes  # optional: a Python built without ctypes still runs the agent

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError):
        return False


def _kill_descendants() -> None:
    """SIGKILL every live descendant of this process (found through /proc), leaves first or not."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    pending = list(children.get(me, []))
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
