"""`agenttask run`: the operator process (kopf) with the project's settings and JSON logs.

Kubernetes access comes from $KUBECONFIG or the in-cluster service account (kopf's and kr8s'
own login); Daytona from DAYTONA_API_URL / DAYTONA_API_KEY or the AGENTTASK_* settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import warnings
from typing import Any

from .settings import Settings


def add_parser(sub: Any, name: str) -> None:
    parser = sub.add_parser(name, help="run the operator (kopf) against the current cluster")
    parser.add_argument("--namespace", "-n", action="append", default=None,
                        help="watch this namespace (repeatable; default: AGENTTASK_NAMESPACES or all)")
    parser.add_argument("--standalone", action="store_true", default=None,
                        help="no peering: this process is the only replica")
    parser.add_argument("--http-port", type=int, default=None, help="port of /metrics, /healthz, webhook")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    parser.add_argument("--verbose", "-v", action="store_true")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = args.namespace
    if args.standalone:
        overrides["standalone"] = True
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    return Settings(**overrides)


async def serve(settings: Settings, *, stop_flag: asyncio.Event | None = None,
                ready_flag: asyncio.Event | None = None) -> None:
    """Run the operator until `stop_flag` is set (or forever). Handlers come from `handlers`.
    Raises `peering.PeeringMissing` before starting when peering is on but not installed, and
    `shards.ShardingMisconfigured` when sharded mode cannot tell this replica's shard."""
    import kopf

    from . import handlers, peering, shards
    from .kube import Kube

    home: tuple[int, str] | None = None
    if settings.shards > 1:
        home = shards.placement(shards=settings.shards, pod_name=os.environ.get("POD_NAME"),
                                replica_id=settings.replica_id, lease_namespace=settings.lease_namespace,
                                pod_namespace=os.environ.get("POD_NAMESPACE"), namespaces=settings.namespaces)

    if settings.peering:
        kube = await Kube.connect()
        try:
            warning = await peering.preflight(kube, name=settings.peering_name, namespaces=settings.namespaces)
        finally:
            await kube.close()
        if warning:
            logging.getLogger("controller.operator").warning("%s", warning)

    await kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=not settings.peering,
        peering_name=settings.peering_name if settings.peering else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(app=handlers.App(settings=settings, home_shard=home)),
    )


def run(args: argparse.Namespace) -> int:
    from . import logs

    # kr8s warns about apiserver versions newer than it was tested with; harmless for our calls
    warnings.filterwarnings("ignore", message="Kubernetes version .* is not supported", category=UserWarning)
    logs.configure(level=logging.DEBUG if args.verbose else logging.INFO, json_format=args.log_format == "json")
    from .peering import PeeringMissing
    from .shards import ShardingMisconfigured

    settings = settings_from_args(args)
    try:
        asyncio.run(serve(settings))
    except (PeeringMissing, ShardingMisconfigured) as exc:
        logging.getLogger("controller.operator").error("not starting: %s", exc)
        return 2
    return 0
