"""`agenttask snapshot`: register the agent image as a Daytona snapshot, list and delete snapshots.

    agenttask snapshot create [--name N] [--image IMAGE] [--cpu N] [--memory GIB] [--disk GIB]
    agenttask snapshot list [--output table|json]
    agenttask snapshot delete NAME [--missing-ok]

A snapshot is how Daytona starts sandboxes from a prepared image quickly: build
`images/agent/Dockerfile.slim`, push it to a registry Daytona can pull from, register it here and
set the operator's `AGENTTASK_DEFAULT_SNAPSHOT` (Helm `settings.defaultSnapshot`) to its name.

Everything goes through the official SDK (`AsyncDaytona(...).snapshot`). The connection comes
from the same settings as the operator's (DAYTONA_API_URL / DAYTONA_API_KEY / DAYTONA_TARGET or
their AGENTTASK_ forms), so the API key is never an argument and never printed; error messages
pass through the operator's redaction.

It does not build or push images (that is `docker build`), and it does not touch sandboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from . import __version__

DEFAULT_NAME = "agenttask-agent"
DEFAULT_IMAGE = f"ghcr.io/agenttask-operator/agenttask-agent:{__version__}"
_PAGE = 100


def add_parser(sub: Any, name: str) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help="manage Daytona snapshots of the agent image",
        description="Register the agent image as a Daytona snapshot (official SDK), list or delete snapshots. "
                    "Connection: DAYTONA_API_URL, DAYTONA_API_KEY, DAYTONA_TARGET.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="register an image as a snapshot and wait until it is active")
    create.add_argument("--name", default=DEFAULT_NAME, help=f"snapshot name (default {DEFAULT_NAME})")
    create.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"image reference Daytona can pull (default {DEFAULT_IMAGE})")
    create.add_argument("--cpu", type=_positive_int, default=None, help="vCPUs of sandboxes from it")
    create.add_argument("--memory", type=_positive_int, default=None, help="memory in GiB")
    create.add_argument("--disk", type=_positive_int, default=None, help="disk in GiB")
    create.add_argument("--entrypoint", nargs="+", default=None, metavar="ARG",
                        help="entrypoint of sandboxes from it (default: the image's)")
    create.add_argument("--exists-ok", action="store_true",
                        help="succeed when a snapshot of that name already exists (idempotent installs)")
    create.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for the snapshot to become active (default 1800)")

    listing = actions.add_parser("list", help="list snapshots")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")

    delete = actions.add_parser("delete", help="delete a snapshot by name or id")
    delete.add_argument("name", help="snapshot name or id")
    delete.add_argument("--missing-ok", action="store_true", help="succeed when it does not exist")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return number


def _describe(snapshot: Any) -> dict[str, Any]:
    state = getattr(snapshot, "state", None)
    return {
        "name": snapshot.name,
        "id": snapshot.id,
        "state": getattr(state, "value", state),
        "image": getattr(snapshot, "image_name", None),
        "cpu": getattr(snapshot, "cpu", None),
        "memory": getattr(snapshot, "mem", None),
        "disk": getattr(snapshot, "disk", None),
    }


async def _create(client: Any, args: argparse.Namespace) -> int:
    from daytona import CreateSnapshotParams, DaytonaConflictError, DaytonaNotFoundError, Resources

    resources = None
    if args.cpu is not None or args.memory is not None or args.disk is not None:
        resources = Resources(cpu=args.cpu, memory=args.memory, disk=args.disk)
    params = CreateSnapshotParams(name=args.name, image=args.image, resources=resources,
                                  entrypoint=args.entrypoint)
    try:
        snapshot = await client.snapshot.create(params, on_logs=lambda line: print(line, file=sys.stderr),
                                                timeout=args.timeout)
    except DaytonaConflictError:
        if not args.exists_ok:
            raise
        try:
            snapshot = await client.snapshot.get(args.name)
        except DaytonaNotFoundError:
            raise
        print(f"snapshot {args.name} already exists", file=sys.stderr)
    info = _describe(snapshot)
    print(f"snapshot {info['name']} {info['state']} (image {info['image']}, id {info['id']})")
    print(f"use it: helm upgrade ... --set settings.defaultSnapshot={info['name']}  "
          f"(or AGENTTASK_DEFAULT_SNAPSHOT={info['name']})", file=sys.stderr)
    return 0


async def _list(client: Any, args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        result = await client.snapshot.list(page=page, limit=_PAGE)
        items.extend(_describe(s) for s in result.items)
        if page >= (result.total_pages or 1):
            break
        page += 1
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    columns = ("name", "state", "image", "cpu", "memory", "disk")
    rows = [[str(item[c] if item[c] is not None else "-") for c in columns] for item in items]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _delete(client: Any, args: argparse.Namespace) -> int:
    from daytona import DaytonaNotFoundError

    try:
        await client.snapshot.delete(args.name)
    except DaytonaNotFoundError:
        if not args.missing_ok:
            raise
        print(f"snapshot {args.name} not found", file=sys.stderr)
        return 0
    print(f"snapshot {args.name} deleted")
    return 0


async def _main(args: argparse.Namespace) -> int:
    from daytona import AsyncDaytona, DaytonaConfig

    from . import logs
    from .settings import Settings

    settings = Settings()
    key = settings.daytona_api_key.get_secret_value() if settings.daytona_api_key else None
    logs.register_secret(key)
    client = AsyncDaytona(DaytonaConfig(api_url=settings.daytona_api_url, api_key=key,
                                        target=settings.daytona_target))
    try:
        action = {"create": _create, "list": _list, "delete": _delete}[args.action]
        return await action(client, args)
    finally:
        await client.close()  # type: ignore[no-untyped-call]


def run(args: argparse.Namespace) -> int:
    from daytona import DaytonaError

    from . import logs

    try:
        return asyncio.run(_main(args))
    except DaytonaError as exc:
        status = getattr(exc, "status_code", None)
        print(logs.redact(f"agenttask snapshot {args.action}: {exc}" + (f" (HTTP {status})" if status else "")),
              file=sys.stderr)
        return 1
