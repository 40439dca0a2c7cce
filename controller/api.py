"""Typed models of the AgentTask resource (`agenttask.io/v1alpha1`).

The CRD in `crds/agenttask.yaml` is the contract users see; these pydantic models mirror it
field by field (tests/unit/test_api_crd_drift.py fails when they drift). Raw dicts from the
Kubernetes API are parsed here once, at the edge, and typed objects travel deeper.

Defaults here equal the CRD's defaults so that an object read from an apiserver that applied
them and one built in a unit test behave the same. Validation that the apiserver already does
(CEL rules, bounds) is not repeated; these models only describe shapes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "agenttask.io"
VERSION = "v1alpha1"
KIND = "AgentTask"
PLURAL = "agenttasks"
API_VERSION = f"{GROUP}/{VERSION}"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
    )

    def dump(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it: camelCase keys, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------- spec


class SecretRef(_Model):
    name: str
    key: str = "token"


class Repository(_Model):
    url: str
    base_branch: str = "main"
    credentials_secret_ref: SecretRef | None = None


class Issue(_Model):
    number: int
    title: str | None = None
    body: str | None = None
    url: str | None = None
    author: str | None = None


class SecretKeySelector(_Model):
    name: str
    key: str
    optional: bool = False


class EnvVarSource(_Model):
    secret_key_ref: SecretKeySelector


class EnvVar(_Model):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class Agent(_Model):
    command: tuple[str, ...] | None = None
    env: tuple[EnvVar, ...] = ()
    model: str | None = None
    max_turns: int | None = None
    max_cost_usd: float | None = None
    allowed_tools: tuple[str, ...] | None = None
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    mcp_config_secret_ref: SecretRef | None = None
    working_dir: str | None = None


class Resources(_Model):
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None


class Network(_Model):
    block_all: bool = False
    allow_list: tuple[str, ...] = ()


class Sandbox(_Model):
    snapshot: str | None = None
    image: str | None = None
    resources: Resources | None = None
    auto_stop_minutes: int | None = None
    network: Network | None = None
    keep_on_failure: bool = False
    keep_for_seconds: int | None = None


class PullRequest(_Model):
    create: bool = True
    draft: bool = True
    branch_prefix: str = "agenttask/"


class Audit(_Model):
    requested_by: str | None = None
    installation_id: int | None = None
    source: str | None = None
    delivery_id: str | None = None


class AgentTaskSpec(_Model):
    repository: Repository
    issue: Issue | None = None
    prompt: str | None = None
    agent: Agent = Field(default_factory=Agent)
    sandbox: Sandbox = Field(default_factory=Sandbox)
    active_deadline_seconds: int | None = None
    backoff_limit: int = 3
    ttl_seconds_after_finished: int | None = None
    suspend: bool = False
    cancel: bool = False
    pull_request: PullRequest = Field(default_factory=PullRequest)
    audit: Audit = Field(default_factory=Audit)


# -------------------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    ADMITTED = "Admitted"
    SANDBOX_READY = "SandboxReady"
    AGENT_RUNNING = "AgentRunning"
    COMPLETE = "Complete"
    FAILED = "Failed"


class Reason(StrEnum):
    """Machine-readable reasons used in conditions and `status.reason`."""

    CREATED = "Created"
    SUSPENDED = "Suspended"
    QUOTA_EXCEEDED = "QuotaExceeded"
    BUDGET_EXCEEDED = "BudgetExceeded"
    ADMITTED = "Admitted"
    PROVISIONING = "Provisioning"
    SANDBOX_CREATED = "SandboxCreated"
    SANDBOX_LOST = "SandboxLost"
    SANDBOX_DELETED = "SandboxDeleted"
    AGENT_STARTED = "AgentStarted"
    AGENT_EXITED = "AgentExited"
    AGENT_SUCCEEDED = "AgentSucceeded"
    AGENT_FAILED = "AgentFailed"
    NO_CHANGES = "NoChanges"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    SANDBOX_KEPT = "SandboxKept"
    RESUMING = "Resuming"
    CANCELLED = "Cancelled"
    PROVISIONING_TIMEOUT = "ProvisioningTimeout"
    # the task's own faults (status.reason of a Failed task)
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    SANDBOX_RESOURCE_LIMIT = "SandboxResourceLimit"
    SNAPSHOT_UNAVAILABLE = "SnapshotUnavailable"
    SANDBOX_REJECTED = "SandboxRejected"
    REPOSITORY_UNREACHABLE = "RepositoryUnreachable"
    SANDBOX_ERROR = "SandboxError"
    # operator-wide causes a task waits on (status.reason while it waits; it does not fail)
    DAYTONA_AUTH_FAILED = "DaytonaAuthFailed"
    DAYTONA_FORBIDDEN = "DaytonaForbidden"
    DAYTONA_QUOTA_EXCEEDED = "DaytonaQuotaExceeded"
    DAYTONA_UNAVAILABLE = "DaytonaUnavailable"
    KUBERNETES_FORBIDDEN = "KubernetesForbidden"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: dt.datetime | None = None
    observed_generation: int | None = None


class SandboxStatus(_Model):
    id: str | None = None
    name: str | None = None
    state: str | None = None
    created_at: dt.datetime | None = None
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    pending_since: dt.datetime | None = None
    deleted: bool | None = None
    retain_until: dt.datetime | None = None


class Intent(_Model):
    """A side effect a replica is about to perform, written (resourceVersion-guarded) before it."""

    action: str
    attempt: int
    holder: str
    since: dt.datetime


class AgentStatus(_Model):
    session_id: str | None = None
    command_id: str | None = None
    exit_code: int | None = None


class TokenUsage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class Denial(_Model):
    tool: str
    input: str | None = None


class AgentReport(_Model):
    """What the agent (Claude Code) reported about its run, from result.json `agent`."""

    is_error: bool | None = None
    session_id: str | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    model: str | None = None
    cost_usd: float | None = None
    usage: TokenUsage | None = None
    permission_denials: tuple[Denial, ...] = ()


class AttemptUsage(_Model):
    attempt: int
    sandbox_seconds: float = 0
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0
    turns: int = 0


class Usage(_Model):
    """What the task consumed, per attempt and in total; `costUsd` is the agent's own estimate."""

    sandbox_seconds: float = 0
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0
    turns: int = 0
    attempts: tuple[AttemptUsage, ...] = ()


class Result(_Model):
    outcome: str | None = None
    branch: str | None = None
    commit: str | None = None
    pull_request_url: str | None = None
    summary: str | None = None
    changed_files: tuple[str, ...] | None = None
    failure_class: str | None = None
    agent_exit_code: int | None = None
    error: str | None = None
    agent: AgentReport | None = None


class AgentTaskStatus(_Model):
    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    sandbox: SandboxStatus | None = None
    attempts: int = 0
    queue_position: int | None = None
    start_time: dt.datetime | None = None
    running_time: dt.datetime | None = None
    completion_time: dt.datetime | None = None
    suspended_at: dt.datetime | None = None
    suspended_seconds: float = 0
    resumes: int = 0
    agent: AgentStatus | None = None
    intent: Intent | None = None
    result: Result | None = None
    usage: Usage | None = None
    log_tail: str | None = None
    last_error: str | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# ------------------------------------------------------------------------- object


class ObjectMeta(_Model):
    name: str
    namespace: str
    uid: str
    generation: int = 1
    resource_version: str | None = None
    creation_timestamp: dt.datetime | None = None
    deletion_timestamp: dt.datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AgentTask(_Model):
    """An AgentTask as read from the API: metadata, spec, status."""

    metadata: ObjectMeta
    spec: AgentTaskSpec
    status: AgentTaskStatus = Field(default_factory=AgentTaskStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AgentTask:
        """Parse a raw Kubernetes object (dict or kopf Body) into the typed model.

        kopf hands one event's body to several handlers (three indexes, the daemon's filter) and
        the supervisor parses its copy of the task several times a step: the same body object at
        the same resourceVersion is parsed once and the frozen model shared (`_PARSED`, which
        holds the body itself, so an id is never reused while cached). A body changed in place
        (kopf's live body) has a new resourceVersion and is parsed again."""
        meta = body.get("metadata") or {}
        version = meta.get("resourceVersion")
        entry = _PARSED.get(id(body))
        if entry is not None and entry[0] is body and entry[1] == version and version:
            return entry[2]
        task = cls.model_validate(
            {
                "metadata": dict(meta),
                "spec": dict(body.get("spec") or {}),
                "status": dict(body.get("status") or {}),
            }
        )
        if version:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()  # (bounded; a whole clear needs no lock under kopf's threads)
            _PARSED[id(body)] = (body, version, task)
        return task

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


# recently parsed bodies, id(body) -> (body, resourceVersion, AgentTask) (see `AgentTask.from_body`):
# small, because the handlers of one event run one after the other, and a body may hold a 1 MiB
# issue body
_PARSED: dict[int, tuple[Mapping[str, Any], Any, AgentTask]] = {}
_PARSED_MAX = 64
