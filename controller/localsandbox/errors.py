"""Error values and the two JSON error shapes the embedded sandbox server sends.

Does: define `ApiError` (raised by handlers, turned into a response by the server
middleware) and build the bodies Daytona clients expect:

* main API and toolbox-proxy errors: ``{"statusCode": 409, "message": "...", "error": "Conflict"}``
  (the NestJS shape the Daytona API uses; the SDK reads ``message``);
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


def reason_phrase(status: int) -> str:
    """The HTTP reason phrase for `status` ("Not Found"), or "Error" for unknown codes."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def api_error_body(status: int, message: str) -> dict[str, Any]:
    """The main API's error JSON: ``{"statusCode", "message", "error"}``."""
    return {"statusCode": status, "message": message, "error": reason_phrase(status)}


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

    def body(self, path: str, method: str) -> dict[str, Any]:
        """The JSON body for this error."""
        if self.daemon_code is None:
            return api_error_body(self.status, self.message)
        return daemon_error_body(self.status, self.message, self.daemon_code, path, method)


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
