"""Is the operator as a whole able to make progress? Operator-wide causes, with their start time.

The Daytona adapter reports every call's outcome here; the Kubernetes adapter reports
forbidden requests. A cause is active:
- `DaytonaAuthFailed` / `DaytonaForbidden`: from a 401/403 until any Daytona call succeeds;
- `DaytonaQuotaExceeded`: from a quota refusal until a create or start succeeds, or until
  `hold` passed without a new refusal (nothing is trying any more);
- `DaytonaUnavailable`: when Daytona calls have failed transiently (connection, timeout, 5xx)
  for longer than `outage_after` without a success in between;
- `KubernetesForbidden`: from a 403 of the apiserver until `hold` passed without another one
  (RBAC is per resource and namespace, so one success elsewhere proves nothing).

Consumers: the supervisor (tasks wait with a condition naming the cause instead of failing),
`/readyz`, the `agenttask_operator_degraded` gauge (read at scrape time) and the
transition callback (one log line and one event per change). Pure bookkeeping with an injected
clock: no I/O, no asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cause

Listener = Callable[[Cause, bool, str], None]
_EXPIRING = (Cause.DAYTONA_QUOTA, Cause.KUBERNETES_FORBIDDEN)


@dataclass
class _Active:
    since: float
    message: str
    last_seen: float


class Health:
    def __init__(self, *, outage_after: float = 60.0, hold: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.outage_after = outage_after
        self.hold = hold
        self._clock = clock
        self._active: dict[Cause, _Active] = {}
        self._failing_since: float | None = None
        self._failing_message = ""
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """`listener(cause, active, message)` is called when a cause starts or clears."""
        self._listeners.append(listener)

    # ----------------------------------------------------------------- reports

    def daytona_ok(self, *, operation: str) -> None:
        self._failing_since = None
        self._clear(Cause.DAYTONA_AUTH)
        self._clear(Cause.DAYTONA_FORBIDDEN)
        self._clear(Cause.DAYTONA_UNAVAILABLE)
        if operation in ("create", "start"):
            self._clear(Cause.DAYTONA_QUOTA)

    def daytona_transient(self, message: str) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        self._failing_message = message
        if now - self._failing_since >= self.outage_after:
            self._raise(Cause.DAYTONA_UNAVAILABLE,
                        f"Daytona has not answered successfully for {now - self._failing_since:.0f}s: {message}")

    def operator_wide(self, cause: Cause, message: str) -> None:
        self._raise(cause, message)

    # ------------------------------------------------------------------ reads

    def active(self) -> dict[Cause, str]:
        """Every active cause with its message (expired holds are cleared here)."""
        now = self._clock()
        for cause in _EXPIRING:
            state = self._active.get(cause)
            if state is not None and now - state.last_seen > self.hold:
                self._clear(cause)
        return {cause: state.message for cause, state in self._active.items()}

    def degraded(self) -> bool:
        return bool(self.active())

    # -------------------------------------------------------------- internals

    def _raise(self, cause: Cause, message: str) -> None:
        now = self._clock()
        state = self._active.get(cause)
        if state is not None:
            state.message, state.last_seen = message, now
            return
        self._active[cause] = _Active(since=now, message=message, last_seen=now)
        for listener in self._listeners:
            listener(cause, True, message)

    def _clear(self, cause: Cause) -> None:
        state = self._active.pop(cause, None)
        if state is None:
            return
        for listener in self._listeners:
            listener(cause, False, state.message)
