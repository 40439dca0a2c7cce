"""What goes into a sandbox: its create parameters, environment and the task-context files.

Pure functions of the task, the settings and the already-read secret values. User text (issue
title/body, prompt) only ever goes into files — never into a command line or a shell string;
the one shell command run in the sandbox is fixed (`python3 <ctx>/runner.pyz`), and the agent's
own argv travels inside task.json. See docs/runner.md for the contract with the runner.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from .api import AgentTask
from .sandboxes import (
    LABEL_ATTEMPT,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_ISSUE,
    LABEL_NAME,
    LABEL_NAMESPACE,
    LABEL_REQUESTED_BY,
    LABEL_UID,
    SandboxSpec,
)
from .settings import Settings

_LABEL_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_GITHUB = re.compile(r"^https://[^/]+/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def _label(value: object) -> str:
    return _LABEL_SAFE.sub("_", str(value))[:63]


def labels(task: AgentTask, *, attempt: int, instance_id: str) -> dict[str, str]:
    meta = task.metadata
    result = {
        LABEL_UID: meta.uid,
        LABEL_NAMESPACE: _label(meta.namespace),
        LABEL_NAME: _label(meta.name),
        LABEL_INSTANCE: _label(instance_id),
        LABEL_ATTEMPT: str(attempt),
    }
    if task.spec.issue is not None:
        result[LABEL_ISSUE] = str(task.spec.issue.number)
    if task.spec.audit.requested_by:
        result[LABEL_REQUESTED_BY] = _label(task.spec.audit.requested_by)
    if task.spec.audit.installation_id is not None:
        result[LABEL_INSTALLATION] = str(task.spec.audit.installation_id)
    return result


def safety_net(task: AgentTask, settings: Settings) -> tuple[int, int, int]:
    """(auto-stop minutes, auto-delete minutes, ttl minutes) so Daytona cleans up without us."""
    deadline = task.spec.active_deadline_seconds or settings.default_active_deadline_seconds
    minutes = math.ceil(deadline / 60) + settings.safety_margin_minutes
    auto_stop = task.spec.sandbox.auto_stop_minutes or minutes
    return min(auto_stop, minutes), settings.safety_margin_minutes, minutes


def sandbox_spec(task: AgentTask, *, name: str, attempt: int, settings: Settings) -> SandboxSpec:
    """Create parameters. No environment: secrets travel in the context's env.json (read and
    deleted by the runner), so Daytona never stores them and warm-pool sandboxes qualify."""
    box = task.spec.sandbox
    auto_stop, auto_delete, ttl = safety_net(task, settings)
    return SandboxSpec(
        name=name,
        labels=labels(task, attempt=attempt, instance_id=settings.instance_id),
        env={},
        snapshot=box.snapshot or (None if box.image else settings.default_snapshot),
        image=box.image,
        cpu=box.resources.cpu if box.resources else None,
        memory=box.resources.memory if box.resources else None,
        disk=box.resources.disk if box.resources else None,
        auto_stop_minutes=auto_stop,
        auto_delete_minutes=auto_delete,
        ttl_minutes=ttl,
        network_block_all=bool(box.network and box.network.block_all),
        network_allow_list=box.network.allow_list if box.network else (),
    )


def base_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    if settings.github_api_url:
        env["AGENTTASK_GITHUB_API_URL"] = settings.github_api_url
    return env


def github_repo(url: str) -> tuple[str, str] | None:
    match = _GITHUB.match(url)
    return (match["owner"], match["repo"]) if match else None


def issue_text(task: AgentTask) -> bytes:
    issue = task.spec.issue
    if issue is None:
        return b""
    title = issue.title or ""
    return f"# {title}\n\n".encode() + (issue.body or "").encode("utf-8", errors="surrogateescape")


def prompt_text(task: AgentTask) -> bytes:
    parts = ["You are working on a git repository checked out in the current directory."]
    issue = task.spec.issue
    if issue is not None:
        parts.append(f"Resolve GitHub issue #{issue.number}. Its text follows between the markers.")
    text = "\n\n".join(parts).encode()
    if issue is not None:
        text += b"\n\n----- ISSUE -----\n" + issue_text(task) + b"\n----- END ISSUE -----\n"
    if task.spec.prompt:
        text += b"\n\nAdditional instructions:\n" + task.spec.prompt.encode()
    text += (b"\n\nMake the change, keep it focused, and finish with a short summary of what you did. "
             b"Do not commit or push: the runner does that.\n")
    return text


MCP_CONFIG_FILE = "mcp.json"
GIT_TOKEN_FILE = "git-token"  # noqa: S105 - a file name; the runner reads it at every use (refreshable)


def agent_json(task: AgentTask, *, deadline: dt.datetime | None, max_cost_usd: float | None = None) -> dict[str, Any]:
    """task.json `agent`: the argv (None: the runner's default, Claude Code), its options and when
    the runner must stop it (`deadline`: a little before the task's own, so that the result is
    written before the operator's deadline hits)."""
    agent = task.spec.agent
    doc: dict[str, Any] = {"command": list(agent.command) if agent.command else None,
                           "workingDir": agent.working_dir}
    options: dict[str, Any] = {
        "model": agent.model, "maxTurns": agent.max_turns,
        "maxCostUsd": min(c for c in (agent.max_cost_usd, max_cost_usd) if c is not None)
        if agent.max_cost_usd is not None or max_cost_usd is not None else None,
        "allowedTools": list(agent.allowed_tools) if agent.allowed_tools is not None else None,
        "disallowedTools": list(agent.disallowed_tools) or None,
        "appendSystemPrompt": agent.append_system_prompt,
        "mcpConfig": MCP_CONFIG_FILE if agent.mcp_config_secret_ref is not None else None,
        "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ") if deadline is not None else None,
    }
    doc.update({k: v for k, v in options.items() if v is not None})
    return doc


def runner_deadline(limit: dt.datetime | None, *, deadline_seconds: int) -> dt.datetime | None:
    """When the runner stops the agent: the task's deadline minus a margin (a quarter of the
    deadline, at most a minute) for committing, pushing and writing result.json."""
    if limit is None:
        return None
    stop = limit - dt.timedelta(seconds=min(60, deadline_seconds // 4))
    # task.json carries whole seconds: round up, never stop the agent earlier than this
    return stop + dt.timedelta(microseconds=(1_000_000 - stop.microsecond) % 1_000_000)


def task_json(task: AgentTask, *, attempt: int, settings: Settings,
              deadline: dt.datetime | None = None, max_cost_usd: float | None = None) -> dict[str, Any]:
    spec = task.spec
    github = github_repo(spec.repository.url) if settings.github_api_url else None
    return {
        "task": {"namespace": task.metadata.namespace, "name": task.metadata.name,
                 "uid": task.metadata.uid, "attempt": attempt},
        "repository": {"url": spec.repository.url, "baseBranch": spec.repository.base_branch,
                       "dir": settings.repo_dir},
        "issue": None if spec.issue is None else {
            "number": spec.issue.number, "title": spec.issue.title, "url": spec.issue.url,
            "author": spec.issue.author},
        "agent": agent_json(task, deadline=deadline, max_cost_usd=max_cost_usd),
        "pullRequest": {"create": spec.pull_request.create, "draft": spec.pull_request.draft,
                        "branchPrefix": spec.pull_request.branch_prefix},
        "github": None if github is None else {"owner": github[0], "repo": github[1]},
    }


def context_files(task: AgentTask, *, attempt: int, settings: Settings, runner: bytes,
                  env: Mapping[str, str], git_token: str | None = None, mcp_config: str | None = None,
                  deadline: dt.datetime | None = None, max_cost_usd: float | None = None) -> dict[str, bytes]:
    """Every file of the task context. Secrets travel in env.json (read and deleted by the runner)
    and in the token file (`git-token`, re-uploaded when the token is refreshed); the MCP
    configuration, which may hold secrets too, in `mcp.json`."""
    ctx = settings.context_dir
    files = {
        f"{ctx}/env.json": json.dumps(dict(env)).encode(),
        f"{ctx}/task.json": json.dumps(task_json(task, attempt=attempt, settings=settings, deadline=deadline,
                                                 max_cost_usd=max_cost_usd), indent=2).encode(),
        f"{ctx}/issue.md": issue_text(task),
        f"{ctx}/prompt.md": prompt_text(task),
        f"{ctx}/runner.pyz": runner,
    }
    if git_token is not None:
        files[token_path(settings)] = git_token.encode()
    if mcp_config is not None:
        files[f"{ctx}/{MCP_CONFIG_FILE}"] = mcp_config.encode()
    return files


def token_path(settings: Settings) -> str:
    return f"{settings.context_dir}/{GIT_TOKEN_FILE}"


def runner_command(settings: Settings) -> str:
    """The fixed shell command that starts the runner (no user text in it).

    Not `exec`: a Daytona session is one long-lived shell that runs each command and then records
    its exit code; `exec` would replace that shell, and the command's exit code would be lost."""
    return f"python3 {shlex.quote(settings.context_dir + '/runner.pyz')}"


def result_path(settings: Settings) -> str:
    return f"{settings.context_dir}/result.json"
