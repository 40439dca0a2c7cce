"""A minimal GitHub REST client for the runner (urllib only): open a pull request, comment.

Requests carry `Authorization: Bearer <token>` (the token asked for anew for every attempt, so
one the operator refreshed during the run is used), `Accept: application/vnd.github+json` and
`X-GitHub-Api-Version: 2022-11-28`. 5xx, 429, rate-limited 403s and connection errors are
retried with exponential backoff, honouring `Retry-After` (and `x-ratelimit-reset`), for at most
`max_attempts` attempts; anything else raises `GitHubError` (exit 69) with GitHub's message,
redacted. This module does not know about git, result.json or the task; it only speaks HTTP.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from typing import Any

from .errors import GitHubError
from .log import REDACTOR, log

API_VERSION = "2022-11-28"
USER_AGENT = "agenttask-runner"


class GitHubClient:
    def __init__(
        self, *, api_url: str, token: Callable[[], str | None], max_attempts: int = 5, base_delay: float = 1.0,
        max_delay: float = 60.0, timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._token = token
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._sleep = sleep

    # ------------------------------------------------------------------ operations

    def create_pull(
        self, owner: str, repo: str, *, head: str, base: str, title: str, body: str, draft: bool,
    ) -> dict[str, Any]:
        """Open a pull request; if one is already open for `head` (a retried attempt), return it."""
        path = f"/repos/{_q(owner)}/{_q(repo)}/pulls"
        payload = {"title": title, "head": head, "base": base, "body": body, "draft": draft}
        try:
            return _dict(self.request("POST", path, payload))
        except GitHubError as e:
            if "already exists" not in str(e):
                raise
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "state": "open"})
        existing = self.request("GET", f"{path}?{query}")
        if isinstance(existing, list) and existing:
            log(f"a pull request for {head} is already open; reusing it")
            return _dict(existing[0])
        raise GitHubError(f"GitHub says a pull request for {head} exists but none is listed")

    def comment_issue(self, owner: str, repo: str, number: int, body: str) -> dict[str, Any]:
        path = f"/repos/{_q(owner)}/{_q(repo)}/issues/{number}/comments"
        return _dict(self.request("POST", path, {"body": body}))

    # --------------------------------------------------------------------- transport

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        """Send one API request with bounded retries; return the decoded JSON body."""
        url = self._api_url + path
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(1, self._max_attempts + 1):
            token = self._token()
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            request = urllib.request.Request(url, data=data, headers=headers | auth, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    body = response.read()
                return json.loads(body) if body else None
            except urllib.error.HTTPError as e:
                body = e.read()
                message = f"{method} {path}: HTTP {e.code}: {_message(body)}"
                delay = self._retry_delay(e.code, e.headers, attempt)
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
                message = f"{method} {path}: {getattr(e, 'reason', e)}"
                delay = self._backoff(attempt)
            except ValueError as e:
                raise GitHubError(f"{method} {path}: the response is not JSON: {e}") from e
            if delay is None or attempt == self._max_attempts:
                raise GitHubError(REDACTOR.text(message))
            log(f"GitHub {message}; retrying in {delay:.1f}s (attempt {attempt}/{self._max_attempts})")
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _retry_delay(self, status: int, headers: Message, attempt: int) -> float | None:
        """Seconds to wait before retrying a response with this status, or None: do not retry."""
        retry_after = _retry_after(headers.get("Retry-After"))
        rate_limited = headers.get("x-ratelimit-remaining") == "0"
        if not (status >= 500 or status == 429 or (status == 403 and (retry_after is not None or rate_limited))):
            return None
        if retry_after is None and rate_limited:
            reset = headers.get("x-ratelimit-reset")
            if reset and reset.isdigit():
                retry_after = max(0.0, int(reset) - time.time())
        if retry_after is not None:
            return min(retry_after, self._max_delay)
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        delay = self._base_delay * 2.0 ** (attempt - 1)
        return min(delay * random.uniform(0.75, 1.25), self._max_delay)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(body: bytes) -> str:
    """GitHub's error message (plus validation errors) from an error response body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return str(doc)[:500]
    text = str(doc.get("message", ""))
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        text += " " + json.dumps(errors)[:500]
    return text


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GitHubError(f"expected a JSON object from GitHub, got {type(value).__name__}")
    return value


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
