"""The secret material of a task: the agent's environment and the repository token.

`resolve()` reads every `secretKeyRef` of `spec.agent.env`, the repository credentials and the
MCP configuration from Kubernetes (values are registered for redaction by `Kube.read_secret_key` before they are
returned) and returns what the runner receives: env.json, the token file and mcp.json. An MCP configuration
is redacted as a whole only (the values inside it are not known one by one). `register()` does the
reading only, for a task this process adopted: its agent may print those values, so they
must be known to the redactor before any of its output is read (log replay after a restart).

A missing Secret or key raises `SecretMissing` (the task's own fault) from `resolve()`; when
registering, a missing one is skipped (there is nothing to redact then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .api import AgentTask
from .context import base_env
from .errors import SecretMissing
from .settings import Settings

GIT_USERNAME = "x-access-token"


class SecretReader(Protocol):
    async def read_secret_key(self, namespace: str, name: str, key: str, *,
                              optional: bool = False) -> str | None: ...


async def repository_token(kube: SecretReader, task: AgentTask) -> str | None:
    creds = task.spec.repository.credentials_secret_ref
    if creds is None:
        return None
    return await kube.read_secret_key(task.metadata.namespace, creds.name, creds.key)


@dataclass(frozen=True)
class TaskSecrets:
    env: dict[str, str]
    """The runner's environment (env.json)."""
    git_token: str | None
    """The repository token (the context's `git-token` file)."""
    mcp_config: str | None
    """The MCP configuration of the agent (the context's `mcp.json`)."""


async def resolve(kube: SecretReader, task: AgentTask, settings: Settings) -> TaskSecrets:
    """Everything secret the runner receives: its environment, the token, the MCP configuration."""
    ns = task.metadata.namespace
    env = base_env(settings)
    for var in task.spec.agent.env:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            value = await kube.read_secret_key(ns, ref.name, ref.key, optional=ref.optional)
            if value is not None:
                env[var.name] = value
        elif var.value is not None:
            env[var.name] = var.value
    mcp = task.spec.agent.mcp_config_secret_ref
    mcp_config = await kube.read_secret_key(ns, mcp.name, mcp.key) if mcp is not None else None
    return TaskSecrets(env=env, git_token=await repository_token(kube, task), mcp_config=mcp_config)


async def register(kube: SecretReader, task: AgentTask) -> int:
    """Read (and so register for redaction) every secret value the task refers to; returns how
    many were found. Transient/operator-wide errors propagate: the caller must not read the
    agent's output before this succeeded."""
    ns = task.metadata.namespace
    found = 0
    refs = [(v.value_from.secret_key_ref.name, v.value_from.secret_key_ref.key)
            for v in task.spec.agent.env if v.value_from is not None]
    creds = task.spec.repository.credentials_secret_ref
    if creds is not None:
        refs.append((creds.name, creds.key))
    mcp = task.spec.agent.mcp_config_secret_ref
    if mcp is not None:
        refs.append((mcp.name, mcp.key))
    for name, key in refs:
        try:
            value = await kube.read_secret_key(ns, name, key, optional=True)
        except SecretMissing:
            value = None
        found += value is not None
    return found
