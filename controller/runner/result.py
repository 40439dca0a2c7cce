"""result.json: what the runner tells the operator, written atomically.

The file always has every key (null when unknown) so the operator can parse it with one shape:
`outcome`, `branch`, `commit`, `pullRequestUrl`, `summary` (at most `SUMMARY_BYTES` UTF-8
bytes), `changedFiles`, `agentExitCode`, `error` (null unless `outcome` is `Failed`). This
module does not decide the outcome; it only records it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

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
        }


def clip(text: str, *, keep: str, limit: int = SUMMARY_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, keeping its head or its tail, never half a char."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    data = data[:limit] if keep == "head" else data[-limit:]
    return data.decode("utf-8", "ignore")


def write_result(path: Path, result: Result) -> None:
    """Write result.json next to its final name and rename it into place."""
    data = json.dumps(result.to_json(), indent=2, ensure_ascii=False).encode() + b"\n"
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
