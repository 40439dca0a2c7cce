"""Lifecycle requests and the asynchronous transitions they start, as Daytona runs them.

Does: accept or refuse create, start, stop, archive and delete with Daytona's rules and
messages (`states`, `validation`, `quota`; ``controllers/sandbox.controller.ts`` and
``services/sandbox.service.ts``), then move the sandbox through Daytona's transitional states
in the background, each lasting its configured duration (`settings.Settings.transitions`):

* create from a snapshot: ``creating`` (``unknown`` stored; preceded by ``pulling_snapshot``
  the first time a snapshot is used) -> ``started``. The request waits up to ``create_wait``
  (30 s) for ``started`` and answers the sandbox as it was when inserted, or 400
  ``Sandbox failed to start: <reason>`` if it errored (``waitForSandboxStarted``);
* create from an image (``buildInfo``): ``pending_build`` -> ``building_snapshot`` (skipped when
  the same Dockerfile and context were built before; may end in ``build_failed``) ->
  ``creating`` -> ``started``, answered at once;
* start: ``starting`` (from ``stopped``) or ``restoring`` (from ``archived``) -> ``started``;
  the request waits for ``started`` like create unless the sandbox was archived;
* stop: ``stopping`` (the processes get SIGTERM, then SIGKILL) -> ``stopped``; an ephemeral
  sandbox is deleted instead; answered at once;
* archive: ``archiving`` -> ``archived``; answered at once;
* delete: soft delete (desired ``destroyed``, renamed), ``destroying`` (processes killed, files
  removed) -> ``destroyed``, then forgotten; linked followers are deleted with their owner.

A newer accepted request cancels the transition in flight (delete while archiving). Warm-pool
creates answer ``started`` at once, as Daytona's ``assignWarmPoolSandbox`` does.

Does not: parse HTTP (`api`), or own records (`store`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from .catalog import Catalog
from .containers import ContainerError
from .errors import ApiError, bad_request
from .layout import make_skeleton, remove_tree, sandbox_dir
from .models import (
    DEFAULT_AUTO_ARCHIVE,
    DEFAULT_AUTO_DELETE,
    DEFAULT_AUTO_STOP,
    DEFAULT_SNAPSHOT,
    DEFAULT_USER,
    IMAGE_DEFAULTS,
    CreateRequest,
    SandboxRecord,
    sandbox_dto,
)
from .quota import Request, check
from .settings import Quota
from .states import check_archive, check_delete, check_start, check_stop, ephemeral
from .store import SandboxStore
from .transitions import Step, Work, run_transition
from .validation import (
    resolve_auto_archive,
    resolve_auto_stop,
    validate_domain_allow_list,
    validate_network_allow_list,
)

STOP_GRACE = 1.0
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
class Actions:
    """The lifecycle operations of one server."""

    def __init__(self, store: SandboxStore, catalog: Catalog, dashboard_url: Callable[[], str]) -> None:
        self.store = store
        self.catalog = catalog
        self._dashboard_url = dashboard_url
        self._pulled: set[str] = set()
        self._built: set[str] = set()
        store.auto_action = self.automatic

    # helpers ---------------------------------------------------------------------------

    def _seconds(self, state: str, extra_op: str | None = None) -> float:
        extra = self.store.faults.faults.latency_for(extra_op) if extra_op else 0.0
        return self.store.settings.duration(state) + extra

    def _check_quota(self, cpu: int, memory: int, disk: int, gpu: int, exclude: str | None = None) -> None:
        quota, exhausted = self.store.settings.quota, self.store.faults.faults.quota_exhausted
        if exhausted is None and quota == Quota():
            return  # unlimited: no need to sum the usage of every sandbox
        check(self.store.settings.quota, self.store.usage(exclude), Request(cpu, memory, disk, gpu),
              dashboard_url=self._dashboard_url(), exhausted=self.store.faults.faults.quota_exhausted)  # fmt: skip

    def _run(self, rec: SandboxRecord, steps: list[Step], final: str) -> asyncio.Task[None]:
        return run_transition(self.store, rec, steps, final)

    async def _until_settled(self, rec: SandboxRecord, task: asyncio.Task[None], url: str) -> dict[str, Any] | None:
        """Daytona's ``waitForSandboxStarted``: the started DTO, None on timeout, 400 on error."""
        await asyncio.wait({task}, timeout=self.store.settings.create_wait)
        if rec.state in ("error", "build_failed"):
            raise bad_request(f"Sandbox failed to start: {rec.error_reason}")
        return sandbox_dto(rec, url) if rec.state == "started" else None

    # create ----------------------------------------------------------------------------

    async def create(self, req: CreateRequest, url: str) -> dict[str, Any]:
        """``POST /sandbox``: the response body (see the module docstring)."""
        if req.build_info is not None:
            if req.snapshot:
                raise bad_request("Cannot specify a snapshot when using a build info entry")
            if req.linked_sandbox:
                raise bad_request(
                    "linkedSandbox is not supported with declarative builds. Create a sandbox from a snapshot"
                )
            return await self._create_from_image(req, url)
        if req.cpu or req.gpu or req.memory or req.disk:
            raise bad_request("Cannot specify Sandbox resources when using a snapshot")
        if req.gpu_type:
            raise bad_request(
                "Cannot specify GPU type when creating sandbox from snapshot. GPU type is inherited from snapshot."
            )
        return await self._create_from_snapshot(req, url)

    def _new_record(
        self, req: CreateRequest, snapshot: str | None, resources: tuple[int, int, int, int]
    ) -> SandboxRecord:
        user = req.user or DEFAULT_USER
        if not _USER_RE.match(user):
            raise bad_request(f"invalid user {user!r}")
        max_archive = self.store.settings.max_auto_archive
        auto_stop = resolve_auto_stop(req.auto_stop) if req.auto_stop is not None else DEFAULT_AUTO_STOP
        auto_archive = (resolve_auto_archive(req.auto_archive, max_archive) if req.auto_archive is not None
                        else min(DEFAULT_AUTO_ARCHIVE, max_archive))  # fmt: skip
        if req.network_allow_list is not None:
            validate_network_allow_list(req.network_allow_list)
        if req.domain_allow_list is not None:
            validate_domain_allow_list(req.domain_allow_list)
        volumes = self.catalog.resolve_volumes(req.volumes)
        sandbox_id = str(uuid.uuid4())
        name = req.name or sandbox_id
        if self.store.name_taken(name):
            raise ApiError(409, f"Sandbox with name {name} already exists")
        cpu, memory, disk, gpu = resources
        now, mono = time.time(), time.monotonic()
        return SandboxRecord(
            id=sandbox_id, name=name, organization_id=self.store.org_id, snapshot=snapshot, user=user,
            env=req.env, labels=req.labels, target=req.target or self.store.target, cpu=cpu, gpu=gpu,
            memory=memory, disk=disk, created_at=now, created_mono=mono, public=req.public,
            network_block_all=bool(req.network_block_all), kvm=req.kvm,
            network_allow_list=req.network_allow_list or None, domain_allow_list=req.domain_allow_list or None,
            outbound_proxy_url=req.outbound_proxy_url, otel_endpoint_override=req.otel_endpoint_override,
            auto_stop=auto_stop, auto_archive=auto_archive,
            auto_delete=req.auto_delete if req.auto_delete is not None else DEFAULT_AUTO_DELETE,
            ttl_minutes=req.ttl_minutes, volumes=volumes, updated_at=now, last_activity_at=now, activity_mono=mono,
        )  # fmt: skip

    def _resolve_linked(self, req: CreateRequest) -> SandboxRecord | None:
        """``resolveLinkedSandbox``."""
        if not req.linked_sandbox:
            return None
        if not req.ephemeral():
            raise bad_request("Linked sandboxes must be ephemeral (set autoDeleteInterval to 0)")
        owner = self.store.get(req.linked_sandbox)
        if owner.linked_sandbox_id:
            raise bad_request(
                f"Linked sandbox {owner.id} is itself linked to another sandbox; chained links are not allowed"
            )
        if owner.state not in ("started", "stopped"):
            raise bad_request(
                f"Linked sandbox must be in STARTED or STOPPED state with an assigned runner (current: {owner.state})"
            )
        return owner

    def _skeleton(self, rec: SandboxRecord, warm: str | None = None) -> Work:
        async def work() -> str | None:
            try:
                if warm is not None:
                    os.rename(warm, sandbox_dir(self.store.root, rec.id))
                else:
                    make_skeleton(sandbox_dir(self.store.root, rec.id), rec.user)  # two mkdirs: no thread hop
                if rec.volumes:
                    root = sandbox_dir(self.store.root, rec.id)
                    await asyncio.to_thread(self.catalog.volumes.mount, root, rec.volumes)
            except OSError as exc:
                return f"cannot create sandbox directory: {exc}"
            finally:
                if warm is not None:
                    remove_tree(warm)  # only still there if it was not moved into place
            if self.store.faults.error_state("create"):
                return "injected fault: sandbox failed to start"
            return await self._container(rec) or await self._network(rec)

        return work

    async def _container(self, rec: SandboxRecord) -> str | None:
        """Container mode: create the container of a sandbox whose snapshot names an image; a
        failure reason, or None (also when the sandbox runs without a container)."""
        containers = self.store.containers
        snap = self.catalog.find_snapshot(rec.snapshot) if rec.snapshot else None
        if containers is None or snap is None or not snap.image_name:
            return None
        try:
            rec.container = await containers.create(rec.id, snap.image_name)
        except ContainerError as exc:
            return str(exc)
        except asyncio.CancelledError:  # deleted while podman ran: it may have made one anyway
            self.store.spawn(containers.remove(rec.id))
            raise
        if rec.id not in self.store.records:  # forgotten meanwhile: nobody else will remove it
            self.store.spawn(containers.remove(rec.id))
        return None

    async def _network(self, rec: SandboxRecord) -> str | None:
        """Set up the sandbox's network (`network`); a failure reason, or None."""
        try:
            owner = self.store.records.get(rec.linked_sandbox_id or "")
            if owner is not None:
                await asyncio.to_thread(self.store.network.link_hosts, rec.id, owner.id, [owner.name, owner.id])
            else:
                await self.store.network.apply(rec.id, block_all=rec.network_block_all,
                                               allow_list=rec.network_allow_list)  # fmt: skip
        except (OSError, RuntimeError) as exc:
            return f"cannot set up the sandbox network: {exc}"
        return None

    async def _create_from_snapshot(self, req: CreateRequest, url: str) -> dict[str, Any]:
        name = req.snapshot if req.snapshot and req.snapshot.strip() else DEFAULT_SNAPSHOT
        snap = self.catalog.find_snapshot(name)
        if snap is None:
            raise bad_request(f"Snapshot {name} not found. Did you add it through the Daytona Dashboard?")
        if snap.state != "active":
            raise bad_request(f"Snapshot {name} is {snap.state}")
        if snap.gpu > 0 and not req.ephemeral():
            raise bad_request("GPU sandboxes must be ephemeral - set autoDeleteInterval to 0")
        owner = self._resolve_linked(req)
        self._check_quota(snap.cpu, snap.mem, snap.disk, snap.gpu)
        rec = self._new_record(req, snap.name, (snap.cpu, snap.mem, snap.disk, snap.gpu))
        rec.linked_sandbox_id = owner.id if owner else None
        snap.last_used_at = time.time()
        warm = None
        if snap.gpu <= 0 and owner is None and not req.volumes and self.catalog.has_pool(snap.name):
            eligible = rec.user == DEFAULT_USER and not req.env and not req.has_secrets
            warm = self.catalog.take(snap.name) if eligible else None
            self.store.stats.bump("pool_hits" if warm else "pool_misses")
        self.store.insert(rec)
        if warm is not None:
            return await self._assign_warm(rec, warm, url)
        inserted = sandbox_dto(rec, url)
        steps = []
        if snap.name not in self._pulled:
            self._pulled.add(snap.name)
            steps.append(Step("pulling_snapshot", self._seconds("pulling_snapshot")))
        steps.append(Step("creating", self._seconds("creating", "create"), self._skeleton(rec)))
        task = self._run(rec, steps, "started")
        await self._until_settled(rec, task, url)
        return inserted

    async def _assign_warm(self, rec: SandboxRecord, warm: str, url: str) -> dict[str, Any]:
        delay = self.store.faults.faults.latency_for("pool_create")
        if delay:
            await asyncio.sleep(delay)
        failure = await self._skeleton(rec, warm)()
        self.store.set_state(rec, "error" if failure else "started", error_reason=failure)
        if failure:
            raise bad_request(f"Sandbox failed to start: {failure}")
        return sandbox_dto(rec, url)

    async def _create_from_image(self, req: CreateRequest, url: str) -> dict[str, Any]:
        d_cpu, d_mem, d_disk, d_gpu = IMAGE_DEFAULTS
        cpu, mem, disk, gpu = req.cpu or d_cpu, req.memory or d_mem, req.disk or d_disk, req.gpu or d_gpu
        if gpu > 0 and not req.ephemeral():
            raise bad_request("GPU sandboxes must be ephemeral - set autoDeleteInterval to 0")
        self._check_quota(cpu, mem, disk, gpu)
        rec = self._new_record(req, None, (cpu, mem, disk, gpu))
        assert req.build_info is not None
        key = hashlib.sha256(json.dumps(req.build_info, sort_keys=True).encode()).hexdigest()
        rec.build_key = key
        self.store.insert(rec)
        steps = []
        if self._seconds("pending_build") > 0:
            steps.append(Step("pending_build", self._seconds("pending_build")))
        dockerfile = str(req.build_info.get("dockerfileContent", ""))
        rec.build_log.append(f"Building image {key[:12]} from a Dockerfile of {len(dockerfile.splitlines())} lines")
        if key not in self._built:
            build = Step("building_snapshot", self._seconds("building_snapshot"), self._build(key, rec, dockerfile),
                         "build_failed")  # fmt: skip
            steps.append(build)
        else:
            rec.build_log.append("Using the image built before")
        steps.append(Step("creating", self._seconds("creating", "create"), self._skeleton(rec)))
        self._run(rec, steps, "started")
        return sandbox_dto(rec, url)

    def _build(self, key: str, rec: SandboxRecord, dockerfile: str) -> Work:
        async def work() -> str | None:
            steps = [line for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            for number, line in enumerate(steps, start=1):
                rec.build_log.append(f"Step {number}/{len(steps)} : {line.strip()}")
            reason = self.store.faults.build_failure()
            if reason is None:
                self._built.add(key)
            rec.build_log.append(f"Build failed: {reason}" if reason else "Build complete")
            self.store.stats.bump("builds_failed" if reason else "images_built")
            return reason

        return work

    # start / stop / archive / delete ---------------------------------------------------

    async def start(self, rec: SandboxRecord, url: str) -> dict[str, Any]:
        """``POST /sandbox/{id}/start``."""
        if not check_start(rec):
            return sandbox_dto(rec, url)
        self._check_quota(rec.cpu, rec.memory, rec.disk, rec.gpu, exclude=rec.id)
        was = rec.state
        self.store.set_desired(rec, "started")
        answered = sandbox_dto(rec, url)

        async def boot() -> str | None:
            await asyncio.to_thread(os.makedirs, sandbox_dir(self.store.root, rec.id), exist_ok=True)
            return "injected fault: sandbox failed to start" if self.store.faults.error_state("start") else None

        first = "restoring" if was == "archived" else "starting"
        task = self._run(rec, [Step(first, self._seconds(first), boot)], "started")
        if was == "archived":
            return answered
        return await self._until_settled(rec, task, url) or answered

    async def stop(self, rec: SandboxRecord, url: str, *, force: bool = False) -> dict[str, Any]:
        """``POST /sandbox/{id}/stop`` (an ephemeral sandbox is deleted instead)."""
        check_stop(rec)
        if ephemeral(rec):
            self._delete(rec, "delete")
            return sandbox_dto(rec, url)
        self.store.set_desired(rec, "stopped")
        answered = sandbox_dto(rec, url)
        terminate = self._terminate(rec, 0.0 if force else STOP_GRACE)
        self._run(rec, [Step("stopping", self._seconds("stopping"), terminate)], "stopped")
        return answered

    def _terminate(self, rec: SandboxRecord, grace: float) -> Work:
        async def work() -> str | None:
            procs = self.store.procs.get(rec.id)
            if procs is not None:
                await procs.terminate_all("sandbox stopped", grace)
            return None

        return work

    async def archive(self, rec: SandboxRecord, url: str) -> dict[str, Any]:
        """``POST /sandbox/{id}/archive``."""
        check_archive(rec)
        self.store.set_desired(rec, "archived")
        self.store.set_state(rec, "archiving")
        answered = sandbox_dto(rec, url)
        self._run(rec, [Step("archiving", self._seconds("archiving"))], "archived")
        return answered

    async def delete(self, rec: SandboxRecord, url: str) -> dict[str, Any]:
        """``DELETE /sandbox/{id}``: soft delete; the sandbox goes ``destroyed`` in the background."""
        check_delete(rec)
        self._delete(rec, "delete")
        return sandbox_dto(rec, url)

    def _delete(self, rec: SandboxRecord, reason: str) -> None:
        rec.gone_reason = reason
        self.store.soft_delete(rec)
        steps = [Step("destroying", self._seconds("destroying"), self._kill(rec))]
        if rec.state in ("archived", "pending_build"):  # nothing runs: straight to destroyed
            steps = [Step("destroyed", 0.0, self._kill(rec))]
        self._run(rec, steps, "destroyed")
        for follower in self.store.followers(rec.id):
            if follower.desired != "destroyed" and not (follower.pending and follower.state != "pending_build"):
                self._delete(follower, "delete")

    def _kill(self, rec: SandboxRecord) -> Work:
        async def work() -> str | None:
            procs = self.store.procs.get(rec.id)
            if procs is not None:
                procs.kill_all("sandbox destroyed")
            await self.store.network.release(rec.id)
            return None

        return work

    async def apply_network(self, rec: SandboxRecord) -> None:
        """Enforce changed network settings on a sandbox (`network`); commands started later see them."""
        if rec.linked_sandbox_id is None:
            try:
                await self.store.network.apply(rec.id, block_all=rec.network_block_all,
                                               allow_list=rec.network_allow_list)  # fmt: skip
            except RuntimeError as exc:
                raise ApiError(500, f"cannot apply the network settings: {exc}") from exc

    async def automatic(self, rec: SandboxRecord, reason: str) -> None:
        """Carry out a due automatic action (`lifecycle`)."""
        if reason == "auto_stop":
            if ephemeral(rec):
                self._delete(rec, "auto_delete")
            else:
                await self.stop(rec, "")
            self.store.stats.bump("auto_stopped")
        elif reason == "auto_archive":
            await self.archive(rec, "")
            self.store.stats.bump("auto_archived")
        else:
            self._delete(rec, reason)

