"""Who is at fault when Daytona says no: one table, pure, with Daytona's own messages.

`classify(operation, status=..., message=...)` turns one failed Daytona call into a `Verdict`
(`Kind` + the cause or reason); `sandboxes.py` raises the matching `errors` class. The rules
follow what Daytona's API really answers (apps/api/src/sandbox/services/sandbox.service.ts,
controllers/sandbox.controller.ts, services/runner.service.ts, the throttler in app.module.ts):

- 401 → operator-wide (our API key); 403 → operator-wide (organisation suspended, region not
  available to the organisation, key without the permission).
- 400 "Total CPU/memory/disk/GPU limit exceeded" and "No available runners" → operator-wide
  (the organisation is full: tasks wait and start when capacity frees).
- 400 "... exceeds maximum allowed per sandbox" → the task's fault (its resources); so are an
  invalid allow list, resources on the snapshot path, an unknown or unusable snapshot.
- 400 "Sandbox failed to start: ..." (create), "Sandbox is in an errored state" → attempt lost.
- 409 "Sandbox state change in progress" → transient: try again after the transition.
- 400 "Sandbox is not in a stoppable state" on stop → already stopped: done.
- 404 on an action inside a sandbox (upload, exec, session command, clone) → attempt lost.
- 429 (any throttler), 5xx, timeouts, connection errors → transient.

Anything else on create is the task's fault (`SandboxRejected`, Daytona's message shown);
anything else elsewhere is `FATAL`: logged, recorded in `lastError`, retried with backoff, and
never, by itself, a reason to fail a task. Matching is on stable message prefixes because the
open-source API's error body has no machine-readable code (filters/all-exceptions.filter.ts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import Cause


class Kind(StrEnum):
    TRANSIENT = "transient"
    OPERATOR_WIDE = "operator-wide"
    ATTEMPT_LOST = "attempt-lost"
    TASK = "task"
    DONE = "done"
    """The request wanted a state that already holds (stop of a stopped sandbox)."""
    NAME_TAKEN = "name-taken"
    """Create with a name that exists: a concurrent create won; adopt its sandbox."""
    MISSING = "missing"
    """404 on a lookup: the thing does not exist (callers decide what that means)."""
    FATAL = "fatal"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    cause: Cause | None = None
    reason: str | None = None


# operations that act inside a sandbox (toolbox): a 404/409 there means the sandbox went away
_TOOLBOX = frozenset({"upload", "exec", "session_create", "session_exec", "git_clone", "logs_follow"})
_LOOKUPS = frozenset({"get", "session_get", "logs", "download", "delete", "stop", "warm_pool_delete"})

_QUOTA = re.compile(r"^Total (CPU|memory|disk|GPU) limit exceeded|^No available runners", re.I)
_PER_SANDBOX = re.compile(r"exceeds maximum allowed per (non-ephemeral )?sandbox", re.I)
_INVALID_SPEC = re.compile(
    r"^(Invalid IP address|Invalid network format|Invalid CIDR prefix|Network allow list cannot contain"
    r"|Invalid domain|Domain allow list cannot contain|Cannot specify Sandbox resources"
    r"|Auto-(stop|archive) interval must be|.*must be ephemeral|Only ephemeral sandboxes"
    r"|Non-ephemeral sandboxes are not permitted)", re.I)
_SNAPSHOT_MISSING = re.compile(r"^Snapshot \S+ (not found|is not available in region|is (error|build_failed|"
                               r"inactive|removing))|^Snapshot ref is not defined", re.I)
_SNAPSHOT_BUSY = re.compile(r"^Snapshot \S+ is (pending|pulling|building)", re.I)
_FAILED_TO_START = re.compile(r"failed to start|entered (the )?error state|is in an errored state|build failed",
                              re.I)
_IN_PROGRESS = re.compile(r"state change in progress", re.I)
_NOT_STOPPABLE = re.compile(r"not in a stoppable state", re.I)
_NOT_RUNNING = re.compile(r"not running|not started|is not in valid state", re.I)
_CLONE_REFUSED = re.compile(r"not found|authentication|could not read username|permission denied|"
                            r"does not appear to be a git repository|does not exist|unsupported (url|scheme)|"
                            r"invalid (url|repository)|\b403\b|\b401\b", re.I)


# the SDK prefixes what the server said with its own context (`intercept_errors(message_prefix=...)`):
# "Failed to create sandbox: Total CPU limit exceeded ..."; the rules read the server's words
_SDK_PREFIX = re.compile(r"^(?:Failed to [^:\n]{1,60}|Failure during [^:\n]{1,80}): ", re.I)


def server_words(message: str) -> str:
    """`message` without the SDK's context prefixes (there may be several, nested)."""
    while (m := _SDK_PREFIX.match(message)) is not None:
        message = message[m.end():]
    return message


_DAEMON = "DAYTONA_DAEMON"
# machine-readable codes of the toolbox daemon (the SDK's CODE_TO_ERROR catalogue)
_DAEMON_CODES: dict[str, Verdict] = {
    "GIT_AUTH_FAILED": Verdict(Kind.TASK, reason="RepositoryUnreachable"),
    "GIT_REPO_NOT_FOUND": Verdict(Kind.TASK, reason="RepositoryUnreachable"),
    "GIT_BRANCH_NOT_FOUND": Verdict(Kind.TASK, reason="RepositoryUnreachable"),
    "GIT_TRANSPORT_FAILED": Verdict(Kind.TRANSIENT),
    "FILE_NOT_FOUND": Verdict(Kind.MISSING),
    "SESSION_ENDED": Verdict(Kind.ATTEMPT_LOST),
    "PROCESS_NOT_FOUND": Verdict(Kind.ATTEMPT_LOST),
}


def classify(operation: str, *, status: int | None, message: str = "", timeout: bool = False,
             code: str | None = None, source: str | None = None) -> Verdict:
    """The verdict on one failed Daytona call (see the module docstring for the rules).

    `code`/`source` are the error envelope's machine-readable fields when the server sent them
    (the toolbox daemon does for git, file and session errors: a git clone refused with 401 is
    the repository's credentials, not our API key)."""
    message = server_words(message)
    if source == _DAEMON and code in _DAEMON_CODES:
        return _DAEMON_CODES[code]
    if source == _DAEMON and status in (401, 403):
        return Verdict(Kind.TASK, reason="RepositoryUnreachable") if operation == "git_clone" else Verdict(Kind.FATAL)
    if timeout or status is None:
        if _FAILED_TO_START.search(message):  # the SDK's own "sandbox entered error state"
            return Verdict(Kind.ATTEMPT_LOST)
        return Verdict(Kind.TRANSIENT)
    if status == 401:
        return Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_AUTH)
    if status == 403:
        return Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_FORBIDDEN)
    if status in (408, 429) or status >= 500:
        return Verdict(Kind.TRANSIENT)
    if status == 409:
        if _IN_PROGRESS.search(message):
            return Verdict(Kind.TRANSIENT)
        if operation == "create":
            return Verdict(Kind.NAME_TAKEN)
        if operation == "session_create":
            return Verdict(Kind.DONE)
        if operation in _TOOLBOX:
            return Verdict(Kind.ATTEMPT_LOST)
        return Verdict(Kind.TRANSIENT)
    if status == 404:
        if operation in _TOOLBOX:
            return Verdict(Kind.ATTEMPT_LOST)
        if operation in _LOOKUPS:
            return Verdict(Kind.MISSING)
        return Verdict(Kind.FATAL)
    if status in (400, 422):
        return _bad_request(operation, message)
    return Verdict(Kind.FATAL)


def _bad_request(operation: str, message: str) -> Verdict:
    if _QUOTA.search(message):
        return Verdict(Kind.OPERATOR_WIDE, cause=Cause.DAYTONA_QUOTA)
    if _PER_SANDBOX.search(message):
        return Verdict(Kind.TASK, reason="SandboxResourceLimit")
    if _INVALID_SPEC.search(message):
        return Verdict(Kind.TASK, reason="InvalidSpec")
    if _SNAPSHOT_BUSY.search(message):
        return Verdict(Kind.TRANSIENT)
    if _SNAPSHOT_MISSING.search(message):
        return Verdict(Kind.TASK, reason="SnapshotUnavailable")
    if _FAILED_TO_START.search(message):
        return Verdict(Kind.ATTEMPT_LOST)
    if operation == "stop" and _NOT_STOPPABLE.search(message):
        return Verdict(Kind.DONE)
    if operation == "start" and re.search(r"is not in valid state", message, re.I):
        return Verdict(Kind.DONE)  # already started (or starting): the next observation says which
    if operation in _TOOLBOX | {"start", "stop"} and _NOT_RUNNING.search(message):
        return Verdict(Kind.ATTEMPT_LOST)
    if operation == "git_clone":
        if _CLONE_REFUSED.search(message):
            return Verdict(Kind.TASK, reason="RepositoryUnreachable")
        return Verdict(Kind.TRANSIENT)
    if operation == "create":
        return Verdict(Kind.TASK, reason="SandboxRejected")
    return Verdict(Kind.FATAL)
