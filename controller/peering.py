"""Is this replica the active one? The same rule kopf's peering applies, for our own loops.

kopf pauses watches and daemons on standby replicas, but not tasks we start ourselves (the
orphan sweep, warm-pool upkeep). Those ask `is_active()` before each run: it reads the kopf
peering object (ClusterKopfPeering, or KopfPeering in the first watched namespace) and applies
kopf's rule: a replica is active when no live peer has a higher priority and none shares its
priority. Standalone mode (no peering) is always active.

`preflight()` runs before kopf starts: without the peering CRD or object kopf would wait,
silently and forever, for a peering it cannot join, so the operator refuses to start instead
and says what to install (or to run `--standalone`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from .errors import OperatorError
from .kube import Kube


class PeeringMissing(Exception):
    """The peering CRD or object this (non-standalone) operator needs does not exist."""


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


async def preflight(kube: Kube, *, name: str, namespaces: list[str]) -> str | None:
    """Check the peering resource before kopf starts.

    Raises `PeeringMissing` when the peering CRD is not served: kopf would wait, silently and
    forever, for a peering it cannot join. Returns a warning to log when the CRD is served but
    the object does not exist *yet*: kopf then starts paused and resumes as soon as the object
    appears. That is the normal order of a fresh `helm install --wait`: the chart creates the
    object in a post-install hook, which Helm runs only once the Deployment is Ready, so the
    replicas must start (and be Ready, as standbys are) without it. The CRD is looked up
    through API discovery, which needs no RBAC beyond being authenticated."""
    namespace = namespaces[0] if namespaces else None
    kind = f"KopfPeering {namespace}/{name}" if namespace else f"ClusterKopfPeering {name}"
    plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
    try:
        if await kube.get_peering(name, namespace=namespace) is not None:
            return None
        served = await kube.served_resources("kopf.dev", "v1")
    except OperatorError as exc:
        raise PeeringMissing(f"cannot read the {kind} peering object: {exc}") from exc
    if served is None or plural not in served:
        raise PeeringMissing(f"the peering CRD {plural}.kopf.dev is not installed: apply crds/kopf-peering.yaml (the "
                             "Helm chart installs it), or run a single replica with --standalone")
    return (f"the peering object {kind} does not exist yet: every replica stays paused (standing by) until it "
            "is created (the Helm chart creates it once the release is installed), or run a single replica "
            "with --standalone")
