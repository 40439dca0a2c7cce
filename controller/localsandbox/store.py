"""The sandboxes themselves: create, start, stop, archive, destroy, and the lifecycle timers.

Does: own every `SandboxRecord` (by id and by unique name), its directory and its
`SandboxProcesses`; drive each change through `lifecycle.check_transition`; spend the
injected ``create`` latency while a sandbox is visibly ``creating`` (or the smaller
``pool_create`` latency when a warm pool serves it); kill process groups on stop
(SIGTERM, then SIGKILL after `STOP_GRACE` s) and on destroy (SIGKILL); and run one
background task that fires auto-stop / auto-archive / auto-delete / TTL actions when due
(woken early whenever a deadline may have moved closer). Every mutating call returns once
the sandbox has reached its settled state, so the SDK never needs to poll.

Destroyed sandboxes are forgotten at once (``GET`` answers 404, the name is free again).

Does not: parse HTTP or apply per-request faults (the server middleware does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid

from .catalog import Catalog
from .errors import ApiError, bad_request, not_found
from .faults import FaultInjector
from .isolation import Isolation, LaunchContext, home_of
from .layout import log_dir, make_skeleton, remove_tree, sandbox_dir
from .lifecycle import RUNNING_STATES, check_transition, collect_due
from .models import DEFAULT_SNAPSHOT, DEFAULT_USER, CreateRequest, SandboxRecord
from .processes import SandboxProcesses
from .stats import Stats

STOP_GRACE = 1.0
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_REASON_COUNTER = {"auto_delete": "auto_deleted", "ttl": "ttl_expired", "lost": "lost"}


class SandboxStore:
    """All sandboxes of one server."""

    def __init__(
        self,
        root: str,
        *,
        minute_seconds: float,
        isolation: Isolation,
        faults: FaultInjector,
        stats: Stats,
        catalog: Catalog,
        org_id: str,
        target: str,
    ) -> None:
        self.root = root
        self.minute_seconds = minute_seconds
        self.isolation = isolation
        self.faults = faults
        self.stats = stats
        self.catalog = catalog
        self.org_id = org_id
        self.target = target
        self.records: dict[str, SandboxRecord] = {}
        self.procs: dict[str, SandboxProcesses] = {}
        self._names: dict[str, str] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()

    # lookup ----------------------------------------------------------------------------

    def find(self, id_or_name: str) -> SandboxRecord | None:
        """A live sandbox by id, else by name."""
        rec = self.records.get(id_or_name)
        if rec is None and id_or_name in self._names:
            rec = self.records.get(self._names[id_or_name])
        return rec

    def get(self, id_or_name: str) -> SandboxRecord:
        """A live sandbox by id or name, or 404."""
        rec = self.find(id_or_name)
        if rec is None:
            raise not_found(f"Sandbox with ID or name {id_or_name} not found")
        return rec

    def running(self, sandbox_id: str) -> tuple[SandboxRecord, SandboxProcesses]:
        """A sandbox that can serve toolbox calls (404 unknown, 409 not started); marks activity."""
        rec = self.get(sandbox_id)
        if rec.state not in RUNNING_STATES:
            raise ApiError(409, f"Sandbox {rec.id} is not running (state: {rec.state})")
        self.touch(rec)
        return rec, self.procs[rec.id]

    def launch_context(self, rec: SandboxRecord, cwd: str, env: dict[str, str] | None = None) -> LaunchContext:
        """What `isolation.build_launch` needs to run a command in `rec` at in-sandbox `cwd`."""
        return LaunchContext(
            sandbox_id=rec.id,
            root=sandbox_dir(self.root, rec.id),
            user=rec.user,
            cwd=cwd,
            env={**rec.env, **(env or {})},
            snapshot=rec.snapshot,
            network_block_all=rec.network_block_all,
        )

    # state changes ---------------------------------------------------------------------

    def touch(self, rec: SandboxRecord) -> None:
        """Record activity (it postpones auto-stop)."""
        rec.last_activity_at = time.time()
        rec.activity_mono = time.monotonic()

    def _set_state(self, rec: SandboxRecord, new: str) -> None:
        check_transition(rec.state, new)
        rec.state = new
        rec.updated_at = time.time()
        if new in ("stopped", "archived") and rec.stopped_mono is None:
            rec.stopped_mono = time.monotonic()
        elif new not in ("stopped", "archived"):
            rec.stopped_mono = None
        self._wake.set()

    def changed(self) -> None:
        """A timer setting changed: recompute deadlines."""
        self._wake.set()

    async def create(self, req: CreateRequest) -> SandboxRecord:
        """Create a sandbox and return it once ``started`` (or ``error``)."""
        if req.from_image:
            snapshot = None
            cpu, mem, disk = req.cpu or 1, req.memory or 1, req.disk or 3
        else:
            snap = self.catalog.find_snapshot(req.snapshot or DEFAULT_SNAPSHOT)
            if snap is None:
                raise bad_request(f"Snapshot {req.snapshot} not found")
            if snap.state != "active":
                raise bad_request(f"Snapshot {snap.name} is {snap.state}")
            snap.last_used_at = time.time()
            snapshot, cpu, mem, disk = snap.name, snap.cpu, snap.mem, snap.disk
        user = req.user or DEFAULT_USER
        if not _USER_RE.match(user):
            raise bad_request(f"invalid user {user!r}")
        sandbox_id = str(uuid.uuid4())
        name = req.name or sandbox_id
        if name in self._names:
            raise ApiError(409, f"Sandbox with name {name} already exists")
        now, mono = time.time(), time.monotonic()
        self._seq += 1
        rec = SandboxRecord(
            id=sandbox_id, name=name, organization_id=self.org_id, snapshot=snapshot, user=user,
            env=req.env, labels=req.labels, target=req.target or self.target, cpu=cpu,
            gpu=req.gpu or 0, memory=mem, disk=disk, seq=self._seq, created_at=now, created_mono=mono,
            public=req.public, network_block_all=req.network_block_all, kvm=req.kvm,
            network_allow_list=req.network_allow_list, domain_allow_list=req.domain_allow_list,
            outbound_proxy_url=req.outbound_proxy_url, otel_endpoint_override=req.otel_endpoint_override,
            auto_stop=req.auto_stop, auto_archive=req.auto_archive, auto_delete=req.auto_delete,
            ttl_minutes=req.ttl_minutes, volumes=req.volumes, updated_at=now, last_activity_at=now,
            activity_mono=mono,
        )  # fmt: skip
        self.records[sandbox_id] = rec
        self._names[name] = sandbox_id
        self.procs[sandbox_id] = SandboxProcesses(log_dir(self.root, sandbox_id))
        self.stats.sandbox_created(name)
        self._wake.set()
        warm = None
        if snapshot is not None and self.catalog.has_pool(snapshot):
            eligible = user == DEFAULT_USER and not req.env and not req.volumes and not req.has_secrets
            warm = self.catalog.take(snapshot) if eligible else None
            self.stats.bump("pool_hits" if warm else "pool_misses")
        try:
            delay = self.faults.faults.latency_for("pool_create" if warm else "create")
            if delay:
                await asyncio.sleep(delay)
            if self.records.get(sandbox_id) is not rec:
                raise not_found(f"Sandbox {sandbox_id} was destroyed while it was being created")
            try:
                if warm is not None:
                    os.rename(warm, sandbox_dir(self.root, sandbox_id))
                else:
                    make_skeleton(sandbox_dir(self.root, sandbox_id), user)
            except OSError as exc:
                rec.error_reason = f"cannot create sandbox directory: {exc}"
                self._set_state(rec, "error")
                return rec
        finally:
            if warm is not None:
                remove_tree(warm)  # only still there if it was not moved into place
        if self.faults.error_state("create"):
            rec.error_reason = "injected fault: sandbox failed to start"
            self._set_state(rec, "error")
        else:
            self._set_state(rec, "started")
        self.touch(rec)
        return rec

    async def start(self, rec: SandboxRecord) -> SandboxRecord:
        """Start a stopped or archived sandbox (no-op when started)."""
        if rec.state == "started":
            return rec
        if rec.state not in ("stopped", "archived"):
            raise bad_request(f"Sandbox {rec.id} cannot be started in state {rec.state}")
        self._set_state(rec, "starting")
        if self.faults.error_state("start"):
            rec.error_reason = "injected fault: sandbox failed to start"
            self._set_state(rec, "error")
            return rec
        os.makedirs(sandbox_dir(self.root, rec.id), exist_ok=True)
        self._set_state(rec, "started")
        self.touch(rec)
        return rec

    async def stop(self, rec: SandboxRecord, grace: float = STOP_GRACE) -> SandboxRecord:
        """Stop a started sandbox: its processes are terminated (no-op when stopped)."""
        if rec.state in ("stopped", "archived"):
            return rec
        if rec.state != "started":
            raise bad_request(f"Sandbox {rec.id} cannot be stopped in state {rec.state}")
        self._set_state(rec, "stopping")
        await self.procs[rec.id].terminate_all("sandbox stopped", grace)
        if rec.state == "stopping":
            self._set_state(rec, "stopped")
        return rec

    def archive(self, rec: SandboxRecord) -> SandboxRecord:
        """Archive a stopped sandbox (its directory is kept)."""
        if rec.state == "archived":
            return rec
        if rec.state != "stopped":
            raise bad_request(f"Sandbox {rec.id} must be stopped to be archived (state {rec.state})")
        self._set_state(rec, "archived")
        return rec

    def _forget(self, rec: SandboxRecord, reason: str) -> SandboxProcesses | None:
        """Take `rec` out of the store and SIGKILL its processes; the caller removes files."""
        if self.records.get(rec.id) is not rec:
            return None
        self._set_state(rec, "destroying")
        procs = self.procs.pop(rec.id)
        procs.kill_all("sandbox destroyed")
        del self.records[rec.id]
        self._names.pop(rec.name, None)
        self.stats.sandbox_gone()
        if reason in _REASON_COUNTER:
            self.stats.bump(_REASON_COUNTER[reason])
        self._set_state(rec, "destroyed")
        task = asyncio.get_running_loop().create_task(procs.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return procs

    async def destroy(self, rec: SandboxRecord, reason: str = "delete") -> SandboxRecord:
        """Destroy a sandbox: SIGKILL its process groups, remove its directories."""
        if self._forget(rec, reason) is not None:
            await asyncio.to_thread(self._remove_files, rec.id)
        return rec

    def lose(self, id_or_name: str) -> bool:
        """Destroy a sandbox behind the client's back (fault injection); False if unknown."""
        rec = self.find(id_or_name)
        if rec is None or self._forget(rec, "lost") is None:
            return False
        self._remove_files(rec.id)
        return True

    def _remove_files(self, sandbox_id: str) -> None:
        remove_tree(sandbox_dir(self.root, sandbox_id))
        remove_tree(log_dir(self.root, sandbox_id))

    def home(self, rec: SandboxRecord) -> str:
        """In-sandbox home directory of the sandbox user."""
        return home_of(rec.user)

    # timers ----------------------------------------------------------------------------

    def start_timers(self) -> None:
        """Start the lifecycle task (call from the running loop)."""
        if self._timer is None:
            self._timer = asyncio.create_task(self._lifecycle())

    async def _act(self, sandbox_id: str, action: str, reason: str) -> None:
        try:
            rec = self.records.get(sandbox_id)
            if rec is None:
                return
            if action == "stop":
                await self.stop(rec)
                self.stats.bump("auto_stopped")
            elif action == "archive":
                self.archive(rec)
                self.stats.bump("auto_archived")
            else:
                await self.destroy(rec, reason)
        except (ApiError, ValueError):
            pass  # the sandbox changed state meanwhile
        finally:
            self._in_flight.discard(sandbox_id)
            self._wake.set()

    async def _lifecycle(self) -> None:
        while True:
            self._wake.clear()
            candidates = (r for r in self.records.values() if r.id not in self._in_flight)
            due, next_at = collect_due(candidates, time.monotonic(), self.minute_seconds)
            for item in due:
                self._in_flight.add(item.sandbox_id)
                task = asyncio.create_task(self._act(item.sandbox_id, item.action, item.reason))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def close(self) -> None:
        """Stop the timers, kill every process group, remove every sandbox directory."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for rec in list(self.records.values()):
            self._forget(rec, "shutdown")
            self._remove_files(rec.id)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        remove_tree(os.path.join(self.root, ".logs"))
