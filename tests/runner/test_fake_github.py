"""The fake GitHub is strict where GitHub is: auth, request shapes, and the App JWT exchange."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.github import FakeGitHub

TOKEN = "fake-test-token"
APP_ID = 12345


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fake(app_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN, app_id=APP_ID, app_private_key_pem=_pem(app_key)) as github:
        github.add_repo("acme", "widgets")
        github.add_issue("acme", "widgets", 1, title="Bug", body="It breaks.", author="alice")
        github.add_collaborator("acme", "widgets", "alice", "admin")
        yield github


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, fake: FakeGitHub, method: str, path: str, *,
               auth: str | None = f"Bearer {TOKEN}", **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": auth} if auth else {}
    async with http.request(method, fake.url + path, headers=headers, **kwargs) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(("auth", "message"), [
    (None, "Requires authentication"),
    ("Bearer wrong", "Bad credentials"),
    (f"Basic {TOKEN}", "Bad credentials"),
])
async def test_bad_or_missing_credentials_are_401(
    fake: FakeGitHub, http: aiohttp.ClientSession, auth: str | None, message: str,
) -> None:
    status, body = await call(http, fake, "GET", "/repos/acme/widgets/issues/1", auth=auth)

    assert status == 401
    assert body["message"] == message
    assert "documentation_url" in body
    assert "Authorization" not in fake.requests[0].headers


@pytest.mark.parametrize("scheme", ["Bearer", "token"])
async def test_both_token_schemes_work(fake: FakeGitHub, http: aiohttp.ClientSession, scheme: str) -> None:
    status, issue = await call(http, fake, "GET", "/repos/acme/widgets/issues/1", auth=f"{scheme} {TOKEN}")

    assert status == 200
    assert (issue["title"], issue["body"], issue["user"]["login"]) == ("Bug", "It breaks.", "alice")


@pytest.mark.parametrize(("path", "payload", "errors"), [
    ("/repos/acme/widgets/issues/1/comments", {}, [{"field": "body", "code": "missing_field"}]),
    ("/repos/acme/widgets/issues/1/comments", {"body": 5}, [{"field": "body", "code": "invalid"}]),
    ("/repos/acme/widgets/pulls", {"head": "x", "base": "main"}, [{"field": "title", "code": "missing_field"}]),
    ("/repos/acme/widgets/pulls", {"head": "x", "base": "main", "title": "t", "draft": "yes"},
     [{"field": "draft", "code": "invalid"}]),
])
async def test_request_shapes_are_validated(
    fake: FakeGitHub, http: aiohttp.ClientSession, path: str, payload: dict[str, Any],
    errors: list[dict[str, str]],
) -> None:
    status, body = await call(http, fake, "POST", path, json=payload)

    assert status == 422
    assert body["message"] == "Validation Failed"
    assert [{k: e[k] for k in ("field", "code")} for e in body["errors"]] == errors


async def test_invalid_json_is_400(fake: FakeGitHub, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, fake, "POST", "/repos/acme/widgets/issues/1/comments", data=b"{nope")

    assert (status, body["message"]) == (400, "Problems parsing JSON")


async def test_unknown_things_are_404(fake: FakeGitHub, http: aiohttp.ClientSession) -> None:
    assert (await call(http, fake, "GET", "/repos/acme/widgets/issues/99"))[0] == 404
    assert (await call(http, fake, "GET", "/repos/acme/nope/pulls"))[0] == 404
    assert (await call(http, fake, "GET", "/no/such/endpoint"))[0] == 404


async def test_comments_pulls_and_permissions(fake: FakeGitHub, http: aiohttp.ClientSession) -> None:
    status, comment = await call(http, fake, "POST", "/repos/acme/widgets/issues/1/comments",
                                 json={"body": "first"})
    assert status == 201
    status, edited = await call(http, fake, "PATCH", f"/repos/acme/widgets/issues/comments/{comment['id']}",
                                json={"body": "edited"})
    assert (status, edited["body"]) == (200, "edited")
    _, listed = await call(http, fake, "GET", "/repos/acme/widgets/issues/1/comments")
    assert [c["body"] for c in listed] == ["edited"]

    status, pull = await call(http, fake, "POST", "/repos/acme/widgets/pulls",
                              json={"head": "fix", "base": "main", "title": "Fix", "draft": True})
    assert status == 201
    assert pull["number"] == 2  # issues and pulls share numbers
    assert pull["html_url"].endswith("/acme/widgets/pull/2")
    assert pull["url"].endswith("/repos/acme/widgets/pulls/2")
    status, again = await call(http, fake, "POST", "/repos/acme/widgets/pulls",
                               json={"head": "acme:fix", "base": "main", "title": "Fix"})
    assert status == 422
    assert "already exists" in again["errors"][0]["message"]
    _, found = await call(http, fake, "GET", "/repos/acme/widgets/pulls", params={"head": "acme:fix"})
    assert [p["number"] for p in found] == [2]

    _, admin = await call(http, fake, "GET", "/repos/acme/widgets/collaborators/alice/permission")
    _, stranger = await call(http, fake, "GET", "/repos/acme/widgets/collaborators/bob/permission")
    assert (admin["permission"], stranger["permission"]) == ("admin", "none")

    assert [(r.method, r.json) for r in fake.requests[:2]] == [
        ("POST", {"body": "first"}), ("PATCH", {"body": "edited"})]


def _app_jwt(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)} | overrides
    return jwt.encode(claims, _pem(key), algorithm="RS256")


async def test_app_installation_token_exchange(
    fake: FakeGitHub, http: aiohttp.ClientSession, app_key: rsa.RSAPrivateKey,
) -> None:
    status, issued = await call(http, fake, "POST", "/app/installations/77/access_tokens",
                                auth=f"Bearer {_app_jwt(app_key)}")

    assert status == 201
    assert issued["token"].startswith("ghs_")
    assert issued["expires_at"].endswith("Z")
    status, _ = await call(http, fake, "POST", "/repos/acme/widgets/issues/1/comments",
                           auth=f"token {issued['token']}", json={"body": "as the app"})
    assert status == 201


async def test_app_jwt_is_verified(
    fake: FakeGitHub, http: aiohttp.ClientSession, app_key: rsa.RSAPrivateKey,
) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    undecodable = "could not be decoded"
    cases = {
        "wrong key": (_app_jwt(other_key), undecodable),
        "wrong issuer": (_app_jwt(app_key, iss="999"), "'Issuer' claim"),
        "expired": (_app_jwt(app_key, iat=now - 700, exp=now - 10), "is expired"),
        "exp too far": (_app_jwt(app_key, exp=now + 3600), "too far in the future"),
        "not a jwt": ("abc", undecodable),
        "HS256": (jwt.encode({"iss": str(APP_ID), "exp": now + 60}, "secret" * 6, algorithm="HS256"), undecodable),
    }
    for case, (token, message) in cases.items():
        status, body = await call(http, fake, "POST", "/app/installations/77/access_tokens",
                                  auth=f"Bearer {token}")
        assert status == 401, case
        assert message in body["message"], case
    # The app JWT itself is not an API token, and a plain token cannot mint installation tokens.
    status, _ = await call(http, fake, "GET", "/repos/acme/widgets/issues/1", auth=f"Bearer {_app_jwt(app_key)}")
    assert status == 401
    status, _ = await call(http, fake, "POST", "/app/installations/77/access_tokens")
    assert status == 401
    assert fake.issued_tokens == {}
