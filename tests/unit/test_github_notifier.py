"""Progress comments: which transitions post, edit or do nothing; texts; App token hand-over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.api import AgentTask, AgentTaskStatus, Phase, Result
from controller.github.client import GitHubClient, StaticCredentials, TokenAuth
from controller.github.notifier import ANNOTATION_COMMENT_ID, GitHubNotifier, final_text, target
from tests.fakes.github import FakeGitHub

TOKEN = "notifier-test-token"


class FakeKube:
    def __init__(self) -> None:
        self.annotations: dict[tuple[str, str], dict[str, str]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    async def annotate_task(self, namespace: str, name: str, annotations: dict[str, str]) -> Any:
        self.annotations.setdefault((namespace, name), {}).update(annotations)

    async def apply_secret(self, namespace: str, name: str, *, string_data: dict[str, str],
                           labels: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = string_data


def make_task(phase: Phase | None, *, source: str = "github-webhook", url: str = "https://github.com/acme/widgets.git",
              annotations: dict[str, str] | None = None, **status: Any) -> AgentTask:
    return AgentTask.model_validate({
        "metadata": {"name": "gh-acme-widgets-7-abc", "namespace": "agents", "uid": "u-1",
                     "annotations": annotations or {}},
        "spec": {"repository": {"url": url}, "issue": {"number": 7, "title": "t"},
                 "audit": {"source": source, "requestedBy": "octocat"}},
        "status": {"phase": phase.value if phase else None, **status},
    })


def status(phase: Phase, **values: Any) -> AgentTaskStatus:
    return AgentTaskStatus(phase=phase, **values)


@pytest.fixture
async def env() -> AsyncIterator[tuple[GitHubNotifier, FakeGitHub, FakeKube]]:
    async with FakeGitHub(token=TOKEN) as github:
        github.add_repo("acme", "widgets")
        github.add_issue("acme", "widgets", 7, title="t")
        kube = FakeKube()
        client = GitHubClient(api_url=github.url, credentials=StaticCredentials(TokenAuth(TOKEN)))
        notifier = GitHubNotifier(client=client, kube=kube, app_mode=False)
        yield notifier, github, kube
        await notifier.close()


async def settle(notifier: GitHubNotifier) -> None:
    for _ in range(100):
        if not notifier._chains:
            return
        await asyncio.sleep(0.01)


async def test_ack_then_edit_in_place_with_the_pr_link(env: tuple[GitHubNotifier, FakeGitHub, FakeKube]) -> None:
    notifier, github, kube = env
    task = make_task(Phase.PENDING)
    await notifier.on_transition(task, status(Phase.PROVISIONING), {})
    running = make_task(Phase.PROVISIONING)
    await notifier.on_transition(running, status(Phase.RUNNING), {})  # not an admission: nothing
    done = status(Phase.SUCCEEDED, reason="AgentSucceeded",
                  result=Result(outcome="PullRequestOpened", pull_request_url="https://github.com/acme/widgets/pull/8"))
    await notifier.on_transition(make_task(Phase.RUNNING), done, {})
    await settle(notifier)
    [comment] = github.comments("acme", "widgets", 7)
    assert "https://github.com/acme/widgets/pull/8" in comment["body"]
    assert "agents/gh-acme-widgets-7-abc" in comment["body"]
    assert kube.annotations[("agents", "gh-acme-widgets-7-abc")] == {ANNOTATION_COMMENT_ID: str(comment["id"])}
    assert [r.method for r in github.requests] == ["POST", "PATCH"]


async def test_stored_comment_id_survives_a_restart(env: tuple[GitHubNotifier, FakeGitHub, FakeKube]) -> None:
    notifier, github, _ = env
    await notifier.on_transition(make_task(Phase.QUEUED), status(Phase.PROVISIONING), {})
    await settle(notifier)
    [comment] = github.comments("acme", "widgets", 7)
    fresh = GitHubNotifier(client=notifier.client, kube=notifier.kube, app_mode=False)  # "restarted operator"
    body = {"metadata": {"annotations": {ANNOTATION_COMMENT_ID: str(comment["id"])}}}
    await fresh.on_transition(make_task(Phase.RUNNING), status(Phase.FAILED, reason="AgentFailed",
                                                                 message="the agent exited with code 3"), body)
    await settle(fresh)
    [edited] = github.comments("acme", "widgets", 7)
    assert "failed (AgentFailed): the agent exited with code 3" in edited["body"]


async def test_failure_before_admission_posts_one_comment(env: tuple[GitHubNotifier, FakeGitHub, FakeKube]) -> None:
    notifier, github, _ = env
    await notifier.on_transition(make_task(Phase.PENDING), status(Phase.FAILED, reason="SecretNotFound",
                                                                   message="Secret agents/x not found"), {})
    await settle(notifier)
    [comment] = github.comments("acme", "widgets", 7)
    assert "SecretNotFound" in comment["body"]


@pytest.mark.parametrize("task", [
    make_task(Phase.PENDING, source="kubectl"),
    make_task(Phase.PENDING, url="file:///tmp/repo.git"),
])
async def test_other_tasks_make_no_calls(env: tuple[GitHubNotifier, FakeGitHub, FakeKube], task: AgentTask) -> None:
    notifier, github, _ = env
    await notifier.on_transition(task, status(Phase.PROVISIONING), {})
    await notifier.on_transition(task, status(Phase.SUCCEEDED), {})
    await settle(notifier)
    assert github.requests == []


async def test_github_errors_never_escape(env: tuple[GitHubNotifier, FakeGitHub, FakeKube]) -> None:
    notifier, github, _ = env
    github.fail_next("POST", "/repos/acme/widgets/issues/7/comments", status=404)
    await notifier.on_transition(make_task(Phase.PENDING), status(Phase.PROVISIONING), {})
    await settle(notifier)
    assert github.comments("acme", "widgets", 7) == []


async def test_app_mode_writes_a_fresh_installation_token_before_the_sandbox() -> None:
    class Client:
        closed = False

        async def installation_token(self, installation_id: int, *, fresh: bool = False) -> Any:
            assert fresh
            return type("T", (), {"token": f"ghs_fresh_for_{installation_id}"})()

        async def create_comment(self, *args: Any, **kwargs: Any) -> int:
            return 1

        async def close(self) -> None:
            self.closed = True

    kube = FakeKube()
    notifier = GitHubNotifier(client=Client(), kube=kube, app_mode=True)  # type: ignore[arg-type]
    task = AgentTask.model_validate({
        "metadata": {"name": "t", "namespace": "agents", "uid": "u"},
        "spec": {"repository": {"url": "https://github.com/acme/widgets.git",
                                "credentialsSecretRef": {"name": "agenttask-github-installation-5"}},
                 "issue": {"number": 7}, "audit": {"source": "github-webhook", "installationId": 5}},
        "status": {"phase": "Pending"}})
    await notifier.on_transition(task, status(Phase.PROVISIONING), {})
    assert kube.secrets[("agents", "agenttask-github-installation-5")] == {"token": "ghs_fresh_for_5"}
    await notifier.close()


def test_texts() -> None:
    task = make_task(Phase.RUNNING)
    assert target(task) is not None and target(task).repo == "widgets"  # type: ignore[union-attr]
    no_changes = final_text(task, status(Phase.SUCCEEDED, result=Result(outcome="NoChanges")))
    assert "without changes" in no_changes and "comment below" in no_changes
    pushed = final_text(task, status(Phase.SUCCEEDED, result=Result(outcome="ChangesPushed", branch="agenttask/7-x")))
    assert "agenttask/7-x" in pushed
    failed = final_text(task, status(Phase.FAILED, reason="DeadlineExceeded",
                                     message="token ghp_" + "a" * 36 + "\nleaked `x`"))
    assert "ghp_" not in failed and "***" in failed and "\nleaked" not in failed
    assert "/agenttask run" not in failed  # our own comments never contain the trigger phrase
