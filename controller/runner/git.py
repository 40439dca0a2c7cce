"""Git for the runner: the askpass helper, a hardened `git` invocation, and the few operations
the runner needs (clone, branch, status, commit, push, diff).

Credentials: the token reaches git only as an environment variable of the git processes that
talk to the remote (`auth=True`: clone and push), read back by a tiny askpass script written
to a private 0700 directory. The token is asked for anew for every such process (see
`credentials`), so a token the operator refreshed during the run is the one the push uses.
It is never in a URL, in argv, in `.git/config` or in a log line,
and local commands (status, add, commit) do not get it at all. Every invocation disables hooks,
credential helpers and fsmonitor from the command line, because the agent can edit the
repository's configuration and hooks before the runner commits and pushes.

This module does not decide *whether* to commit or push; `main` does.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .context import SECRET_ENV, RepositorySpec
from .errors import GitError, GitPushError
from .log import REDACTOR, log

ASKPASS_PASSWORD_ENV = "AGENTTASK_ASKPASS_PASSWORD"  # noqa: S105 (a variable name)
ASKPASS_USERNAME_ENV = "AGENTTASK_ASKPASS_USERNAME"
# printf is a builtin of every POSIX sh (dash, bash, ash), so the token is not in any argv.
ASKPASS_SCRIPT = """#!/bin/sh
# Written by the AgentTask runner: answers git's credential prompts from the environment of
# the git process, so the token is never in a URL, an argv or a config file.
case "$1" in
  [Uu]sername*) printf '%s\\n' "$AGENTTASK_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$AGENTTASK_ASKPASS_PASSWORD" ;;
esac
"""
# Command-line config wins over anything the agent may have written into the repository.
HARDENING = ("-c", "core.hooksPath=/dev/null", "-c", "credential.helper=", "-c", "core.fsmonitor=false")
GIT_TIMEOUT_SECONDS = 900.0
DEFAULT_NAME = "AgentTask"
DEFAULT_EMAIL = "agenttask@users.noreply.invalid"
PUSH_ATTEMPTS = 3
PUSH_RETRY_SECONDS = 1.0  # doubled after each failed attempt


def write_askpass(directory: Path) -> Path:
    """Write the askpass helper (mode 0700) into `directory`, which should itself be private."""
    path = directory / "askpass.sh"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(ASKPASS_SCRIPT)
    return path


class Git:
    """Runs `git` with a cleaned, hardened environment; credentials only when `auth=True`."""

    def __init__(
        self, *, environ: Mapping[str, str], token: Callable[[], str | None], username: str,
        askpass: Path | None,
    ) -> None:
        drop = SECRET_ENV | {ASKPASS_PASSWORD_ENV, ASKPASS_USERNAME_ENV, "GIT_ASKPASS", "SSH_ASKPASS"}
        self._base_env = {k: v for k, v in environ.items() if k not in drop}
        self._base_env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a terminal that is not there
        self._token = token
        self._username = username
        self._askpass = askpass

    def env(self, *, auth: bool) -> dict[str, str]:
        env = dict(self._base_env)
        token = self._token() if auth and self._askpass else None  # fresh: it may have been refreshed
        if token and self._askpass:
            env["GIT_ASKPASS"] = str(self._askpass)
            env[ASKPASS_USERNAME_ENV] = self._username
            env[ASKPASS_PASSWORD_ENV] = token
        return env

    def run(
        self, *args: str, cwd: Path, auth: bool = False, check: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        env = self.env(auth=auth)
        env.update(extra_env or {})
        try:
            done = subprocess.run(
                ["git", *HARDENING, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                capture_output=True, timeout=GIT_TIMEOUT_SECONDS, check=False,
            )
        except FileNotFoundError as e:
            raise GitError("git is not installed in the sandbox") from e
        except subprocess.TimeoutExpired as e:
            raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT_SECONDS:.0f}s") from e
        if check and done.returncode != 0:
            stderr = REDACTOR.text(done.stderr.decode("utf-8", "replace").strip())[-2000:]
            raise GitError(f"git {args[0]} failed (exit {done.returncode}): {stderr}")
        return done

    def out(self, *args: str, cwd: Path) -> str:
        return self.run(*args, cwd=cwd).stdout.decode("utf-8", "replace").strip()


def ensure_checkout(git: Git, repo: RepositorySpec) -> None:
    """Use `repo.dir` if it is already a git checkout, else clone `repo.url` at the base branch."""
    if (repo.dir / ".git").exists():
        log(f"using the existing checkout at {repo.dir}")
        return
    repo.dir.parent.mkdir(parents=True, exist_ok=True)
    log(f"cloning {repo.url} ({repo.base_branch}) into {repo.dir}")
    git.run(
        "clone", "--quiet", "--branch", repo.base_branch, "--", repo.url, str(repo.dir),
        cwd=repo.dir.parent, auth=True,
    )


def start_branch(git: Git, checkout: Path, branch: str) -> str:
    """Create (or reset) `branch` at the current HEAD and switch to it; return that commit."""
    base = git.out("rev-parse", "--verify", "HEAD", cwd=checkout)
    git.run("checkout", "--quiet", "-B", branch, cwd=checkout)
    return base


def git_path(git: Git, checkout: Path, name: str) -> Path:
    """The path of `name` inside the repository's git directory (`git rev-parse --git-path`)."""
    return checkout / git.out("rev-parse", "--git-path", name, cwd=checkout)


def has_uncommitted_changes(git: Git, checkout: Path) -> bool:
    """True if the working tree differs from HEAD, untracked (not ignored) files included."""
    done = git.run("status", "--porcelain=v1", "-z", "--untracked-files=all", cwd=checkout)
    return bool(done.stdout)


def commit_all(git: Git, checkout: Path, message_file: Path) -> str:
    """Stage everything and commit with the message in `message_file`; return the new HEAD."""
    git.run("add", "--all", cwd=checkout)
    identity: dict[str, str] = {}
    configured = all(
        git.run("config", "--get", key, cwd=checkout, check=False).stdout.strip()
        for key in ("user.name", "user.email")
    )
    if not configured:
        identity = {
            "GIT_AUTHOR_NAME": DEFAULT_NAME, "GIT_AUTHOR_EMAIL": DEFAULT_EMAIL,
            "GIT_COMMITTER_NAME": DEFAULT_NAME, "GIT_COMMITTER_EMAIL": DEFAULT_EMAIL,
        }
    git.run(
        "commit", "--quiet", "--cleanup=whitespace", "-F", str(message_file),
        cwd=checkout, extra_env=identity,
    )
    return git.out("rev-parse", "--verify", "HEAD", cwd=checkout)


def changed_files(git: Git, checkout: Path, base: str, head: str) -> list[str]:
    done = git.run("diff", "--name-only", "-z", "--no-renames", base, head, "--", cwd=checkout)
    return [name.decode("utf-8", "replace") for name in done.stdout.split(b"\0") if name]


def push_branch(
    git: Git, checkout: Path, url: str, branch: str, *, sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Push HEAD to `branch` at `url` (the task's repository, not whatever origin now says).

    The branch belongs to this task (its name carries the task uid), so a retry overwrites
    what an earlier attempt pushed; that makes retrying safe. A failed push is tried again
    (`PUSH_ATTEMPTS` in all, 1 s then 2 s apart) with the token read afresh, which rides out a
    network blip and a token file replaced at that very moment; then it raises `GitPushError`.
    """
    log(f"pushing {branch} to {url}")
    delay = PUSH_RETRY_SECONDS
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            git.run(
                "push", "--quiet", "--no-recurse-submodules", "--", url, f"+HEAD:refs/heads/{branch}",
                cwd=checkout, auth=True,
            )
            return
        except GitError as e:
            if attempt == PUSH_ATTEMPTS:
                raise GitPushError(str(e)) from e
            log(f"{e}; retrying in {delay:.0f}s (attempt {attempt}/{PUSH_ATTEMPTS})")
            sleep(delay)
            delay *= 2
