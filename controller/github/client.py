"""The operator's GitHub REST client (aiohttp): token or GitHub App auth, retries, comments.

- Credentials come from a `CredentialSource`: `SecretCredentials` reads them from Kubernetes
  Secrets (named by settings, read through `kube.py`, so every value is registered for
  redaction) and re-reads them after a 401, so a rotated token is picked up.
- A plain token is sent as `Authorization: Bearer <token>`. A GitHub App (app id + RSA private
  key) signs a short RS256 JWT (pyjwt) to mint installation tokens with
  `POST /app/installations/{id}/access_tokens`; they are cached per installation and minted
  again shortly before they expire.
- 5xx, 429, rate-limited 403 (`Retry-After` or `x-ratelimit-remaining: 0`) and connection
  errors are retried by the project's one retry policy (`retry.py`: exponential backoff, full
  jitter), honouring `Retry-After` (seconds or an HTTP date) and `x-ratelimit-reset`. A wait
  longer than `max_delay` is not slept: the request fails with `Retryable(retry_after=...)`.
  Other 4xx fail at once as `Fatal`.

Error messages carry the method, path, status and GitHub's `message`, never a header or token.
It does not paginate, and it does not know about AgentTasks (see `notifier.py`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import jwt

from .. import logs, retry
from ..errors import Fatal, Retryable

API_VERSION = "2022-11-28"
USER_AGENT = "agenttask-operator"
JWT_LIFETIME_SECONDS = 540  # GitHub accepts at most 600 s; leave room for clock skew
JWT_BACKDATE_SECONDS = 60


@dataclass(frozen=True)
class TokenAuth:
    token: str


@dataclass(frozen=True)
class AppAuth:
    app_id: str
    private_key: str  # PEM


Auth = TokenAuth | AppAuth


@dataclass(frozen=True)
class InstallationToken:
    token: str
    expires_at: float  # epoch seconds


class CredentialSource(Protocol):
    async def get(self) -> Auth | None: ...

    def invalidate(self) -> None: ...


class StaticCredentials:
    """Credentials given directly (tests, or a caller that already holds them)."""

    def __init__(self, auth: Auth | None):
        self._auth = auth
        if isinstance(auth, TokenAuth):
            logs.register_secret(auth.token)
        elif isinstance(auth, AppAuth):
            logs.register_secret(auth.private_key)

    async def get(self) -> Auth | None:
        return self._auth

    def invalidate(self) -> None:
        return None


class SecretReader(Protocol):
    async def read_secret_key(self, namespace: str, name: str, key: str, *, optional: bool = False) -> str | None: ...


class SecretCredentials:
    """Token or App credentials from Secrets in `namespace` (App wins when both are named)."""

    def __init__(self, kube: SecretReader, *, namespace: str, token_secret: str | None, token_key: str = "token",  # noqa: S107 - a key name
                 app_secret: str | None = None):
        self._kube = kube
        self.namespace = namespace
        self.token_secret, self.token_key, self.app_secret = token_secret, token_key, app_secret
        self._cached: Auth | None = None
        self._lock = asyncio.Lock()

    @property
    def app_mode(self) -> bool:
        return self.app_secret is not None

    async def get(self) -> Auth | None:
        async with self._lock:
            if self._cached is None:
                self._cached = await self._read()
            return self._cached

    def invalidate(self) -> None:
        self._cached = None

    async def _read(self) -> Auth | None:
        if self.app_secret:
            app_id = await self._kube.read_secret_key(self.namespace, self.app_secret, "app-id")
            key = await self._kube.read_secret_key(self.namespace, self.app_secret, "private-key")
            return AppAuth(app_id=(app_id or "").strip(), private_key=key or "")
        if self.token_secret:
            token = await self._kube.read_secret_key(self.namespace, self.token_secret, self.token_key)
            return TokenAuth(token=(token or "").strip())
        return None


def retry_after_seconds(headers: Mapping[str, str], *, now: float) -> float | None:
    """The delay GitHub asks for: Retry-After (seconds or HTTP date), else x-ratelimit-reset
    when the remaining quota is 0; None when it asks for nothing."""
    asked = retry.retry_after_seconds(headers, now=now)
    if asked is not None:
        return asked
    if headers.get("x-ratelimit-remaining") == "0" and (reset := headers.get("x-ratelimit-reset", "")).isdigit():
        return max(0.0, float(reset) - now)
    return None


def _expiry(value: Any, *, now: float) -> float:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return now + 3000  # GitHub's tokens last an hour; assume a little less


class GitHubClient:
    """Async GitHub REST client; `close()` it (or use `async with`)."""

    def __init__(self, *, api_url: str, credentials: CredentialSource, timeout: float = 30.0,
                 max_attempts: int = 5, base_delay: float = 1.0, max_delay: float = 60.0,
                 refresh_margin: float = 300.0, session: aiohttp.ClientSession | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, clock: Callable[[], float] = time.time):
        self.api_url = api_url.rstrip("/")
        self.credentials = credentials
        self.timeout, self.refresh_margin = timeout, refresh_margin
        self._policy = retry.RetryPolicy(base=base_delay, cap=max_delay, attempts=max_attempts,
                                         max_retry_after=max_delay)
        self._session = session
        self._own_session = session is None
        self._sleep, self._clock = sleep, clock
        self._tokens: dict[int, InstallationToken] = {}
        self._token_locks: dict[int, asyncio.Lock] = {}

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._own_session = True
        return self._session

    # -------------------------------------------------------------------- auth

    def app_jwt(self, auth: AppAuth) -> str:
        """A GitHub App JWT (RS256, iss = app id, valid for 9 minutes, backdated for clock skew)."""
        now = int(self._clock())
        claims = {"iat": now - JWT_BACKDATE_SECONDS, "exp": now + JWT_LIFETIME_SECONDS, "iss": auth.app_id}
        try:
            token = jwt.encode(claims, auth.private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise Fatal(f"the GitHub App private key is not a usable RSA PEM key ({type(exc).__name__})",
                        reason="GitHubAppKeyInvalid") from None
        logs.register_secret(token)
        return token

    async def installation_token(self, installation_id: int, *, fresh: bool = False) -> InstallationToken:
        """An installation token of the configured App (cached; `fresh` mints a new one)."""
        auth = await self.credentials.get()
        if not isinstance(auth, AppAuth):
            raise Fatal("installation tokens need GitHub App credentials", reason="GitHubNotConfigured")
        lock = self._token_locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if not fresh and cached is not None and cached.expires_at - self._clock() > self.refresh_margin:
                return cached
            body = await self._send("POST", f"/app/installations/{installation_id}/access_tokens",
                                    bearer=self.app_jwt(auth))
            if not isinstance(body, dict) or not isinstance(body.get("token"), str):
                raise Fatal("GitHub returned no installation token", reason="GitHubError")
            token = InstallationToken(token=body["token"], expires_at=_expiry(body.get("expires_at"),
                                                                              now=self._clock()))
            logs.register_secret(token.token)
            self._tokens[installation_id] = token
            return token

    async def _bearer(self, installation_id: int | None) -> str:
        auth = await self.credentials.get()
        if isinstance(auth, TokenAuth) and auth.token:
            return auth.token
        if isinstance(auth, AppAuth):
            if installation_id is None:
                raise Fatal("a GitHub App call needs the installation id", reason="GitHubNotConfigured")
            return (await self.installation_token(installation_id)).token
        raise Fatal("no GitHub credentials configured", reason="GitHubNotConfigured")

    # ----------------------------------------------------------------- requests

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      installation_id: int | None = None) -> Any:
        """One authenticated REST call; after a 401 the credentials are re-read once."""
        for renewed in (False, True):
            bearer = await self._bearer(installation_id)
            try:
                return await self._send(method, path, bearer=bearer, json_body=json_body)
            except Fatal as exc:
                if exc.status != 401 or renewed:
                    raise
                self.credentials.invalidate()
                if installation_id is not None:
                    self._tokens.pop(installation_id, None)
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, *, bearer: str, json_body: Any = None) -> Any:
        url = f"{self.api_url}{path}"
        what = f"GitHub {method} {path}"
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"

        async def once() -> Any:
            wait: float | None = None
            try:
                async with self._http().request(method, url, data=data, headers=headers,
                                                allow_redirects=False) as resp:
                    text = await resp.text(errors="replace")
                    status = resp.status
                    if status < 300:
                        return json.loads(text) if text.strip() else None
                    wait = retry_after_seconds(resp.headers, now=self._clock())
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Retryable(f"{what}: {type(exc).__name__}") from exc
            raise self._error(what, status, text, wait)

        return await retry.retry_call(once, policy=self._policy, sleep=self._sleep)

    @staticmethod
    def _error(what: str, status: int, text: str, wait: float | None) -> Retryable | Fatal:
        try:
            message = str(json.loads(text).get("message", ""))
        except (ValueError, AttributeError):
            message = text[:200]
        message = logs.redact(f"{what}: HTTP {status}: {message}"[:500])
        if status >= 500 or status == 429 or (status == 403 and wait is not None):
            return Retryable(message, retry_after=wait, status=status)
        return Fatal(message, reason="GitHubError", status=status)

    # ------------------------------------------------------------------- issues

    async def create_comment(self, owner: str, repo: str, number: int, body: str, *,
                             installation_id: int | None = None) -> int:
        """Comment on an issue; returns the comment id."""
        created = await self.request("POST", f"/repos/{owner}/{repo}/issues/{number}/comments",
                                     json_body={"body": body}, installation_id=installation_id)
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise Fatal("GitHub returned no comment id", reason="GitHubError")
        return int(created["id"])

    async def update_comment(self, owner: str, repo: str, comment_id: int, body: str, *,
                             installation_id: int | None = None) -> None:
        await self.request("PATCH", f"/repos/{owner}/{repo}/issues/comments/{comment_id}",
                           json_body={"body": body}, installation_id=installation_id)
