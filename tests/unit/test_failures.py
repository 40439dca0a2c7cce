"""The classification table: who is at fault for each answer Daytona really gives.

Messages are Daytona's own (apps/api/src/sandbox/services/sandbox.service.ts and friends);
the table is the contract `sandboxes.py` and the supervisor rely on.
"""

from __future__ import annotations

import pytest

from controller.errors import Cause
from controller.failures import Kind, Verdict, classify

TABLE: list[tuple[str, int | None, str, Verdict]] = [
    # operator-wide: no task is at fault
    ("create", 401, "Unauthorized", Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_AUTH)),
    ("get", 401, "Invalid API key", Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_AUTH)),
    ("create", 403, "Organization is suspended: unpaid", Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_FORBIDDEN)),
    ("create", 400, "Total CPU limit exceeded. Maximum allowed: 20.\nTo increase ...",
     Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    ("create", 400, "Total memory limit exceeded. Maximum allowed: 40GiB.",
     Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    ("start", 400, "Total disk limit exceeded. Maximum allowed: 100GiB.",
     Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    ("create", 400, "No available runners", Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    # as the SDK words it: its own context first, then the server's message
    ("create", 400, "Failed to create sandbox: Total CPU limit exceeded. Maximum allowed: 2.",
     Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    ("start", 400, "Failure during waiting for sandbox to start: Failed to start sandbox: Total memory limit "
     "exceeded. Maximum allowed: 4GiB.", Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)),
    ("create", 400, "Failed to create sandbox: CPU request 8 exceeds maximum allowed per sandbox (4).",
     Verdict(Kind.TASK, reason="SandboxResourceLimit")),
    # transient: retried, waiting at least what the server asked
    ("create", 429, "ThrottlerException: Too Many Requests", Verdict(Kind.TRANSIENT)),
    ("get", 500, "An unexpected error occurred.", Verdict(Kind.TRANSIENT)),
    ("get", 503, "", Verdict(Kind.TRANSIENT)),
    ("delete", 409, "Sandbox state change in progress", Verdict(Kind.TRANSIENT)),
    ("stop", 409, "Sandbox state change in progress", Verdict(Kind.TRANSIENT)),
    ("get", None, "Cannot connect to host", Verdict(Kind.TRANSIENT)),
    ("create", 400, "Snapshot agenttask-agent is pulling", Verdict(Kind.TRANSIENT)),
    # attempt lost: re-observed, counted against backoffLimit once confirmed
    ("create", 400, "Sandbox failed to start: image pull failed", Verdict(Kind.ATTEMPT_LOST)),
    ("create", None, "Sandbox at-1 failed to start with state: error", Verdict(Kind.ATTEMPT_LOST)),
    ("upload", 404, "Sandbox not found", Verdict(Kind.ATTEMPT_LOST)),
    ("exec", 404, "Sandbox not found", Verdict(Kind.ATTEMPT_LOST)),
    ("session_exec", 409, "Sandbox at-1 is not running", Verdict(Kind.ATTEMPT_LOST)),
    ("upload", 409, "Sandbox at-1 is not running", Verdict(Kind.ATTEMPT_LOST)),
    ("stop", 400, "Sandbox is in an errored state", Verdict(Kind.ATTEMPT_LOST)),
    # the task's own fault
    ("create", 400, "CPU request 64 exceeds maximum allowed per sandbox (4).\nContact support",
     Verdict(Kind.TASK, reason="SandboxResourceLimit")),
    ("create", 400, "Memory request 99GB exceeds maximum allowed per sandbox (8GB).",
     Verdict(Kind.TASK, reason="SandboxResourceLimit")),
    ("create", 400, "Invalid CIDR prefix length: 10.0.0.0/99. Prefix must be between 0 and 32",
     Verdict(Kind.TASK, reason="InvalidSpec")),
    ("create", 400, "Network allow list cannot contain more than 10 networks",
     Verdict(Kind.TASK, reason="InvalidSpec")),
    ("create", 400, "Cannot specify Sandbox resources when using a snapshot", Verdict(Kind.TASK, reason="InvalidSpec")),
    ("create", 400, "Snapshot nope not found. Did you add it through the Daytona Dashboard?",
     Verdict(Kind.TASK, reason="SnapshotUnavailable")),
    ("create", 400, "Snapshot old is build_failed", Verdict(Kind.TASK, reason="SnapshotUnavailable")),
    ("create", 400, "something Daytona has never said before", Verdict(Kind.TASK, reason="SandboxRejected")),
    ("git_clone", 400, "authentication required: could not read Username", Verdict(Kind.TASK,
                                                                                 reason="RepositoryUnreachable")),
    ("git_clone", 400, "fatal: repository 'x' not found", Verdict(Kind.TASK, reason="RepositoryUnreachable")),
    ("git_clone", 400, "Could not resolve host: example.test", Verdict(Kind.TRANSIENT)),
    # answers, not errors
    ("stop", 400, "Sandbox is not in a stoppable state", Verdict(Kind.DONE)),
    ("start", 400, "Sandbox is not in valid state", Verdict(Kind.DONE)),
    ("session_create", 409, "session already exists", Verdict(Kind.DONE)),
    ("create", 409, "Sandbox with name at-1 already exists", Verdict(Kind.NAME_TAKEN)),
    ("get", 404, "Sandbox with ID or name at-1 not found", Verdict(Kind.MISSING)),
    ("delete", 404, "not found", Verdict(Kind.MISSING)),
    ("download", 404, "file not found", Verdict(Kind.MISSING)),
    # refused for a reason retrying will not fix, and not the task's fault: never fails a task
    ("set_auto_delete", 400, "bad interval", Verdict(Kind.FATAL)),
    ("exec", 400, "weird", Verdict(Kind.FATAL)),
]


@pytest.mark.parametrize(("operation", "status", "message", "verdict"), TABLE,
                         ids=[f"{o}-{s}-{m[:30]}" for o, s, m, _ in TABLE])
def test_classification_table(operation: str, status: int | None, message: str, verdict: Verdict) -> None:
    assert classify(operation, status=status, message=message) == verdict


def test_timeouts_are_transient_whatever_the_operation() -> None:
    for operation in ("create", "get", "delete", "session_exec", "git_clone"):
        assert classify(operation, status=None, message="timed out", timeout=True) == Verdict(Kind.TRANSIENT)


@pytest.mark.parametrize(("code", "verdict"), [
    ("GIT_AUTH_FAILED", Verdict(Kind.TASK, reason="RepositoryUnreachable")),
    ("GIT_REPO_NOT_FOUND", Verdict(Kind.TASK, reason="RepositoryUnreachable")),
    ("GIT_TRANSPORT_FAILED", Verdict(Kind.TRANSIENT)),
    ("FILE_NOT_FOUND", Verdict(Kind.MISSING)),
])
def test_toolbox_daemon_codes_win_over_the_status(code: str, verdict: Verdict) -> None:
    """A git clone refused with 401 by the daemon is the repository's credentials, not our key."""
    assert classify("git_clone", status=401, message="x", code=code, source="DAYTONA_DAEMON") == verdict


def test_a_daemon_401_without_code_is_not_operator_wide() -> None:
    assert classify("exec", status=401, message="denied", source="DAYTONA_DAEMON") == Verdict(Kind.FATAL)
    assert classify("git_clone", status=403, message="denied", source="DAYTONA_DAEMON").kind == Kind.TASK
