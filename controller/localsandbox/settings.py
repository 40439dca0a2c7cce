"""Server settings that are not faults: transition durations, quotas, list lag, throttling.

JSON form (constructor ``settings=``, ``--settings JSON``, ``GET``/``POST /_admin/settings``;
a POST *merges*: only the sections it names change, and inside ``transitions`` and ``quota``
only the keys it names)::

    {"transitions": {"*": 0.05, "stopping": 2, "building_snapshot": 5},   # seconds per state
     "quota": {"total_cpu": 8, "total_memory": 16, "total_disk": 60,      # organisation totals
               "max_cpu_per_sandbox": 4, "max_memory_per_sandbox": 8,     # per-sandbox maxima
               "max_disk_per_sandbox": 20},                               # (null = unlimited)
     "list_lag": 0,                  # seconds before GET /sandbox sees a change
     "create_wait": 30,              # how long create/start wait for `started` (Daytona: 30 s)
     "max_auto_archive": 43200,      # minutes; auto-archive 0 and larger values resolve to it
     "failed_auth": {"limit": 10, "ttl": 60}}   # 429 after `limit` bad keys per client in `ttl` s

Transition states: ``creating restoring starting stopping archiving destroying
pulling_snapshot pending_build building_snapshot``; ``*`` sets every one. The default is
`DEFAULT_TRANSITION` (0.05 s) for each, except ``pending_build`` (0: Daytona only queues a
build while no runner can take it). A duration of 0 skips the state's wait entirely.

Does not: apply anything; `actions`, `quota`, `listing` and the server middleware read these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

DEFAULT_TRANSITION = 0.05
TRANSITION_STATES = (
    "creating", "restoring", "starting", "stopping", "archiving", "destroying", "pulling_snapshot",
    "pending_build", "building_snapshot",
)  # fmt: skip
QUOTA_KEYS = (
    "total_cpu", "total_memory", "total_disk", "max_cpu_per_sandbox", "max_memory_per_sandbox",
    "max_disk_per_sandbox",
)  # fmt: skip


def _default_transitions() -> dict[str, float]:
    return {s: (0.0 if s == "pending_build" else DEFAULT_TRANSITION) for s in TRANSITION_STATES}


@dataclass(frozen=True)
class Quota:
    """Organisation totals and per-sandbox maxima (None = unlimited); memory/disk in GiB."""

    total_cpu: int | None = None
    total_memory: int | None = None
    total_disk: int | None = None
    max_cpu_per_sandbox: int | None = None
    max_memory_per_sandbox: int | None = None
    max_disk_per_sandbox: int | None = None


@dataclass(frozen=True)
class FailedAuth:
    """Daytona's ``failed-auth`` throttler: `limit` bad keys per client within `ttl` seconds."""

    limit: int
    ttl: float


@dataclass(frozen=True)
class Settings:
    """All non-fault settings of one server."""

    transitions: dict[str, float] = field(default_factory=_default_transitions)
    quota: Quota = field(default_factory=Quota)
    list_lag: float = 0.0
    create_wait: float = 30.0
    max_auto_archive: int = 43200
    failed_auth: FailedAuth | None = None

    def duration(self, state: str) -> float:
        """Seconds a sandbox spends in transitional `state`."""
        return self.transitions.get(state, 0.0)

    def to_json(self) -> dict[str, Any]:
        """The JSON form accepted by `merge_settings`."""
        return {
            "transitions": dict(self.transitions),
            "quota": asdict(self.quota),
            "list_lag": self.list_lag,
            "create_wait": self.create_wait,
            "max_auto_archive": self.max_auto_archive,
            "failed_auth": asdict(self.failed_auth) if self.failed_auth else None,
        }


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds")
    return float(value)


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer or null")
    return value


def _transitions(current: dict[str, float], obj: Any) -> dict[str, float]:
    if not isinstance(obj, Mapping):
        raise ValueError("transitions must be an object of state -> seconds")
    out = dict(current)
    if "*" in obj:
        out = dict.fromkeys(TRANSITION_STATES, _seconds(obj["*"], "transitions.*"))
    for key, value in obj.items():
        if key == "*":
            continue
        if key not in TRANSITION_STATES:
            raise ValueError(f"unknown transition state {key!r}; known: {', '.join(TRANSITION_STATES)}")
        out[key] = _seconds(value, f"transitions.{key}")
    return out


def _quota(current: Quota, obj: Any) -> Quota:
    if not isinstance(obj, Mapping):
        raise ValueError("quota must be an object")
    unknown = set(obj) - set(QUOTA_KEYS)
    if unknown:
        raise ValueError(f"unknown quota keys {sorted(unknown)}; known: {', '.join(QUOTA_KEYS)}")
    return replace(current, **{k: _count(v, f"quota.{k}") for k, v in obj.items()})


def _failed_auth(obj: Any) -> FailedAuth | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise ValueError("failed_auth must be an object {limit, ttl} or null")
    limit = _count(obj.get("limit"), "failed_auth.limit")
    if not limit:
        raise ValueError("failed_auth.limit must be a positive integer")
    return FailedAuth(limit=limit, ttl=_seconds(obj.get("ttl", 60), "failed_auth.ttl") or 60.0)


def merge_settings(current: Settings, obj: Any) -> Settings:
    """`current` with the sections of the JSON object `obj` applied; ValueError on bad input."""
    if obj is None:
        return current
    if not isinstance(obj, Mapping):
        raise ValueError("settings must be a JSON object")
    known = {f.name for f in fields(Settings)}
    unknown = set(obj) - known
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
    out = current
    if "transitions" in obj:
        out = replace(out, transitions=_transitions(out.transitions, obj["transitions"]))
    if "quota" in obj:
        out = replace(out, quota=_quota(out.quota, obj["quota"]))
    if "list_lag" in obj:
        out = replace(out, list_lag=_seconds(obj["list_lag"], "list_lag"))
    if "create_wait" in obj:
        out = replace(out, create_wait=_seconds(obj["create_wait"], "create_wait"))
    if "max_auto_archive" in obj:
        value = _count(obj["max_auto_archive"], "max_auto_archive")
        if not value:
            raise ValueError("max_auto_archive must be a positive number of minutes")
        out = replace(out, max_auto_archive=value)
    if "failed_auth" in obj:
        out = replace(out, failed_auth=_failed_auth(obj["failed_auth"]))
    return out


def parse_transition_flag(text: str) -> tuple[str, float]:
    """``stopping=2`` or ``*=0`` -> (state, seconds)."""
    state, sep, secs = text.partition("=")
    if not sep:
        raise ValueError(f"expected STATE=SECONDS, got {text!r}")
    state = state.strip()
    if state != "*" and state not in TRANSITION_STATES:
        raise ValueError(f"unknown transition state {state!r}; known: {', '.join(TRANSITION_STATES)}")
    return state, _seconds(float(secs), f"transition {state}")
