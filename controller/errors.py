"""The operator's one exception hierarchy.

Adapters (`sandboxes.py`, `kube.py`, `github/`) translate vendor errors into these; only
`handlers.py` decides what they mean for a task (retry with backoff, fail the task, ...).
Messages must never contain secret values: adapters build them from status codes and
operation names, and everything passes through `logs.redact` before it is shown anywhere.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base class of every error the operator raises on purpose."""


class Retryable(OperatorError):
    """A transient failure (rate limit, 5xx, timeout, connection): try again later.

    `retry_after` is the delay the remote asked for (HTTP Retry-After), if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class Fatal(OperatorError):
    """A failure that retrying cannot fix (bad request, forbidden, invalid spec)."""

    def __init__(self, message: str, *, reason: str = "SandboxError", status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status


class SecretMissing(Fatal):
    """A referenced Secret or key does not exist (and is not optional)."""

    def __init__(self, message: str):
        super().__init__(message, reason="SecretNotFound", status=404)
