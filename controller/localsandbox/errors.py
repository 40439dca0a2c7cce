"""Error values and the two JSON error shapes the embedded sandbox server sends.

Does: define `ApiError` (raised by handlers, turned into a response by the server
middleware) and build the bodies Daytona clients expect:

* main API and toolbox-proxy errors: ``{"path", "timestamp", "statusCode", "error", "message"}``,
  the shape Daytona's ``AllExceptionsFilter`` writes (``apps/api/src/filters/all-exceptions.filter.ts``:
  ``path`` is the request URL with its query string, ``timestamp`` ISO-8601 with milliseconds;
  the SDK reads ``message``);
* toolbox daemon errors: the daemon's ``ErrorResponse`` shape with ``code`` and
  ``source="DAYTONA_DAEMON"``, so the SDK raises its finer subclasses
  (``DaytonaGitAuthFailedError``, ``DaytonaProcessExecutionTimeoutError``, ...).

Does not: touch aiohttp or perform any I/O; the server turns these into responses.
"""

from __future__ import annotations

import http
import time
from collections.abc import Mapping
from typing import Any

DAEMON_SOURCE = "DAYTONA_DAEMON"


# Where Node's http.STATUS_CODES (what Daytona's API writes) names a status differently from Python.
_NODE_PHRASES = {413: "Payload Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
                 422: "Unprocessable Entity"}  # fmt: skip


def reason_phrase(status: int) -> str:
    """The HTTP reason phrase for `status` as Node names it ("Not Found"), or "Error" for unknown codes."""
    if status in _NODE_PHRASES:
        return _NODE_PHRASES[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def iso_now() -> str:
    """Now as JavaScript's ``Date.toISOString()`` writes it: ``2025-01-01T00:00:00.000Z``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def api_error_body(status: int, message: str, path: str) -> dict[str, Any]:
    """The main API's error JSON: ``{"path", "timestamp", "statusCode", "error", "message"}``."""
    return {"path": path, "timestamp": iso_now(), "statusCode": status, "error": reason_phrase(status),
            "message": message}  # fmt: skip


def daemon_error_body(status: int, message: str, code: str, path: str, method: str) -> dict[str, Any]:
    """The toolbox daemon's ``ErrorResponse`` JSON."""
    return {
        "statusCode": status,
        "message": message,
        "code": code,
        "source": DAEMON_SOURCE,
        "path": path,
        "method": method,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_DEFAULT_DAEMON_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    410: "GONE",
    422: "UNPROCESSABLE_ENTITY",
}


class ApiError(Exception):
    """An error a handler wants sent to the client.

    `daemon_code` set means the error comes from the (emulated) toolbox daemon and uses the
    daemon's shape; otherwise the main API shape is used. `headers` are added to the response
    (for example ``Retry-After`` on 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        daemon_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.daemon_code = daemon_code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, url: str, method: str) -> dict[str, Any]:
        """The JSON body for this error; `url` is the request path with its query string."""
        if self.daemon_code is None:
            return api_error_body(self.status, self.message, url)
        return daemon_error_body(self.status, self.message, self.daemon_code, url.partition("?")[0], method)


def daemon_error(status: int, message: str, code: str | None = None) -> ApiError:
    """An `ApiError` in the daemon shape; `code` defaults to the generic code for `status`."""
    return ApiError(
        status, message, daemon_code=code or _DEFAULT_DAEMON_CODES.get(status, "INTERNAL_SERVER_ERROR")
    )


def bad_request(message: str) -> ApiError:
    """A main-API 400."""
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    """A main-API 404."""
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    """A main-API 409."""
    return ApiError(409, message)


STATE_CHANGE_IN_PROGRESS = "Sandbox state change in progress"


def state_change_in_progress() -> ApiError:
    """Daytona's ``StateChangeInProgressError``: 409 "Sandbox state change in progress"."""
    return ApiError(409, STATE_CHANGE_IN_PROGRESS)
