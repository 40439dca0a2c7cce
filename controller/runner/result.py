"""result.json: what the runner tells the operator, written atomically.

The file always has every key (null when unknown) so the operator can parse it with one shape:
`outcome`, `branch`, `commit`, `pullRequestUrl`, `summary` (at most `SUMMARY_BYTES` UTF-8
bytes), `changedFiles`, `agentExitCode`, `error` (null unless `outcome` is `Failed`),
`failureClass` (null unless `outcome` is `Failed`) and `agent` (what Claude Code reported about
its run, see `stream.AgentReport`; null for other agents or when it printed no result). This
module does not decide the outcome; it only records it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import FailureClass
from .stream import AgentReport

SUMMARY_BYTES = 4096


class Outcome(StrEnum):
    PULL_REQUEST_OPENED = "PullRequestOpened"
    CHANGES_PUSHED = "ChangesPushed"
    NO_CHANGES = "NoChanges"
    FAILED = "Failed"


@dataclass
class Result:
    outcome: Outcome = Outcome.FAILED
    branch: str | None = None
    commit: str | None = None
    pull_request_url: str | None = None
    summary: str = ""
    changed_files: list[str] = field(default_factory=list)
    agent_exit_code: int | None = None
    error: str | None = None
    failure_class: FailureClass | None = None
    agent: AgentReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "branch": self.branch,
            "commit": self.commit,
            "pullRequestUrl": self.pull_request_url,
            "summary": clip(self.summary, keep="head"),
            "changedFiles": self.changed_files,
            "agentExitCode": self.agent_exit_code,
            "error": self.error,
            "failureClass": None if self.failure_class is None else str(self.failure_class),
            "agent": None if self.agent is None else self.agent.to_json(),
        }


def clip(text: str, *, keep: str, limit: int = SUMMARY_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, keeping its head or its tail, never half a char."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    data = data[:limit] if keep == "head" else data[-limit:]
    return data.decode("utf-8", "ignore")


def write_result(path: Path, result: Result, *, redact: Callable[[str], str]) -> None:
    """Write result.json (every string passed through `redact`) next to its final name and
    rename it into place."""
    data = json.dumps(_strings(result.to_json(), redact), indent=2, ensure_ascii=False).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=".result-", suffix=".json", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would surprise whoever downloads it
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _strings(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _strings(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v, redact) for v in value]
    return value
