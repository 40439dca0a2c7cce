"""The operator's GitHub client against the fake GitHub: token and App auth, caching, retries."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from controller import logs
from controller.errors import Fatal, Retryable
from controller.github.client import (
    AppAuth,
    GitHubClient,
    SecretCredentials,
    StaticCredentials,
    TokenAuth,
    retry_after_seconds,
)
from tests.fakes.github import FakeGitHub

TOKEN = "ghp_" + "t" * 36
APP_ID = 4242
COMMENTS = "/repos/acme/widgets/issues/7/comments"


@pytest.fixture(scope="module")
def app_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
async def fake(app_key: str) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN, app_id=APP_ID, app_private_key_pem=app_key) as github:
        github.add_repo("acme", "widgets")
        github.add_issue("acme", "widgets", 7, title="Question")
        yield github


def make(fake: FakeGitHub, auth: TokenAuth | AppAuth, sleeps: list[float] | None = None,
         **kwargs: float) -> GitHubClient:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return GitHubClient(api_url=fake.url, credentials=StaticCredentials(auth), base_delay=0.01, sleep=sleep,
                        **kwargs)  # type: ignore[arg-type]


async def test_token_comment_create_and_update(fake: FakeGitHub) -> None:
    async with make(fake, TokenAuth(TOKEN)) as client:
        comment_id = await client.create_comment("acme", "widgets", 7, "working on it")
        await client.update_comment("acme", "widgets", comment_id, "done")
    [comment] = fake.comments("acme", "widgets", 7)
    assert comment["id"] == comment_id and comment["body"] == "done"
    first = fake.requests[0]
    assert first.headers["Accept"] == "application/vnd.github+json"
    assert first.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert [r.method for r in fake.requests] == ["POST", "PATCH"]


async def test_bad_token_is_fatal_401(fake: FakeGitHub) -> None:
    async with make(fake, TokenAuth("wrong-token")) as client:
        with pytest.raises(Fatal) as caught:
            await client.create_comment("acme", "widgets", 7, "x")
    assert caught.value.status == 401


async def test_5xx_and_429_are_retried_honouring_retry_after(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=502)
    fake.fail_next("POST", COMMENTS, status=429, retry_after=3)
    sleeps: list[float] = []
    async with make(fake, TokenAuth(TOKEN), sleeps) as client:
        await client.create_comment("acme", "widgets", 7, "x")
    assert len(sleeps) == 2 and sleeps[1] >= 3
    assert len(fake.comments("acme", "widgets", 7)) == 1


async def test_gives_up_after_max_attempts_with_retryable(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=503, times=10)
    async with make(fake, TokenAuth(TOKEN), [], max_attempts=3) as client:
        with pytest.raises(Retryable) as caught:
            await client.create_comment("acme", "widgets", 7, "x")
    assert caught.value.status == 503
    assert sum(r.path == COMMENTS for r in fake.requests) == 3


async def test_a_retry_after_beyond_max_delay_is_not_slept(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=429, retry_after=3600)
    sleeps: list[float] = []
    async with make(fake, TokenAuth(TOKEN), sleeps, max_delay=60) as client:
        with pytest.raises(Retryable) as caught:
            await client.create_comment("acme", "widgets", 7, "x")
    assert sleeps == [] and caught.value.retry_after == 3600


async def test_other_4xx_fail_at_once(fake: FakeGitHub) -> None:
    async with make(fake, TokenAuth(TOKEN), []) as client:
        with pytest.raises(Fatal) as caught:
            await client.create_comment("acme", "widgets", 999, "x")
    assert caught.value.status == 404
    assert len(fake.requests) == 1


async def test_app_mints_caches_and_refreshes_installation_tokens(fake: FakeGitHub, app_key: str) -> None:
    async with make(fake, AppAuth(app_id=str(APP_ID), private_key=app_key)) as client:
        await client.create_comment("acme", "widgets", 7, "one", installation_id=11)
        await client.create_comment("acme", "widgets", 7, "two", installation_id=11)
        minted = [r for r in fake.requests if r.path.startswith("/app/")]
        assert [r.path for r in minted] == ["/app/installations/11/access_tokens"]
        first = await client.installation_token(11)
        assert first.token in fake.issued_tokens
        assert logs.redact(f"token {first.token}") == "token ***"
        client._tokens[11] = dataclasses.replace(first, expires_at=time.time() + 200)  # nearly expired
        second = await client.installation_token(11)
        assert second.token != first.token
        fresh = await client.installation_token(11, fresh=True)
        assert fresh.token not in (first.token, second.token)


async def test_app_without_installation_or_with_a_bad_key_is_fatal(fake: FakeGitHub, app_key: str) -> None:
    async with make(fake, AppAuth(app_id=str(APP_ID), private_key=app_key)) as client:
        with pytest.raises(Fatal):
            await client.create_comment("acme", "widgets", 7, "x")
    async with make(fake, AppAuth(app_id=str(APP_ID), private_key="not a key")) as client:
        with pytest.raises(Fatal, match="RSA PEM"):
            await client.create_comment("acme", "widgets", 7, "x", installation_id=1)
    async with make(fake, AppAuth(app_id="999", private_key=app_key)) as client:
        with pytest.raises(Fatal) as caught:
            await client.installation_token(1)
        assert caught.value.status == 401


class FakeSecrets:
    def __init__(self, values: dict[tuple[str, str], str]):
        self.values = values
        self.reads = 0

    async def read_secret_key(self, namespace: str, name: str, key: str, *, optional: bool = False) -> str | None:
        self.reads += 1
        return self.values.get((name, key))


async def test_secret_credentials_are_reread_after_a_401(fake: FakeGitHub) -> None:
    secrets = FakeSecrets({("gh", "token"): "rotated-away"})
    credentials = SecretCredentials(secrets, namespace="ns", token_secret="gh")
    async with GitHubClient(api_url=fake.url, credentials=credentials) as client:
        secrets.values[("gh", "token")] = "stale"
        with pytest.raises(Fatal):
            await client.create_comment("acme", "widgets", 7, "x")
        assert secrets.reads == 2  # read, 401, re-read, 401 again: give up
        secrets.values[("gh", "token")] = TOKEN
        await client.create_comment("acme", "widgets", 7, "x")


async def test_secret_credentials_prefer_the_app(app_key: str) -> None:
    secrets = FakeSecrets({("app", "app-id"): f"{APP_ID}\n", ("app", "private-key"): app_key, ("gh", "token"): "t"})
    credentials = SecretCredentials(secrets, namespace="ns", token_secret="gh", app_secret="app")
    assert credentials.app_mode
    assert await credentials.get() == AppAuth(app_id=str(APP_ID), private_key=app_key)


def test_retry_after_forms() -> None:
    now = 1_000_000.0
    assert retry_after_seconds({"Retry-After": "5"}, now=now) == 5
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=0.0) == 10
    assert retry_after_seconds({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 30)},
                               now=now) == 30
    assert retry_after_seconds({"x-ratelimit-remaining": "10", "x-ratelimit-reset": "1"}, now=now) is None
    assert retry_after_seconds({}, now=now) is None
