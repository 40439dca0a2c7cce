"""Is this replica the active one? The same rule kopf's peering applies, for our own loops.

kopf pauses watches and daemons on standby replicas, but not tasks we start ourselves (the
orphan sweep, warm-pool upkeep). Those ask `is_active()` before each run: it reads the kopf
peering object (ClusterKopfPeering, or KopfPeering in the first watched namespace) and applies
kopf's rule: a replica is active when no live peer has a higher priority and none shares its
priority. Standalone mode (no peering) is always active.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from .kube import Kube


def _alive(info: Mapping[str, Any], now: dt.datetime) -> bool:
    try:
        seen = dt.datetime.fromisoformat(str(info.get("lastseen")).replace("Z", "+00:00"))
    except ValueError:
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    return seen + dt.timedelta(seconds=int(info.get("lifetime", 60))) > now


def decide_active(peers: Mapping[str, Mapping[str, Any]], *, priority: int, now: dt.datetime) -> bool:
    """Pure: active iff no live peer outranks us and exactly one live peer (us) has our priority."""
    live = [int(info.get("priority", 0)) for info in peers.values() if _alive(info, now)]
    if any(p > priority for p in live):
        return False
    return live.count(priority) <= 1


async def is_active(kube: Kube, *, standalone: bool, name: str, namespaces: list[str], priority: int,
                    now: dt.datetime) -> bool:
    if standalone:
        return True
    body = await kube.get_peering(name, namespace=namespaces[0] if namespaces else None)
    if body is None:
        return False  # kopf itself stays paused without its peering object
    return decide_active(body.get("status") or {}, priority=priority, now=now)
