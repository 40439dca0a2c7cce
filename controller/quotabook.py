"""The AgentTaskQuotas in force and what tasks used, read from kopf's in-memory indexes.

`QuotaBook` is what admission and the supervisor ask (`quota.py` holds the rules); it reads two
kopf indexes that the operator keeps current from its watches (`handlers.quotas`,
`handlers.task_uses`), so asking costs no API request. Before the indexes are filled (or when the
AgentTaskQuota CRD is not installed) it knows no quotas, and nothing is capped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from . import quota
from .api import AgentTask, Phase

Index = Mapping[Any, Iterable[Any]]


def task_use(task: AgentTask, *, holds_slot: bool) -> quota.Use:
    status = task.status
    finished = status.phase is not None and status.phase.terminal
    used = status.usage
    return quota.Use(namespace=task.metadata.namespace, requester=task.spec.audit.requested_by or "",
                     active=holds_slot,
                     running_since=status.start_time if not finished and status.phase != Phase.SUSPENDED else None,
                     finished_at=status.completion_time if finished else None,
                     cost_usd=used.cost_usd if used else 0.0, sandbox_seconds=used.sandbox_seconds if used else 0.0)


class QuotaBook:
    def __init__(self, quotas: Index | None = None, uses: Index | None = None):
        self._quotas = quotas
        self._uses = uses

    def quotas(self, namespace: str) -> list[quota.Quota]:
        if self._quotas is None:
            return []
        return [q for q in self._all(self._quotas) if isinstance(q, quota.Quota) and q.namespace == namespace]

    def all_quotas(self) -> list[quota.Quota]:
        return [q for q in self._all(self._quotas) if isinstance(q, quota.Quota)] if self._quotas is not None else []

    def uses(self) -> list[quota.Use]:
        return [u for u in self._all(self._uses) if isinstance(u, quota.Use)] if self._uses is not None else []

    @staticmethod
    def _all(index: Index) -> list[Any]:
        return [item for _, store in list(index.items()) for item in list(store)]

    def budget(self, *, namespace: str, requester: str, now: dt.datetime) -> quota.Block | None:
        found = self.quotas(namespace)
        if not any(q.windows for q in found):
            return None
        return quota.budget(namespace=namespace, requester=requester, quotas=found, uses=self.uses(), now=now)

    def groups_of(self, namespace: str, requester: str) -> list[tuple[str, int, str]]:
        return quota.groups(namespace=namespace, requester=requester, quotas=self.quotas(namespace))

    def cost_cap(self, *, namespace: str, requester: str) -> float | None:
        return quota.task_cost_cap(namespace=namespace, requester=requester, quotas=self.quotas(namespace))
