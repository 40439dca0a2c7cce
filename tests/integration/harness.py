"""Processes for operator integration tests: the embedded sandbox server and the operator itself.

Both run as real subprocesses (`agenttask sandbox-server`, `agenttask run`), exactly as a user
runs them; tests talk to them over HTTP and to the apiserver with kubectl / kr8s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controller.devcluster.cluster import terminate

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]

# Everything operators emitted during the session, and every secret value tests handed them:
# conftest scans the former for the latter when the session ends.
EMITTED: list[Path] = []
SECRETS: set[str] = set()


def register_secret(value: str) -> str:
    SECRETS.add(value)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class SandboxServer:
    process: subprocess.Popen[str]
    api_url: str
    api_key: str
    root: Path

    @property
    def base(self) -> str:
        return self.api_url.removesuffix("/api")

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/_admin/stats")
        return result

    def set_faults(self, faults: dict[str, Any]) -> None:
        self._request("POST", "/_admin/faults", faults)

    def sandboxes(self, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "?limit=200"
            if labels:
                query += "&labels=" + urllib.parse.quote(json.dumps(labels))
            if cursor:
                query += "&cursor=" + urllib.parse.quote(cursor)
            page = self._request("GET", "/api/sandbox" + query)
            items.extend(page["items"])
            cursor = page.get("nextCursor")
            if not cursor:
                return items

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            got: dict[str, Any] = self._request("GET", f"/api/sandbox/{name}")
            return got
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


@contextlib.contextmanager
def sandbox_server(root: Path, *, api_key: str = "test-daytona-key-0001", extra: tuple[str, ...] = ()
                   ) -> Iterator[SandboxServer]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "sandbox-server", "--port", "0", "--api-key", api_key,
         "--root", str(root), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, start_new_session=True,
    )
    register_secret(api_key)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("DAYTONA_API_URL="), f"unexpected first line {line!r}"
        yield SandboxServer(proc, line.removeprefix("DAYTONA_API_URL="), api_key, root)
    finally:
        terminate([proc.pid], grace=15)
        proc.wait()


@dataclass
class Operator:
    """One `agenttask run` process; restartable, killable."""

    kubeconfig: Path
    server: SandboxServer
    namespace: str
    log_path: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    instance_id: str = "itest"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTTASK_", "DAYTONA_"))}
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "DAYTONA_API_URL": self.server.api_url,
            "DAYTONA_API_KEY": self.server.api_key,
            "AGENTTASK_INSTANCE_ID": self.instance_id,
            "AGENTTASK_POLL_INTERVAL_SECONDS": "0.5",
            "AGENTTASK_MAX_POLL_INTERVAL_SECONDS": "3",
            "AGENTTASK_STREAM_RECHECK_SECONDS": "5",
            "AGENTTASK_LOG_TAIL_INTERVAL_SECONDS": "2",
            "AGENTTASK_RETRY_BASE_SECONDS": "0.2",
            "AGENTTASK_RETRY_MAX_SECONDS": "3",
            "AGENTTASK_HTTP_HOST": "127.0.0.1",
            "AGENTTASK_HTTP_PORT": str(self.http_port),
            "AGENTTASK_STANDALONE": "true",
            # like a pod's name: kept across restarts of this operator, distinct between operators
            "AGENTTASK_REPLICA_ID": f"{self.instance_id}/{self.log_path.stem}",
        })
        env.update(self.env_overrides)
        return env

    def start(self) -> Operator:
        if self.log_path not in EMITTED:
            EMITTED.append(self.log_path)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", "--namespace", self.namespace],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=ROOT, start_new_session=True)
        log.close()
        wait_for(self._healthy, timeout=60, what="operator /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited early:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def ready(self) -> bool:
        """True when /readyz answers 200 (watching and reconciling, or a healthy standby)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def admitted_tasks(self) -> float:
        """`agenttask_admitted_tasks`: admission slots held now."""
        match = re.search(r"^agenttask_admitted_tasks (\S+)$", self.metrics(), re.M)
        assert match, "agenttask_admitted_tasks is not exported"
        return float(match.group(1))

    def wait_slots_released(self, timeout: float = 30) -> None:
        """Every finished task's admission slot is given back (none leaked)."""
        wait_for(lambda: self.admitted_tasks() == 0, timeout=timeout, what="every admission slot released")

    def kill(self) -> None:
        """SIGKILL, as a crashing node would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(OSError):  # keep the final metrics for the session-wide secret scan
                snapshot = self.log_path.with_suffix(".metrics")
                snapshot.write_text(self.metrics())
                EMITTED.append(snapshot)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def operator_for(kubeconfig: Path, server: SandboxServer, namespace: str, tmp_path: Path, name: str = "operator",
                 **env: str) -> Operator:
    """An Operator watching `namespace` with its own instance id and log file (not started)."""
    return Operator(kubeconfig=kubeconfig, server=server, namespace=namespace, log_path=tmp_path / f"{name}.log",
                    instance_id=f"it-{namespace}", env_overrides=env)


def make_repo(tmp: Path, *, files: dict[str, str] | None = None) -> tuple[Path, str]:
    """A bare repository with one commit on `main`; returns (bare path, file:// URL)."""
    work, bare = tmp / "seed", tmp / "origin.git"
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    for rel, text in (files or {"README.md": "# demo\n"}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "initial"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare, f"file://{bare}"


def agent_script(tmp: Path, name: str, body: str) -> list[str]:
    """Write a Python scripted agent and return the argv that runs it."""
    path = tmp / f"{name}.py"
    path.write_text(body)
    return [sys.executable, str(path)]
