"""Progress on the GitHub issue of a webhook-created AgentTask, driven by phase transitions.

The supervisor calls `GitHubNotifier.on_transition(task, new_status, body)` after it wrote a
status whose phase differs from the previous one (`Runtime.on_transition`). Only tasks whose
`spec.audit.source` is `github-webhook` and whose repository URL names a GitHub repository
are handled; for everything else this is a no-op.

- Admission (the phase leaves Pending/Queued): an acknowledgement comment is posted; its id
  is stored in the annotation `agenttask.io/github-comment-id`. With a GitHub App, a freshly
  minted installation token is first written to the task's credentials Secret — inline, because
  the sandbox that reads it is created right after this call.
- Terminal phase: that comment is edited in place (PATCH) to the outcome — the pull request
  link, "no changes" (the runner commented the agent's answer itself), or the failure reason.
  Without a stored id (e.g. the task failed before admission) a new comment is posted.

Comment calls run in the background, serialised per task so the final edit always follows the
acknowledgement; they never block or fail reconciliation, and errors are only logged. Texts
pass through `logs.redact`. A crash between posting the acknowledgement and storing its id can
leave a second comment later; nothing here retries across operator restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .. import logs
from ..api import AgentTask, AgentTaskStatus, Phase
from ..context import github_repo
from ..errors import OperatorError
from .client import GitHubClient
from .events import SOURCE, installation_secret

ANNOTATION_COMMENT_ID = "agenttask.io/github-comment-id"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "agenttask-operator"}
WAITING = (None, Phase.PENDING, Phase.QUEUED)
_log = logging.getLogger("agenttask.github.notifier")


class NotifierKube(Protocol):
    async def annotate_task(self, namespace: str, name: str, annotations: dict[str, str]) -> Any: ...

    async def apply_secret(self, namespace: str, name: str, *, string_data: dict[str, str],
                           labels: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class Target:
    owner: str
    repo: str
    number: int
    installation_id: int | None


def target(task: AgentTask) -> Target | None:
    """The issue to report on, or None when the task did not come from the GitHub webhook."""
    spec = task.spec
    if spec.audit.source != SOURCE or spec.issue is None:
        return None
    repo = github_repo(spec.repository.url)
    if repo is None:
        return None
    return Target(owner=repo[0], repo=repo[1], number=spec.issue.number,
                  installation_id=spec.audit.installation_id)


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.replace("`", "'").split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _marker(task: AgentTask) -> str:
    return f"<!-- agenttask:{task.metadata.uid} -->"


def ack_text(task: AgentTask) -> str:
    who = task.spec.audit.requested_by
    by = f" (requested by {_one_line(who, 64)})" if who else ""
    return logs.redact(
        f"AgentTask `{task.key}` is working on this issue{by}. "
        f"This comment will be updated with the result.\n\n{_marker(task)}")


def final_text(task: AgentTask, status: AgentTaskStatus) -> str:
    result = status.result
    url = result.pull_request_url if result is not None else None
    if status.phase == Phase.SUCCEEDED:
        outcome = result.outcome if result is not None else None
        if url:
            line = f"finished: opened pull request {url}"
        elif outcome == "NoChanges":
            line = "finished without changes; the agent's answer is in the comment below"
        elif result is not None and result.branch:
            line = f"finished: pushed branch `{_one_line(result.branch, 255)}` (no pull request was opened)"
        else:
            line = "finished"
    else:
        reason = _one_line(status.reason or "Failed", 64)
        line = f"failed ({reason}): {_one_line(status.message or 'no details')}"
        if url:
            line += f"\n\nPull request: {url}"
    return logs.redact(f"AgentTask `{task.key}` {line}\n\n{_marker(task)}")


class GitHubNotifier:
    """Posts and edits the progress comment; `close()` waits briefly for comments in flight."""

    def __init__(self, *, client: GitHubClient, kube: NotifierKube, app_mode: bool,
                 timeout: float = 30.0):
        self.client, self.kube, self.app_mode, self.timeout = client, kube, app_mode, timeout
        self._chains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._comment_ids: dict[tuple[str, str], int] = {}

    async def on_transition(self, task: AgentTask, status: AgentTaskStatus, body: Mapping[str, Any]) -> None:
        """Called after a phase change was written; never raises."""
        try:
            where = target(task)
            before, after = task.status.phase, status.phase
            if where is None or after is None or before == after:
                return
            key = (task.metadata.namespace, task.metadata.name)
            stored = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_COMMENT_ID, "")
            if stored.isdigit():
                self._comment_ids.setdefault(key, int(stored))
            admitted = before in WAITING and after not in WAITING
            if admitted and self.app_mode:
                await self._refresh_runner_token(task, where)
            if admitted and not after.terminal:
                self._schedule(key, lambda: self._acknowledge(task, where))
            if after.terminal:
                self._schedule(key, lambda: self._finish(task, status, where))
        except Exception as exc:  # a notifier must never break reconciliation
            _log.warning("GitHub notification for %s failed: %s", task.key, logs.redact(str(exc)))

    async def close(self) -> None:
        pending = list(self._chains.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout)
            for item in late:
                item.cancel()
        await self.client.close()

    # ----------------------------------------------------------------- internals

    def _schedule(self, key: tuple[str, str], work: Callable[[], Awaitable[None]]) -> None:
        previous = self._chains.get(key)

        async def chained() -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            await work()

        item = asyncio.create_task(chained(), name=f"github-notify-{key[0]}/{key[1]}")
        self._chains[key] = item

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(key) is done:
                del self._chains[key]
            if not done.cancelled() and done.exception() is not None:
                _log.warning("GitHub notification for %s/%s failed: %s", key[0], key[1],
                             logs.redact(str(done.exception())))

        item.add_done_callback(forget)

    async def renew_runner_token(self, task: AgentTask) -> None:
        """Keep a running task's installation token valid (they last an hour; tasks may run
        longer): the cached token is reused while it has more than the client's refresh margin
        left, else a new one is minted and written to the task's credentials Secret. The
        supervisor then uploads it into the sandbox. Never raises."""
        where = target(task)
        if self.app_mode and where is not None:
            await self._refresh_runner_token(task, where, fresh=False)

    async def _refresh_runner_token(self, task: AgentTask, where: Target, *, fresh: bool = True) -> None:
        ref = task.spec.repository.credentials_secret_ref
        if where.installation_id is None or ref is None or ref.name != installation_secret(where.installation_id):
            return
        try:
            token = await self.client.installation_token(where.installation_id, fresh=fresh)
            await self.kube.apply_secret(task.metadata.namespace, ref.name, string_data={ref.key: token.token},
                                         labels=MANAGED_LABELS)
        except OperatorError as exc:
            _log.warning("could not refresh the installation token for %s: %s", task.key, logs.redact(str(exc)))

    async def _acknowledge(self, task: AgentTask, where: Target) -> None:
        key = (task.metadata.namespace, task.metadata.name)
        if key in self._comment_ids:
            return  # acknowledged before (operator restart, or a retried admission)
        try:
            comment_id = await self.client.create_comment(where.owner, where.repo, where.number, ack_text(task),
                                                          installation_id=where.installation_id)
            self._comment_ids[key] = comment_id
            await self.kube.annotate_task(key[0], key[1], {ANNOTATION_COMMENT_ID: str(comment_id)})
        except OperatorError as exc:
            _log.warning("could not acknowledge %s on GitHub: %s", task.key, logs.redact(str(exc)))

    async def _finish(self, task: AgentTask, status: AgentTaskStatus, where: Target) -> None:
        key = (task.metadata.namespace, task.metadata.name)
        text = final_text(task, status)
        comment_id = self._comment_ids.pop(key, None)
        try:
            if comment_id is not None:
                await self.client.update_comment(where.owner, where.repo, comment_id, text,
                                                 installation_id=where.installation_id)
            else:
                await self.client.create_comment(where.owner, where.repo, where.number, text,
                                                 installation_id=where.installation_id)
        except OperatorError as exc:
            _log.warning("could not report the outcome of %s on GitHub: %s", task.key, logs.redact(str(exc)))
