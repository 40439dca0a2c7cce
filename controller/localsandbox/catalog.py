"""Snapshots and warm pools.

Does: keep the snapshot registry (seeded with ``daytona-small``/``-medium``/``-large``;
``POST /snapshots`` registers a name with resources and is ``active`` at once, since nothing
is pulled locally), and the warm pools: for a pool of size N on snapshot S, N sandbox
skeleton directories are pre-created in the background, each costing the injected ``create``
latency. A create that names S with the default user and no env, volumes or secrets (the
rule Daytona documents) takes a ready skeleton instead of building one (see `store`), and the
pool refills behind it. Deleting a snapshot deletes its pools.

Does not: create sandboxes or serve HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from typing import Any

from .errors import bad_request, conflict, not_found
from .faults import FaultInjector
from .layout import make_skeleton, pools_dir, remove_tree
from .models import DEFAULT_SNAPSHOTS, DEFAULT_USER, SnapshotRecord, WarmPoolRecord, snapshot_dto, warm_pool_dto
from .volumes import Volumes

log = logging.getLogger("controller.localsandbox")


class Catalog:
    """Snapshot registry and warm-pool manager."""

    def __init__(self, root: str, org_id: str, target: str, faults: FaultInjector) -> None:
        self._root = root
        self.org_id = org_id
        self.target = target
        self._faults = faults
        self.snapshots: dict[str, SnapshotRecord] = {}
        self.pools: dict[str, WarmPoolRecord] = {}
        self._ready: dict[str, list[str]] = {}
        self._refill: dict[str, asyncio.Task[None]] = {}
        self.volumes = Volumes(root, org_id)
        now = time.time()
        for name, (cpu, mem, disk) in DEFAULT_SNAPSHOTS.items():
            snap = SnapshotRecord(str(uuid.uuid4()), name, cpu, 0, mem, disk, now, general=True)
            self.snapshots[snap.id] = snap

    # snapshots -------------------------------------------------------------------------

    def find_snapshot(self, id_or_name: str) -> SnapshotRecord | None:
        """A snapshot by id or name."""
        snap = self.snapshots.get(id_or_name)
        if snap is not None:
            return snap
        return next((s for s in self.snapshots.values() if s.name == id_or_name), None)

    def get_snapshot(self, id_or_name: str) -> SnapshotRecord:
        """A snapshot by id or name, or 404."""
        snap = self.find_snapshot(id_or_name)
        if snap is None:
            raise not_found(f"Snapshot {id_or_name} not found")
        return snap

    def create_snapshot(self, body: Any) -> SnapshotRecord:
        """Register a snapshot from a ``CreateSnapshot`` body."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise bad_request("name is required")
        if self.find_snapshot(body["name"]) is not None:
            raise conflict(f"Snapshot with name {body['name']} already exists")
        resources = {}
        for key, default in (("cpu", 1), ("gpu", 0), ("memory", 1), ("disk", 3)):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise bad_request(f"{key} must be a non-negative integer")
            resources[key] = value if value is not None else default
        entrypoint = body.get("entrypoint")
        if entrypoint is not None and not (
            isinstance(entrypoint, list) and all(isinstance(e, str) for e in entrypoint)
        ):
            raise bad_request("entrypoint must be a list of strings")
        image = body.get("imageName")
        snap = SnapshotRecord(
            id=str(uuid.uuid4()),
            name=body["name"],
            cpu=resources["cpu"],
            gpu=resources["gpu"],
            mem=resources["memory"],
            disk=resources["disk"],
            created_at=time.time(),
            organization_id=self.org_id,
            image_name=image if isinstance(image, str) else None,
            entrypoint=entrypoint,
        )
        self.snapshots[snap.id] = snap
        return snap

    def delete_snapshot(self, snap: SnapshotRecord) -> None:
        """Forget a snapshot and drain its warm pools."""
        self.snapshots.pop(snap.id, None)
        for pool in [p for p in self.pools.values() if p.snapshot == snap.name]:
            self.delete_pool(pool.id)

    def list_snapshots(self, page: int, limit: int, name: str | None) -> dict[str, Any]:
        """The ``PaginatedSnapshots`` JSON (page numbers start at 1)."""
        snaps = sorted(self.snapshots.values(), key=lambda s: (s.created_at, s.name))
        if name:
            snaps = [s for s in snaps if name.lower() in s.name.lower()]
        start = (page - 1) * limit
        return {
            "items": [snapshot_dto(s) for s in snaps[start : start + limit]],
            "total": len(snaps),
            "page": page,
            "totalPages": max(1, math.ceil(len(snaps) / limit)),
        }

    # warm pools ------------------------------------------------------------------------

    def pool_json(self, pool: WarmPoolRecord) -> dict[str, Any]:
        """The ``WarmPool`` JSON."""
        snap = self.find_snapshot(pool.snapshot)
        return warm_pool_dto(pool, snap, len(self._ready.get(pool.id, [])), self.org_id)

    def get_pool(self, pool_id: str) -> WarmPoolRecord:
        """A pool by id, or 404."""
        pool = self.pools.get(pool_id)
        if pool is None:
            raise not_found(f"Warm pool {pool_id} not found")
        return pool

    def create_pool(self, body: Any) -> WarmPoolRecord:
        """Create a pool from a ``CreateWarmPool`` body; 409 if the snapshot already has one."""
        if not isinstance(body, dict) or not isinstance(body.get("snapshot"), str):
            raise bad_request("snapshot is required")
        size = body.get("pool")
        if isinstance(size, bool) or not isinstance(size, int | float) or size < 1:
            raise bad_request("pool must be a number >= 1")
        snap = self.get_snapshot(body["snapshot"])
        target = body["target"] if isinstance(body.get("target"), str) else self.target
        if any(p.snapshot == snap.name and p.target == target for p in self.pools.values()):
            raise conflict(f"A warm pool for snapshot {snap.name} in {target} already exists")
        now = time.time()
        pool = WarmPoolRecord(str(uuid.uuid4()), snap.name, target, int(size), now, now)
        self.pools[pool.id] = pool
        self._ready[pool.id] = []
        self._ensure_refill(pool.id)
        return pool

    def update_pool(self, pool_id: str, body: Any) -> WarmPoolRecord:
        """Resize a pool (0 drains it)."""
        pool = self.get_pool(pool_id)
        size = body.get("pool") if isinstance(body, dict) else None
        if isinstance(size, bool) or not isinstance(size, int | float) or size < 0:
            raise bad_request("pool must be a number >= 0")
        pool.size = int(size)
        pool.updated_at = time.time()
        ready = self._ready[pool.id]
        while len(ready) > pool.size:
            remove_tree(ready.pop())
        self._ensure_refill(pool.id)
        return pool

    def delete_pool(self, pool_id: str) -> None:
        """Delete a pool and its ready skeletons."""
        self.get_pool(pool_id)
        self.pools.pop(pool_id)
        task = self._refill.pop(pool_id, None)
        if task is not None:
            task.cancel()
        self._ready.pop(pool_id, [])
        remove_tree(os.path.join(pools_dir(self._root), pool_id))

    def resolve_volumes(self, volumes: list[dict[str, str]]) -> list[dict[str, str]]:
        """``resolveVolumes``: the volume mounts with ids resolved (see `volumes`)."""
        return self.volumes.resolve(volumes) if volumes else []

    def has_pool(self, snapshot: str) -> bool:
        """Whether any pool keeps sandboxes warm for `snapshot` (a name)."""
        return any(p.snapshot == snapshot for p in self.pools.values())

    def take(self, snapshot: str) -> str | None:
        """Claim a ready skeleton for `snapshot`, or None; the pool starts refilling."""
        for pool in self.pools.values():
            ready = self._ready.get(pool.id)
            if pool.snapshot == snapshot and ready:
                path = ready.pop(0)
                self._ensure_refill(pool.id)
                return path
        return None

    def _ensure_refill(self, pool_id: str) -> None:
        task = self._refill.get(pool_id)
        if task is None or task.done():
            self._refill[pool_id] = asyncio.create_task(self._fill(pool_id))

    async def _fill(self, pool_id: str) -> None:
        while True:
            pool = self.pools.get(pool_id)
            if pool is None or len(self._ready[pool_id]) >= pool.size:
                return
            delay = self._faults.faults.latency_for("create")
            if delay:
                await asyncio.sleep(delay)
            if pool_id not in self.pools:
                return
            path = os.path.join(pools_dir(self._root), pool_id, str(uuid.uuid4()))
            try:
                make_skeleton(path, DEFAULT_USER)
            except OSError as exc:
                log.warning("localsandbox: cannot fill warm pool %s: %s", pool_id, exc)
                return
            self._ready[pool_id].append(path)

    async def close(self) -> None:
        """Stop refilling and remove every skeleton."""
        tasks = list(self._refill.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refill.clear()
        remove_tree(pools_dir(self._root))
        await self.volumes.close()
        remove_tree(self.volumes.dir)
