"""The runner's urllib GitHub client against the fake GitHub: headers, retries, bounds, idempotence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.runner.errors import GitHubError
from controller.runner.github import GitHubClient
from tests.fakes.github import FakeGitHub

TOKEN = "client-test-token"
COMMENTS = "/repos/acme/widgets/issues/7/comments"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN) as github:
        github.add_repo("acme", "widgets")
        github.add_issue("acme", "widgets", 7, title="Question")
        yield github


def client(fake: FakeGitHub, sleeps: list[float], *, token: str = TOKEN, attempts: int = 4) -> GitHubClient:
    return GitHubClient(api_url=fake.url + "/", token=lambda: token, max_attempts=attempts, base_delay=0.01,
                        sleep=sleeps.append)


async def test_comment_sends_githubs_headers(fake: FakeGitHub) -> None:
    sleeps: list[float] = []

    comment = await asyncio.to_thread(client(fake, sleeps).comment_issue, "acme", "widgets", 7, "hello")

    assert comment["body"] == "hello"
    assert fake.comments("acme", "widgets", 7)[0]["id"] == comment["id"]
    [request] = fake.requests
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers  # the fake records no credentials
    assert request.json == {"body": "hello"}
    assert sleeps == []


async def test_5xx_is_retried_with_backoff(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=502, times=2)
    sleeps: list[float] = []

    await asyncio.to_thread(client(fake, sleeps).comment_issue, "acme", "widgets", 7, "hello")

    assert len(fake.requests) == 3
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0]
    assert len(fake.comments("acme", "widgets", 7)) == 1


async def test_429_retry_after_is_honoured(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=429, retry_after=7)
    sleeps: list[float] = []

    await asyncio.to_thread(client(fake, sleeps).comment_issue, "acme", "widgets", 7, "hello")

    assert sleeps == [7.0]


async def test_retries_are_bounded(fake: FakeGitHub) -> None:
    fake.fail_next("POST", COMMENTS, status=503, times=10)
    sleeps: list[float] = []

    with pytest.raises(GitHubError, match="HTTP 503"):
        await asyncio.to_thread(client(fake, sleeps, attempts=3).comment_issue, "acme", "widgets", 7, "x")

    assert len(fake.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(("token", "number", "message"), [
    ("wrong", 7, "HTTP 401: Bad credentials"),
    (TOKEN, 999, "HTTP 404: Not Found"),
])
async def test_client_errors_are_not_retried(fake: FakeGitHub, token: str, number: int, message: str) -> None:
    sleeps: list[float] = []

    with pytest.raises(GitHubError, match=message):
        await asyncio.to_thread(client(fake, sleeps, token=token).comment_issue, "acme", "widgets", number, "x")

    assert len(fake.requests) == 1
    assert sleeps == []


async def test_create_pull_reuses_an_open_one(fake: FakeGitHub) -> None:
    gh = client(fake, [])

    def create() -> str:
        pull = gh.create_pull("acme", "widgets", head="fix", base="main", title="Fix", body="b", draft=True)
        return str(pull["html_url"])

    first = await asyncio.to_thread(create)
    second = await asyncio.to_thread(create)

    assert first == second
    assert len(fake.pulls("acme", "widgets")) == 1


async def test_validation_errors_carry_githubs_details(fake: FakeGitHub) -> None:
    gh = client(fake, [])

    with pytest.raises(GitHubError, match=r'Validation Failed .*"field": "title"'):
        await asyncio.to_thread(gh.request, "POST", "/repos/acme/widgets/pulls", {"head": "x", "base": "main"})
