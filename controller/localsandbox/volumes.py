"""Volumes: shared directories that outlive sandboxes (``controllers/volume.controller.ts``).

Does: keep the volumes of a server (routes in `catalog_api`) with Daytona's states and messages
(``services/volume.service.ts``); the state changes take the
``creating`` / ``destroying`` transition durations. A volume is a directory under
``<root>/.volumes/<id>``. Sandboxes name volumes by id or name in ``volumes: [{volumeId,
mountPath, subpath?}]``; `resolve` checks them as ``resolveVolumes`` and
``validateMountPaths`` do (unknown -> 404, not ready -> 400, bad mount paths -> 400) and stores
the ids. `mount` makes each mount path of a sandbox a link to the volume directory, which the
file APIs accept (`paths.allow_mount`) and commands follow.

Does not: enforce a volume quota, delete a volume's files while a sandbox uses it, or speak HTTP.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request, not_found
from .layout import remove_tree
from .models import iso
from .paths import allow_mount, forget_mounts

_SYSTEM = ("/proc", "/sys", "/dev", "/boot", "/etc", "/bin", "/sbin", "/lib", "/lib64")


@dataclass
class VolumeRecord:
    """One volume."""

    id: str
    name: str
    organization_id: str
    created_at: float
    updated_at: float
    state: str = "pending_create"
    last_used_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``VolumeDto`` JSON."""
        return {"id": self.id, "name": self.name, "organizationId": self.organization_id, "state": self.state,
                "createdAt": iso(self.created_at), "updatedAt": iso(self.updated_at),
                "lastUsedAt": iso(self.last_used_at) if self.last_used_at else None, "errorReason": None}  # fmt: skip


def mount_path_problems(volumes: list[dict[str, str]]) -> list[str]:
    """``validateMountPaths`` and ``validateSubpaths``: every problem, in order."""
    problems = []
    for volume in volumes:
        value = volume["mountPath"]
        if not value.startswith("/"):
            problems.append(f"Invalid mount path {value} (must be absolute)")
        elif value in ("/", "//"):
            problems.append(f"Invalid mount path {value} (cannot mount to the root directory)")
        elif "/../" in value or "/./" in value or value.endswith(("/..", "/.")):
            problems.append(f"Invalid mount path {value} (cannot contain relative path components)")
        elif "//" in value[1:]:
            problems.append(f"Invalid mount path {value} (cannot contain consecutive slashes)")
        elif any(value == s or value.startswith(s + "/") for s in _SYSTEM):
            problems.append(f"Invalid mount path {value} (cannot mount to system directory)")
    for volume in volumes:
        sub = volume.get("subpath")
        if sub and (sub.startswith("/") or ".." in sub.split("/")):
            problems.append(f"Invalid subpath {sub} (must be a relative path inside the volume)")
    return problems


class Volumes:
    """The volumes of one server."""

    def __init__(self, root: str, org_id: str) -> None:
        self.dir = os.path.join(root, ".volumes")
        self.org_id = org_id
        self.records: dict[str, VolumeRecord] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def find(self, id_or_name: str) -> VolumeRecord | None:
        """A volume that is not deleted, by id, else by name."""
        vol = self.records.get(id_or_name)
        if vol is None:
            vol = next((v for v in self.records.values() if v.name == id_or_name), None)
        return vol

    def path(self, vol: VolumeRecord, subpath: str | None = None) -> str:
        """Host directory of a volume (or of a subpath of it)."""
        return os.path.join(self.dir, vol.id, *([subpath] if subpath else []))

    def _later(self, vol: VolumeRecord, seconds: float, states: tuple[str, ...]) -> None:
        async def run() -> None:
            for state in states:
                await asyncio.sleep(seconds)
                if state == "deleted":
                    self.records.pop(vol.id, None)
                    await asyncio.to_thread(remove_tree, self.path(vol))
                    return
                vol.state, vol.updated_at = state, time.time()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def create(self, name: str | None, seconds: float) -> VolumeRecord:
        """``POST /volumes``."""
        vol_id = str(uuid.uuid4())
        name = name or vol_id
        if self.find(name) is not None:
            raise bad_request(f"Volume with name {name} already exists")
        now = time.time()
        vol = VolumeRecord(vol_id, name, self.org_id, now, now)
        os.makedirs(self.path(vol), exist_ok=True)
        self.records[vol.id] = vol
        self._later(vol, seconds, ("creating", "ready"))
        return vol

    def delete(self, vol: VolumeRecord, in_use_by: str | None, seconds: float) -> None:
        """``DELETE /volumes/{id}``."""
        if vol.state not in ("ready", "error"):
            raise bad_request("Volume must be in 'ready' or 'error' state in order to be deleted")
        if in_use_by is not None:
            raise ApiError(409, f"Volume cannot be deleted because it is in use by one or more sandboxes "
                                f"(e.g. {in_use_by})")  # fmt: skip
        vol.state, vol.updated_at = "pending_delete", time.time()
        self._later(vol, seconds, ("deleting", "deleted"))

    def resolve(self, volumes: list[dict[str, str]]) -> list[dict[str, str]]:
        """``resolveVolumes``: the mounts with volume ids; 404 unknown, 400 not ready or bad paths."""
        resolved = []
        for mount in volumes:
            vol = self.find(mount["volumeId"])
            if vol is None:
                raise not_found(f"Volume '{mount['volumeId']}' not found")
            if vol.state != "ready":
                raise bad_request(f"Volume '{vol.name}' is not in a ready state. Current state: {vol.state}")
            resolved.append({**mount, "volumeId": vol.id})
        problems = mount_path_problems(resolved)
        if problems:
            raise bad_request(", ".join(problems))
        return resolved

    def mount(self, sandbox_root: str, volumes: list[dict[str, str]]) -> None:
        """Link every mount path of a sandbox to its volume directory."""
        for mount in volumes:
            vol = self.records.get(mount["volumeId"])
            if vol is None:
                continue
            target = self.path(vol, mount.get("subpath"))
            os.makedirs(target, exist_ok=True)
            link = os.path.join(sandbox_root, mount["mountPath"].lstrip("/"))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.islink(link):
                os.unlink(link)
            elif os.path.isdir(link) and not os.listdir(link):
                os.rmdir(link)
            os.symlink(target, link)
            allow_mount(sandbox_root, target)
            vol.last_used_at = time.time()

    def unmount(self, sandbox_root: str) -> None:
        """Forget a sandbox's mounts (the links go with its directory; volumes stay)."""
        forget_mounts(sandbox_root)

    async def close(self) -> None:
        """Stop pending state changes."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
