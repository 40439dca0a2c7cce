"""Redaction and JSON log lines."""

from __future__ import annotations

import io
import json
import logging

from controller import logs


def _capture(fn: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    fn(logger)  # type: ignore[operator]
    line: dict[str, object] = json.loads(stream.getvalue().splitlines()[0])
    return line


def test_registered_secrets_and_token_shapes_are_masked() -> None:
    logs.register_secret("hunter2-very-secret")
    text = "key=hunter2-very-secret gh=ghp_" + "a" * 36 + " auth: Bearer abcdefghijklmnop x-access-token:zzz@h"
    out = logs.redact(text)
    assert "hunter2-very-secret" not in out
    assert "ghp_" not in out
    assert "abcdefghijklmnop" not in out
    assert "zzz" not in out
    assert out.count(logs.MASK) == 4


def test_short_values_are_not_registered() -> None:
    logs.register_secret("ab")
    assert logs.redact("ab abc") == "ab abc"


def test_json_line_carries_task_fields_and_redacts_args_and_exceptions() -> None:
    logs.register_secret("s3cr3t-in-args")

    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError("boom s3cr3t-in-args")
        except ValueError:
            logger.exception("value %s", "s3cr3t-in-args",
                             extra={**logs.task_fields(namespace="ns", name="t", uid="u1", attempt=2,
                                                       sandbox_id="sb"), "settings": "noise"})

    line = _capture(emit)
    assert line["message"] == "value ***"
    assert line["namespace"] == "ns" and line["name"] == "t" and line["uid"] == "u1"
    assert line["attempt"] == 2 and line["sandbox_id"] == "sb"
    assert "settings" not in line
    assert "s3cr3t-in-args" not in json.dumps(line)
    assert "ValueError" in str(line["exception"])


def test_redact_obj_walks_structures() -> None:
    logs.register_secret("nested-secret-1")
    assert logs.redact_obj({"a": ["x nested-secret-1", {"b": "nested-secret-1"}], "n": 3}) == {
        "a": ["x ***", {"b": "***"}], "n": 3}
