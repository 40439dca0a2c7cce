"""Pure rendering for the plugin: the `list` table and filters, the `describe` page, `-o json|yaml`.

Input is the raw objects as the apiserver returned them, parsed here with the operator's own
models (`controller.api`) where a field is modelled; `status.usage` (issue #14) is rendered
generically from the raw object, whatever keys it has. Times are shown kubectl-style (`5m`).
No I/O: callers print the strings.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ..api import AgentTask

_NONE = "<none>"


def age(created: dt.datetime | None, now: dt.datetime) -> str:
    """kubectl-style age: 42s, 5m, 3h, 2d."""
    if created is None:
        return "<unknown>"
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse(obj: Mapping[str, Any]) -> AgentTask:
    return AgentTask.from_body(obj)


def dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=4) + "\n"
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """kubectl's plain table: upper-case headers, columns padded to the widest cell plus 3."""
    all_rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in all_rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- list


def matches(obj: Mapping[str, Any], *, phases: Sequence[str], requester: str | None) -> bool:
    """The client-side filters of `list` (label selectors go to the apiserver)."""
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phases and phase.lower() not in {p.lower() for p in phases}:
        return False
    if requester is not None:
        audit = (obj.get("spec") or {}).get("audit") or {}
        if audit.get("requestedBy") != requester:
            return False
    return True


def list_table(objects: Sequence[Mapping[str, Any]], *, now: dt.datetime, all_namespaces: bool,
               wide: bool) -> str:
    headers = ["NAME", "PHASE", "REASON", "REPOSITORY", "ISSUE", "REQUESTER", "AGE"]
    if wide:
        headers += ["SANDBOX", "ATTEMPTS", "RESULT"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in objects:
        task = parse(obj)
        s = task.status
        row = [task.metadata.name, s.phase.value if s.phase else "Pending", s.reason or "",
               task.spec.repository.url, str(task.spec.issue.number) if task.spec.issue else "",
               task.spec.audit.requested_by or "", age(task.metadata.creation_timestamp, now)]
        if wide:
            result = s.result
            row += [(s.sandbox.name if s.sandbox else None) or "", str(s.attempts),
                    (result.pull_request_url or result.outcome or "") if result else ""]
        if all_namespaces:
            row.insert(0, task.metadata.namespace)
        rows.append(row)
    return table(headers, rows)


def sort_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


# ------------------------------------------------------------------------------ describe


def _usage_lines(usage: object, indent: str = "  ") -> list[str]:
    if not isinstance(usage, Mapping):
        return [f"{indent}{usage}"]
    lines: list[str] = []
    for key, value in usage.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines.extend(_usage_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}:\t{value}")
    return lines


def _event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        when = _parse_time(event.get(key))
        if when is not None:
            return when
    return _parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def describe(obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]], *, now: dt.datetime) -> str:
    """The `describe` page: what a user asks about one task, in kubectl describe's layout."""
    task = parse(obj)
    meta, spec, s = task.metadata, task.spec, task.status
    out: list[str] = []

    def field(label: str, value: object) -> None:
        out.append(f"{label + ':':<18}{_NONE if value in (None, '') else value}")

    field("Name", meta.name)
    field("Namespace", meta.namespace)
    labels = ",".join(f"{k}={v}" for k, v in sorted(meta.labels.items()))
    field("Labels", labels)
    field("Created", meta.creation_timestamp.isoformat() if meta.creation_timestamp else None)
    field("Phase", s.phase.value if s.phase else "Pending")
    field("Reason", s.reason)
    field("Message", s.message)
    field("Repository", f"{spec.repository.url} ({spec.repository.base_branch})")
    if spec.issue is not None:
        issue = f"#{spec.issue.number}" + (f" {spec.issue.title}" if spec.issue.title else "")
        field("Issue", issue + (f" <{spec.issue.url}>" if spec.issue.url else ""))
    field("Requested by", spec.audit.requested_by)
    field("Source", spec.audit.source)
    flags = [name for name, on in (("suspend", spec.suspend), ("cancel", spec.cancel)) if on]
    if flags:
        field("Spec flags", ", ".join(flags))
    field("Attempts", f"{s.attempts} (backoffLimit {spec.backoff_limit})")
    if s.sandbox is not None:
        box = s.sandbox
        state = "deleted" if box.deleted else box.state
        field("Sandbox", f"{box.name} ({box.id or 'no id'}, {state or 'unknown'})")
    if s.agent is not None and s.agent.command_id:
        exit_code = "" if s.agent.exit_code is None else f", exit code {s.agent.exit_code}"
        field("Agent", f"session {s.agent.session_id}, command {s.agent.command_id}{exit_code}")
    field("Started", s.start_time.isoformat() if s.start_time else None)
    field("Completed", s.completion_time.isoformat() if s.completion_time else None)
    if s.last_error:
        field("Last error", s.last_error)
    result = s.result
    if result is not None:
        out.append("Result:")
        for label, value in (("Outcome", result.outcome), ("Pull request", result.pull_request_url),
                             ("Branch", result.branch), ("Commit", result.commit),
                             ("Failure class", result.failure_class), ("Summary", result.summary)):
            if value:
                out.append(f"  {label + ':':<16}{value}")
        if result.changed_files:
            out.append(f"  {'Changed files:':<16}{', '.join(result.changed_files)}")
    usage = (obj.get("status") or {}).get("usage")
    if usage:
        out.append("Usage:")
        out.extend(_usage_lines(usage))
    out.append("Conditions:")
    if s.conditions:
        rows = [[c.type, c.status.value, c.reason or "", age(c.last_transition_time, now), c.message or ""]
                for c in s.conditions]
        out.extend("  " + line for line in table(["Type", "Status", "Reason", "Age", "Message"], rows).splitlines())
    else:
        out.append(f"  {_NONE}")
    out.append("Events:")
    if events:
        ordered = sorted(events, key=lambda e: _event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))
        rows = []
        for e in ordered:
            count = int(e.get("count") or 1)
            when = age(_event_time(e), now) + (f" (x{count})" if count > 1 else "")
            source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
            rows.append([str(e.get("type", "")), str(e.get("reason", "")), when, str(source),
                         str(e.get("message", "")).replace("\n", " ")])
        out.extend("  " + line for line in table(["Type", "Reason", "Age", "From", "Message"], rows).splitlines())
    else:
        out.append(f"  {_NONE}")
    return "\n".join(out) + "\n"
