"""The runner's steps, in order: context → checkout → branch → agent → commit/push → PR or comment.

`main()` is the whole program: it maps every anticipated failure to its failure class, exit code
and a `Failed` result.json, and an unanticipated one to `RunnerBug` (exit 70). The steps
themselves live in `context`, `credentials`, `git`, `claude`, `agent`, `classify`, `github` and
`result`; this module only sequences them and composes the texts (commit message, pull request
body, issue comment) — never from issue text except the title, which only goes into files and
HTTP bodies.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from .agent import AgentRun, agent_env, run_agent
from .classify import AgentEnd, classify
from .claude import RESUME_PROMPT, SESSION_FILE, AgentDirs, claude_argv, claude_env, is_stream_json, session_to_resume
from .context import (
    API_URL_ENV,
    USERNAME_ENV,
    AgentOptions,
    Context,
    GitHubRepo,
    context_dir,
    load_context,
    take_env_file,
)
from .credentials import Credentials
from .errors import EXIT_CODES, ContextError, ExitCode, FailureClass, RunnerError
from .git import (
    Git,
    changed_files,
    commit_all,
    ensure_checkout,
    git_path,
    has_uncommitted_changes,
    push_branch,
    start_branch,
    write_askpass,
)
from .github import GitHubClient
from .log import REDACTOR, log
from .result import Outcome, Result, clip, write_result

TITLE_CHARS = 200
# env.json values shorter than this are not masked (they would mask "1", "true", ... everywhere)
REDACT_MIN_CHARS = 8
# env.json variables of the runner's contract that hold no secret
_NOT_SECRET = frozenset({API_URL_ENV, USERNAME_ENV, "AGENTTASK_CONTEXT_DIR"})


def main() -> int:
    started = time.monotonic()
    environ = dict(os.environ)
    cwd = Path.cwd()
    result = Result()
    try:
        uploaded = take_env_file(context_dir(environ, cwd))
        for key, value in uploaded.items():
            if key not in _NOT_SECRET and len(value) >= REDACT_MIN_CHARS:
                REDACTOR.add(value)
        environ.update(uploaded)
        code = _run(environ, cwd, result, operator_keys=frozenset(uploaded), started=started)
    except RunnerError as e:
        log(f"failed: {e}")
        result.outcome, result.error, result.failure_class = Outcome.FAILED, REDACTOR.text(str(e)), e.failure_class
        code = int(e.exit_code)
    except Exception as e:
        log(f"internal error:\n{traceback.format_exc()}")
        result.outcome, result.error = Outcome.FAILED, REDACTOR.text(f"internal error: {e!r}")
        result.failure_class, code = FailureClass.RUNNER_BUG, int(ExitCode.INTERNAL)
    _save(context_dir(environ, cwd), result)
    log(f"done: {result.outcome}{f' ({result.failure_class})' if result.failure_class else ''} (exit {code})")
    return code


def _run(
    environ: Mapping[str, str], cwd: Path, result: Result, *, operator_keys: frozenset[str], started: float,
) -> int:
    ctx = load_context(environ, cwd)
    log(f"task {ctx.task.namespace}/{ctx.task.name} uid {ctx.task.uid} attempt {ctx.task.attempt}")
    credentials = Credentials(ctx_dir=ctx.dir, environ=environ)
    with tempfile.TemporaryDirectory(prefix="agenttask-runner-") as private:  # mode 0700
        runtime = Path(private)
        git = Git(environ=environ, token=credentials.git_token, username=ctx.git_username,
                  askpass=write_askpass(runtime))
        return _run_task(ctx, git, credentials, environ=environ, runtime=runtime, result=result,
                         operator_keys=operator_keys, started=started)


def _run_task(
    ctx: Context, git: Git, credentials: Credentials, *, environ: Mapping[str, str], runtime: Path, result: Result,
    operator_keys: frozenset[str], started: float,
) -> int:
    checkout = ctx.repository.dir
    ensure_checkout(git, ctx.repository)
    if git.run("check-ref-format", "--branch", ctx.branch, cwd=checkout, check=False).returncode:
        raise ContextError(f"{ctx.branch!r} is not a valid branch name (check pullRequest.branchPrefix)")
    base = start_branch(git, checkout, ctx.branch)
    log(f"working on branch {ctx.branch} from {base[:12]}")
    _exclude_context_dir(git, checkout, ctx.dir)

    # The agent may rewrite .git/config (remotes, insteadOf, helpers): put ours back after it.
    config = git_path(git, checkout, "config")
    saved_config = _read(config)
    ctx.summary_file.unlink(missing_ok=True)
    cwd = _agent_cwd(ctx, checkout)
    argv, env, stdin_file = _agent_command(ctx, environ=environ, runtime=runtime, operator_keys=operator_keys)
    limit = _time_limit(ctx, started=started)
    run = run_agent(
        argv, cwd=cwd, env=env, stdin_file=stdin_file, stream=is_stream_json(argv),
        deadline=None if limit is None else limit[0], max_cost_usd=ctx.agent.options.max_cost_usd,
        session_file=None if ctx.agent.custom else ctx.dir / SESSION_FILE,
    )
    if saved_config is not None and _read(config) != saved_config:
        log("the agent changed the repository's git config; restoring it")
        config.write_bytes(saved_config)
    result.agent_exit_code = run.exit_code
    result.agent = run.stream.report() if run.stream is not None else None
    result.summary = _summary(ctx, run)
    failure, why = classify(AgentEnd(
        exit_code=run.exit_code, result=run.stream.result if run.stream else None,
        api_error=run.stream.api_error if run.stream else None, timed_out_after=run.timed_out_after,
        time_limit=None if limit is None else limit[1], stopped_at_cost=run.stopped_at_cost, start_error=run.error,
    ))
    if failure is not None:
        result.outcome, result.failure_class = Outcome.FAILED, failure
        result.error = REDACTOR.text(why or str(failure))
        log(f"the agent failed ({failure}): {result.error}")
        return int(EXIT_CODES[failure])

    if has_uncommitted_changes(git, checkout):
        message = runtime / "commit-message.txt"
        message.write_text(_commit_message(ctx, result.summary), encoding="utf-8")
        commit_all(git, checkout, message)
    head = git.out("rev-parse", "--verify", "HEAD", cwd=checkout)
    github = _github(ctx, credentials)
    if head == base:
        return _no_changes(ctx, github, result)

    result.changed_files = changed_files(git, checkout, base, head)
    log(f"committed {head[:12]} ({len(result.changed_files)} files changed)")
    push_branch(git, checkout, ctx.repository.url, ctx.branch)
    result.branch, result.commit, result.outcome = ctx.branch, head, Outcome.CHANGES_PUSHED
    if github is not None and ctx.pull_request.create:
        client, repo = github
        pull = client.create_pull(
            repo.owner, repo.repo, head=ctx.branch, base=ctx.repository.base_branch,
            title=_subject(ctx), body=_pull_body(ctx, result.summary), draft=ctx.pull_request.draft,
        )
        result.pull_request_url = str(pull.get("html_url") or "") or None
        result.outcome = Outcome.PULL_REQUEST_OPENED
        log(f"opened pull request {result.pull_request_url}")
    return int(ExitCode.OK)


def _no_changes(ctx: Context, github: tuple[GitHubClient, GitHubRepo] | None, result: Result) -> int:
    result.outcome = Outcome.NO_CHANGES
    log("the agent made no changes")
    if github is not None and ctx.issue is not None:
        client, repo = github
        answer = result.summary or "_The agent finished without an answer._"
        footer = f"AgentTask `{ctx.task.namespace}/{ctx.task.name}` made no changes to the repository."
        client.comment_issue(repo.owner, repo.repo, ctx.issue.number, f"{answer}\n\n---\n{footer}")
        log(f"commented the agent's answer on issue #{ctx.issue.number}")
    return int(ExitCode.OK)


def _github(ctx: Context, credentials: Credentials) -> tuple[GitHubClient, GitHubRepo] | None:
    """The API client and repository when GitHub is configured (API URL and task.json `github`)."""
    if ctx.api_url is None or ctx.github is None:
        return None
    return GitHubClient(api_url=ctx.api_url, token=credentials.github_token), ctx.github


def _time_limit(ctx: Context, *, started: float) -> tuple[float, str] | None:
    """(monotonic deadline, what set it) for the agent: the earlier of agent.timeoutSeconds
    (counted from the runner's start) and agent.deadline (wall clock), or None."""
    limits = []
    if ctx.agent.timeout_seconds is not None:
        limits.append((started + ctx.agent.timeout_seconds, "agent.timeoutSeconds"))
    if ctx.agent.deadline is not None:
        limits.append((time.monotonic() + (ctx.agent.deadline - time.time()), "agent.deadline"))
    return min(limits) if limits else None


def _agent_command(
    ctx: Context, *, environ: Mapping[str, str], runtime: Path, operator_keys: frozenset[str],
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and stdin of the agent: a custom command as it is (the prompt on stdin),
    or Claude Code set up headless, resuming its earlier session in this sandbox if there is one."""
    env = agent_env(environ, ctx)
    options = ctx.agent.options
    if ctx.agent.custom:
        if options != AgentOptions(max_cost_usd=options.max_cost_usd):
            log("agent.command is set: the Claude Code options of task.json are not applied to it")
        return list(ctx.agent.command), env, ctx.prompt_file
    stdin_file = ctx.prompt_file
    resume = session_to_resume(_read_text(ctx.dir / SESSION_FILE))
    if resume is not None:
        log(f"resuming the agent's session {resume} (an earlier run in this sandbox was interrupted)")
        stdin_file = runtime / "resume-prompt.md"
        stdin_file.write_text(RESUME_PROMPT, encoding="utf-8")
    dirs = AgentDirs.under(ctx.dir)
    for directory in (dirs.home, dirs.tmp):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    prompt_file: Path | None = None
    if options.append_system_prompt is not None:
        prompt_file = runtime / "append-system-prompt.md"
        prompt_file.write_text(options.append_system_prompt, encoding="utf-8", errors="surrogateescape")
    euid = os.geteuid()
    env = claude_env(env, dirs=dirs, operator_keys=operator_keys, euid=euid)
    if euid == 0 and env.get("IS_SANDBOX") == "1":
        log("running as root: IS_SANDBOX=1 lets Claude Code bypass permission prompts inside the sandbox")
    return claude_argv(ctx.agent.command, options, system_prompt_file=prompt_file, resume=resume), env, stdin_file


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:256]
    except OSError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _agent_cwd(ctx: Context, checkout: Path) -> Path:
    if ctx.agent.working_dir is None:
        return checkout
    path = checkout / ctx.agent.working_dir  # an absolute workingDir replaces the checkout
    if not path.is_dir():
        raise ContextError(f"agent.workingDir {path} is not a directory")
    return path


def _exclude_context_dir(git: Git, checkout: Path, ctx_dir: Path) -> None:
    """Keep the context dir (prompt, result.json, runner.pyz) out of commits if it is inside the checkout."""
    if not ctx_dir.is_relative_to(checkout):
        return
    exclude = git_path(git, checkout, "info/exclude")
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as f:
        f.write(f"\n/{ctx_dir.relative_to(checkout).as_posix()}/\n")


def _summary(ctx: Context, run: AgentRun) -> str:
    """summary.md if the agent wrote one, else its result text (stream-json) or the tail of its
    stdout; redacted, ≤ 4 KiB."""
    try:
        written = ctx.summary_file.read_bytes().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        written = ""
    except OSError as e:
        log(f"ignoring {ctx.summary_file}: {e}")
        written = ""
    if written:
        return REDACTOR.text(clip(written, keep="head"))
    if run.stream is not None:
        return REDACTOR.text(clip(run.stream.summary().strip(), keep="head"))
    return REDACTOR.text(clip(run.stdout_tail.decode("utf-8", "replace"), keep="tail").strip())


def _subject(ctx: Context) -> str:
    if ctx.issue is None:
        return f"AgentTask {ctx.task.namespace}/{ctx.task.name}"
    title = " ".join(ctx.issue.title.split())[:TITLE_CHARS]
    return f"Fix #{ctx.issue.number}: {title}" if title else f"Fix #{ctx.issue.number}"


def _commit_message(ctx: Context, summary: str) -> str:
    parts = [_subject(ctx), summary, f"AgentTask-UID: {ctx.task.uid}"]
    return "\n\n".join(p for p in parts if p) + "\n"


def _pull_body(ctx: Context, summary: str) -> str:
    parts = [
        f"Closes #{ctx.issue.number}" if ctx.issue else "",
        summary,
        f"---\nOpened by AgentTask `{ctx.task.namespace}/{ctx.task.name}` (attempt {ctx.task.attempt}).",
    ]
    return "\n\n".join(p for p in parts if p)


def _save(ctx_dir: Path, result: Result) -> None:
    if not ctx_dir.is_dir():
        log(f"cannot write result.json: {ctx_dir} is not a directory")
        return
    try:
        write_result(ctx_dir / "result.json", result, redact=REDACTOR.text)
    except OSError as e:
        log(f"cannot write result.json: {e}")
