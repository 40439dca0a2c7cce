"""Reading the context the operator uploaded: environment, task.json, prompt and issue files.

`load_context` resolves `AGENTTASK_CONTEXT_DIR` and `repository.dir` against the process cwd,
parses task.json once into frozen dataclasses, checks types and that the files the later steps
need exist, and raises `ContextError` (exit 64) otherwise. It never reads issue.md's contents:
issue text stays in files and is never decoded, logged or put in argv by the runner.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ContextError

DEFAULT_CONTEXT_DIR = "agenttask"
# The default agent: Claude Code, headless, streaming JSON events; `claude.claude_argv` adds the
# permission mode and the flags for the agent options.
DEFAULT_AGENT_COMMAND = ("claude", "-p", "--output-format", "stream-json", "--verbose")
DEFAULT_BRANCH_PREFIX = "agenttask/"
TOKEN_ENV = "AGENTTASK_GIT_TOKEN"  # noqa: S105 (a variable name, not a secret)
API_URL_ENV = "AGENTTASK_GITHUB_API_URL"
USERNAME_ENV = "AGENTTASK_GIT_USERNAME"
# Variables that may hold the token: never passed to the agent.
SECRET_ENV = frozenset({TOKEN_ENV, "GITHUB_TOKEN", "GH_TOKEN"})


@dataclass(frozen=True)
class TaskRef:
    namespace: str
    name: str
    uid: str
    attempt: int


@dataclass(frozen=True)
class RepositorySpec:
    url: str
    base_branch: str
    dir: Path  # absolute


@dataclass(frozen=True)
class IssueSpec:
    number: int
    title: str
    url: str | None
    author: str | None


@dataclass(frozen=True)
class AgentOptions:
    """Options of the default agent (Claude Code), mapped to its flags by `claude.claude_argv`."""

    model: str | None = None
    max_turns: int | None = None
    allowed_tools: tuple[str, ...] | None = None  # set: only these tools run (dontAsk mode)
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    mcp_config: Path | None = None  # absolute, inside the context dir
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class AgentSpec:
    command: tuple[str, ...]
    working_dir: str | None  # absolute, or relative to the checkout
    custom: bool = False  # task.json named a command: run it as is, without the options
    options: AgentOptions = AgentOptions()
    timeout_seconds: float | None = None  # counted from the runner's start; any agent
    deadline: float | None = None  # epoch seconds (agent.deadline); any agent


@dataclass(frozen=True)
class PullRequestSpec:
    create: bool
    draft: bool
    branch_prefix: str


@dataclass(frozen=True)
class GitHubRepo:
    owner: str
    repo: str


@dataclass(frozen=True)
class Context:
    dir: Path  # absolute
    task: TaskRef
    repository: RepositorySpec
    issue: IssueSpec | None
    agent: AgentSpec
    pull_request: PullRequestSpec
    github: GitHubRepo | None
    api_url: str | None
    git_username: str

    @property
    def prompt_file(self) -> Path:
        return self.dir / "prompt.md"

    @property
    def issue_file(self) -> Path:
        return self.dir / "issue.md"

    @property
    def summary_file(self) -> Path:
        return self.dir / "summary.md"

    @property
    def branch(self) -> str:
        """`<prefix><issue>-<uid8>`, or `<prefix>task-<uid8>` without an issue."""
        stem = str(self.issue.number) if self.issue else "task"
        return f"{self.pull_request.branch_prefix}{stem}-{self.task.uid[:8]}"


def context_dir(environ: Mapping[str, str], cwd: Path) -> Path:
    """`AGENTTASK_CONTEXT_DIR` (default `agenttask`) made absolute against `cwd`."""
    return Path(os.path.normpath(cwd / environ.get("AGENTTASK_CONTEXT_DIR", DEFAULT_CONTEXT_DIR)))


def load_context(environ: Mapping[str, str], cwd: Path) -> Context:
    ctx_dir = context_dir(environ, cwd)
    try:
        raw = json.loads((ctx_dir / "task.json").read_bytes())
    except FileNotFoundError as e:
        raise ContextError(f"{ctx_dir / 'task.json'} does not exist") from e
    except (OSError, ValueError) as e:
        raise ContextError(f"cannot read task.json: {e}") from e
    doc = _obj(raw, "task.json")
    task = _obj(doc.get("task"), "task")
    repo = _obj(doc.get("repository"), "repository")
    issue = _opt_obj(doc.get("issue"), "issue")
    agent = _opt_obj(doc.get("agent"), "agent") or {}
    pull = _opt_obj(doc.get("pullRequest"), "pullRequest") or {}
    github = _opt_obj(doc.get("github"), "github")
    command = agent.get("command")
    if command is not None and (
        not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
    ):
        raise ContextError("agent.command must be a non-empty list of strings or null")
    ctx = Context(
        dir=ctx_dir,
        task=TaskRef(
            namespace=_str(task, "namespace", "task"),
            name=_str(task, "name", "task"),
            uid=_str(task, "uid", "task"),
            attempt=_int(task, "attempt", "task"),
        ),
        repository=RepositorySpec(
            url=_str(repo, "url", "repository"),
            base_branch=_str(repo, "baseBranch", "repository"),
            dir=Path(os.path.normpath(cwd / _str(repo, "dir", "repository"))),
        ),
        issue=None if issue is None else IssueSpec(
            number=_int(issue, "number", "issue"),
            title=_opt_str(issue, "title", "issue") or "",
            url=_opt_str(issue, "url", "issue"),
            author=_opt_str(issue, "author", "issue"),
        ),
        agent=AgentSpec(
            command=tuple(command) if command else DEFAULT_AGENT_COMMAND,
            working_dir=_opt_str(agent, "workingDir", "agent"),
            custom=bool(command),
            options=_agent_options(agent, ctx_dir),
            timeout_seconds=_opt_positive(agent, "timeoutSeconds", "agent"),
            deadline=_opt_time(agent, "deadline", "agent"),
        ),
        pull_request=PullRequestSpec(
            create=_bool(pull, "create", "pullRequest", default=True),
            draft=_bool(pull, "draft", "pullRequest", default=True),
            branch_prefix=_opt_str(pull, "branchPrefix", "pullRequest") or DEFAULT_BRANCH_PREFIX,
        ),
        github=None if github is None else GitHubRepo(
            owner=_str(github, "owner", "github"), repo=_str(github, "repo", "github"),
        ),
        api_url=(environ.get(API_URL_ENV) or "").rstrip("/") or None,
        git_username=environ.get(USERNAME_ENV) or "x-access-token",
    )
    if not ctx.task.uid:
        raise ContextError("task.uid must not be empty")
    url = urllib.parse.urlsplit(ctx.repository.url)
    if url.scheme in ("http", "https") and "@" in url.netloc:
        raise ContextError("repository.url must not carry credentials; the token comes from the environment")
    if not ctx.prompt_file.is_file():
        raise ContextError(f"{ctx.prompt_file} does not exist")
    if ctx.issue is not None and not ctx.issue_file.is_file():
        raise ContextError(f"task.json names issue #{ctx.issue.number} but {ctx.issue_file} does not exist")
    return ctx


MAX_TURNS_LIMIT = 100_000
SYSTEM_PROMPT_LIMIT = 256 * 1024  # bytes of agent.appendSystemPrompt


def _agent_options(agent: Mapping[str, Any], ctx_dir: Path) -> AgentOptions:
    """The agent options of task.json, type-checked; values that would read as flags are refused."""
    model = _opt_str(agent, "model", "agent")
    if model is not None and (not model or model.startswith("-")):
        raise ContextError("agent.model must be a model name")
    max_turns = agent.get("maxTurns")
    if max_turns is not None:
        max_turns = _int(agent, "maxTurns", "agent")
        if not 1 <= max_turns <= MAX_TURNS_LIMIT:
            raise ContextError(f"agent.maxTurns must be between 1 and {MAX_TURNS_LIMIT}")
    allowed = _opt_tools(agent, "allowedTools")
    prompt = _opt_str(agent, "appendSystemPrompt", "agent")
    if prompt is not None and len(prompt.encode("utf-8", "surrogateescape")) > SYSTEM_PROMPT_LIMIT:
        raise ContextError(f"agent.appendSystemPrompt must be at most {SYSTEM_PROMPT_LIMIT} bytes")
    return AgentOptions(
        model=model,
        max_turns=max_turns,
        allowed_tools=allowed,
        disallowed_tools=_opt_tools(agent, "disallowedTools") or (),
        append_system_prompt=prompt or None,
        mcp_config=_context_file(agent, "mcpConfig", ctx_dir),
        max_cost_usd=_opt_positive(agent, "maxCostUsd", "agent"),
    )


def _opt_tools(agent: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = agent.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() and not t.startswith("-")
                                              for t in value):
        raise ContextError(f"agent.{key} must be a list of tool names or rules such as \"Bash(npm test:*)\"")
    return tuple(value)


def _opt_positive(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ContextError(f"{where}.{key} must be a positive number")
    return float(value)


def _opt_time(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    """An RFC 3339 timestamp with a time zone (`2026-01-02T03:04:05Z`) as epoch seconds."""
    value = _opt_str(doc, key, where)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise ContextError(f"{where}.{key} must be an RFC 3339 timestamp") from e
    if moment.tzinfo is None:
        raise ContextError(f"{where}.{key} must carry a time zone (e.g. a trailing Z)")
    return moment.timestamp()


def _context_file(agent: Mapping[str, Any], key: str, ctx_dir: Path) -> Path | None:
    """A file the operator uploaded into the context dir, named relative to it."""
    name = _opt_str(agent, key, "agent")
    if name is None:
        return None
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise ContextError(f"agent.{key} must be a file name relative to the context directory")
    path = ctx_dir / relative
    if not path.is_file():
        raise ContextError(f"agent.{key}: {path} does not exist")
    return path


# ------------------------------------------------------------------ typed field access


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContextError(f"{where} must be an object")
    return value


def _opt_obj(value: Any, where: str) -> dict[str, Any] | None:
    return None if value is None else _obj(value, where)


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ContextError(f"{where}.{key} must be a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if doc.get(key) is None else _str(doc, key, where)


def _int(doc: Mapping[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContextError(f"{where}.{key} must be an integer")
    return value


def _bool(doc: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ContextError(f"{where}.{key} must be a boolean")
    return value


ENV_FILE = "env.json"


def take_env_file(ctx_dir: Path) -> dict[str, str]:
    """Read and delete `<ctx>/env.json`: the agent's environment (secrets included) as the operator
    uploaded it, so the sandbox's own env never carries secrets and warm-pool sandboxes can be used.
    The file is removed before the agent starts, so the agent cannot read it from disk later."""
    path = ctx_dir / ENV_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    finally:
        path.unlink(missing_ok=True)
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ContextError(f"{ENV_FILE} is not valid JSON") from e
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise ContextError(f"{ENV_FILE} must be an object of strings")
    return doc
