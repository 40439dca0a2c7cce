"""Prometheus metrics of the operator (`agenttask_` prefix, base units, `_total` counters).

docs/metrics.md lists every metric; a test compares that list with this module's registry and
runs `promtool check metrics` on the real exposition. Label values never carry user text or
secrets: only phases, reasons, operations, outcomes and paths from fixed vocabularies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

_TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)

ADMISSION_LIMIT = Gauge("agenttask_admission_limit", "Configured global limit of active sandboxes (sharded: the "
                        "shares of the shards this replica owns).",
                        registry=REGISTRY)
SHARDS_OWNED = Gauge("agenttask_shards_owned", "Shards this replica owns (sharded mode; 0 when not sharded).",
                     registry=REGISTRY)
TASKS_FINISHED = Counter("agenttask_tasks_finished_total", "AgentTasks that reached a terminal phase.",
                         ["phase", "reason"], registry=REGISTRY)
TASK_DURATION = Histogram("agenttask_task_duration_seconds", "Admission to completion, by result.",
                          ["result"], buckets=_TIME_BUCKETS, registry=REGISTRY)
TIME_TO_RUNNING = Histogram("agenttask_time_to_running_seconds",
                            "Creation of the AgentTask to its agent command running, by sandbox path.",
                            ["path"], buckets=_TIME_BUCKETS, registry=REGISTRY)
SANDBOX_CREATE_SECONDS = Histogram("agenttask_sandbox_create_seconds", "Latency of creating one sandbox.",
                                   buckets=_TIME_BUCKETS, registry=REGISTRY)
DAYTONA_REQUESTS = Counter("agenttask_daytona_requests_total", "Daytona API requests by operation and outcome.",
                           ["operation", "outcome"], registry=REGISTRY)
DAYTONA_LATENCY = Histogram("agenttask_daytona_request_seconds", "Latency of successful Daytona requests.",
                            ["operation"], buckets=_TIME_BUCKETS, registry=REGISTRY)
RECONCILE_ERRORS = Counter("agenttask_reconcile_errors_total",
                           "Errors while supervising a task, by kind (retryable, operator_wide, attempt_lost, "
                           "task_fault, fatal, unexpected).",
                           ["kind"], registry=REGISTRY)
ATTEMPTS_LOST = Counter("agenttask_attempts_lost_total", "Attempts whose sandbox was lost.", registry=REGISTRY)
STATUS_WRITES = Counter("agenttask_status_writes_total", "Status patches sent, by outcome.", ["outcome"],
                        registry=REGISTRY)
GC_RUNS = Counter("agenttask_gc_runs_total", "Orphan sweeps, by outcome (ok, aborted, dry_run).", ["outcome"],
                  registry=REGISTRY)
GC_SUSPECTS = Gauge("agenttask_gc_suspected_orphans", "Sandboxes the last sweep saw orphaned, awaiting a second "
                    "sweep to confirm before deletion.", registry=REGISTRY)
GC_DELETIONS = Counter("agenttask_gc_deletions_total", "Sandboxes deleted by the garbage collector, by reason.",
                       ["reason"], registry=REGISTRY)
AGENT_TOKENS = Counter("agenttask_agent_tokens_total", "Model tokens the agents of finished tasks used, by "
                       "namespace, requester and kind.", ["namespace", "requester", "kind"], registry=REGISTRY)
AGENT_COST = Counter("agenttask_agent_cost_usd_total", "The agents' own cost estimate (USD, list prices) of "
                     "finished tasks, by namespace and requester.", ["namespace", "requester"], registry=REGISTRY)
SANDBOX_SECONDS = Counter("agenttask_sandbox_seconds_total", "Sandbox time of finished tasks, by namespace and "
                          "requester.", ["namespace", "requester"], registry=REGISTRY)
WARM_POOL = Counter("agenttask_warm_pool_requests_total", "Sandbox starts from a snapshot with a warm pool.",
                    ["result"], registry=REGISTRY)


class StateCollector(Collector):
    """Gauges computed at scrape time from what the operator already knows (kopf's index of
    tasks, the admission queue, the operator health) instead of kept up to date by side effects
    on the hot path: `agenttask_tasks{phase}`, `agenttask_queue_depth`,
    `agenttask_admitted_tasks`, `agenttask_operator_degraded{cause}`."""

    def __init__(self, *, phases: Callable[[], Mapping[str, int]], admitted: Callable[[], int],
                 degraded: Callable[[], Iterable[str]], causes: Iterable[str], all_phases: Iterable[str]):
        self._phases, self._admitted, self._degraded = phases, admitted, degraded
        self._causes, self._all_phases = tuple(causes), tuple(all_phases)

    def collect(self) -> Iterator[Metric]:
        counts = self._phases()
        tasks = GaugeMetricFamily("agenttask_tasks", "AgentTasks known to the operator, by phase.", labels=["phase"])
        for phase in self._all_phases:
            tasks.add_metric([phase], counts.get(phase, 0))
        yield tasks
        yield GaugeMetricFamily("agenttask_queue_depth", "AgentTasks waiting for admission (phase Queued).",
                                value=counts.get("Queued", 0))
        yield GaugeMetricFamily("agenttask_admitted_tasks", "AgentTasks holding an admission slot (an active "
                                "sandbox).", value=self._admitted())
        active = set(self._degraded())
        degraded = GaugeMetricFamily("agenttask_operator_degraded", "1 while an operator-wide cause stops tasks "
                                     "from making progress (they wait, nothing fails), by cause.", labels=["cause"])
        for cause in self._causes:
            degraded.add_metric([cause], 1 if cause in active else 0)
        yield degraded


def install(collector: Collector) -> Callable[[], None]:
    """Register `collector`; returns the function that unregisters it."""
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)
