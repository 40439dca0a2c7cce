"""Tokens the operator refreshes during a run, and every env.json value kept out of what the runner prints.

A GitHub App installation token lasts an hour; the fake GitHub issues tokens with a lifetime on
a clock the test moves forward, and the git server accepts exactly the tokens the fake GitHub
still considers valid. The runner reads `<ctx>/git-token` at each clone and push and for each
API request, so replacing the file mid-run is all a refresh takes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.runner.credentials import Credentials
from controller.runner.log import REDACTOR
from tests.fakes.githttp import GitHttpServer
from tests.fakes.github import FakeGitHub
from tests.runner.conftest import OWNER, REPO, UID, Origin, RunResult, Sandbox

BRANCH = f"agenttask/42-{UID[:8]}"
WAITING_AGENT = """
import time
pathlib.Path("src/app.py").write_text("def save():\\n    return True\\n")
(OUT / "waiting").write_text("yes")
deadline = time.monotonic() + 60
while not (OUT / "go").exists():
    if time.monotonic() > deadline:
        sys.exit(9)
    time.sleep(0.02)
print("Fixed save().")
"""


@pytest.fixture
async def app_github(origin: Origin) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=None, token_lifetime=3600) as fake:  # installation tokens only
        fake.add_repo(OWNER, REPO, git_dir=origin.bare)
        fake.add_issue(OWNER, REPO, 42, title="Crash when saving")
        yield fake


@pytest.fixture
async def app_git(origin: Origin, app_github: FakeGitHub) -> AsyncIterator[GitHttpServer]:
    async with GitHttpServer(origin.bare.parent, username="x-access-token",
                             password_check=app_github.token_valid) as server:
        yield server


def replace_file(path: Path, text: str) -> None:
    """How an upload replaces a file: write aside, rename over."""
    tmp = path.with_name(f".{path.name}.upload")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        await asyncio.sleep(0.02)


async def run_with_expiring_token(
    sb: Sandbox, github: FakeGitHub, git_url: str, *, refresh: bool,
) -> tuple[RunResult, str, str]:
    """Run the runner; while its agent works, let the clone's token expire and (maybe) refresh it."""
    sb.token, sb.api_url = None, github.url
    first = github.issue_token()
    sb.write_context(command=sb.agent(WAITING_AGENT), repo_url=git_url)
    replace_file(sb.ctx / "git-token", first + "\n")
    run = asyncio.ensure_future(asyncio.to_thread(sb.run))
    await wait_for(sb.out / "waiting")  # cloned with the first token; the agent is at work

    github.advance(3601)  # an hour later: the first token has expired
    assert not github.token_valid(first)
    second = github.issue_token()
    if refresh:
        replace_file(sb.ctx / "git-token", second)
    (sb.out / "go").write_text("yes")
    return await run, first, second


async def test_a_token_refreshed_during_the_run_is_used_for_the_push_and_the_pull_request(
    sandbox: Sandbox, app_github: FakeGitHub, app_git: GitHttpServer,
) -> None:
    run, first, second = await run_with_expiring_token(
        sandbox, app_github, app_git.repo_url("widgets.git"), refresh=True)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result["outcome"] == "PullRequestOpened"
    assert BRANCH in sandbox.origin.branches()
    [pull] = app_github.pulls(OWNER, REPO)
    assert pull["head"]["ref"] == BRANCH
    pushes = [r for r in app_git.requests if r.path.endswith("git-receive-pack") and r.method == "POST"]
    assert pushes and all(r.username == "x-access-token" for r in pushes)
    printed = run.stdout + run.stderr + json.dumps(run.result).encode()
    assert first.encode() not in printed and second.encode() not in printed


async def test_an_expired_token_that_is_not_refreshed_fails_the_push(
    sandbox: Sandbox, app_github: FakeGitHub, app_git: GitHttpServer,
) -> None:
    run, _, _ = await run_with_expiring_token(sandbox, app_github, app_git.repo_url("widgets.git"), refresh=False)

    assert run.returncode == 74, run.stderr.decode()
    assert run.result["failureClass"] == "GitPushFailed"
    assert BRANCH not in sandbox.origin.branches()
    assert app_github.pulls(OWNER, REPO) == []


# ------------------------------------------------------------------------------ unit level


def test_credentials_read_the_files_at_each_use(tmp_path: Path) -> None:
    creds = Credentials(ctx_dir=tmp_path, environ={"AGENTTASK_GIT_TOKEN": "env-token-0123456789"})

    assert creds.git_token() == creds.github_token() == "env-token-0123456789"  # no files yet
    (tmp_path / "git-token").write_text("  file-token-aaaaaaaaaa\n")
    assert creds.git_token() == creds.github_token() == "file-token-aaaaaaaaaa"
    (tmp_path / "github-token").write_text("api-token-bbbbbbbbbbbb")
    assert (creds.git_token(), creds.github_token()) == ("file-token-aaaaaaaaaa", "api-token-bbbbbbbbbbbb")
    (tmp_path / "git-token").write_text("")
    assert creds.git_token() == "env-token-0123456789"  # an empty file is no token
    for value in ("env-token-0123456789", "file-token-aaaaaaaaaa", "api-token-bbbbbbbbbbbb"):
        assert value not in REDACTOR.text(f"leak {value} here")


async def test_every_env_json_value_is_redacted(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    secret, other = "sk-ant-api03-" + "q" * 24, "hunter2-db-password"
    sb.write_env_json({"ANTHROPIC_API_KEY": secret, "DB_PASSWORD": other, "FEATURE_FLAG": "1"})
    sb.write_context(command=sb.agent("""
        key, password = os.environ["ANTHROPIC_API_KEY"], os.environ["DB_PASSWORD"]
        print(f"key={key} password={password} flag={os.environ['FEATURE_FLAG']}")
        print(f"to stderr: {key}", file=sys.stderr)
        pathlib.Path("src/app.py").write_text("fixed\\n")
        pathlib.Path(os.environ["AGENTTASK_SUMMARY_FILE"]).write_text(f"Done; the key was {key}.")
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert b"key=*** password=*** flag=1\n" in run.stdout
    assert b"to stderr: ***\n" in run.stderr
    assert run.result["summary"] == "Done; the key was ***."
    [pull] = github.pulls(OWNER, REPO)
    everything = run.stdout + run.stderr + json.dumps(run.result).encode() + json.dumps(pull).encode()
    assert secret.encode() not in everything and other.encode() not in everything
    assert not (sb.ctx / "env.json").exists()
