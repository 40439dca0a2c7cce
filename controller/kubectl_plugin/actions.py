"""What `cancel`, `suspend`, `resume` and `rerun` send, decided from the task as read (pure).

- cancel: `spec.cancel: true` (one-way; the CRD rejects unsetting it). The operator ends the task
  `Failed/Cancelled`, keeps the record and logs, deletes the sandbox.
- suspend / resume: `spec.suspend: true / false`. A running task's sandbox is stopped and kept,
  its slot freed and its deadline paused; resume starts the same sandbox again.
- rerun: a new AgentTask from the old one's spec, like `kubectl create job --from`: named
  `<old>-rerun-<n>` (or `--name`), labelled and annotated `agenttask.io/rerun-of: <old>`, with
  `suspend`/`cancel` reset and the GitHub delivery id dropped (no delivery created the rerun).
  Labels are copied; annotations are not (kubectl's last-applied-configuration among them would
  make the next `kubectl apply` of the old manifest patch the rerun).

Each decision returns the patch or object, or raises `Refused` with the reason a user reads.
Nothing here talks to the apiserver.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ..api import API_VERSION, KIND, Phase

RERUN_OF = "agenttask.io/rerun-of"
_NAME_MAX = 253
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Refused(Exception):
    """The action does not apply to the task in its current state (exit code 1)."""


def _phase(task: Mapping[str, Any]) -> Phase | None:
    raw = (task.get("status") or {}).get("phase")
    try:
        return Phase(raw) if raw else None
    except ValueError:
        return None


def _name(task: Mapping[str, Any]) -> str:
    return str((task.get("metadata") or {}).get("name", "?"))


def cancel_patch(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec patch that cancels `task`; None when it is already cancelled (nothing to do)."""
    phase = _phase(task)
    if (task.get("spec") or {}).get("cancel") is True:
        return None
    if phase is not None and phase.terminal:
        raise Refused(f"{_name(task)} already finished ({phase.value}); nothing to cancel")
    return {"cancel": True}


def suspend_patch(task: Mapping[str, Any], *, suspend: bool) -> dict[str, Any] | None:
    """The spec patch that suspends (or resumes) `task`; None when it already is so."""
    phase = _phase(task)
    spec = task.get("spec") or {}
    verb = "suspend" if suspend else "resume"
    if phase is not None and phase.terminal:
        raise Refused(f"{_name(task)} already finished ({phase.value}); nothing to {verb}")
    if spec.get("cancel") is True:
        raise Refused(f"{_name(task)} is being cancelled; nothing to {verb}")
    if bool(spec.get("suspend", False)) == suspend:
        return None
    return {"suspend": suspend}


def rerun_name(old: str, n: int) -> str:
    suffix = f"-rerun-{n}"
    return old[:_NAME_MAX - len(suffix)].rstrip("-.") + suffix


def rerun_body(task: Mapping[str, Any], *, name: str | None = None, generate: bool = False) -> dict[str, Any]:
    """The new AgentTask for a rerun of `task` (metadata.name set, or generateName with `generate`)."""
    meta = task.get("metadata") or {}
    old = str(meta.get("name"))
    spec = copy.deepcopy(dict(task.get("spec") or {}))
    spec.pop("suspend", None)
    spec.pop("cancel", None)
    audit = spec.get("audit")
    if isinstance(audit, dict):
        audit.pop("deliveryId", None)
        if not audit:
            spec.pop("audit")
    labels = {k: v for k, v in dict(meta.get("labels") or {}).items() if k != RERUN_OF}
    if _LABEL_VALUE.match(old) and len(old) <= 63:
        labels[RERUN_OF] = old
    metadata: dict[str, Any] = {"labels": labels, "annotations": {RERUN_OF: old}}
    if generate:
        metadata["generateName"] = old[:_NAME_MAX - 12].rstrip("-.") + "-rerun-"
    else:
        metadata["name"] = name or rerun_name(old, 1)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
