"""Fault-injection settings and the seeded decisions made from them.

Settings (constructor ``faults=``, CLI flags, or ``POST /_admin/faults`` which *replaces*
the whole set; ``{}`` clears it)::

    {"latency":    {"create": 0.09, "*": 0.02},            # seconds added before the operation
     "errors":     {"create": {"rate": 0.3, "status": 503}, # fail this share of calls
                    "delete": {"rate": 0.1, "status": 500, "after": true},
                    "start":  {"rate": 0.5, "state": "error"}},
     "rate_limit": {"rate": 0.2, "retry_after": 1, "ops": ["create"]},  # 429 + Retry-After-<name>
     "state_conflict": {"ops": ["stop"], "seconds": 5},      # 409 state change in progress
     "quota_exhausted": "cpu",                               # create/start: 400 Total CPU limit exceeded
     "build_failures": {"count": 1, "reason": "..."},        # the next image build(s) end build_failed
     "list_lag": 2,                                          # GET /sandbox sees changes 2 s late
     "seed": 7,                                              # reseed the RNG
     "lose": ["<sandbox id or name>", ...]}                  # action, see below

* ``latency[op]`` falls back to ``latency["*"]``. ``create`` latency is spent while the
  sandbox is visibly ``creating``; a create served from a warm pool spends ``pool_create``
  latency instead (no fallback to ``create``; it does fall back to ``"*"``).
* ``errors[op]`` falls back to ``errors["*"]``. ``status`` (default 500) is returned *instead*
  of running the operation, or, with ``"after": true``, *after* running it (the client sees
  an error although the change happened, e.g. a create whose response is lost). For
  ``create`` and ``start``, ``"state": "error"`` instead leaves the sandbox in the ``error``
  state with an ``errorReason``; the create or start request then answers Daytona's 400
  ``Sandbox failed to start: <reason>`` (``controllers/sandbox.controller.ts``
  ``waitForSandboxStarted``).
* ``rate_limit`` answers 429 ``ThrottlerException: Too Many Requests`` for that share of calls
  to ``ops`` (default: every operation), with the header Daytona's throttler sends:
  ``Retry-After-sandbox-create``, ``Retry-After-sandbox-lifecycle`` or
  ``Retry-After-authenticated`` (`ops.throttler_of`). Plain ``Retry-After`` comes only from
  the failed-auth throttler (settings ``failed_auth``), as in Daytona.
* ``state_conflict`` answers Daytona's 409 ``Sandbox state change in progress`` to every call
  to ``ops`` for ``seconds`` after the faults were set (omitted: until they are replaced).
* ``quota_exhausted`` (``cpu``, ``memory`` or ``disk``) refuses every create and start with
  Daytona's 400 ``Total ... limit exceeded`` until the faults are replaced.
* ``build_failures`` makes the next ``count`` image builds end in ``build_failed`` with
  ``errorReason`` `reason` (``GET /_admin/faults`` shows how many are left).
* ``list_lag`` overrides the ``list_lag`` setting while set.
* ``lose`` is not stored: each sandbox named is destroyed at once behind the client's back
  (its process groups SIGKILLed, its directory removed); later calls see 404.

Operation names (the same names key ``GET /_admin/stats`` ``calls``) are listed in `ops`;
internal ones (never faulted) are ``pool_create`` (latency only), ``unknown`` (unmatched
routes) and ``socketio`` (the event channel); admin ``admin_*`` are never faulted.

Does not: sleep or build responses; the server middleware applies the `Decision`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .ops import INTERNAL_OPS, MAIN_OPS, OPERATIONS, TOOLBOX_OPS, throttler_of

__all__ = ["INTERNAL_OPS", "MAIN_OPS", "OPERATIONS", "TOOLBOX_OPS", "FaultInjector", "Faults", "parse_faults"]
QUOTA_KINDS = ("cpu", "memory", "disk")

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
    """Answer 429 (``Retry-After-<throttler>: retry_after``) to `rate` of the calls to `ops`."""

    rate: float
    retry_after: float = 1.0
    ops: frozenset[str] | None = None


@dataclass(frozen=True)
class StateConflictFault:
    """Answer 409 state change in progress to calls to `ops` for `seconds` (None: while set)."""

    ops: frozenset[str]
    seconds: float | None = None


@dataclass(frozen=True)
class BuildFault:
    """The next `count` image builds fail with `reason`."""

    count: int
    reason: str = "injected fault: image build failed"


@dataclass(frozen=True)
class Faults:
    """A complete fault configuration."""

    latency: dict[str, float] = field(default_factory=dict)
    errors: dict[str, ErrorFault] = field(default_factory=dict)
    rate_limit: RateLimitFault | None = None
    state_conflict: StateConflictFault | None = None
    quota_exhausted: str | None = None
    build_failures: BuildFault | None = None
    list_lag: float | None = None
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
        if self.state_conflict is not None:
            sc: dict[str, Any] = {"ops": sorted(self.state_conflict.ops)}
            if self.state_conflict.seconds is not None:
                sc["seconds"] = self.state_conflict.seconds
            out["state_conflict"] = sc
        if self.quota_exhausted is not None:
            out["quota_exhausted"] = self.quota_exhausted
        if self.build_failures is not None:
            out["build_failures"] = {"count": self.build_failures.count, "reason": self.build_failures.reason}
        if self.list_lag is not None:
            out["list_lag"] = self.list_lag
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
    unknown = set(obj) - {"latency", "errors", "rate_limit", "state_conflict", "quota_exhausted",
                          "build_failures", "list_lag", "seed", "lose"}  # fmt: skip
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
    quota = obj.get("quota_exhausted")
    if quota is not None and quota not in QUOTA_KINDS:
        raise ValueError(f"quota_exhausted must be one of {', '.join(QUOTA_KINDS)}")
    lag = obj.get("list_lag")
    if lag is not None and (isinstance(lag, bool) or not isinstance(lag, int | float) or lag < 0):
        raise ValueError("list_lag must be a non-negative number of seconds")
    faults = Faults(
        latency=latency, errors=errors, rate_limit=rate_limit, seed=seed,
        state_conflict=_state_conflict(obj.get("state_conflict")), quota_exhausted=quota,
        build_failures=_build_failures(obj.get("build_failures")), list_lag=float(lag) if lag is not None else None,
    )  # fmt: skip
    return faults, list(lose)


def _state_conflict(spec: Any) -> StateConflictFault | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("ops"), list) or not spec["ops"]:
        raise ValueError("state_conflict must be an object with a non-empty list of ops")
    seconds = spec.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0):
        raise ValueError("state_conflict.seconds must be a non-negative number")
    ops = frozenset(_op(o, star=False) for o in spec["ops"])
    return StateConflictFault(ops=ops, seconds=float(seconds) if seconds is not None else None)


def _build_failures(spec: Any) -> BuildFault | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError("build_failures must be an object {count, reason}")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("build_failures.count must be a non-negative integer")
    reason = spec.get("reason", BuildFault(0).reason)
    if not isinstance(reason, str) or not reason:
        raise ValueError("build_failures.reason must be a non-empty string")
    return BuildFault(count=count, reason=reason)


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
    throttler: str = "authenticated"  # names the Retry-After-<throttler> header of the 429
    conflict: bool = False  # set: answer 409 state change in progress
    error: ErrorFault | None = None


class FaultInjector:
    """Holds the current `Faults` and draws seeded random decisions from them."""

    def __init__(self, faults: Faults | None = None, seed: int | None = None) -> None:
        self.faults = faults or Faults()
        self._rng = random.Random(seed if seed is not None else self.faults.seed)
        self._installed = time.monotonic()
        self._builds_left = self.faults.build_failures.count if self.faults.build_failures else 0

    def replace(self, faults: Faults) -> None:
        """Install new settings; reseeds the RNG when they carry a seed."""
        self.faults = faults
        self._installed = time.monotonic()
        self._builds_left = faults.build_failures.count if faults.build_failures else 0
        if faults.seed is not None:
            self._rng = random.Random(faults.seed)

    def current(self) -> Faults:
        """The settings as they stand now (with the image-build failures still to come)."""
        bf = self.faults.build_failures
        if bf is None or bf.count == self._builds_left:
            return self.faults
        return replace(self.faults, build_failures=BuildFault(self._builds_left, bf.reason))

    def build_failure(self) -> str | None:
        """The reason the image build starting now fails, or None (consumes one failure)."""
        bf = self.faults.build_failures
        if bf is None or self._builds_left <= 0:
            return None
        self._builds_left -= 1
        return bf.reason

    def conflicting(self, op: str) -> bool:
        """Whether the ``state_conflict`` fault makes `op` answer 409 now."""
        sc = self.faults.state_conflict
        if sc is None or op not in sc.ops:
            return False
        return sc.seconds is None or time.monotonic() - self._installed < sc.seconds

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
            return Decision(latency=latency, retry_after=rl.retry_after, throttler=throttler_of(op))
        if self.conflicting(op):
            return Decision(latency=latency, conflict=True)
        err = f.error_for(op)
        if err is not None and err.state is None and self._hit(err.rate):
            return Decision(latency=latency, error=err)
        return Decision(latency=latency)

    def error_state(self, op: str) -> bool:
        """Whether this create/start should leave the sandbox in the ``error`` state."""
        err = self.faults.error_for(op)
        return err is not None and err.state == "error" and self._hit(err.rate)
