"""Redaction and plain-line logging for the runner.

`REDACTOR` knows the secrets of this run (the git token) and a few token-shaped patterns;
everything the runner prints — its own log lines on stderr, the agent's streamed output, error
strings in result.json, texts sent to GitHub — passes through it. Log lines are plain text on
stderr, one per line, prefixed `agenttask-runner:` so the operator can tell them from the
agent's output. This module does not format JSON logs and does not decide what to log.
"""

from __future__ import annotations

import re
import sys

PREFIX = "agenttask-runner:"
MASK = "***"

# (pattern, replacement): token-shaped strings redacted even when they are not this run's token.
_RULES: tuple[tuple[str, str], ...] = (
    (r"(x-access-token:)[^@\s/]+", r"\1" + MASK),
    (r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,})", MASK),
    (r"(?i)(authorization:\s*(?:bearer|token|basic)\s+)\S+", r"\1" + MASK),
    (r"(://)[^/@\s:]+:[^/@\s]+@", r"\1" + MASK + "@"),  # user:password@ in URLs
)


class Redactor:
    """Replaces known secrets and token-shaped patterns with `***` in text and bytes."""

    def __init__(self) -> None:
        self._secrets: list[str] = []
        self._text_rules = [(re.compile(p), r) for p, r in _RULES]
        self._byte_rules = [(re.compile(p.encode()), r.encode()) for p, r in _RULES]

    def add(self, secret: str | None) -> None:
        """Redact this exact value from now on (empty values are ignored)."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        for pattern, replacement in self._text_rules:
            value = pattern.sub(replacement, value)
        return value

    def bytes(self, value: bytes) -> bytes:
        for secret in self._secrets:
            value = value.replace(secret.encode(), MASK.encode())
        for pattern, replacement in self._byte_rules:
            value = pattern.sub(replacement, value)
        return value


REDACTOR = Redactor()


def log(message: str) -> None:
    """Write `message` (redacted, every line prefixed) to stderr."""
    lines = REDACTOR.text(message).splitlines() or [""]
    sys.stderr.write("".join(f"{PREFIX} {line}\n" for line in lines))
    sys.stderr.flush()
