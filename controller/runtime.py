"""The dependencies every supervisor of one operator process shares (built by `handlers`).

Nothing here acts: it holds the adapters (Kubernetes, Daytona), the admission queue, the
operator-wide health, the warm-pool claims, the runner zipapp and the plan's configuration
derived from the settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import plan
from .admission import AdmissionQueue
from .api import AgentTask, AgentTaskStatus
from .health import Health
from .kube import Kube
from .quotabook import QuotaBook
from .sandboxes import Sandboxes
from .settings import Settings
from .warmpool import PoolClaims

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
# Called after a status with a new phase was written: (task before, new status, the object as
# written). Optional (the GitHub progress notifier); it must not raise.
TransitionHook = Callable[[AgentTask, AgentTaskStatus, Mapping[str, Any]], Awaitable[None]]
# Renews the repository token of a running task where the operator mints it (GitHub App mode).
CredentialsHook = Callable[[AgentTask], Awaitable[None]]


def plan_config(s: Settings) -> plan.PlanConfig:
    return plan.PlanConfig(
        default_deadline_seconds=s.default_active_deadline_seconds,
        default_keep_for_seconds=s.default_keep_for_seconds,
        poll_interval_seconds=s.poll_interval_seconds,
        max_poll_interval_seconds=s.max_poll_interval_seconds,
        log_tail_interval_seconds=s.log_tail_interval_seconds,
        default_ttl_seconds=s.default_ttl_seconds_after_finished,
        identity=s.replica_id,
        claim_seconds=s.claim_seconds,
        provisioning_timeout_seconds=s.provisioning_timeout_seconds,
        safety_margin_minutes=s.safety_margin_minutes,
    )


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    sandboxes: Sandboxes
    queue: AdmissionQueue
    runner: bytes
    post_event: EventPoster
    health: Health = field(default_factory=Health)
    config: plan.PlanConfig = field(init=False)
    pools: PoolClaims = field(default_factory=PoolClaims)
    quotas: QuotaBook = field(default_factory=QuotaBook)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    on_transition: TransitionHook | None = None
    refresh_credentials: CredentialsHook | None = None

    def __post_init__(self) -> None:
        self.config = plan_config(self.settings)
