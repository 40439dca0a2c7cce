"""Every tunable of the operator, in one place, from environment variables (Helm values).

Environment variables are the field names upper-cased with the prefix `AGENTTASK_`, e.g.
`AGENTTASK_MAX_ACTIVE_SANDBOXES=20`. The Daytona connection also honours the SDK's own
`DAYTONA_API_URL` / `DAYTONA_API_KEY` / `DAYTONA_TARGET`. docs/configuration.md lists them all;
a test keeps that page and this class in step.

No logic lives here beyond parsing and derived convenience values.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """Operator settings. Defaults suit a single small installation."""

    model_config = SettingsConfigDict(env_prefix="AGENTTASK_", frozen=True, extra="ignore")

    # --- identity and scope
    instance_id: str = Field("default", min_length=1, max_length=63)
    """Installation id written to every sandbox label `agenttask.io/instance`; two installations
    sharing one Daytona organisation must use different ids (the GC only touches its own)."""
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces to watch (comma-separated); empty means all namespaces."""
    standalone: bool = False
    """Disable kopf peering (single replica without the KopfPeering CRD)."""
    peering_name: str = "agenttask-operator"
    """Name of the (Cluster)KopfPeering object used for active/standby HA."""
    peering_lifetime_seconds: int = Field(60, ge=5, le=3600)
    """How long a replica's keep-alive counts; a killed active replica is replaced after this."""
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}",
                            min_length=1, max_length=253)
    """This replica's name in `status.intent` (default: pod name / pid, stable across a container
    restart). Side effects (create a sandbox, start the agent) are fenced by it."""
    shards: int = Field(1, ge=1, le=256)
    """Sharded mode when > 1: that many replicas (a StatefulSet) share the tasks, each supervising
    the tasks whose UID hashes to a shard it owns; kopf peering is off (docs/sharding.md). A
    replica's home shard is the number its POD_NAME (else its replica id) ends with, as a
    StatefulSet names its pods."""
    shard_lease_seconds: float = Field(15.0, ge=3, le=300)
    """A shard whose Lease was not renewed for this long is taken over by another replica."""
    lease_namespace: str | None = None
    """Namespace of the shards' Leases (default: POD_NAMESPACE, else the first watched namespace)."""
    claim_seconds: float = Field(120.0, ge=5)
    """How long another replica's recorded intent to create a sandbox or start the agent is
    respected before this replica takes the step over (a replica that died mid-step)."""

    # --- Daytona
    daytona_api_url: str | None = Field(
        None, validation_alias=AliasChoices("AGENTTASK_DAYTONA_API_URL", "DAYTONA_API_URL"))
    """Daytona API URL; unset means Daytona's default cloud endpoint."""
    daytona_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AGENTTASK_DAYTONA_API_KEY", "DAYTONA_API_KEY"))
    """Daytona API key (from a Secret)."""
    daytona_target: str | None = Field(
        None, validation_alias=AliasChoices("AGENTTASK_DAYTONA_TARGET", "DAYTONA_TARGET"))
    """Daytona target region."""
    default_snapshot: str | None = None
    """Snapshot used when a task names neither snapshot nor image."""
    daytona_request_timeout_seconds: float = Field(30.0, gt=0)
    """Timeout of a single Daytona API request."""
    daytona_retries: int = Field(3, ge=0, le=10)
    """In-call retries of idempotent Daytona requests on 429/5xx/timeouts (then the supervisor
    backs off and re-observes)."""
    daytona_outage_seconds: float = Field(60.0, gt=0)
    """After this long without a successful Daytona call (only transient failures), the operator
    reports itself degraded (`DaytonaUnavailable`) and waiting tasks say so."""
    provisioning_timeout_seconds: float = Field(1800.0, gt=0)
    """A sandbox still pending (creating, starting, pulling or building its image) after this long
    counts as a lost attempt (backoffLimit)."""

    # --- reconcile timing
    poll_interval_seconds: float = Field(2.0, gt=0)
    """How often a running agent command is re-observed at first."""
    max_poll_interval_seconds: float = Field(15.0, gt=0)
    """The re-observation interval grows up to this for long runs (the log stream still wakes
    the supervisor as soon as the command exits)."""
    stream_recheck_seconds: float = Field(120.0, gt=0)
    """While the agent's log stream is open (its end wakes the supervisor at the exit, its
    failure at once), the agent's sandbox and session are re-observed from Daytona this often;
    new output is still written to status.logTail every logTailIntervalSeconds."""
    retry_base_seconds: float = Field(1.0, gt=0)
    """First delay after a transient Daytona/Kubernetes error (doubles each time, with jitter)."""
    retry_max_seconds: float = Field(60.0, gt=0)
    """Longest delay between retries of transient errors."""
    log_tail_bytes: int = Field(4096, ge=256, le=65536)
    """Size of `status.logTail`."""
    log_tail_interval_seconds: float = Field(10.0, ge=0)
    """Minimum time between two status writes caused by new log output."""

    # --- lifecycle and safety net
    default_active_deadline_seconds: int = Field(6 * 3600, ge=1)
    """Deadline for tasks that set none (also sizes the Daytona-side safety net)."""
    safety_margin_minutes: int = Field(30, ge=1)
    """Extra minutes beyond the deadline before Daytona itself stops and deletes a sandbox."""
    default_ttl_seconds_after_finished: int | None = Field(None, ge=0)
    """Delete finished AgentTasks after this long when they set no ttlSecondsAfterFinished."""
    default_keep_for_seconds: int = Field(3600, ge=0)
    """Retention of sandboxes kept with keepOnFailure when the task sets no keepForSeconds."""

    # --- admission
    max_active_sandboxes: int = Field(50, ge=1)
    """Global limit of concurrently admitted tasks (each holds one sandbox)."""
    max_active_per_namespace: int | None = Field(None, ge=1)
    """Optional limit per namespace."""

    # --- garbage collection
    gc_interval_seconds: float = Field(300.0, gt=0)
    """How often the orphan sweep runs."""
    gc_grace_seconds: float = Field(120.0, ge=0)
    """Sandboxes younger than this are never collected (avoids racing a creation); a sandbox is
    deleted as an orphan only when two sweeps at least this far apart both found it orphaned."""
    gc_dry_run: bool = False
    """Log (and count) what the orphan sweep would delete, delete nothing."""
    gc_delete_concurrency: int = Field(32, ge=1, le=256)
    """Deletes the orphan sweep has in flight at once (one request each, retried on 429 after
    the delay Daytona asks for). Lower it when the sweep's deletes crowd out the operator's other
    calls under a tight Daytona rate limit."""

    warm_pools: dict[str, int] = Field(default_factory=dict)
    """Warm pools to maintain, snapshot -> size, as JSON (e.g. `{"agenttask-agent-slim": 3}`).
    Tasks using such a snapshot start from the pool while it has ready sandboxes."""

    # --- HTTP (metrics, health, webhook, status page)
    http_host: str = "0.0.0.0"  # noqa: S104 - the pod's port; tests bind 127.0.0.1
    """Address of the operator's HTTP server."""
    http_port: int = Field(8080, ge=0, le=65535)
    """Port of /metrics, /healthz, /readyz, /github/webhook and the status page (0 = any)."""

    # --- agent defaults
    context_dir: str = "agenttask"
    """Directory (relative to the sandbox user's home) holding task.json, prompt, runner, result."""
    repo_dir: str = "workspace/repo"
    """Directory (relative to the sandbox user's home) of the repository checkout."""
    github_api_url: str | None = None
    """GitHub REST API base URL given to the runner (unset: no pull requests or comments)."""
    token_refresh_seconds: float = Field(600.0, ge=5)
    """While an agent runs, how often its repository token is renewed (GitHub App installation
    tokens last an hour) and, when it changed, uploaded into the sandbox again."""

    # --- GitHub flow (docs/github.md): webhook intake, credentials, progress comments
    github_webhook_secret: SecretStr | None = None
    """Secret of the GitHub webhook (X-Hub-Signature-256). Unset: no /github/webhook route."""
    github_webhook_max_body_bytes: int = Field(1024 * 1024 + 512 * 1024, ge=1024)
    """Largest webhook request body accepted (413 above); the issue body itself is capped at 1 MiB."""
    github_namespace: str = Field("default", min_length=1, max_length=63)
    """Namespace of webhook-created AgentTasks; the GitHub credential Secrets are read from it too."""
    github_token_secret: str | None = None
    """Secret (in `github_namespace`) holding a GitHub token: used for the operator's comments and,
    as `repository.credentialsSecretRef`, by the runner of webhook-created tasks."""
    github_token_secret_key: str = "token"  # noqa: S105 - a key name
    """Key of the token inside `github_token_secret`."""
    github_app_secret: str | None = None
    """Secret (in `github_namespace`) of a GitHub App, keys `app-id` and `private-key` (PEM). Takes
    precedence over `github_token_secret`: installation tokens are minted per webhook installation
    and handed to the runner through the Secret `agenttask-github-installation-<id>`."""
    github_trigger_label: str = "agenttask"
    """Label that starts a task: adding it to an issue, or opening an issue that carries it."""
    github_trigger_on_open: bool = False
    """Start a task for every newly opened issue (by an allowed author), with or without the label."""
    github_trigger_phrase: str = Field("/agenttask run", min_length=1)
    """A new issue comment with a line starting with this phrase (case-insensitive) starts a task."""
    github_allowed_associations: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"])
    """Author associations (comma-separated) whose comments and opened issues may start a task."""
    github_agent_command: list[str] | None = None
    """Agent argv for webhook-created tasks, as a JSON list; unset: the runner's default (Claude Code)."""
    github_agent_env: dict[str, str] = Field(default_factory=dict)
    """Literal (non-secret) environment for the agent of webhook-created tasks, as a JSON object."""
    github_draft_pull_requests: bool = True
    """Whether webhook-created tasks open draft pull requests."""
    github_request_timeout_seconds: float = Field(30.0, gt=0)
    """Timeout of one GitHub REST request made by the operator."""
    github_max_attempts: int = Field(5, ge=1, le=10)
    """Attempts per GitHub REST request on 5xx, 429, rate-limit 403 and connection errors."""

    @field_validator("github_allowed_associations", mode="before")
    @classmethod
    def _split_associations(cls, value: object) -> object:
        split = _csv(value)
        return [str(v).upper() for v in split] if isinstance(split, list) else split

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _csv(value)

    @model_validator(mode="after")
    def _shardable(self) -> Settings:
        if self.shards > self.max_active_sandboxes:
            raise ValueError(f"shards ({self.shards}) must not exceed max_active_sandboxes "
                             f"({self.max_active_sandboxes}): each shard admits its share of the limit")
        return self

    @property
    def peering(self) -> bool:
        """kopf peering (active/standby) is on: not standalone and not sharded (shards use Leases)."""
        return not self.standalone and self.shards == 1
