"""Sharded mode: several replicas share the tasks, each owning a deterministic share.

With `shards` > 1 every replica (a StatefulSet pod; its ordinal is its home shard) watches all
AgentTasks, but supervises only the tasks whose shard it owns: `shard_of(uid)` hashes the
task's UID. Ownership of a shard is a `coordination.k8s.io/v1` Lease, one per shard, written
only with the resourceVersion it was read at, so two replicas never both take one:

- a replica acquires its home shard's Lease (creating it if missing) and renews it every
  third of `shard_lease_seconds`;
- a shard whose Lease nobody renewed for a whole lease duration (its replica died, as this
  replica observed it: the Lease's resourceVersion did not change for that long on this
  replica's own clock, so clock skew between nodes does not matter) is taken over by any live
  replica: the loss of one shard is covered within about one lease duration;
- when the home replica is back, it asks for its shard (annotation `agenttask.io/wanted-by`);
  the foster stops the shard's supervisors at their next step boundary, waits for them to
  exit, and releases the Lease; the home replica then acquires it;
- a replica whose renewals fail stops supervising the shard after two thirds of a lease
  duration, a third before anyone may take it over. Where two replicas still overlap (a paused
  process), the status writes that record an intent before a side effect (`plan.py`'s claim)
  stop the second one from creating a sandbox or starting an agent twice.

Admission limits are split, not shared: shard `i` admits at most `share(limit, shards, i)`
tasks, so the shards together never exceed `maxActiveSandboxes`, and a replica fostering a
shard admits that shard's share too. Per-namespace limits and AgentTaskQuota concurrency caps
are counted per shard (see docs/sharding.md). Operator-wide loops (orphan sweep, warm pools,
quota status) run on the owner of shard 0.

The pure rules (`shard_of`, `share`, `ordinal_of`, `decide`) are separate from the loop
(`ShardLeases`), which is the only part that does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import logs, metrics
from .admission import AdmissionQueue, GroupsOf
from .errors import OperatorError
from .kube import Conflict, Kube

log = logging.getLogger(__name__)

WANTED_BY = "agenttask.io/wanted-by"
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def shard_of(uid: str, shards: int) -> int:
    """The shard a task belongs to: stable for its life (its UID never changes), even over shards."""
    if shards <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % shards


def share(limit: int, shards: int, shard: int) -> int:
    """Shard `shard`'s part of a limit: the parts differ by at most one and add up to `limit`."""
    return limit // shards + (1 if shard < limit % shards else 0)


def ordinal_of(name: str | None) -> int | None:
    """A StatefulSet pod's ordinal: the number its name ends with (`agenttask-operator-2` → 2)."""
    match = re.search(r"-(\d+)$", name or "")
    return int(match.group(1)) if match else None


class ShardingMisconfigured(Exception):
    """Sharded mode cannot tell this replica's shard or where the Leases live."""


def placement(*, shards: int, pod_name: str | None, replica_id: str,
              lease_namespace: str | None, pod_namespace: str | None, namespaces: list[str]) -> tuple[int, str]:
    """(home shard, Lease namespace) of this replica, or `ShardingMisconfigured` saying what to set."""
    ordinal = ordinal_of(pod_name) if pod_name else ordinal_of(replica_id)
    if ordinal is None:
        raise ShardingMisconfigured(
            f"sharded mode ({shards} shards) needs this replica's shard: run it as a StatefulSet pod (POD_NAME "
            f"ending in its ordinal) or give it an AGENTTASK_REPLICA_ID ending in one (not {pod_name or replica_id!r})")
    if ordinal >= shards:
        raise ShardingMisconfigured(f"this replica's ordinal {ordinal} is not one of the {shards} shards: "
                                    "scale the StatefulSet to AGENTTASK_SHARDS replicas")
    namespace = lease_namespace or pod_namespace or (namespaces[0] if namespaces else None)
    if not namespace:
        raise ShardingMisconfigured("sharded mode needs a namespace for its Leases: set AGENTTASK_LEASE_NAMESPACE "
                                    "(or POD_NAMESPACE)")
    return ordinal, namespace


def lease_name(instance_id: str, shard: int) -> str:
    return f"agenttask-{instance_id}-shard-{shard}"


class Move(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, held by us
    ACQUIRE = "acquire"  # free or expired: take it
    RENEW = "renew"  # ours: renew it
    REQUEST = "request"  # our home shard, held by a live foster: ask for it back
    RELEASE = "release"  # ours, but its home replica asks for it: drain, then give it up
    WAIT = "wait"


@dataclass(frozen=True)
class LeaseView:
    holder: str
    wanted_by: str
    resource_version: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> LeaseView:
        meta = body.get("metadata") or {}
        return cls(holder=str((body.get("spec") or {}).get("holderIdentity") or ""),
                   wanted_by=str((meta.get("annotations") or {}).get(WANTED_BY) or ""),
                   resource_version=str(meta.get("resourceVersion") or ""))


def decide(lease: LeaseView | None, *, me: str, home: bool, expired: bool) -> Move:
    """Pure: what this replica does with one shard's Lease this round.

    `expired`: the Lease has not changed for a whole lease duration as this replica saw it
    (its holder stopped renewing it, or it was released and nobody took it)."""
    if lease is None:
        return Move.CREATE if home else Move.WAIT
    if lease.holder == me:
        if not home and lease.wanted_by and lease.wanted_by != me:
            return Move.RELEASE
        return Move.RENEW
    if home:
        if not lease.holder or expired:
            return Move.ACQUIRE
        return Move.WAIT if lease.wanted_by == me else Move.REQUEST
    if expired or (not lease.holder and not lease.wanted_by):
        return Move.ACQUIRE  # a dead replica's shard, or one nobody asked for
    return Move.WAIT


@dataclass
class Held:
    """A shard this replica owns: its own admission queue and a flag its supervisors stop on."""

    shard: int
    queue: AdmissionQueue
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # set: its supervisors stop
    valid_until: float = 0.0  # monotonic: after this, a failed renewal means we no longer own it
    supervising: int = 0


class ShardLeases:
    """This replica's shards: the Lease loop, and what supervisors and handlers ask of it."""

    def __init__(self, kube: Kube, *, shards: int, ordinal: int, identity: str, instance_id: str, namespace: str,
                 lease_seconds: float, limit: int, per_namespace: int | None, groups_of: GroupsOf,
                 clock: Callable[[], float] = time.monotonic):
        self.kube, self.shards, self.ordinal, self.identity = kube, shards, ordinal, identity
        self.instance_id, self.namespace, self.lease_seconds = instance_id, namespace, lease_seconds
        self.limit, self.per_namespace, self.groups_of, self.clock = limit, per_namespace, groups_of, clock
        self.held: dict[int, Held] = {}
        self.changed = asyncio.Event()  # set (and replaced) whenever ownership changed
        self._seen: dict[int, tuple[str, float]] = {}  # shard -> (resourceVersion, first seen at)

    # ------------------------------------------------------------------ asked by the handlers

    def shard_of(self, uid: str) -> int:
        return shard_of(uid, self.shards)

    def owned(self, shard: int) -> Held | None:
        held = self.held.get(shard)
        if held is None or held.lost.is_set() or self.clock() >= held.valid_until:
            return None
        return held

    def owns_maintenance(self) -> bool:
        return self.owned(0) is not None

    @property
    def admitted(self) -> int:
        return sum(h.queue.active for h in self.held.values())

    async def wait_owned(self, shard: int, stopped: Any) -> Held | None:
        """The shard's `Held` once this replica owns it; None when `stopped` is set first."""
        while not stopped.is_set():
            held = self.owned(shard)
            if held is not None:
                return held
            changed = self.changed
            waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stopped.wait())]
            try:
                await asyncio.wait(waits, timeout=self.lease_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return None

    @contextlib.contextmanager
    def supervising(self, held: Held) -> Iterator[None]:
        """Counts a supervisor of `held` while it runs, so a release waits for it to stop."""
        held.supervising += 1
        try:
            yield
        finally:
            held.supervising -= 1

    # ------------------------------------------------------------------ the loop

    async def run_forever(self) -> None:
        """Every third of a lease duration: one round over the shards' Leases, then drop what
        could not be renewed in time. A round is bounded by that third too: a hung API request
        must not keep a replica supervising a shard past its lease."""
        interval = self.lease_seconds / 3
        while True:
            try:
                await asyncio.wait_for(self.one_round(), timeout=interval)
            except TimeoutError:
                log.warning("shard leases: a round took longer than %.1f s", interval)
            except OperatorError as exc:
                log.warning("shard leases: %s", logs.redact(str(exc)))
            except Exception:
                log.exception("shard lease round crashed")
            self._lapse()
            await asyncio.sleep(interval)

    async def one_round(self) -> None:
        for shard in range(self.shards):
            try:
                await self._round(shard)
            except Conflict:
                self._seen.pop(shard, None)  # someone else wrote it: read it again next round

    async def _round(self, shard: int) -> None:
        name = lease_name(self.instance_id, shard)
        body = await self.kube.get_lease(self.namespace, name)
        view = LeaseView.of(body) if body is not None else None
        now = self.clock()
        expired = False
        if view is not None:
            seen = self._seen.get(shard)
            if seen is None or seen[0] != view.resource_version:
                self._seen[shard] = (view.resource_version, now)
            else:
                expired = now - seen[1] >= self.lease_seconds
        home = shard == self.ordinal
        move = decide(view, me=self.identity, home=home, expired=expired)
        if move is Move.RENEW and shard not in self.held:
            move = Move.ACQUIRE  # ours from before a restart: take it anew (a fresh queue)
        if move is Move.CREATE:
            started = self.clock()
            if await self.kube.create_lease(self.namespace, self._body(name, None)) is not None:
                self._gain(shard, started)
        elif move is Move.ACQUIRE:
            assert body is not None
            started = self.clock()
            if await self.kube.replace_lease(self.namespace, name, self._body(name, body, acquire=True)) is not None:
                self._gain(shard, started)
        elif move is Move.RENEW:
            assert body is not None
            started = self.clock()
            await self.kube.replace_lease(self.namespace, name, self._body(name, body))
            held = self.held.get(shard)
            if held is not None:
                held.valid_until = started + self.lease_seconds * 2 / 3
        elif move is Move.REQUEST:
            assert body is not None and view is not None
            log.info("shard %d is held by %s: asking for it back", shard, view.holder)
            await self.kube.replace_lease(self.namespace, name, _annotated(body, self.identity))
        elif move is Move.RELEASE:
            assert body is not None and view is not None
            await self._release(shard, name, body, to=view.wanted_by)

    async def _release(self, shard: int, name: str, body: dict[str, Any], *, to: str) -> None:
        """Give a fostered shard back: stop its supervisors (at their next step boundary), keep
        the Lease renewed until they all exited (nobody takes it meanwhile), then free it."""
        held = self.held.get(shard)
        if held is not None and held.supervising:
            if not held.lost.is_set():
                log.info("shard %d: %s asks for it back; stopping its supervisors", shard, to)
                held.lost.set()
                self._notify()
            started = self.clock()
            await self.kube.replace_lease(self.namespace, name, self._body(name, body))
            held.valid_until = started + self.lease_seconds * 2 / 3
            return
        released = dict(body)
        released["spec"] = {**(body.get("spec") or {}), "holderIdentity": ""}
        await self.kube.replace_lease(self.namespace, name, released)
        self._drop(shard, f"given back to {to}")

    async def release_all(self) -> None:
        """On shutdown: free every Lease held, so another replica takes the shards over at once."""
        for shard in list(self.held):
            held = self.held[shard]
            held.lost.set()
            name = lease_name(self.instance_id, shard)
            with contextlib.suppress(OperatorError):
                body = await self.kube.get_lease(self.namespace, name)
                if body is not None and LeaseView.of(body).holder == self.identity:
                    released = dict(body)
                    released["spec"] = {**(body.get("spec") or {}), "holderIdentity": ""}
                    await self.kube.replace_lease(self.namespace, name, released)
            self._drop(shard, "released on shutdown")

    # ------------------------------------------------------------------ bookkeeping

    def _body(self, name: str, body: dict[str, Any] | None, *, acquire: bool = False) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).strftime(MICROTIME)
        spec = dict((body or {}).get("spec") or {})
        meta = dict((body or {}).get("metadata") or {"name": name, "namespace": self.namespace})
        if body is None or acquire:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if body is not None else 0)
            annotations = dict(meta.get("annotations") or {})
            if annotations.get(WANTED_BY) == self.identity or acquire:
                annotations.pop(WANTED_BY, None)  # taken: whoever asked for it must ask again
            meta["annotations"] = annotations
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=max(int(self.lease_seconds), 1),
                    renewTime=now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _gain(self, shard: int, started: float) -> None:
        queue = AdmissionQueue(limit=share(self.limit, self.shards, shard), per_namespace=self.per_namespace,
                               groups_of=self.groups_of)
        self.held[shard] = Held(shard=shard, queue=queue, valid_until=started + self.lease_seconds * 2 / 3)
        self._seen.pop(shard, None)
        log.info("shard %d of %d acquired (admits %d)", shard, self.shards, queue.limit)
        self._notify()

    def _drop(self, shard: int, why: str) -> None:
        held = self.held.pop(shard, None)
        if held is not None:
            held.lost.set()
            log.warning("shard %d no longer owned: %s", shard, why)
            self._notify()

    def _lapse(self) -> None:
        now = self.clock()
        for shard, held in list(self.held.items()):
            if now >= held.valid_until:
                self._drop(shard, "its lease could not be renewed in time")

    def _notify(self) -> None:
        metrics.SHARDS_OWNED.set(len([s for s in self.held if self.owned(s) is not None]))
        metrics.ADMISSION_LIMIT.set(sum(h.queue.limit for s, h in self.held.items() if self.owned(s) is not None))
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


def _annotated(body: dict[str, Any], identity: str) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), WANTED_BY: identity}
    return {**body, "metadata": meta}
