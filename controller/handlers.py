"""kopf registrations, and nothing else: thin wrappers over the supervisor and adapters.

- `configure` (startup): kopf settings (finalizer and annotation prefixes under agenttask.io,
  peering, timeouts), then the shared `Runtime` (Kubernetes client, Daytona client, admission
  queue, runner zipapp) and the HTTP server (health, metrics).
- `slots` (index): which tasks hold an admission slot or wait for one; complete before any
  supervisor starts, so admission after a restart never exceeds the limit.
- `supervise` (daemon): one per AgentTask that needs supervision.
- `cleanup` (delete): deletes every sandbox of the task (404 = success) before kopf removes
  the `agenttask.io/sandbox-cleanup` finalizer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Mapping
from typing import Any, cast

import kopf

from . import login, maintenance, metrics, plan  # login: registers @kopf.on.login
from .admission import AdmissionQueue, Waiting
from .api import GROUP, PLURAL, VERSION, AgentTask, Phase
from .errors import Fatal, Retryable
from .github import integration
from .httpserver import HttpServer
from .kube import Kube
from .readiness import Readiness
from .runner.pack import build_zipapp
from .sandboxes import LABEL_INSTANCE, LABEL_UID, Sandboxes
from .settings import Settings
from .statuspage import TaskView, status_routes, task_view
from .supervisor import Runtime, Supervisor

Logger = logging.Logger | logging.LoggerAdapter[Any]
FINALIZER = "agenttask.io/sandbox-cleanup"

_state: dict[str, Any] = {}


def runtime() -> Runtime:
    rt: Runtime = _state["runtime"]
    return rt


def operator_settings() -> Settings:
    configured: Settings | None = _state.get("settings")
    if configured is None:
        configured = _state["settings"] = Settings()
    return configured


def use_settings(value: Settings) -> None:
    """Set the settings before the operator starts (the CLI does; tests may)."""
    _state["settings"] = value


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: Logger, **kwargs: Any) -> None:
    cfg = operator_settings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="agenttask.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(  # no handler reacts to spec
        prefix="agenttask.io", key="last-handled-configuration",  # changes; a 1 MiB issue body would not
        ignored_fields=["spec.issue.body"])  # fit the 256 KiB annotation limit
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    priority = random.randint(1, 2**31 - 1)
    settings.peering.priority = priority
    settings.peering.lifetime = cfg.peering_lifetime_seconds
    settings.execution.max_workers = 4

    kube = await Kube.connect()
    sandboxes = Sandboxes.connect(
        api_url=cfg.daytona_api_url,
        api_key=cfg.daytona_api_key.get_secret_value() if cfg.daytona_api_key else None,
        target=cfg.daytona_target, request_timeout=cfg.daytona_request_timeout_seconds,
        retries=cfg.daytona_retries)
    queue = AdmissionQueue(limit=cfg.max_active_sandboxes, per_namespace=cfg.max_active_per_namespace)
    github = _state["github"] = integration.configure(cfg, kube=kube)  # None: GitHub not configured
    metrics.ADMISSION_LIMIT.set(cfg.max_active_sandboxes)
    _state["runtime"] = Runtime(settings=cfg, kube=kube, sandboxes=sandboxes, queue=queue,
                                runner=build_zipapp(), post_event=_post_event,
                                on_transition=github.on_transition if github else None)
    _state["maintenance"] = asyncio.create_task(maintenance.run_forever(_state["runtime"], priority=priority),
                                                name="agenttask-maintenance")
    readiness = _state["readiness"] = Readiness(configured=lambda: "runtime" in _state, namespaces=cfg.namespaces)
    login.on_login(readiness.use)  # /readyz probes the API with the connection kopf logs in with
    server = HttpServer(host=cfg.http_host, port=cfg.http_port, ready=readiness.check)
    server.add_routes([*status_routes(kwargs["task_views"]), *(github.routes() if github else [])])
    await server.start()
    _state["http"] = server
    logger.info("operator configured: instance %s, http on %s", cfg.instance_id, server.url)


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    loop_task: asyncio.Task[None] | None = _state.pop("maintenance", None)
    if loop_task is not None:
        loop_task.cancel()
    server: HttpServer | None = _state.pop("http", None)
    if server is not None:
        await server.stop()
    readiness: Readiness | None = _state.pop("readiness", None)
    if readiness is not None:
        await readiness.close()
    rt: Runtime | None = _state.pop("runtime", None)
    if rt is not None:
        await rt.sandboxes.close()
    github: integration.GitHubIntegration | None = _state.pop("github", None)
    if github is not None:
        await github.close()


# ------------------------------------------------------------------------- index

_phases: dict[tuple[str, str], str] = {}


def _holds_slot(task: AgentTask) -> bool:
    status = task.status
    if status.start_time is None or status.phase in (None, Phase.PENDING, Phase.QUEUED):
        return False
    if status.phase is not None and status.phase.terminal:
        box = status.sandbox
        return box is not None and box.name is not None and not box.deleted and box.retain_until is None
    return True


@kopf.index(GROUP, VERSION, PLURAL)
def slots(body: kopf.Body, namespace: str | None, name: str,
          **_: Any) -> dict[tuple[str, str], tuple[bool, Waiting | None]]:
    task = AgentTask.from_body(body)
    key = (namespace or "", name)
    phase = task.status.phase.value if task.status.phase else "Pending"
    _phases[key] = phase
    _publish_phase_counts()
    if _holds_slot(task):
        return {key: (True, None)}
    if task.status.phase in (None, Phase.PENDING, Phase.QUEUED) and not task.spec.suspend:
        created = task.metadata.creation_timestamp or dt.datetime.now(dt.UTC)
        return {key: (False, Waiting(key=key, created=created, uid=task.metadata.uid))}
    return {}


@kopf.index(GROUP, VERSION, PLURAL)
def task_views(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], TaskView]:
    """The status page's rows (`statuspage.py`), kept current by kopf from its watch."""
    return {(namespace or "", name): task_view(AgentTask.from_body(body))}


def _publish_phase_counts() -> None:
    counts = dict.fromkeys((p.value for p in Phase), 0)
    for phase in _phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase, count in counts.items():
        metrics.TASKS.labels(phase).set(count)
    metrics.QUEUE_DEPTH.set(counts.get("Queued", 0))


def _seed(queue: AdmissionQueue, index: kopf.Index[tuple[str, str], tuple[bool, Waiting | None]]) -> None:
    holding, waiting = [], []
    for key, entries in index.items():
        for holds, item in entries:
            if holds:
                holding.append(key)
            elif item is not None:
                waiting.append(item)
    queue.seed(holding, waiting)


# ------------------------------------------------------------------- supervisor


def _needs_supervision(body: kopf.Body, **_: Any) -> bool:
    rt: Runtime | None = _state.get("runtime")
    return plan.needs_supervision(AgentTask.from_body(body), rt.config if rt is not None else None)


@kopf.daemon(GROUP, VERSION, PLURAL, id="supervisor", when=_needs_supervision, cancellation_timeout=10.0,
             initial_delay=lambda **_: random.uniform(0, 0.2))
async def supervise(body: kopf.Body, stopped: kopf.DaemonStopped, logger: Logger,
                    **kwargs: Any) -> None:
    rt = runtime()
    _seed(rt.queue, kwargs["slots"])
    task = AgentTask.from_body(body)
    if _holds_slot(task):
        rt.queue.holds((task.metadata.namespace, task.metadata.name))
    await Supervisor(rt, body=body, logger=logger).run(stopped)
    rt.queue.release((task.metadata.namespace, task.metadata.name))
    metrics.ADMITTED.set(rt.queue.active)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="sandbox-cleanup")
async def cleanup(body: kopf.Body, namespace: str | None, name: str, logger: Logger, **_: Any) -> None:
    """Delete every sandbox of the task (all attempts) before the finalizer is released."""
    rt = runtime()
    task = AgentTask.from_body(body)
    key = (namespace or "", name)
    _phases.pop(key, None)
    _publish_phase_counts()
    try:
        names = {plan.sandbox_name(task.metadata.uid, n) for n in range(1, max(task.status.attempts, 1) + 1)}
        async for sandbox in rt.sandboxes.list_labelled({LABEL_UID: task.metadata.uid,
                                                         LABEL_INSTANCE: rt.settings.instance_id}):
            names.add(sandbox.name)
        for sandbox_name in sorted(names):
            if await rt.sandboxes.delete_if_exists(sandbox_name):
                logger.info("deleted sandbox %s of the deleted task", sandbox_name)
    except Retryable as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after or 5) from None
    except Fatal as exc:
        raise kopf.TemporaryError(str(exc), delay=30) from None
    rt.queue.release(key)
