"""Exit codes and the one exception hierarchy of the in-sandbox runner.

Every failure the runner anticipates is a `RunnerError` subclass that carries the process exit
code it maps to; `main` turns it into a `Failed` result.json and that exit code. This module
does no I/O. The agent's own non-zero exit is not an exception: it is an outcome, and the
runner exits with the agent's code (see `controller.runner` for the full table).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the runner (sysexits.h where one fits)."""

    OK = 0
    BAD_CONTEXT = 64  # EX_USAGE: task.json / prompt.md / issue.md missing or malformed
    GITHUB = 69  # EX_UNAVAILABLE: the GitHub REST API refused or kept failing
    INTERNAL = 70  # EX_SOFTWARE: a bug in the runner
    GIT = 74  # EX_IOERR: clone, branch, commit or push failed


class RunnerError(Exception):
    """A failure the runner reports in result.json and maps to an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ContextError(RunnerError):
    """The context directory the operator uploaded is missing something or is malformed."""

    exit_code = ExitCode.BAD_CONTEXT


class GitError(RunnerError):
    """A git command failed (its stderr is in the message, redacted)."""

    exit_code = ExitCode.GIT


class GitHubError(RunnerError):
    """The GitHub REST API answered with an error, or kept failing after retries."""

    exit_code = ExitCode.GITHUB
