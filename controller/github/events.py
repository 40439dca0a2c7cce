"""Pure GitHub webhook logic: signature check, payload parsing, trigger rules, the AgentTask body.

Everything here is a function of its arguments (no I/O, no clock, no settings object): the
webhook handler (`webhook.py`) reads the request, calls these, and talks to Kubernetes.

- `verify_signature` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body) in constant time.
- `parse_event` turns the JSON of an `issues` / `issue_comment` delivery into a typed
  `IssueEvent` (unknown keys ignored; a wrong shape is `MalformedEvent`).
- `trigger_for` decides whether the event starts a task (`Trigger`) or not (`Ignored`), and
  with which delivery-independent key: every issue-level trigger (opened, labelled) of one issue
  shares the key `issue`, a comment trigger is keyed by the comment id. The AgentTask name is
  derived from repository + issue + key (`task_name`), so a redelivered event, or the
  `opened` + `labeled` pair GitHub sends for an issue opened with the label, maps to one name.
- `task_body` builds the AgentTask; issue text is copied as data (lone surrogates, which no
  UTF-8 system can store, become U+FFFD; a body over the CRD's 1 MiB is cut with a marker).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..api import API_VERSION, KIND

SIGNATURE_HEADER = "X-Hub-Signature-256"
SOURCE = "github-webhook"
LABEL_SOURCE = "agenttask.io/source"
LABEL_ISSUE = "agenttask.io/github-issue"
ANNOTATION_REPOSITORY = "agenttask.io/github-repository"
ANNOTATION_TRIGGER = "agenttask.io/github-trigger"
EVENTS = frozenset({"issues", "issue_comment"})

# CRD limits (crds/agenttask.yaml), counted in characters as the apiserver counts them
BODY_LIMIT = 1024 * 1024
TITLE_LIMIT = 1024
PROMPT_LIMIT = 65536
LOGIN_LIMIT = 255
URL_LIMIT = 2048
TRUNCATION_MARKER = "\n\n[... truncated by AgentTask: the issue body is longer than 1 MiB ...]\n"
NAME_LIMIT = 63
INSTALLATION_SECRET_PREFIX = "agenttask-github-installation-"  # noqa: S105 - a name prefix
_SURROGATES = re.compile("[\ud800-\udfff]")
_NOT_DNS = re.compile(r"[^a-z0-9]+")


class MalformedEvent(ValueError):
    """The payload is JSON but not the shape GitHub sends for this event."""


# ------------------------------------------------------------------ signature


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the right signature of `body` (constant-time comparison)."""
    if not secret or not header:
        return False
    given = header.strip().encode("utf-8", "replace")
    return hmac.compare_digest(sign(secret, body).encode(), given)


# -------------------------------------------------------------------- payload


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Model):
    login: str = Field(min_length=1)
    type: str = "User"


class Label(_Model):
    name: str


class Owner(_Model):
    login: str = Field(min_length=1)


class Repository(_Model):
    name: str = Field(min_length=1)
    full_name: str = Field(min_length=3)
    owner: Owner
    clone_url: str = Field(min_length=1)
    default_branch: str = "main"


class IssuePayload(_Model):
    number: int = Field(ge=1)
    title: str = ""
    body: str | None = None
    html_url: str | None = None
    user: User
    author_association: str = "NONE"
    labels: tuple[Label, ...] = ()
    pull_request: dict[str, Any] | None = None


class Comment(_Model):
    id: int
    body: str | None = None
    user: User
    author_association: str = "NONE"


class Installation(_Model):
    id: int = Field(ge=0)


class IssueEvent(_Model):
    """An `issues` or `issue_comment` delivery, typed (`event` is the X-GitHub-Event header)."""

    event: str
    action: str
    repository: Repository
    issue: IssuePayload
    sender: User
    label: Label | None = None
    comment: Comment | None = None
    installation: Installation | None = None


def parse_event(event: str, payload: Any) -> IssueEvent:
    """Parse the JSON of an `issues` / `issue_comment` delivery; `MalformedEvent` if it is not one."""
    if event not in EVENTS:
        raise MalformedEvent(f"unsupported event {event!r}")
    if not isinstance(payload, Mapping):
        raise MalformedEvent("the payload is not a JSON object")
    try:
        parsed = IssueEvent.model_validate({**payload, "event": event})
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})[:5]
        raise MalformedEvent(f"not a GitHub {event} payload (check {', '.join(fields)})") from None
    if event == "issue_comment" and parsed.comment is None:
        raise MalformedEvent("an issue_comment payload without a comment")
    return parsed


# ------------------------------------------------------------------- triggers


@dataclass(frozen=True)
class TriggerConfig:
    label: str
    on_open: bool
    phrase: str
    allowed_associations: frozenset[str]


@dataclass(frozen=True)
class Trigger:
    kind: str  # "opened" | "labeled" | "comment"
    key: str  # delivery-independent: "issue" or "comment:<id>"
    requested_by: str
    prompt: str | None = None


@dataclass(frozen=True)
class Ignored:
    reason: str


def _has_phrase(text: str, phrase: str) -> bool:
    wanted = phrase.strip().casefold()
    return any(line.strip().casefold().startswith(wanted) for line in text.splitlines())


def trigger_for(event: IssueEvent, config: TriggerConfig) -> Trigger | Ignored:
    """Whether this delivery starts a task, and with which key.

    - `issues.opened`: with the trigger label, or for every issue when `on_open`; the author's
      association must be allowed (anyone can open an issue, and templates can pre-set labels).
    - `issues.labeled` with the trigger label: labelling someone else's issue needs triage
      rights on GitHub, so the sender is trusted; a label the author put on their own issue
      (e.g. through an issue template) counts only if the author's association is allowed.
    - `issue_comment.created`: a line starting with the phrase, by an allowed association.
    Bots (including this operator's own comments) never trigger, and pull requests are ignored.
    """
    issue = event.issue
    if event.sender.type == "Bot":
        return Ignored("sender is a bot")
    if issue.pull_request is not None:
        return Ignored("pull requests are not handled")
    allowed = config.allowed_associations
    if event.event == "issues":
        author_ok = issue.author_association.upper() in allowed
        if event.action == "opened":
            labelled = any(label.name == config.label for label in issue.labels)
            if not (config.on_open or labelled):
                return Ignored("opened without the trigger label")
            if not author_ok:
                return Ignored(f"author association {issue.author_association} is not allowed")
            return Trigger(kind="opened", key="issue", requested_by=event.sender.login)
        if event.action == "labeled":
            if event.label is None or event.label.name != config.label:
                return Ignored("not the trigger label")
            if event.sender.login == issue.user.login and not author_ok:
                return Ignored(f"author association {issue.author_association} is not allowed")
            return Trigger(kind="labeled", key="issue", requested_by=event.sender.login)
        return Ignored(f"issues.{event.action} is not a trigger")
    comment = event.comment
    if event.action != "created" or comment is None:
        return Ignored(f"issue_comment.{event.action} is not a trigger")
    if not _has_phrase(comment.body or "", config.phrase):
        return Ignored("no trigger phrase")
    if comment.author_association.upper() not in allowed:
        return Ignored(f"author association {comment.author_association} is not allowed")
    prompt = f"Requested in a comment by @{comment.user.login}:\n\n{comment.body or ''}"
    return Trigger(kind="comment", key=f"comment:{comment.id}", requested_by=comment.user.login,
                   prompt=clean_text(prompt, PROMPT_LIMIT))


# ----------------------------------------------------------------------- task


def task_name(full_name: str, number: int, key: str) -> str:
    """`gh-<owner>-<repo>-<issue>-<hash8>`: DNS-1123, at most 63 characters, and the same for
    every delivery of the same trigger (the hash covers the full repository name, so
    truncating or folding the readable part never makes two triggers collide)."""
    digest = hashlib.sha256(f"{full_name.lower()}#{number}#{key}".encode()).hexdigest()[:8]
    tail = f"-{number}-{digest}"
    slug = _NOT_DNS.sub("-", full_name.lower().replace("/", "-")).strip("-")
    room = NAME_LIMIT - len("gh-") - len(tail)
    slug = slug[:max(room, 0)].rstrip("-")
    return f"gh-{slug}{tail}" if slug else f"gh{tail}"[:NAME_LIMIT]


def clean_text(text: str, limit: int, marker: str = "") -> str:
    """`text` storable by the apiserver: lone surrogates -> U+FFFD, at most `limit` characters
    (cut with `marker` at the end when it is longer)."""
    text = _SURROGATES.sub("\ufffd", text)
    if len(text) > limit:
        text = text[:limit - len(marker)] + marker
    return text


def installation_secret(installation_id: int) -> str:
    """Name of the Secret holding the runner's installation token (GitHub App mode)."""
    return f"{INSTALLATION_SECRET_PREFIX}{installation_id}"


@dataclass(frozen=True)
class TaskDefaults:
    """What the operator's settings add to every webhook-created task."""

    namespace: str
    credentials_secret: str | None = None
    credentials_key: str = "token"
    per_installation_credentials: bool = False  # GitHub App: the installation's token Secret
    agent_command: tuple[str, ...] | None = None
    agent_env: tuple[tuple[str, str], ...] = ()
    draft: bool = True


def task_body(event: IssueEvent, trigger: Trigger, *, delivery_id: str | None,
              defaults: TaskDefaults) -> dict[str, Any]:
    """The AgentTask for a triggering event (a plain dict ready for the Kubernetes API)."""
    repo, issue = event.repository, event.issue
    name = task_name(repo.full_name, issue.number, trigger.key)
    issue_spec: dict[str, Any] = {
        "number": issue.number,
        "title": clean_text(issue.title, TITLE_LIMIT, "..."),
        "body": clean_text(issue.body or "", BODY_LIMIT, TRUNCATION_MARKER),
        "author": clean_text(issue.user.login, LOGIN_LIMIT),
    }
    if issue.html_url:
        issue_spec["url"] = clean_text(issue.html_url, URL_LIMIT)
    repository: dict[str, Any] = {"url": repo.clone_url, "baseBranch": repo.default_branch}
    if defaults.per_installation_credentials and event.installation is not None:
        repository["credentialsSecretRef"] = {"name": installation_secret(event.installation.id), "key": "token"}
    elif defaults.credentials_secret:
        repository["credentialsSecretRef"] = {"name": defaults.credentials_secret, "key": defaults.credentials_key}
    audit: dict[str, Any] = {"requestedBy": clean_text(trigger.requested_by, LOGIN_LIMIT), "source": SOURCE}
    if event.installation is not None:
        audit["installationId"] = event.installation.id
    if delivery_id:
        audit["deliveryId"] = clean_text(delivery_id, 255)
    agent: dict[str, Any] = {}
    if defaults.agent_command:
        agent["command"] = list(defaults.agent_command)
    if defaults.agent_env:
        agent["env"] = [{"name": k, "value": v} for k, v in defaults.agent_env]
    spec: dict[str, Any] = {
        "repository": repository,
        "issue": issue_spec,
        "pullRequest": {"create": True, "draft": defaults.draft},
        "audit": audit,
    }
    if agent:
        spec["agent"] = agent
    if trigger.prompt:
        spec["prompt"] = trigger.prompt
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": defaults.namespace,
            "labels": {LABEL_SOURCE: SOURCE, LABEL_ISSUE: str(issue.number)},
            "annotations": {ANNOTATION_REPOSITORY: repo.full_name, ANNOTATION_TRIGGER: trigger.kind},
        },
        "spec": spec,
    }
