"""The runner's result.json, parsed into the status `Result` (strings capped and redacted).

The runner (controller/runner/result.py) writes every key; this parser still treats each one
as optional and untrusted: the file comes from inside the sandbox, where the agent could have
rewritten it. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import logs
from .api import Result


def parse_result(raw: Mapping[str, Any] | None) -> Result | None:
    if not raw:
        return None

    def text(key: str, limit: int = 2048) -> str | None:
        value = raw.get(key)
        return logs.redact(str(value))[:limit] if value not in (None, "") else None

    files = raw.get("changedFiles")
    changed = tuple(logs.redact(str(f))[:512] for f in files[:200]) if isinstance(files, list) else None
    return Result(outcome=text("outcome", 64), branch=text("branch", 255), commit=text("commit", 64),
                  pull_request_url=text("pullRequestUrl"), summary=text("summary", 4096), changed_files=changed,
                  failure_class=text("failureClass", 64))
