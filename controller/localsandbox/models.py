"""Records for sandboxes, snapshots and warm pools, and their Daytona JSON renderings.

Does: hold the in-memory state of one sandbox/snapshot/pool as dataclasses, validate a
``POST /sandbox`` body into a `CreateRequest`, and render records as the camelCase JSON the
SDK's generated models (`Sandbox`, `SandboxListItem`, `SnapshotDto`, `WarmPool`) accept.
`ttlMinutes` is stored and echoed as ``autoDestroyAt`` (the Daytona ``Sandbox`` model has no
``ttlMinutes`` field).

Does not: do any I/O, keep indexes, or decide state transitions (see `states`, `actions`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .containers import Container
from .errors import bad_request
from .states import display_state

DEFAULT_USER = "daytona"
DEFAULT_SNAPSHOT = "daytona-small"
DEFAULT_AUTO_STOP = 15  # minutes, as in Daytona
DEFAULT_AUTO_ARCHIVE = 7 * 24 * 60  # minutes
MAX_AUTO_ARCHIVE = 30 * 24 * 60  # Daytona's maxAutoArchiveInterval (configuration.ts: 43200)
DEFAULT_AUTO_DELETE = -1  # disabled
# createFromBuildInfo's defaults (services/sandbox.service.ts DEFAULT_CPU/MEMORY/DISK/GPU)
IMAGE_DEFAULTS = (1, 1, 3, 0)
DAEMON_VERSION = "localsandbox"

# (cpu, memory GiB, disk GiB) of the snapshots every server starts with.
DEFAULT_SNAPSHOTS: dict[str, tuple[int, int, int]] = {
    "daytona-small": (1, 1, 3),
    "daytona-medium": (2, 4, 8),
    "daytona-large": (4, 8, 10),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

# Keys of the SDK's `SandboxListItem` model: list responses must carry nothing else.
LIST_ITEM_KEYS = frozenset(
    {
        "id", "organizationId", "name", "target", "runnerId", "sandboxClass", "state", "desiredState",
        "snapshot", "user", "errorReason", "recoverable", "public", "networkBlockAll", "networkAllowList",
        "domainAllowList", "cpu", "gpu", "spot", "spotEvictedAt", "queueTimedOutAt", "gpuType", "memory",
        "disk", "labels", "backupState", "autoStopInterval", "autoPauseInterval", "autoArchiveInterval",
        "autoDeleteInterval", "autoDestroyAt", "queueTimeout", "createdAt", "updatedAt", "lastActivityAt",
        "daemonVersion", "warmPoolId", "toolboxProxyUrl",
    }
)  # fmt: skip


def iso(ts: float) -> str:
    """A wall-clock timestamp as Daytona writes it: ``2025-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SandboxRecord:
    """One sandbox. Wall-clock times (``*_at``) are for display, monotonic ones for timers."""

    id: str
    name: str
    organization_id: str
    snapshot: str | None
    user: str
    env: dict[str, str]
    labels: dict[str, str]
    target: str
    cpu: int
    gpu: int
    memory: int
    disk: int
    created_at: float
    created_mono: float
    seq: int = 0
    public: bool = False
    network_block_all: bool = False
    kvm: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    outbound_proxy_url: str | None = None
    otel_endpoint_override: str | None = None
    auto_stop: int = DEFAULT_AUTO_STOP
    auto_archive: int = DEFAULT_AUTO_ARCHIVE
    auto_delete: int = DEFAULT_AUTO_DELETE
    ttl_minutes: int = 0
    volumes: list[dict[str, str]] = field(default_factory=list)
    linked_sandbox_id: str | None = None
    build_key: str | None = None  # image creates: the build this sandbox runs
    state: str = "unknown"
    desired: str = "started"
    pending: bool = True
    error_reason: str | None = None
    updated_at: float = 0.0
    last_activity_at: float = 0.0
    activity_mono: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)  # transition in flight
    gone_reason: str = "delete"  # why it is being destroyed (stats)
    build_log: list[str] = field(default_factory=list, repr=False)  # image creates: the build's log lines
    container: Container | None = field(default=None, repr=False)  # container mode: its container

    def auto_destroy_at(self) -> float | None:
        """Wall-clock time the TTL destroys the sandbox, or None without a TTL."""
        return self.created_at + self.ttl_minutes * 60 if self.ttl_minutes > 0 else None


def sandbox_dto(rec: SandboxRecord, toolbox_url: str, *, listed: bool = False) -> dict[str, Any]:
    """The full ``Sandbox`` JSON (get, create, start, stop, delete responses).

    The state is shown as ``SandboxDto.getSandboxState`` shows it (``stopping`` while a
    started sandbox is being stopped); `listed` keeps the stored state, as the list does
    (``sandbox-typeorm-search.adapter.ts`` ``mapEntityToDto``).
    """
    dto: dict[str, Any] = {
        "id": rec.id,
        "organizationId": rec.organization_id,
        "name": rec.name,
        "user": rec.user,
        "env": dict(rec.env),
        "labels": dict(rec.labels),
        "public": rec.public,
        "networkBlockAll": rec.network_block_all,
        "kvm": rec.kvm,
        "target": rec.target,
        "cpu": rec.cpu,
        "gpu": rec.gpu,
        "memory": rec.memory,
        "disk": rec.disk,
        "spot": False,
        "state": rec.state if listed else display_state(rec.state, rec.desired),
        "desiredState": rec.desired,
        "autoStopInterval": rec.auto_stop,
        "autoPauseInterval": 0,
        "autoArchiveInterval": rec.auto_archive,
        "autoDeleteInterval": rec.auto_delete,
        "volumes": [dict(v) for v in rec.volumes],
        "createdAt": iso(rec.created_at),
        "updatedAt": iso(rec.updated_at or rec.created_at),
        "lastActivityAt": iso(rec.last_activity_at or rec.created_at),
        "runnerId": "local",
        "daemonVersion": DAEMON_VERSION,
        "toolboxProxyUrl": toolbox_url,
    }
    optional: dict[str, Any] = {
        "snapshot": rec.snapshot,
        "networkAllowList": rec.network_allow_list,
        "domainAllowList": rec.domain_allow_list,
        "outboundProxyUrl": rec.outbound_proxy_url,
        "otelEndpointOverride": rec.otel_endpoint_override,
        "errorReason": rec.error_reason,
        "linkedSandboxId": rec.linked_sandbox_id,
    }
    dto.update({k: v for k, v in optional.items() if v is not None})
    if rec.state in ("error", "build_failed"):
        dto["recoverable"] = False
    destroy_at = rec.auto_destroy_at()
    if destroy_at is not None:
        dto["autoDestroyAt"] = iso(destroy_at)
    return dto


def sandbox_list_item(rec: SandboxRecord, toolbox_url: str) -> dict[str, Any]:
    """The ``SandboxListItem`` JSON: the full DTO minus what list responses never carry."""
    return {k: v for k, v in sandbox_dto(rec, toolbox_url, listed=True).items() if k in LIST_ITEM_KEYS}


@dataclass
class SnapshotRecord:
    """One snapshot. Locally a snapshot is only a name with resources; nothing is pulled."""

    id: str
    name: str
    cpu: int
    gpu: int
    mem: int
    disk: int
    created_at: float
    organization_id: str | None = None
    general: bool = False
    image_name: str | None = None
    entrypoint: list[str] | None = None
    state: str = "active"
    updated_at: float = 0.0
    last_used_at: float | None = None


def snapshot_dto(snap: SnapshotRecord) -> dict[str, Any]:
    """The ``SnapshotDto`` JSON."""
    dto: dict[str, Any] = {
        "id": snap.id,
        "general": snap.general,
        "name": snap.name,
        "state": snap.state,
        "size": None,
        "entrypoint": snap.entrypoint,
        "cpu": snap.cpu,
        "gpu": snap.gpu,
        "mem": snap.mem,
        "disk": snap.disk,
        "errorReason": None,
        "createdAt": iso(snap.created_at),
        "updatedAt": iso(snap.updated_at or snap.created_at),
        "lastUsedAt": iso(snap.last_used_at) if snap.last_used_at is not None else None,
        "sourceSandboxId": None,
    }
    if snap.organization_id is not None:
        dto["organizationId"] = snap.organization_id
    if snap.image_name is not None:
        dto["imageName"] = snap.image_name
    return dto


@dataclass
class WarmPoolRecord:
    """One warm pool: keep `size` pre-created sandbox directories ready for `snapshot`."""

    id: str
    snapshot: str  # snapshot name
    target: str
    size: int
    created_at: float
    updated_at: float


def warm_pool_dto(pool: WarmPoolRecord, snap: SnapshotRecord | None, ready: int, org_id: str) -> dict[str, Any]:
    """The ``WarmPool`` JSON."""
    return {
        "id": pool.id,
        "organizationId": org_id,
        "snapshot": pool.snapshot,
        "target": pool.target,
        "pool": pool.size,
        "currentSize": ready,
        "cpu": snap.cpu if snap else 1,
        "mem": snap.mem if snap else 1,
        "disk": snap.disk if snap else 3,
        "osUser": DEFAULT_USER,
        "env": {},
        "createdAt": iso(pool.created_at),
        "updatedAt": iso(pool.updated_at),
    }


@dataclass
class CreateRequest:
    """A ``POST /sandbox`` body (the SDK's ``CreateSandbox`` model), type-checked.

    Interval values are kept as sent; `validation` resolves them as Daytona does.
    """

    name: str | None = None
    snapshot: str | None = None
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    public: bool = False
    network_block_all: bool | None = None
    kvm: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    outbound_proxy_url: str | None = None
    otel_endpoint_override: str | None = None
    target: str | None = None
    cpu: int | None = None
    gpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpu_type: list[str] | None = None
    auto_stop: int | None = None
    auto_archive: int | None = None
    auto_delete: int | None = None
    ttl_minutes: int = 0
    volumes: list[dict[str, str]] = field(default_factory=list)
    has_secrets: bool = False
    build_info: dict[str, Any] | None = None
    linked_sandbox: str | None = None

    def ephemeral(self) -> bool:
        """Daytona's ``isEphemeral`` on the request: ``autoDeleteInterval`` exactly 0."""
        return self.auto_delete == 0


def _opt(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int subclass: reject True where an integer is expected
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_request(f"{key} must be a {kind.__name__}")
    return value


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_request(f"{key} must be an object of strings")
    return dict(value)


def validate_name(name: str) -> str:
    """Reject names the API (and URL routing) cannot carry."""
    if not _NAME_RE.match(name):
        raise bad_request(
            "name must be 1-253 characters of letters, digits, '.', '_' or '-' and start with a letter or digit"
        )
    return name


def _build_info(body: dict[str, Any]) -> dict[str, Any] | None:
    info = body.get("buildInfo")
    if info is None:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("dockerfileContent"), str):
        raise bad_request("buildInfo.dockerfileContent must be a string")
    hashes = info.get("contextHashes") or []
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise bad_request("buildInfo.contextHashes must be a list of strings")
    return {"dockerfileContent": info["dockerfileContent"], "contextHashes": list(hashes)}


def parse_create_request(body: Any) -> CreateRequest:
    """Type-check a ``CreateSandbox`` JSON body; raises a 400 `ApiError` on bad input."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    req = CreateRequest()
    name = _opt(body, "name", str)
    req.name = validate_name(name) if name is not None else None
    for attr, key in (
        ("snapshot", "snapshot"), ("user", "user"), ("target", "target"),
        ("network_allow_list", "networkAllowList"), ("domain_allow_list", "domainAllowList"),
        ("outbound_proxy_url", "outboundProxyUrl"), ("otel_endpoint_override", "otelEndpointOverride"),
        ("linked_sandbox", "linkedSandbox"),
    ):  # fmt: skip
        setattr(req, attr, _opt(body, key, str))
    req.public = bool(_opt(body, "public", bool))
    req.kvm = bool(_opt(body, "kvm", bool))
    req.network_block_all = _opt(body, "networkBlockAll", bool)
    for attr in ("cpu", "gpu", "memory", "disk"):
        value = _opt(body, attr, int)
        if value is not None and value < 0:
            raise bad_request(f"{attr} must not be negative")
        setattr(req, attr, value)
    gpu_type = body.get("gpuType")
    if gpu_type is not None:
        if not isinstance(gpu_type, list) or not all(isinstance(g, str) for g in gpu_type):
            raise bad_request("gpuType must be a list of strings")
        req.gpu_type = list(gpu_type)
    req.env = _str_map(body, "env")
    req.labels = _str_map(body, "labels")
    for attr, key in (("auto_stop", "autoStopInterval"), ("auto_archive", "autoArchiveInterval"),
                      ("auto_delete", "autoDeleteInterval")):  # fmt: skip
        setattr(req, attr, _opt(body, key, int))
    ttl = _opt(body, "ttlMinutes", int)
    if ttl is not None and ttl < 0:
        raise bad_request("ttlMinutes must be a non-negative integer")
    req.ttl_minutes = ttl or 0
    volumes = body.get("volumes") or []
    if not isinstance(volumes, list) or not all(
        isinstance(v, dict) and isinstance(v.get("volumeId"), str) and isinstance(v.get("mountPath"), str)
        for v in volumes
    ):
        raise bad_request("volumes must be a list of {volumeId, mountPath}")
    req.volumes = [{k: str(v[k]) for k in ("volumeId", "mountPath", "subpath") if k in v} for v in volumes]
    req.has_secrets = bool(body.get("secrets"))
    req.build_info = _build_info(body)
    return req
