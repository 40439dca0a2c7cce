"""Fault-injection settings and the seeded decisions made from them.

Settings (constructor ``faults=``, CLI flags, or ``POST /_admin/faults`` which *replaces*
the whole set; ``{}`` clears it)::

    {"latency":    {"create": 0.09, "*": 0.02},            # seconds added before the operation
     "errors":     {"create": {"rate": 0.3, "status": 503}, # fail this share of calls
                    "delete": {"rate": 0.1, "status": 500, "after": true},
                    "start":  {"rate": 0.5, "state": "error"}},
     "rate_limit": {"rate": 0.2, "retry_after": 1, "ops": ["create"]},  # 429 + Retry-After
     "seed": 7,                                              # reseed the RNG
     "lose": ["<sandbox id or name>", ...]}                  # action, see below

* ``latency[op]`` falls back to ``latency["*"]``. ``create`` latency is spent while the
  sandbox is visibly ``creating``; a create served from a warm pool spends ``pool_create``
  latency instead (no fallback to ``create``; it does fall back to ``"*"``).
* ``errors[op]`` falls back to ``errors["*"]``. ``status`` (default 500) is returned *instead*
  of running the operation, or, with ``"after": true``, *after* running it (the client sees
  an error although the change happened, e.g. a create whose response is lost). For
  ``create`` and ``start``, ``"state": "error"`` instead leaves the sandbox in the ``error``
  state with an ``errorReason`` (the SDK then raises "entered error state").
* ``rate_limit`` answers 429 with ``Retry-After`` for that share of calls to ``ops``
  (default: every operation).
* ``lose`` is not stored: each sandbox named is destroyed at once behind the client's back
  (its process groups SIGKILLed, its directory removed); later calls see 404.

Operation names (the same names key ``GET /_admin/stats`` ``calls``):
main API ``create get list delete start stop archive labels autostop autoarchive autodelete
ttl toolbox_url snapshot_list snapshot_get snapshot_create snapshot_delete snapshot_activate
warm_pool_list warm_pool_create warm_pool_update warm_pool_delete``; toolbox ``exec
session_create session_list session_get session_delete session_exec command_get
command_logs command_logs_follow upload download folder_create file_delete file_list
file_info git_clone home_dir work_dir``; internal (never faulted) ``pool_create`` (latency
only), ``unknown`` (unmatched routes) and ``socketio`` (the SDK's event channel, answered 404);
admin ``admin_*`` (never faulted).

Does not: sleep or build responses; the server middleware applies the `Decision`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAIN_OPS = frozenset(
    {
        "create", "get", "list", "delete", "start", "stop", "archive", "labels", "autostop",
        "autoarchive", "autodelete", "ttl", "toolbox_url", "snapshot_list", "snapshot_get",
        "snapshot_create", "snapshot_delete", "snapshot_activate", "warm_pool_list",
        "warm_pool_create", "warm_pool_update", "warm_pool_delete",
    }
)  # fmt: skip
TOOLBOX_OPS = frozenset(
    {
        "exec", "session_create", "session_list", "session_get", "session_delete", "session_exec",
        "command_get", "command_logs", "command_logs_follow", "upload", "download", "folder_create",
        "file_delete", "file_list", "file_info", "git_clone", "home_dir", "work_dir",
    }
)  # fmt: skip
INTERNAL_OPS = frozenset({"pool_create", "unknown", "socketio"})
OPERATIONS = MAIN_OPS | TOOLBOX_OPS | INTERNAL_OPS
ERROR_STATE_OPS = frozenset({"create", "start"})


@dataclass(frozen=True)
class ErrorFault:
    """Fail `rate` of the calls with `status`, before (default) or `after` the operation."""

    rate: float
    status: int = 500
    after: bool = False
    state: str | None = None  # "error": leave the sandbox in the error state instead


@dataclass(frozen=True)
class RateLimitFault:
    """Answer 429 with ``Retry-After: retry_after`` to `rate` of the calls to `ops`."""

    rate: float
    retry_after: float = 1.0
    ops: frozenset[str] | None = None


@dataclass(frozen=True)
class Faults:
    """A complete fault configuration."""

    latency: dict[str, float] = field(default_factory=dict)
    errors: dict[str, ErrorFault] = field(default_factory=dict)
    rate_limit: RateLimitFault | None = None
    seed: int | None = None

    def latency_for(self, op: str) -> float:
        """Seconds of latency for `op` (see the module docstring for fallbacks)."""
        if op in self.latency:
            return self.latency[op]
        return self.latency.get("*", 0.0)

    def error_for(self, op: str) -> ErrorFault | None:
        """The error fault that applies to `op`, if any."""
        return self.errors.get(op) or self.errors.get("*")

    def to_json(self) -> dict[str, Any]:
        """The JSON form accepted by `parse_faults`."""
        out: dict[str, Any] = {"latency": dict(self.latency), "errors": {}}
        for op, err in self.errors.items():
            entry: dict[str, Any] = {"rate": err.rate, "status": err.status}
            if err.after:
                entry["after"] = True
            if err.state:
                entry["state"] = err.state
            out["errors"][op] = entry
        if self.rate_limit is not None:
            rl: dict[str, Any] = {"rate": self.rate_limit.rate, "retry_after": self.rate_limit.retry_after}
            if self.rate_limit.ops is not None:
                rl["ops"] = sorted(self.rate_limit.ops)
            out["rate_limit"] = rl
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def _op(name: Any, *, star: bool = True) -> str:
    if not isinstance(name, str) or not (name in OPERATIONS or (star and name == "*")):
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(sorted(OPERATIONS))}")
    return name


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be a number between 0 and 1")
    return float(value)


def _parse_error(op: str, spec: Any) -> ErrorFault:
    if not isinstance(spec, Mapping):
        raise ValueError(f"errors.{op} must be an object")
    status = spec.get("status", 500)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"errors.{op}.status must be an HTTP error status")
    state = spec.get("state")
    if state is not None and (state != "error" or op not in ERROR_STATE_OPS):
        raise ValueError('errors.<op>.state may only be "error", for create or start')
    return ErrorFault(
        rate=_rate(spec.get("rate", 1.0), f"errors.{op}.rate"),
        status=status,
        after=bool(spec.get("after", False)),
        state=state,
    )


def parse_faults(obj: Any) -> tuple[Faults, list[str]]:
    """Validate a fault JSON object; returns the settings and the ``lose`` list.

    Raises `ValueError` with a readable message on bad input.
    """
    if obj is None:
        return Faults(), []
    if not isinstance(obj, Mapping):
        raise ValueError("faults must be a JSON object")
    unknown = set(obj) - {"latency", "errors", "rate_limit", "seed", "lose"}
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    latency: dict[str, float] = {}
    for op, secs in dict(obj.get("latency") or {}).items():
        if isinstance(secs, bool) or not isinstance(secs, int | float) or secs < 0:
            raise ValueError(f"latency.{op} must be a non-negative number of seconds")
        latency[_op(op)] = float(secs)
    errors = {_op(op): _parse_error(op, spec) for op, spec in dict(obj.get("errors") or {}).items()}
    rate_limit = None
    rl = obj.get("rate_limit")
    if rl is not None:
        if not isinstance(rl, Mapping):
            raise ValueError("rate_limit must be an object")
        retry_after = rl.get("retry_after", 1)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0:
            raise ValueError("rate_limit.retry_after must be a non-negative number")
        ops = rl.get("ops")
        rate_limit = RateLimitFault(
            rate=_rate(rl.get("rate", 1.0), "rate_limit.rate"),
            retry_after=float(retry_after),
            ops=frozenset(_op(o, star=False) for o in ops) if ops is not None else None,
        )
    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("seed must be an integer")
    lose = obj.get("lose") or []
    if not isinstance(lose, list) or not all(isinstance(x, str) for x in lose):
        raise ValueError("lose must be a list of sandbox ids or names")
    return Faults(latency=latency, errors=errors, rate_limit=rate_limit, seed=seed), list(lose)


def parse_latency_flag(text: str) -> tuple[str, float]:
    """``create=0.09`` or ``*=0.02`` -> (op, seconds)."""
    op, sep, secs = text.partition("=")
    if not sep:
        raise ValueError(f"expected OP=SECONDS, got {text!r}")
    value = float(secs)
    if value < 0:
        raise ValueError("latency must not be negative")
    return _op(op.strip()), value


def parse_error_flag(text: str) -> tuple[str, ErrorFault]:
    """``create=0.3:503`` (rate:status, status defaults to 500) -> (op, fault)."""
    op, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"expected OP=RATE[:STATUS], got {text!r}")
    rate, _, status = rest.partition(":")
    spec: dict[str, Any] = {"rate": float(rate)}
    if status:
        spec["status"] = int(status)
    name = _op(op.strip())
    return name, _parse_error(name, spec)


def parse_rate_limit_flag(text: str) -> RateLimitFault:
    """``0.2`` or ``0.2:1`` (rate:retry_after seconds)."""
    rate, _, retry = text.partition(":")
    return RateLimitFault(rate=_rate(float(rate), "rate limit"), retry_after=float(retry) if retry else 1.0)


@dataclass(frozen=True)
class Decision:
    """What to do to one call."""

    latency: float = 0.0
    retry_after: float | None = None  # set: answer 429
    error: ErrorFault | None = None


class FaultInjector:
    """Holds the current `Faults` and draws seeded random decisions from them."""

    def __init__(self, faults: Faults | None = None, seed: int | None = None) -> None:
        self.faults = faults or Faults()
        self._rng = random.Random(seed if seed is not None else self.faults.seed)

    def replace(self, faults: Faults) -> None:
        """Install new settings; reseeds the RNG when they carry a seed."""
        self.faults = faults
        if faults.seed is not None:
            self._rng = random.Random(faults.seed)

    def _hit(self, rate: float) -> bool:
        if rate <= 0:
            return False
        return rate >= 1 or self._rng.random() < rate

    def decide(self, op: str) -> Decision:
        """Draw the fate of one call to `op`. Admin operations are never faulted."""
        if op.startswith("admin_"):
            return Decision()
        f = self.faults
        latency = 0.0 if op == "create" else f.latency_for(op)  # create spends its own latency
        rl = f.rate_limit
        if rl is not None and (rl.ops is None or op in rl.ops) and self._hit(rl.rate):
            return Decision(latency=latency, retry_after=rl.retry_after)
        err = f.error_for(op)
        if err is not None and err.state is None and self._hit(err.rate):
            return Decision(latency=latency, error=err)
        return Decision(latency=latency)

    def error_state(self, op: str) -> bool:
        """Whether this create/start should leave the sandbox in the ``error`` state."""
        err = self.faults.error_for(op)
        return err is not None and err.state == "error" and self._hit(err.rate)
