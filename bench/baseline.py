"""The baseline: the same N tasks driven straight through the `daytona` SDK, no Kubernetes.

Per task, at most `concurrency` at a time (like the operator's admission slots): create the
sandbox with the operator's name, labels and safety-net intervals; upload the operator's
context files (`controller.context.context_files`, runner zipapp included); clone the
repository; start the runner as an async session command; follow its log stream until it
exits; read the exit code and result.json; delete. That is the work the operator cannot avoid,
with nothing else in between — the physical limit the operator is compared with.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig, FileUpload, SessionExecuteRequest

from controller import context, plan
from controller.api import AgentTask
from controller.runner.pack import build_zipapp
from controller.settings import Settings

from .workload import task_body


async def _one(client: AsyncDaytona, task: AgentTask, *, settings: Settings, runner: bytes,
               gate: asyncio.Semaphore, marks: dict[str, Any]) -> None:
    async with gate:
        name = plan.sandbox_name(task.metadata.uid, 1)
        spec = context.sandbox_spec(task, name=name, attempt=1, settings=settings)
        params = CreateSandboxFromSnapshotParams(
            name=name, labels=dict(spec.labels), snapshot=spec.snapshot,
            auto_stop_interval=spec.auto_stop_minutes, auto_delete_interval=spec.auto_delete_minutes,
            language="python")
        sandbox = await client.create(params, timeout=120)
        files = context.context_files(task, attempt=1, settings=settings, runner=runner,
                                      env=context.base_env(settings))
        await sandbox.fs.upload_files([FileUpload(source=data, destination=path) for path, data in files.items()])
        await sandbox.git.clone(task.spec.repository.url, settings.repo_dir, branch=task.spec.repository.base_branch)
        sid = plan.session_id(1)
        await sandbox.process.create_session(sid)
        started = await sandbox.process.execute_session_command(
            sid, SessionExecuteRequest(command=context.runner_command(settings), run_async=True))
        marks["running"] = time.time()
        await sandbox.process.get_session_command_logs_async(sid, started.cmd_id, lambda _: None, lambda _: None)
        command = await sandbox.process.get_session_command(sid, started.cmd_id)
        marks["exit_code"] = command.exit_code
        raw = await sandbox.fs.download_file(context.result_path(settings))
        marks["outcome"] = json.loads(raw).get("outcome")
        await client.delete(sandbox)
        marks["done"] = time.time()


async def run(*, api_url: str, api_key: str, n: int, concurrency: int, repo_url: str,
              spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run N tasks; returns per-task marks (Unix seconds) keyed by sandbox name, and the wall time."""
    settings = Settings()
    runner = build_zipapp()
    tasks = []
    for i in range(n):
        body = task_body(name=f"bench-{i:05d}", namespace="baseline", repo_url=repo_url, **(spec or {}))
        body["metadata"]["uid"] = str(uuid.uuid4())
        tasks.append(AgentTask.from_body(body))
    gate = asyncio.Semaphore(concurrency)
    marks: dict[str, dict[str, Any]] = {}
    async with AsyncDaytona(DaytonaConfig(api_url=api_url, api_key=api_key)) as client:
        submitted = time.time()
        for task in tasks:
            marks[plan.sandbox_name(task.metadata.uid, 1)] = {"applied": submitted}
        await asyncio.gather(*(_one(client, t, settings=settings, runner=runner, gate=gate,
                                    marks=marks[plan.sandbox_name(t.metadata.uid, 1)]) for t in tasks))
        wall = time.time() - submitted
    return {"wall_seconds": wall, "tasks": marks}
