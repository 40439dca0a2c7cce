"""Structured JSON logs and secret redaction.

Every secret value the operator handles (Daytona key, GitHub tokens, values read from
Secrets) is registered with `register_secret()`. `redact()` replaces registered values and
well-known token shapes with `***`; a logging filter applies it to every record, and the
status writer, event poster and metrics labels call it for any text that came from outside.

Log records carry the task's namespace, name, uid, attempt and sandbox id as JSON fields when
they are logged with `extra=task_fields(...)` or through kopf's per-object logger.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_MIN_SECRET_LEN = 4
_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}"          # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|sk-ant-[A-Za-z0-9_\-]{16,}"         # Anthropic keys
    r"|dtn_[A-Za-z0-9]{16,}"               # Daytona keys
    r"|x-access-token:[^@\s]+"
    r"|(?<=Bearer )[A-Za-z0-9._\-]{8,})"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_sorted: list[str] = []


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it would be shown."""
    global _secrets_sorted
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _secrets_sorted = sorted(_secrets, key=len, reverse=True)


def register_secrets(values: Iterable[str]) -> None:
    for value in values:
        register_secret(value)


def redact(text: str) -> str:
    """`text` with every registered secret and every token-shaped string masked."""
    if not text:
        return text
    for secret in _secrets_sorted:
        if secret in text:
            text = text.replace(secret, MASK)
    return _PATTERNS.sub(MASK, text)


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in the final message of every record (installed on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class DropMessages(logging.Filter):
    """Drops records whose final message is one of `messages` (installed on a logger)."""

    def __init__(self, messages: Iterable[str]):
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


# extra fields a log line may carry (anything else, e.g. kopf's settings dump, is left out)
_EXTRA_FIELDS = frozenset({"namespace", "object_name", "uid", "attempt", "sandbox_id", "command_id", "operation",
                           "delivery_id", "reason"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object logger
        if isinstance(ref, Mapping):
            for key in ("namespace", "name", "uid"):
                if ref.get(key):
                    payload[key] = ref[key]
        for key, value in vars(record).items():
            if key in _EXTRA_FIELDS and value is not None:
                key = "name" if key == "object_name" else key
                payload[key] = redact_obj(value) if isinstance(value, str | Mapping | list) else value
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


def task_fields(*, namespace: str, name: str, uid: str, attempt: int | None = None,
                sandbox_id: str | None = None) -> dict[str, Any]:
    """`extra=` fields that identify a task in a log line."""
    fields: dict[str, Any] = {"namespace": namespace, "object_name": name, "uid": uid}
    if attempt is not None:
        fields["attempt"] = attempt
    if sandbox_id:
        fields["sandbox_id"] = sandbox_id
    return fields


def configure(*, level: int = logging.INFO, json_format: bool = True) -> None:
    """Install the JSON formatter and the redacting filter on the root logger."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # the SDK and HTTP libraries log request details at debug level only
    for noisy in ("aiohttp.access", "httpx", "httpcore", "daytona", "kr8s"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
