"""``agenttask sandbox-server``: run the embedded Daytona-compatible server standalone.

Once listening it prints exactly one line to stdout, ``DAYTONA_API_URL=http://HOST:PORT/api``
(flushed), so a parent process can read the URL; the isolation notice and logs go to stderr.
It serves until SIGINT/SIGTERM, then kills every sandbox process and exits 0.

Flags: ``--host`` (127.0.0.1), ``--port`` (0 = a free port), ``--api-key`` (else env
``DAYTONA_API_KEY`` or ``LOCALSANDBOX_API_KEY``; required), ``--root`` (default: a temporary
directory), ``--minute-seconds`` (60), ``--isolation auto|plain|bwrap``, and faults:
``--latency OP=SECONDS`` and ``--error-rate OP=RATE[:STATUS]`` (repeatable; OP may be ``*``),
``--rate-limit RATE[:RETRY_AFTER]``, ``--faults JSON`` (the full `faults` format), ``--seed N``.

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
from .server import LocalSandboxServer


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
    p.add_argument("--isolation", choices=("auto", "plain", "bwrap"), default="auto")
    p.add_argument("--latency", action="append", default=[], metavar="OP=SECONDS", help="inject latency (repeatable)")
    p.add_argument("--error-rate", action="append", default=[], metavar="OP=RATE[:STATUS]", help="inject errors")
    p.add_argument("--rate-limit", default=None, metavar="RATE[:RETRY_AFTER]", help="answer 429 to RATE of calls")
    p.add_argument("--faults", default=None, metavar="JSON", help="full fault settings as JSON")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")


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


async def _serve(args: argparse.Namespace, api_key: str, faults: dict[str, Any]) -> int:
    server = LocalSandboxServer(
        api_key=api_key,
        root=args.root,
        host=args.host,
        port=args.port,
        minute_seconds=args.minute_seconds,
        faults=faults,
        seed=args.seed,
        isolation=args.isolation,
        access_log=args.access_log,
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
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    try:
        return asyncio.run(_serve(args, api_key, faults))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"sandbox-server: {exc}", file=sys.stderr)
        return 1
