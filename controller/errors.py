"""The operator's one exception hierarchy, organised by who is at fault.

Adapters (`sandboxes.py`, `kube.py`, `github/`) translate vendor errors into these (for
Daytona the rules live in `failures.py`, one table); the supervisor decides what each kind
means for a task:

- `Retryable` — transient trouble (429, 5xx, timeouts, 409 "state change in progress"):
  retried, waiting at least what the server asked (`retry_after`).
- `OperatorWide` — trouble that is nobody's task's fault (Daytona rejects our key, the
  organisation is out of quota, Kubernetes forbids us something): no task fails; tasks wait
  with a condition saying why and the operator reports itself degraded until it clears.
- `AttemptLost` — the sandbox or the agent command vanished or stopped under an action: the
  supervisor re-observes; the plan counts a confirmed loss against `backoffLimit`.
- `TaskFault` — the task's own fault (its resources exceed the per-sandbox maximum, its
  snapshot does not exist, its repository or Secret is missing): the task fails with `reason`.
- `Fatal` — any other refusal that retrying the same request cannot fix. It never fails a
  task by itself: the supervisor logs it, records `lastError` and backs off.

Messages must never contain secret values: adapters build them from status codes, operation
names and server messages, and everything passes through `logs.redact` before it is shown.
"""

from __future__ import annotations

from enum import StrEnum


class OperatorError(Exception):
    """Base class of every error the operator raises on purpose."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class Retryable(OperatorError):
    """A transient failure (rate limit, 5xx, timeout, connection, state change in progress).

    `retry_after` is the delay the remote asked for (any Retry-After header form), if any;
    `code` the machine-readable error code the server sent (the toolbox daemon's, e.g.
    ``GIT_TRANSPORT_FAILED``: the sandbox could not reach a git remote), if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None,
                 code: str | None = None):
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.code = code


class Cause(StrEnum):
    """Why the operator as a whole cannot make progress (`OperatorWide.cause`)."""

    DAYTONA_AUTH = "DaytonaAuthFailed"
    DAYTONA_FORBIDDEN = "DaytonaForbidden"
    DAYTONA_QUOTA = "DaytonaQuotaExceeded"
    DAYTONA_UNAVAILABLE = "DaytonaUnavailable"
    KUBERNETES_FORBIDDEN = "KubernetesForbidden"


class OperatorWide(OperatorError):
    """A fault of the installation or the Daytona organisation, not of any task."""

    def __init__(self, message: str, *, cause: Cause, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message, status=status)
        self.cause = cause
        self.retry_after = retry_after


class AttemptLost(OperatorError):
    """The sandbox (or its agent command) went away or stopped while an action used it."""


class Fatal(OperatorError):
    """A refusal that retrying the same request cannot fix; not, by itself, the task's fault."""

    def __init__(self, message: str, *, reason: str = "Rejected", status: int | None = None):
        super().__init__(message, status=status)
        self.reason = reason


class TaskFault(Fatal):
    """The task's own fault: it fails with `reason` (a `status.reason` value)."""


class SecretMissing(TaskFault):
    """A referenced Secret or key does not exist (and is not optional)."""

    def __init__(self, message: str):
        super().__init__(message, reason="SecretNotFound", status=404)
