"""The benchmark workload, shared by the baseline and the operator run.

One trivial task (the same AgentTask body for both runs, the same runner and agent), the
embedded sandbox server's latency flags, and small helpers (a process RSS sampler, the
apiserver's own /metrics). Processes are started with `tests/integration/harness.py`, the same
code the integration tests use.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from controller.api import API_VERSION, KIND
from controller.devcluster import DevCluster

AGENT = ["python3", "-c", "print('ok')"]
SLEEPER = ["sleep", "5"]
"""The second regime's agent: its work costs the machine nothing, so what is left is orchestration."""
DEFAULT_LATENCY = {"create": 0.09, "*": 0.02}
DEFAULT_CONCURRENCY = 50


def latency_flags(latency: dict[str, float]) -> tuple[str, ...]:
    flags: list[str] = []
    for op, seconds in latency.items():
        flags += ["--latency", f"{op}={seconds}"]
    return tuple(flags)


def task_body(*, name: str, namespace: str, repo_url: str, **spec: Any) -> dict[str, Any]:
    """The AgentTask every benchmark task is: a repository and the trivial agent."""
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"repository": {"url": repo_url}, "agent": {"command": list(AGENT)}, **spec},
    }


@dataclass
class RssSampler:
    """Samples one process's RSS in a thread; `peak` in bytes."""

    pid: int
    interval: float = 0.2
    peak: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.time(), rss))
            self._stop.wait(self.interval)


def apiserver_metrics(cluster: DevCluster) -> str:
    """The apiserver's own Prometheus exposition (admin token)."""
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    req = urllib.request.Request(f"{cluster.server}/metrics",
                                 headers={"Authorization": f"Bearer {cluster.admin.token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        text: str = resp.read().decode()
        return text
