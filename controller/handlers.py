"""kopf registrations, and nothing else: thin wrappers over the supervisor and adapters.

State shared by the handlers travels in kopf's `memo` (an `App` put there by `operator.serve`),
never in module globals, so two operators in one process (tests) cannot see each other's.

- `configure` (startup): kopf settings (finalizer and annotation prefixes under agenttask.io,
  peering, timeouts), then the shared `Runtime` (Kubernetes client, Daytona client, admission
  queue, operator health, runner zipapp), the scrape-time metrics and the HTTP server.
- `slots` (index): which tasks hold an admission slot or wait for one; complete before any
  supervisor starts, so admission after a restart never exceeds the limit.
- `task_uses`, `quotas` (indexes) and `quota_status` (timer): AgentTaskQuotas, what tasks used,
  and the quotas' status (used and remaining).
- `task_views` (index): the status page's rows; phase counts for /metrics are computed from it
  at scrape time.
- `supervise` (daemon): one per AgentTask that needs supervision.
- `cleanup` (delete): deletes every sandbox of the task (404 = success) before kopf removes
  the `agenttask.io/sandbox-cleanup` finalizer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from . import login, logs, maintenance, metrics, plan  # login: registers @kopf.on.login
from .admission import AdmissionQueue, Waiting
from .api import GROUP, PLURAL, VERSION, AgentTask, Phase
from .errors import Cause, OperatorError, Retryable
from .github import integration
from .health import Health
from .httpserver import HttpServer
from .kube import Kube
from .liveness import Liveness
from .quota import Quota, Use
from .quota import report as quota_report
from .quotabook import QuotaBook, task_use
from .readiness import Readiness, Verdict
from .retry import RetryPolicy
from .runner.pack import build_zipapp
from .runtime import Runtime
from .sandboxes import LABEL_INSTANCE, LABEL_UID, Sandboxes
from .settings import Settings
from .shards import Held, ShardLeases
from .statuspage import TaskView, status_routes, task_view
from .supervisor import Supervisor

Logger = logging.Logger | logging.LoggerAdapter[Any]
FINALIZER = "agenttask.io/sandbox-cleanup"
QUOTA_PLURAL = "agenttaskquotas"
QUOTA_STATUS_SECONDS = 10.0
SPEC_CHANGED = "spec_changed"  # the id of the @kopf.on.event handler
SlotIndex = kopf.Index[tuple[str, str], tuple[bool, Waiting | None]]


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here reacts to a diff (no on.create/update/field handlers; the supervisor reads
    the spec itself), so nothing is stored: kopf's default would write a last-handled-configuration
    annotation into every object (one PATCH per task, and a deep copy of the body on every event).
    Every object's essence is empty, so every event is "nothing changed" (deletion is detected from
    deletionTimestamp, never from a diff). An annotation written by an earlier version is ignored."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@dataclass
class App:
    """Everything one operator process shares between its handlers (kept in kopf's memo)."""

    settings: Settings
    runtime: Runtime | None = None
    http: HttpServer | None = None
    readiness: Readiness | None = None
    github: integration.GitHubIntegration | None = None
    liveness: Liveness = field(default_factory=Liveness)
    supervisors: dict[tuple[str, str], Supervisor] = field(default_factory=dict)
    home_shard: tuple[int, str] | None = None  # sharded mode: (this replica's shard, the Leases' namespace)
    shards: ShardLeases | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def app_of(memo: Any) -> App:
    app: App = memo.app
    return app


def runtime_of(memo: Any) -> Runtime:
    rt = app_of(memo).runtime
    if rt is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return rt


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


def _own_pod() -> dict[str, Any] | None:
    """The operator's own Pod as an event target (downward API env in the chart), if known."""
    name, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not name or not namespace:
        return None
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if os.environ.get("POD_UID"):
        meta["uid"] = os.environ["POD_UID"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def _report_health(pod: dict[str, Any] | None) -> Callable[[Cause, bool, str], None]:
    log = logging.getLogger("controller.health")

    def report(cause: Cause, active: bool, message: str) -> None:
        text = logs.redact(message)[:1000]
        if active:
            log.error("operator degraded (%s): %s; tasks wait, nothing fails", cause, text)
        else:
            log.warning("operator no longer degraded (%s)", cause)
        if pod is not None:
            _post_event(pod, "Warning" if active else "Normal", str(cause) if active else f"{cause}Resolved",
                        text if active else f"{cause} cleared")

    return report


def _phase_counts(views: kopf.Index[tuple[str, str], TaskView]) -> Callable[[], dict[str, int]]:
    def counts() -> dict[str, int]:
        result: dict[str, int] = {}
        for _, store in views.items():
            for view in store:
                result[view.phase] = result.get(view.phase, 0) + 1
        return result

    return counts


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: Logger, memo: Any, **kwargs: Any) -> None:
    app = app_of(memo)
    cfg = app.settings
    settings.persistence.finalizer = FINALIZER
    # sharded: each replica keeps its own handler progress (a non-owner's retries of the delete
    # handler must not delay the owner's)
    prefix = f"shard{app.home_shard[0]}.agenttask.io" if app.home_shard is not None else "agenttask.io"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    priority = random.randint(1, 2**31 - 1)
    settings.peering.priority = priority
    settings.peering.lifetime = cfg.peering_lifetime_seconds
    settings.execution.max_workers = 4
    # kopf logs every @kopf.on.event handler's success at INFO: one line per watch event of every
    # task (most of the log, and its CPU); failures are still logged
    quiet = logs.DropMessages([f"Handler {SPEC_CHANGED!r} succeeded."])
    logging.getLogger("kopf.objects").addFilter(quiet)
    app.cleanups.append(lambda: logging.getLogger("kopf.objects").removeFilter(quiet))

    health = Health(outage_after=cfg.daytona_outage_seconds)
    health.on_change(_report_health(_own_pod()))
    kube = await Kube.connect(health=health)
    sandboxes = Sandboxes.connect(
        api_url=cfg.daytona_api_url,
        api_key=cfg.daytona_api_key.get_secret_value() if cfg.daytona_api_key else None,
        target=cfg.daytona_target, request_timeout=cfg.daytona_request_timeout_seconds,
        policy=RetryPolicy(base=min(cfg.retry_base_seconds, 1.0), cap=8.0, attempts=cfg.daytona_retries + 1),
        health=health, streams=cfg.max_active_sandboxes)
    book = QuotaBook(kwargs["quotas"], kwargs["task_uses"])
    queue = AdmissionQueue(limit=cfg.max_active_sandboxes, per_namespace=cfg.max_active_per_namespace,
                           groups_of=book.groups_of)
    github = app.github = integration.configure(cfg, kube=kube)  # None: GitHub not configured
    metrics.ADMISSION_LIMIT.set(cfg.max_active_sandboxes)
    rt = app.runtime = Runtime(settings=cfg, kube=kube, sandboxes=sandboxes, queue=queue, health=health, quotas=book,
                               runner=build_zipapp(), post_event=_post_event,
                               on_transition=github.on_transition if github else None,
                               refresh_credentials=github.refresh_credentials if github else None)
    views: kopf.Index[tuple[str, str], TaskView] = kwargs["task_views"]
    leases = app.shards = _shard_leases(cfg, app.home_shard, kube=kube, groups_of=book.groups_of)
    if leases is not None:
        shard_loop = asyncio.create_task(leases.run_forever(), name="agenttask-shards")
        app.background.append(shard_loop)
        app.liveness.watch("shards", shard_loop)
        metrics.ADMISSION_LIMIT.set(0)  # the shares of the shards owned, once their Leases are held
    app.cleanups.append(metrics.install(metrics.StateCollector(
        phases=_phase_counts(views), admitted=lambda: leases.admitted if leases is not None else queue.active,
        degraded=lambda: [str(c) for c in health.active()], causes=[str(c) for c in Cause],
        all_phases=[p.value for p in Phase])))
    loop = asyncio.create_task(maintenance.run_forever(
        rt, priority=priority, sharded=leases.owns_maintenance if leases is not None else None),
        name="agenttask-maintenance")
    app.background.append(loop)
    app.liveness.watch("maintenance", loop)
    readiness = app.readiness = Readiness(configured=lambda: app.runtime is not None, namespaces=cfg.namespaces)
    login.on_login(readiness.use)  # /readyz probes the API with the connection kopf logs in with

    async def ready() -> Verdict:
        verdict = await readiness.check()
        causes = health.active()
        if verdict.ready and causes:  # alive, watching, but an operator-wide cause stops all progress
            return Verdict(False, "degraded: " + "; ".join(f"{c}: {m}" for c, m in causes.items())[:1000])
        return verdict

    server = HttpServer(host=cfg.http_host, port=cfg.http_port, ready=ready, alive=app.liveness.check)
    server.add_routes([*status_routes(views), *(github.routes() if github else [])])
    await server.start()
    app.http = server
    logger.info("operator configured: instance %s, replica %s, http on %s", cfg.instance_id, cfg.replica_id,
                server.url)


def _shard_leases(cfg: Settings, home: tuple[int, str] | None, *, kube: Kube,
                  groups_of: Any) -> ShardLeases | None:
    if home is None:
        return None
    return ShardLeases(kube, shards=cfg.shards, ordinal=home[0], identity=cfg.replica_id, instance_id=cfg.instance_id,
                       namespace=home[1], lease_seconds=cfg.shard_lease_seconds, limit=cfg.max_active_sandboxes,
                       per_namespace=cfg.max_active_per_namespace, groups_of=groups_of)


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    app = app_of(memo)
    if app.shards is not None:
        await app.shards.release_all()  # daemons are stopped by now: another replica may go on at once
    for task in app.background:
        task.cancel()
    app.background.clear()
    if app.http is not None:
        await app.http.stop()
        app.http = None
    if app.readiness is not None:
        await app.readiness.close()
        app.readiness = None
    if app.runtime is not None:
        await app.runtime.sandboxes.close()
        await app.runtime.kube.close()
        app.runtime = None
    if app.github is not None:
        await app.github.close()
        app.github = None
    for undo in app.cleanups:
        undo()
    app.cleanups.clear()


# ------------------------------------------------------------------------- index


def _holds_slot(task: AgentTask) -> bool:
    status = task.status
    if status.start_time is None or status.phase in (None, Phase.PENDING, Phase.QUEUED, Phase.SUSPENDED):
        return False
    if status.phase is not None and status.phase.terminal:
        box = status.sandbox
        return box is not None and box.name is not None and not box.deleted and box.retain_until is None
    return True


@kopf.index(GROUP, VERSION, PLURAL)
async def slots(body: kopf.Body, namespace: str | None, name: str,
                **_: Any) -> dict[tuple[str, str], tuple[bool, Waiting | None]]:
    """Async on purpose: indexers then run on the event loop, never in executor threads."""
    task = AgentTask.from_body(body)
    key = (namespace or "", name)
    created = task.metadata.creation_timestamp or dt.datetime.now(dt.UTC)
    item = Waiting(key=key, created=created, uid=task.metadata.uid, requester=task.spec.audit.requested_by or "")
    if _holds_slot(task):
        return {key: (True, item)}
    if task.status.phase in (None, Phase.PENDING, Phase.QUEUED) and not task.spec.suspend:
        return {key: (False, item)}
    return {}


@kopf.index(GROUP, VERSION, PLURAL)
async def task_uses(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], Use]:
    """What each task used, for the AgentTaskQuota windows (`quotabook.py`)."""
    task = AgentTask.from_body(body)
    return {(namespace or "", name): task_use(task, holds_slot=_holds_slot(task))}


@kopf.index(GROUP, VERSION, QUOTA_PLURAL)
async def quotas(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], Quota]:
    """The AgentTaskQuotas in force (`quota.py`)."""
    return {(namespace or "", name): Quota.from_body(body)}


@kopf.timer(GROUP, VERSION, QUOTA_PLURAL, id="usage", interval=QUOTA_STATUS_SECONDS, initial_delay=1.0)
async def quota_status(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Write what the capped tasks used (and what is left) into the quota's status, when it changed."""
    app = app_of(memo)
    rt = app.runtime
    if rt is None or (app.shards is not None and not app.shards.owns_maintenance()):
        return
    quota_ = Quota.from_body(body)
    usage = quota_report(quota_, rt.quotas.uses(), rt.clock())
    status = body.get("status") or {}
    if status.get("usage") != usage or status.get("observedGeneration") != quota_.generation:
        patch.status["usage"] = usage
        patch.status["observedGeneration"] = quota_.generation
        patch.status["updateTime"] = rt.clock().strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.index(GROUP, VERSION, PLURAL)
async def task_views(body: kopf.Body, namespace: str | None, name: str,
                     **_: Any) -> dict[tuple[str, str], TaskView]:
    """The status page's rows (`statuspage.py`), kept current by kopf from its watch."""
    usage = (body.get("status") or {}).get("usage")  # issue #14's status.usage, shown as recorded
    return {(namespace or "", name): task_view(AgentTask.from_body(body), usage=usage)}


def _seed(queue: AdmissionQueue, index: SlotIndex, mine: Callable[[str], bool] = lambda _uid: True) -> None:
    """Rebuild `queue` from the index (`mine`: which tasks' UIDs it admits, in sharded mode)."""
    holding: list[tuple[tuple[str, str], str]] = []
    waiting: list[Waiting] = []
    for key, entries in index.items():
        for holds, item in entries:
            if item is not None and not mine(item.uid):
                continue
            if holds:
                holding.append((key, item.requester if item is not None else ""))
            elif item is not None:
                waiting.append(item)
    queue.seed(holding, waiting)


# ------------------------------------------------------------------- supervisor


def _needs_supervision(body: kopf.Body, memo: Any, **_: Any) -> bool:
    rt = app_of(memo).runtime
    return plan.needs_supervision(AgentTask.from_body(body), rt.config if rt is not None else None)


@kopf.daemon(GROUP, VERSION, PLURAL, id="supervisor", when=_needs_supervision, cancellation_backoff=2.0,
             cancellation_timeout=10.0,
             initial_delay=lambda **_: random.uniform(0, 0.2))
async def supervise(body: kopf.Body, stopped: kopf.DaemonStopped, logger: Logger, memo: Any,
                    **kwargs: Any) -> None:
    rt = runtime_of(memo)
    app = app_of(memo)
    leases = app.shards
    if leases is None:
        await _supervise(app, rt, body, stopped, logger, kwargs["slots"])
        return
    # Sharded: every replica runs this daemon for every task (so every replica's kopf keeps the
    # shared finalizer), but only the shard's owner supervises; the others wait for ownership.
    shard = leases.shard_of(AgentTask.from_body(body).metadata.uid)
    while not stopped.is_set():
        held = await leases.wait_owned(shard, stopped)
        if held is None:
            return
        until = _Either(stopped, held.lost)
        with leases.supervising(held):
            await _supervise(app, dataclasses.replace(rt, queue=held.queue), body, until, logger, kwargs["slots"],
                             mine=lambda uid: leases.shard_of(uid) == shard)
        if not until.is_set():
            return  # supervision ended by itself (the task needs no more)
        if not stopped.is_set():
            logger.info("shard %d is no longer this replica's: supervision paused", shard)


async def _supervise(app: App, rt: Runtime, body: kopf.Body, stopped: Any, logger: Logger, slots: SlotIndex,
                     mine: Callable[[str], bool] = lambda _uid: True) -> None:
    _seed(rt.queue, slots, mine)
    task = AgentTask.from_body(body)
    if _holds_slot(task):
        rt.queue.holds((task.metadata.namespace, task.metadata.name), task.spec.audit.requested_by or "")
    key = (task.metadata.namespace, task.metadata.name)
    supervisor = Supervisor(rt, body=body, logger=logger, on_step=app.liveness.beat, finalizer=FINALIZER)
    app.supervisors[key] = supervisor
    app.liveness.started()
    try:
        await supervisor.run(stopped)
    finally:
        app.liveness.ended()
        if app.supervisors.get(key) is supervisor:
            del app.supervisors[key]
        # Also when kopf cancels the daemon: the status write that ends supervision (the finished
        # task's sandbox seen gone) stops the daemon as soon as its watch event arrives, which can
        # be before the step that wrote it got to release the slot (a slot leaked each time).
        rt.queue.release(key)


class _Either:
    """Set when kopf stops the daemon or the shard is lost (the interface of kopf's `stopped`)."""

    def __init__(self, stopped: kopf.DaemonStopped, lost: asyncio.Event):
        self.stopped, self.lost = stopped, lost

    def is_set(self) -> bool:
        return self.stopped.is_set() or self.lost.is_set()

    async def wait(self) -> None:
        waits = [asyncio.ensure_future(self.stopped.wait()), asyncio.ensure_future(self.lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


@kopf.on.event(GROUP, VERSION, PLURAL, id=SPEC_CHANGED)
async def spec_changed(body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Hand every event's body to the task's supervisor (it keeps the newest), and wake it when
    the spec changed (suspend, cancel, a new deadline) instead of waiting for its next look. The
    operator's own status writes carry the generation they saw, so they wake nothing."""
    supervisor = app_of(memo).supervisors.get((namespace or "", name))
    if supervisor is None:
        return
    generation = (body.get("metadata") or {}).get("generation")
    if generation != (body.get("status") or {}).get("observedGeneration"):
        supervisor.nudge(body)
    else:
        supervisor.saw(body)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="sandbox-cleanup")
async def cleanup(body: kopf.Body, namespace: str | None, name: str, logger: Logger, memo: Any,
                  **_: Any) -> None:
    """Delete every sandbox of the task (all attempts) before the finalizer is released."""
    rt = runtime_of(memo)
    task = AgentTask.from_body(body)
    key = (namespace or "", name)
    leases = app_of(memo).shards
    held: Held | None = None
    if leases is not None:
        shard = leases.shard_of(task.metadata.uid)
        held = leases.owned(shard)
        if held is None:  # the owner cleans up; its kopf releases the finalizer (a dead owner's shard is taken over)
            raise kopf.TemporaryError(f"waiting for the replica of shard {shard} to delete the sandboxes",
                                      delay=max(leases.lease_seconds / 3, 1))
    try:
        names = {plan.sandbox_name(task.metadata.uid, n) for n in range(1, max(task.status.attempts, 1) + 1)}
        async for sandbox in rt.sandboxes.list_labelled({LABEL_UID: task.metadata.uid,
                                                         LABEL_INSTANCE: rt.settings.instance_id}):
            names.add(sandbox.name)
        for sandbox_name in sorted(names):
            if await rt.sandboxes.delete_if_exists(sandbox_name):
                logger.info("deleted sandbox %s of the deleted task", sandbox_name)
    except Retryable as exc:
        raise kopf.TemporaryError(logs.redact(str(exc)), delay=max(exc.retry_after or 5, 1)) from exc
    except OperatorError as exc:
        # operator-wide or refused: the finalizer stays until the sandbox is confirmed gone
        raise kopf.TemporaryError(logs.redact(str(exc)), delay=30) from exc
    (held.queue if held is not None else rt.queue).release(key)
