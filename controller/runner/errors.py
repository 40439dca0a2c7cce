"""Exit codes, failure classes and the one exception hierarchy of the in-sandbox runner.

Every way a run can fail has a `FailureClass` (written to result.json as `failureClass`) and its
own process exit code, so the operator can tell them apart from either. Failures the runner
anticipates in its own steps are `RunnerError` subclasses carrying their class; `main` turns
them into a `Failed` result.json and the class's exit code. The agent's own failure is not an
exception: `classify` decides its class from what the agent printed and how it ended. This
module does no I/O.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class FailureClass(StrEnum):
    """Why a run failed (result.json `failureClass`); the operator maps these to status reasons."""

    BAD_CONTEXT = "BadContext"  # task.json / prompt.md / issue.md / agent options missing or malformed
    AGENT_FAILED = "AgentFailed"  # the agent reported an error (is_error) or exited non-zero
    AGENT_TIMED_OUT = "AgentTimedOut"  # the runner stopped the agent at agent.timeoutSeconds
    LIMIT_REACHED = "LimitReached"  # agent.maxTurns or agent.maxCostUsd reached
    MODEL_AUTH_FAILED = "ModelAuthFailed"  # the model API refused the key (401/403, no key)
    MODEL_UNAVAILABLE = "ModelUnavailable"  # the model API kept failing (5xx, 429, unreachable)
    GITHUB_FAILED = "GitHubFailed"  # the GitHub REST API refused or kept failing
    RUNNER_BUG = "RunnerBug"  # an unanticipated error in the runner itself
    GIT_FAILED = "GitFailed"  # clone, branch or commit failed
    GIT_PUSH_FAILED = "GitPushFailed"  # the push was refused (expired token, protected branch, ...)


class ExitCode(IntEnum):
    """Process exit codes of the runner: 0, or one per failure class (64-74, sysexits' range)."""

    OK = 0
    BAD_CONTEXT = 64
    AGENT_FAILED = 65
    AGENT_TIMED_OUT = 66
    LIMIT_REACHED = 67
    MODEL_AUTH_FAILED = 68
    GITHUB = 69
    INTERNAL = 70
    MODEL_UNAVAILABLE = 71
    GIT = 73
    GIT_PUSH = 74


EXIT_CODES: dict[FailureClass, ExitCode] = {
    FailureClass.BAD_CONTEXT: ExitCode.BAD_CONTEXT,
    FailureClass.AGENT_FAILED: ExitCode.AGENT_FAILED,
    FailureClass.AGENT_TIMED_OUT: ExitCode.AGENT_TIMED_OUT,
    FailureClass.LIMIT_REACHED: ExitCode.LIMIT_REACHED,
    FailureClass.MODEL_AUTH_FAILED: ExitCode.MODEL_AUTH_FAILED,
    FailureClass.MODEL_UNAVAILABLE: ExitCode.MODEL_UNAVAILABLE,
    FailureClass.GITHUB_FAILED: ExitCode.GITHUB,
    FailureClass.RUNNER_BUG: ExitCode.INTERNAL,
    FailureClass.GIT_FAILED: ExitCode.GIT,
    FailureClass.GIT_PUSH_FAILED: ExitCode.GIT_PUSH,
}


class RunnerError(Exception):
    """A failure the runner reports in result.json and maps to a failure class and exit code."""

    failure_class: FailureClass = FailureClass.RUNNER_BUG

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.failure_class]


class ContextError(RunnerError):
    """The context directory the operator uploaded is missing something or is malformed."""

    failure_class = FailureClass.BAD_CONTEXT


class GitError(RunnerError):
    """A git command failed (its stderr is in the message, redacted)."""

    failure_class = FailureClass.GIT_FAILED


class GitPushError(GitError):
    """`git push` failed after its retries."""

    failure_class = FailureClass.GIT_PUSH_FAILED


class GitHubError(RunnerError):
    """The GitHub REST API answered with an error, or kept failing after retries."""

    failure_class = FailureClass.GITHUB_FAILED
