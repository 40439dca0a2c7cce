"""``agenttask sandbox-server``: run the embedded Daytona-compatible server standalone.

Once listening it prints exactly one line to stdout, ``DAYTONA_API_URL=http://HOST:PORT/api``
(flushed), so a parent process can read the URL; the isolation notice and logs go to stderr.
It serves until SIGINT/SIGTERM, then kills every sandbox process and exits 0.

Flags: ``--host`` (127.0.0.1), ``--port`` (0 = a free port), ``--api-key`` (else env
``DAYTONA_API_KEY`` or ``LOCALSANDBOX_API_KEY``; required), ``--root`` (default: a temporary
directory), ``--minute-seconds`` (60), ``--isolation plain|bwrap|container|auto`` (default plain; container:
sandboxes of a snapshot whose image is in the project's podman store, where ``agenttask images
build`` puts them, run in a container of it; ``--bwrap PATH`` picks the bubblewrap); settings (see
`settings`): ``--transition-seconds S`` (every transitional state; default 0.05),
``--transition STATE=SECONDS`` (repeatable), ``--quota-cpu/--quota-memory/--quota-disk N``
(organisation totals), ``--max-cpu-per-sandbox/--max-memory-per-sandbox/--max-disk-per-sandbox N``,
``--list-lag SECONDS``, ``--failed-auth LIMIT[:TTL]``, ``--settings JSON`` (the full format);
and faults: ``--latency OP=SECONDS`` and ``--error-rate OP=RATE[:STATUS]`` (repeatable; OP may
be ``*``), ``--rate-limit RATE[:RETRY_AFTER]``, ``--faults JSON`` (the full `faults` format),
``--seed N``.

Does not: read the key from anywhere but its flag and those two variables, or print it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from .faults import parse_error_flag, parse_latency_flag, parse_rate_limit_flag
from .isolation import MODES
from .server import LocalSandboxServer
from .settings import Settings, merge_settings, parse_transition_flag


def add_parser(subparsers: Any, name: str) -> None:
    """Add the sub-command `name` to an argparse `subparsers` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help="run the embedded Daytona-compatible sandbox server",
        description="Run the embedded Daytona-compatible sandbox server (see controller/localsandbox).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind (0 = any free port)")
    p.add_argument(
        "--api-key", default=None, help="API key clients must send (or DAYTONA_API_KEY / LOCALSANDBOX_API_KEY)"
    )
    p.add_argument("--root", default=None, help="directory holding the sandboxes (default: a temporary directory)")
    p.add_argument("--minute-seconds", type=float, default=60.0, help="length of a lifecycle 'minute' in seconds")
    p.add_argument("--isolation", choices=MODES, default="plain",
                   help="plain (default: host processes, host paths), bwrap, container, or auto (bwrap if it works)")
    p.add_argument("--bwrap", default=None, metavar="PATH", help="bubblewrap binary (default: bwrap on PATH)")
    p.add_argument("--latency", action="append", default=[], metavar="OP=SECONDS", help="inject latency (repeatable)")
    p.add_argument("--error-rate", action="append", default=[], metavar="OP=RATE[:STATUS]", help="inject errors")
    p.add_argument("--rate-limit", default=None, metavar="RATE[:RETRY_AFTER]", help="answer 429 to RATE of calls")
    p.add_argument("--faults", default=None, metavar="JSON", help="full fault settings as JSON")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--transition-seconds", type=float, default=None, metavar="S",
                   help="seconds every transitional state (creating, stopping, ...) lasts (default 0.05)")
    p.add_argument("--transition", action="append", default=[], metavar="STATE=SECONDS",
                   help="seconds one transitional state lasts (repeatable)")
    for flag, key in (("--quota-cpu", "total_cpu"), ("--quota-memory", "total_memory"), ("--quota-disk", "total_disk"),
                      ("--max-cpu-per-sandbox", "max_cpu_per_sandbox"),
                      ("--max-memory-per-sandbox", "max_memory_per_sandbox"),
                      ("--max-disk-per-sandbox", "max_disk_per_sandbox")):
        p.add_argument(flag, type=int, default=None, dest=key, metavar="N", help=f"quota {key} (GiB for memory/disk)")
    p.add_argument("--list-lag", type=float, default=None, metavar="SECONDS", help="how late GET /sandbox sees changes")
    p.add_argument("--failed-auth", default=None, metavar="LIMIT[:TTL]",
                   help="answer 429 after LIMIT bad API keys per client within TTL seconds (default 60)")
    p.add_argument("--settings", default=None, metavar="JSON", help="full server settings as JSON")  # fmt: skip


def faults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The fault JSON described by the command-line flags (raises ValueError on bad flags)."""
    faults: dict[str, Any] = json.loads(args.faults) if args.faults else {}
    if not isinstance(faults, dict):
        raise ValueError("--faults must be a JSON object")
    latency = dict(faults.get("latency") or {})
    for flag in args.latency:
        op, secs = parse_latency_flag(flag)
        latency[op] = secs
    errors = dict(faults.get("errors") or {})
    for flag in args.error_rate:
        op, err = parse_error_flag(flag)
        errors[op] = {"rate": err.rate, "status": err.status}
    if latency:
        faults["latency"] = latency
    if errors:
        faults["errors"] = errors
    if args.rate_limit:
        rl = parse_rate_limit_flag(args.rate_limit)
        faults["rate_limit"] = {"rate": rl.rate, "retry_after": rl.retry_after}
    return faults


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings described by the command-line flags (raises ValueError on bad flags)."""
    settings = merge_settings(Settings(), json.loads(args.settings) if args.settings else None)
    transitions: dict[str, float] = {}
    if args.transition_seconds is not None:
        transitions["*"] = args.transition_seconds
    for flag in args.transition:
        state, secs = parse_transition_flag(flag)
        transitions[state] = secs
    quota = {k: getattr(args, k) for k in ("total_cpu", "total_memory", "total_disk", "max_cpu_per_sandbox",
                                           "max_memory_per_sandbox", "max_disk_per_sandbox")
             if getattr(args, k) is not None}  # fmt: skip
    extra: dict[str, Any] = {}
    if transitions:
        extra["transitions"] = transitions
    if quota:
        extra["quota"] = quota
    if args.list_lag is not None:
        extra["list_lag"] = args.list_lag
    if args.failed_auth:
        limit, _, ttl = args.failed_auth.partition(":")
        extra["failed_auth"] = {"limit": int(limit), "ttl": float(ttl) if ttl else 60}
    return merge_settings(settings, extra)


def _project_podman_env() -> dict[str, str]:
    """The environment that points podman at the project's own store (`controller.images`)."""
    from controller.images.podman import Podman  # only container mode needs it

    podman = Podman.default()
    podman.prepare()
    return podman.env()


async def _serve(args: argparse.Namespace, api_key: str, faults: dict[str, Any], settings: Settings) -> int:
    server = LocalSandboxServer(
        api_key=api_key,
        root=args.root,
        host=args.host,
        port=args.port,
        minute_seconds=args.minute_seconds,
        faults=faults,
        seed=args.seed,
        isolation=args.isolation,
        bwrap=args.bwrap,
        podman_env=_project_podman_env() if args.isolation == "container" else None,
        access_log=args.access_log,
        settings=settings,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        assert server.isolation is not None
        print(f"localsandbox: {server.isolation.describe()}; root {server.root}", file=sys.stderr, flush=True)
        print(f"DAYTONA_API_URL={server.api_url}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    api_key = args.api_key or os.environ.get("DAYTONA_API_KEY") or os.environ.get("LOCALSANDBOX_API_KEY")
    if not api_key:
        print("sandbox-server: an API key is required (--api-key, DAYTONA_API_KEY or LOCALSANDBOX_API_KEY)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        faults = faults_from_args(args)
    except ValueError as exc:
        print(f"sandbox-server: bad fault flags: {exc}", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"sandbox-server: bad settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    try:
        return asyncio.run(_serve(args, api_key, faults, settings))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"sandbox-server: {exc}", file=sys.stderr)
        return 1
