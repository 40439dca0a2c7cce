"""Periodic upkeep on the active replica: warm pools to their configured sizes, then the orphan sweep.

Started by `handlers.configure` on every replica; each round first asks `peering.is_active`
(in sharded mode: whether this replica owns shard 0), so standby replicas do nothing (the
sweep pauses with the rest of the operator). Errors are logged and counted; the loop never dies of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from . import gc, logs, peering
from .errors import OperatorError
from .runtime import Runtime

log = logging.getLogger(__name__)


def sweeper(rt: Runtime) -> gc.Sweeper:
    s = rt.settings
    return gc.Sweeper(sandboxes=rt.sandboxes, kube=rt.kube, instance_id=s.instance_id, namespaces=s.namespaces,
                      grace_seconds=s.gc_grace_seconds, delete_concurrency=s.gc_delete_concurrency,
                      dry_run=s.gc_dry_run)


async def one_round(rt: Runtime, sweep: gc.Sweeper, *, priority: int,
                    sharded: Callable[[], bool] | None = None) -> gc.SweepReport | None:
    """`sharded`: in sharded mode, whether this replica owns shard 0 (whose owner does the upkeep)."""
    s = rt.settings
    now = rt.clock()
    if sharded is not None:
        if not sharded():
            return None
    elif not await peering.is_active(rt.kube, standalone=not s.peering, name=s.peering_name,
                                     namespaces=s.namespaces, priority=priority, now=now):
        return None
    for snapshot, size in sorted(s.warm_pools.items()):
        await rt.sandboxes.ensure_warm_pool(snapshot, size)
    return await sweep.sweep(now=now)


async def run_forever(rt: Runtime, *, priority: int, sharded: Callable[[], bool] | None = None) -> None:
    interval = rt.settings.gc_interval_seconds
    sweep = sweeper(rt)
    await asyncio.sleep(min(5.0, interval) * random.uniform(0.5, 1.0))
    while True:
        try:
            report = await one_round(rt, sweep, priority=priority, sharded=sharded)
            if report is not None and report.deleted:
                log.info("sweep: %d sandboxes seen, %d deleted", report.seen, len(report.deleted))
        except OperatorError as exc:
            log.warning("maintenance round failed: %s", logs.redact(str(exc)))
        except Exception:
            log.exception("maintenance round crashed")
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
