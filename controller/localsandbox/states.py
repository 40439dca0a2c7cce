"""Daytona's sandbox states and the rules for accepting a lifecycle request, as pure functions.

Does: name the 22 sandbox states and 6 desired states Daytona has
(``apps/api/src/sandbox/enums/sandbox-state.enum.ts``, ``sandbox-desired-state.enum.ts``);
render the state a DTO shows for a stored (state, desired state) pair the way
``SandboxDto.getSandboxState`` does (``started`` + desired ``stopped`` reads ``stopping``,
``unknown`` + desired ``started`` reads ``creating``, ...); keep the ``pending`` invariant of
``Sandbox.enforceInvariants`` (pending while state != desired state, never for ``error`` /
``build_failed`` or a desired ``archived``); and decide whether start, stop, archive and delete
are accepted, raising the exact 400/409 Daytona raises (``services/sandbox.service.ts``
``start``, ``stop``, ``archive``, ``destroy``). Also the state sets that count towards the
organisation's compute and disk usage
(``apps/api/src/organization/constants/sandbox-states-consuming-*.constant.ts``).

Does not: change records, sleep or do I/O; `actions` applies the decisions.
"""

from __future__ import annotations

from typing import Protocol

from .errors import bad_request, state_change_in_progress

SANDBOX_STATES = (
    "creating", "restoring", "destroyed", "destroying", "started", "stopped", "starting", "stopping",
    "error", "build_failed", "pending_build", "building_snapshot", "unknown", "pulling_snapshot",
    "archived", "archiving", "resizing", "snapshotting", "forking", "pausing", "paused", "resuming",
)  # fmt: skip
DESIRED_STATES = ("destroyed", "started", "stopped", "resized", "archived", "paused")
ERROR_STATES = frozenset({"error", "build_failed"})

COMPUTE_STATES = frozenset({
    "creating", "restoring", "started", "starting", "stopping", "pending_build", "building_snapshot",
    "unknown", "pulling_snapshot", "forking", "pausing", "resuming",
})  # fmt: skip
DISK_STATES = COMPUTE_STATES | {"stopped", "paused", "archiving", "resizing", "snapshotting"}

# States in which toolbox (process, files, git) calls are served.
RUNNING_STATES = frozenset({"started"})


class Lifecycle(Protocol):
    """The state part of a sandbox record."""

    state: str
    desired: str
    pending: bool
    auto_delete: int


def ephemeral(lc: Lifecycle) -> bool:
    """Daytona's ``isEphemeral``: auto-delete interval exactly 0."""
    return lc.auto_delete == 0


def display_state(state: str, desired: str) -> str:
    """The ``state`` a sandbox DTO shows (``SandboxDto.getSandboxState``)."""
    if state == "started":
        if desired == "stopped":
            return "stopping"
        if desired == "destroyed":
            return "destroying"
    elif state == "stopped":
        if desired == "started":
            return "starting"
        if desired == "destroyed":
            return "destroying"
        if desired == "archived":
            return "archiving"
    elif state == "unknown" and desired == "started":
        return "creating"
    return state


def pending_for(state: str, desired: str, pending: bool) -> bool:
    """``pending`` after `Sandbox.enforceInvariants`."""
    if state in ERROR_STATES or desired == "archived":
        return False
    if state != desired:
        return True
    return pending and state != desired


def _not_errored(lc: Lifecycle) -> None:
    if lc.state in ERROR_STATES:
        raise bad_request("Sandbox is in an errored state")


def check_start(lc: Lifecycle) -> bool:
    """Whether a start has anything to do (False: already started); raises Daytona's 400/409."""
    if lc.state == "started" and lc.desired == "started":
        return False
    _not_errored(lc)
    if lc.state != lc.desired and not (lc.desired == "archived" and lc.state in ("stopped", "archiving")):
        raise state_change_in_progress()
    if lc.state not in ("stopped", "archived", "archiving", "paused"):
        raise bad_request("Sandbox is not in valid state")
    if lc.pending:
        raise state_change_in_progress()
    return True


def check_stop(lc: Lifecycle) -> None:
    """Raise Daytona's 400/409 unless a stop is accepted now."""
    _not_errored(lc)
    if lc.state != lc.desired:
        raise state_change_in_progress()
    if lc.state not in ("started", "paused"):
        raise bad_request("Sandbox is not in a stoppable state")
    if lc.pending:
        raise state_change_in_progress()


def check_archive(lc: Lifecycle) -> None:
    """Raise Daytona's 400/409 unless an archive is accepted now."""
    _not_errored(lc)
    if lc.state != lc.desired:
        raise state_change_in_progress()
    if lc.state != "stopped":
        raise bad_request("Sandbox is not stopped")
    if lc.pending:
        raise state_change_in_progress()
    if ephemeral(lc):
        raise bad_request("Ephemeral sandboxes cannot be archived")


def check_delete(lc: Lifecycle) -> None:
    """Raise Daytona's 409 unless a delete is accepted now (only a change in flight blocks it)."""
    if lc.pending and lc.state != "pending_build":
        raise state_change_in_progress()


def hidden(lc: Lifecycle) -> bool:
    """Whether GET answers 404 for this record: destroyed, or errored with desired ``destroyed``."""
    return lc.state == "destroyed" or (lc.state in ERROR_STATES and lc.desired == "destroyed")

