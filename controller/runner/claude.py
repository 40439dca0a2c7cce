"""The default agent, Claude Code: its argv and its environment, as pure functions.

argv: `claude -p --output-format stream-json --verbose` plus
  * the permission mode: `bypassPermissions` (every tool runs without a prompt: the sandbox is the
    boundary), or `dontAsk` when `agent.allowedTools` is set, which makes that list a whitelist:
    the named tools and rules run, anything else is denied and shows in `permission_denials`;
  * `--resume <session id>` when an earlier run in this sandbox recorded its session
    (`SESSION_FILE`): a resumed task continues its conversation;
  * `--model`, `--max-turns`, `--allowedTools …`, `--disallowedTools …` (deny rules win in every
    mode), `--append-system-prompt-file <file>`, `--mcp-config <file> --strict-mcp-config` (only
    the operator's MCP servers), `--max-budget-usd` for `agent.maxCostUsd`.
  Everything is an argv element; no shell ever sees it. Values that would read as flags are
  refused earlier (`context`).

environment (on top of the runner's, which already lacks the token variables):
  * no traffic but the Messages API: CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, DISABLE_AUTOUPDATER,
    DISABLE_TELEMETRY, DISABLE_ERROR_REPORTING = 1;
  * fail fast: CLAUDE_CODE_MAX_RETRIES = 4 (a bad key or a dead endpoint ends the run in ~10 s
    instead of ~3 min; a short API blip is still ridden out);
  * nothing written outside the checkout and the context dir: HOME, XDG_{CONFIG,CACHE,DATA,STATE}_HOME
    under `<ctx>/home` (Claude Code keeps its session transcripts there, so a later run can
    `--resume` the session), TMPDIR and CLAUDE_CODE_TMPDIR = `<ctx>/tmp`;
  * IS_SANDBOX=1 when the runner runs as uid 0 (Claude Code refuses bypassPermissions as root
    otherwise; a root runner only exists inside a sandbox, e.g. the embedded server's plain mode).
Values the operator set in env.json win over all of these; values the sandbox image set only win
over the fail-fast and no-traffic defaults (which the image's ENV carries too).

This module does not start processes and does not read files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .context import AgentOptions

MAX_RETRIES = "4"
QUIET_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_MAX_RETRIES": MAX_RETRIES,
}
HOME_DIR = "home"
TMP_DIR = "tmp"
SESSION_FILE = "agent-session-id"
"""In the context dir: the id of the Claude Code session this attempt started (written as soon as
the stream names it). A later run in the same sandbox (the task was suspended and resumed, or the
runner was restarted) resumes that conversation with `--resume` instead of starting over."""
RESUME_PROMPT = (
    "Your session was interrupted (the sandbox was stopped, for example because the task was "
    "suspended) and has now been resumed with the same checkout. Continue the task from where you "
    "left off; do not start over.\n"
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,127}$")


def session_to_resume(text: str | None) -> str | None:
    """The session id recorded in `SESSION_FILE`, if it looks like one (else None: start afresh)."""
    value = (text or "").strip()
    return value if _SESSION_ID.match(value) else None


@dataclass(frozen=True)
class AgentDirs:
    """The directories under the context dir the default agent writes to."""

    home: Path
    tmp: Path

    @classmethod
    def under(cls, ctx_dir: Path) -> AgentDirs:
        return cls(home=ctx_dir / HOME_DIR, tmp=ctx_dir / TMP_DIR)


def claude_argv(base: tuple[str, ...], options: AgentOptions, *, system_prompt_file: Path | None,
                resume: str | None = None) -> list[str]:
    """`base` (the default command) plus the permission mode and the flags for `options`; with
    `resume`, the conversation of that session goes on (`--resume <id>`)."""
    argv = list(base)
    if resume is not None:
        argv += ["--resume", resume]
    if options.allowed_tools is not None:
        argv += ["--permission-mode", "dontAsk"]
        if options.allowed_tools:
            argv += ["--allowedTools", *options.allowed_tools]
    else:
        argv += ["--permission-mode", "bypassPermissions"]
    if options.disallowed_tools:
        argv += ["--disallowedTools", *options.disallowed_tools]
    if options.model is not None:
        argv += ["--model", options.model]
    if options.max_turns is not None:
        argv += ["--max-turns", str(options.max_turns)]
    if options.max_cost_usd is not None:
        argv += ["--max-budget-usd", _decimal(options.max_cost_usd)]
    if system_prompt_file is not None:
        argv += ["--append-system-prompt-file", str(system_prompt_file)]
    if options.mcp_config is not None:
        argv += ["--mcp-config", str(options.mcp_config), "--strict-mcp-config"]
    return argv


def claude_env(
    env: Mapping[str, str], *, dirs: AgentDirs, operator_keys: frozenset[str], euid: int,
) -> dict[str, str]:
    """`env` with the default agent's settings; keys in `operator_keys` (env.json) are kept as set."""
    result = {k: v for k, v in QUIET_ENV.items() if k not in env} | dict(env)
    home = str(dirs.home)
    placed = {
        "HOME": home,
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_DATA_HOME": f"{home}/.local/share",
        "XDG_STATE_HOME": f"{home}/.local/state",
        "TMPDIR": str(dirs.tmp),
        "CLAUDE_CODE_TMPDIR": str(dirs.tmp),
    }
    if euid == 0:
        placed["IS_SANDBOX"] = "1"
    result.update({k: v for k, v in placed.items() if k not in operator_keys})
    return result


def is_stream_json(argv: tuple[str, ...] | list[str]) -> bool:
    """True if this argv asks Claude Code for stream-json output (then the runner parses it)."""
    for i, arg in enumerate(argv):
        if arg == "--output-format=stream-json":
            return True
        if arg == "--output-format" and i + 1 < len(argv) and argv[i + 1] == "stream-json":
            return True
    return False


def _decimal(value: float) -> str:
    """A plain decimal (no exponent) that Claude Code's number parsing accepts."""
    return f"{value:.10f}".rstrip("0").rstrip(".") or "0"
