"""A local fake of the GitHub REST API subset AgentTask uses, for tests (aiohttp, in-memory).

`FakeGitHub` serves on a free 127.0.0.1 port and is strict where GitHub is strict: it checks
the `Authorization` header (`Bearer <token>` or `token <token>`; 401 with GitHub's JSON
otherwise), request bodies (400 `Problems parsing JSON`, 422 `Validation Failed` with
GitHub-shaped `errors`), that a pull request's head branch exists when the repository has a
real git directory, and — for the GitHub App token exchange — an RS256 JWT signed by the app
key (verified with `cryptography`; `iss` = app id, `exp` at most 10 minutes ahead). Tokens it
issues (there, or directly with `issue_token()`) work for the other endpoints until they expire
after `token_lifetime` seconds of the fake's clock, which `advance()` moves forward, so a test
can let an installation token expire mid-run without waiting an hour. Every request is
recorded (minus credentials) so tests can assert on method, path, headers and JSON.

It does not implement pagination, webhooks, Checks, or GitHub's permission model beyond the
collaborator-permission lookup; faults are injected explicitly with `fail_next`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

from tests.fakes.appjwt import app_jwt_problem, app_public_key
from tests.fakes.server import LocalServer

DOCS = "https://docs.github.com/rest"
_SECRET_HEADERS = frozenset({"authorization", "cookie"})


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, without Authorization / Cookie
    json: Any


@dataclass
class _Issue:
    number: int
    title: str
    body: str
    author: str
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Repo:
    owner: str
    name: str
    default_branch: str
    git_dir: Path | None
    issues: dict[int, _Issue] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    collaborators: dict[str, str] = field(default_factory=dict)

    def next_number(self) -> int:
        return max([0, *self.issues, *(int(p["number"]) for p in self.pulls)]) + 1


@dataclass
class _Fault:
    method: str
    path: str
    status: int
    times: int
    retry_after: int | None


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"message": message, "documentation_url": DOCS, "status": str(status), **extra}, status=status,
    )


def _validation_failed(errors: list[dict[str, Any]]) -> web.Response:
    return _error(422, "Validation Failed", errors=errors)


def _check_fields(
    payload: dict[str, Any], resource: str, *, required: dict[str, type | tuple[type, ...]],
    optional: dict[str, type | tuple[type, ...]] | None = None,
) -> list[dict[str, Any]]:
    """GitHub-shaped validation errors for missing or mistyped fields (bool is not an int)."""
    errors: list[dict[str, Any]] = []
    for name, kind in {**required, **(optional or {})}.items():
        if name not in payload:
            if name in required:
                errors.append({"resource": resource, "code": "missing_field", "field": name})
            continue
        value = payload[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            errors.append({"resource": resource, "code": "invalid", "field": name})
    return errors


async def _payload(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, {} without a body (the middleware refused anything else)."""
    raw = await request.read()
    payload = json.loads(raw) if raw else {}
    assert isinstance(payload, dict)
    return payload


def _now_iso(offset: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(LocalServer):
    """An in-memory GitHub REST API on 127.0.0.1; use as `async with FakeGitHub(token=...) as gh`."""

    def __init__(
        self, token: str | None = None, app_id: int | None = None,
        app_private_key_pem: bytes | str | None = None, token_lifetime: float = 3600.0,
    ) -> None:
        super().__init__()
        self.token = token
        self.token_lifetime = token_lifetime
        self._clock_offset = 0.0
        self.app_id = app_id
        self._app_key: rsa.RSAPublicKey | None = None
        if app_private_key_pem is not None:
            self._app_key = app_public_key(app_private_key_pem)
        self.requests: list[RecordedRequest] = []
        self.issued_tokens: dict[str, float] = {}  # token -> expiry (epoch seconds on the fake's clock)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1001)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/app/installations/{installation}/access_tokens", self._access_token)
        r.add_get("/repos/{owner}/{repo}/issues/{number:\\d+}", self._get_issue)
        r.add_get("/repos/{owner}/{repo}/issues/{number:\\d+}/comments", self._list_comments)
        r.add_post("/repos/{owner}/{repo}/issues/{number:\\d+}/comments", self._create_comment)
        r.add_patch("/repos/{owner}/{repo}/issues/comments/{id:\\d+}", self._update_comment)
        r.add_get("/repos/{owner}/{repo}/pulls", self._list_pulls)
        r.add_post("/repos/{owner}/{repo}/pulls", self._create_pull)
        r.add_get("/repos/{owner}/{repo}/collaborators/{user}/permission", self._permission)
        return app

    # -------------------------------------------------------------------- seeding

    def add_repo(
        self, owner: str, repo: str, *, default_branch: str = "main", git_dir: Path | None = None,
    ) -> None:
        """Add a repository; with `git_dir`, pull request heads/bases must exist there as branches."""
        self._repos[owner, repo] = _Repo(owner, repo, default_branch, git_dir)

    def add_issue(self, owner: str, repo: str, number: int, *, title: str, body: str = "",
                  author: str = "octocat") -> None:
        self._repo(owner, repo).issues[number] = _Issue(number, title, body, author)

    def add_collaborator(self, owner: str, repo: str, user: str, permission: str = "write") -> None:
        self._repo(owner, repo).collaborators[user] = permission

    def fail_next(self, method: str, path: str, *, status: int, times: int = 1,
                  retry_after: int | None = None) -> None:
        """Answer the next `times` requests to exactly `method path` with `status`, before auth."""
        self._faults.append(_Fault(method.upper(), path, status, times, retry_after))

    def now(self) -> float:
        """The fake's clock (epoch seconds): real time plus everything `advance` added."""
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward: tokens whose lifetime has passed stop working."""
        self._clock_offset += seconds

    def issue_token(self) -> str:
        """A new installation token, valid for `token_lifetime` seconds from now."""
        token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")
        self.issued_tokens[token] = self.now() + self.token_lifetime
        return token

    def token_valid(self, value: str) -> bool:
        """True for the static token and for issued tokens that have not expired."""
        if self.token is not None and secrets.compare_digest(value, self.token):
            return True
        expiry = self.issued_tokens.get(value)
        return expiry is not None and expiry > self.now()

    # -------------------------------------------------------------------- reading

    def comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self._repo(owner, repo).issues[number].comments)

    def pulls(self, owner: str, repo: str) -> list[dict[str, Any]]:
        return list(self._repo(owner, repo).pulls)

    def _repo(self, owner: str, repo: str) -> _Repo:
        return self._repos[owner, repo]

    # ----------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        payload: Any = None
        parse_error = False
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                parse_error = True
        self.requests.append(RecordedRequest(
            method=request.method, path=request.path, query=dict(request.query),
            headers=CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS),
            json=payload,
        ))
        for fault in self._faults:
            if fault.times > 0 and fault.method == request.method and fault.path == request.path:
                fault.times -= 1
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return web.json_response(
                    {"message": f"fake fault {fault.status}"}, status=fault.status, headers=headers,
                )
        if not request.path.startswith("/app/"):
            denied = self._check_token(request.headers.get("Authorization"))
            if denied is not None:
                return denied
        if parse_error or (request.method in ("POST", "PATCH") and not isinstance(payload, dict | None)):
            return _error(400, "Problems parsing JSON")
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            return _error(404, "Not Found")
        except web.HTTPMethodNotAllowed:
            return _error(404, "Not Found")
        return response

    def _check_token(self, header: str | None) -> web.Response | None:
        if not header:
            return _error(401, "Requires authentication")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() not in ("bearer", "token") or not value:
            return _error(401, "Bad credentials")
        return None if self.token_valid(value) else _error(401, "Bad credentials")

    def _lookup(self, request: web.Request) -> _Repo:
        repo = self._repos.get((request.match_info["owner"], request.match_info["repo"]))
        if repo is None:
            raise web.HTTPNotFound()
        return repo

    # ------------------------------------------------------------------- GitHub App

    async def _access_token(self, request: web.Request) -> web.Response:
        if self.app_id is None or self._app_key is None or not request.match_info["installation"].isdigit():
            return _error(404, "Not Found")
        scheme, _, jwt = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not jwt:
            return _error(401, "A JSON web token could not be decoded")
        problem = app_jwt_problem(jwt.strip(), key=self._app_key, app_id=self.app_id)
        if problem is not None:
            return _error(401, problem)
        token = self.issue_token()
        return web.json_response(
            {"token": token, "expires_at": _now_iso(self.token_lifetime + self._clock_offset),
             "permissions": {"contents": "write", "issues": "write", "pull_requests": "write"},
             "repository_selection": "all"},
            status=201,
        )

    # ----------------------------------------------------------------------- issues

    async def _get_issue(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        issue = repo.issues.get(int(request.match_info["number"]))
        if issue is None:
            raise web.HTTPNotFound()
        return web.json_response(self._issue_json(repo, issue))

    async def _list_comments(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        return web.json_response(issue.comments)

    async def _create_comment(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        issue = self._issue(request)
        payload = await _payload(request)
        errors = _check_fields(payload, "IssueComment", required={"body": str})
        if errors:
            return _validation_failed(errors)
        comment_id = next(self._ids)
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{self.url}/repos/{repo.owner}/{repo.name}/issues/comments/{comment_id}",
            "html_url": f"{self.url}/{repo.owner}/{repo.name}/issues/{issue.number}#issuecomment-{comment_id}",
            "issue_url": f"{self.url}/repos/{repo.owner}/{repo.name}/issues/{issue.number}",
            "body": payload["body"],
            "user": {"login": "agenttask[bot]", "type": "Bot"},
            "created_at": _now_iso(),
            "updated_at": _now_iso(),
            "author_association": "NONE",
        }
        issue.comments.append(comment)
        return web.json_response(comment, status=201)

    async def _update_comment(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        payload = await _payload(request)
        errors = _check_fields(payload, "IssueComment", required={"body": str})
        if errors:
            return _validation_failed(errors)
        comment_id = int(request.match_info["id"])
        for issue in repo.issues.values():
            for comment in issue.comments:
                if comment["id"] == comment_id:
                    comment.update(body=payload["body"], updated_at=_now_iso())
                    return web.json_response(comment)
        raise web.HTTPNotFound()

    def _issue(self, request: web.Request) -> _Issue:
        """The issue (or pull request: they share numbers) named in the path; 404 if neither."""
        repo = self._lookup(request)
        number = int(request.match_info["number"])
        if number not in repo.issues and any(p["number"] == number for p in repo.pulls):
            pull = next(p for p in repo.pulls if p["number"] == number)
            repo.issues[number] = _Issue(number, pull["title"], pull["body"] or "", "agenttask[bot]")
        issue = repo.issues.get(number)
        if issue is None:
            raise web.HTTPNotFound()
        return issue

    def _issue_json(self, repo: _Repo, issue: _Issue) -> dict[str, Any]:
        return {
            "number": issue.number,
            "title": issue.title,
            "body": issue.body,
            "state": "open",
            "user": {"login": issue.author},
            "comments": len(issue.comments),
            "url": f"{self.url}/repos/{repo.owner}/{repo.name}/issues/{issue.number}",
            "html_url": f"{self.url}/{repo.owner}/{repo.name}/issues/{issue.number}",
        }

    # ------------------------------------------------------------------------ pulls

    async def _list_pulls(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        state = request.query.get("state", "open")
        head, base = request.query.get("head"), request.query.get("base")
        found = [
            p for p in repo.pulls
            if (state == "all" or p["state"] == state)
            and (head is None or p["head"]["label"] == head)
            and (base is None or p["base"]["ref"] == base)
        ]
        return web.json_response(found)

    async def _create_pull(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        payload = await _payload(request)
        errors = _check_fields(
            payload, "PullRequest", required={"head": str, "base": str, "title": str},
            optional={"body": (str, type(None)), "draft": bool, "maintainer_can_modify": bool},
        )
        if errors:
            return _validation_failed(errors)
        head = payload["head"].split(":", 1)[-1]
        base = payload["base"]
        sha = None
        for name, ref in (("head", head), ("base", base)):
            found = await self._branch_sha(repo, ref)
            if found is None:
                return _validation_failed([{"resource": "PullRequest", "field": name, "code": "invalid"}])
            if name == "head":
                sha = found
        label = f"{repo.owner}:{head}"
        if any(p["state"] == "open" and p["head"]["label"] == label and p["base"]["ref"] == base
               for p in repo.pulls):
            return _validation_failed([{"resource": "PullRequest", "code": "custom",
                                        "message": f"A pull request already exists for {label}."}])
        number = repo.next_number()
        pull = {
            "id": next(self._ids),
            "number": number,
            "state": "open",
            "title": payload["title"],
            "body": payload.get("body"),
            "draft": payload.get("draft", False),
            "head": {"ref": head, "label": label, "sha": sha},
            "base": {"ref": base, "label": f"{repo.owner}:{base}"},
            "user": {"login": "agenttask[bot]"},
            "url": f"{self.url}/repos/{repo.owner}/{repo.name}/pulls/{number}",
            "html_url": f"{self.url}/{repo.owner}/{repo.name}/pull/{number}",
            "created_at": _now_iso(),
        }
        repo.pulls.append(pull)
        return web.json_response(pull, status=201)

    async def _branch_sha(self, repo: _Repo, branch: str) -> str | None:
        """The branch's commit in the repository's git dir; any name is fine without one."""
        if repo.git_dir is None:
            return "0" * 40
        proc = await asyncio.create_subprocess_exec(
            "git", "--git-dir", str(repo.git_dir), "rev-parse", "--verify", "--quiet",
            f"refs/heads/{branch}^{{commit}}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return out.decode().strip() if proc.returncode == 0 else None

    # ----------------------------------------------------------------- collaborators

    async def _permission(self, request: web.Request) -> web.Response:
        repo = self._lookup(request)
        user = request.match_info["user"]
        permission = repo.collaborators.get(user, "none")
        return web.json_response({"permission": permission, "role_name": permission, "user": {"login": user}})
