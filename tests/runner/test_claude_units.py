"""Unit tests of the pure parts of the Claude Code support: stream parser, classifier, argv and env."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from controller.runner import agent
from controller.runner.classify import AgentEnd, classify
from controller.runner.claude import (
    QUIET_ENV,
    AgentDirs,
    claude_argv,
    claude_env,
    is_stream_json,
    session_to_resume,
)
from controller.runner.context import DEFAULT_AGENT_COMMAND, AgentOptions, load_context
from controller.runner.errors import EXIT_CODES, ContextError, ExitCode, FailureClass
from controller.runner.stream import StreamParser

SESSION = "0b5e2c1e-0000-4000-8000-000000000001"


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


def result_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "result", "subtype": "success", "is_error": False, "result": "Done.", "session_id": SESSION,
        "num_turns": 3, "duration_ms": 1234, "total_cost_usd": 0.5, "terminal_reason": "completed",
        "api_error_status": None,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 30,
                  "cache_creation_input_tokens": 40, "server_tool_use": {}},
        "modelUsage": {"claude-haiku-x": {"costUSD": 0.1}, "claude-opus-x": {"costUSD": 0.4}},
        "permission_denials": [],
    }
    return base | fields


# ------------------------------------------------------------------------------ stream parser


def test_progress_lines_for_a_conversation() -> None:
    parser = StreamParser()
    events = [
        {"type": "system", "subtype": "init", "session_id": SESSION, "model": "claude-opus-x",
         "permissionMode": "bypassPermissions", "claude_code_version": "2.1.332",
         "mcp_servers": [{"name": "docs", "status": "connected"}]},
        {"type": "assistant", "message": {"content": [
            {"type": "thinking", "thinking": "secret plan"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "t1", "name": "Bash",
             "input": {"command": "pytest   -q\ntests/", "description": "x"}},
        ]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "\n".join(f"line {i}" for i in range(30))},
        ]}},
        {"type": "system", "subtype": "permission_denied", "tool_name": "Write", "message": "nope"},
        {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 4, "retry_delay_ms": 600,
         "error_status": 529, "error": "overloaded"},
        {"type": "stream_event", "event": {"type": "ping"}},
        result_event(),
    ]

    lines = [text for event in events for text in parser.feed(line(event))]

    assert lines[0] == ("agent: started: session " + SESSION + ", model claude-opus-x, permission mode "
                        "bypassPermissions, claude-code 2.1.332, MCP servers docs (connected)")
    assert lines[1:3] == ["agent: Let me look.", "agent: → Bash: pytest -q tests/"]
    assert lines[3] == "agent: ← Bash: line 0"
    assert lines[3 + 19] == "agent:   line 19"
    assert lines[3 + 20] == "agent:   … (30 lines, 229 characters in all)"
    assert "secret plan" not in "\n".join(lines)
    assert "agent: permission denied: Write: nope" in lines
    assert "agent: model API error 529 (overloaded); retry 1/4 in 0.6s" in lines
    assert lines[-1].startswith("agent: finished (ok, completed): 3 turns, 1.2s, cost $0.5000 (estimate); "
                                "tokens in 10, out 20, cache read 30, cache write 40")


def test_report_from_the_result_event() -> None:
    parser = StreamParser()
    parser.feed(line({"type": "system", "subtype": "init", "session_id": SESSION, "model": "claude-opus-x"}))
    denial = {"tool_name": "Bash", "tool_use_id": "t", "tool_input": {"command": "x" * 2000}}
    parser.feed(line(result_event(permission_denials=[denial, "junk"])))

    report = parser.report()

    assert report is not None
    doc = report.to_json()
    assert doc["isError"] is False
    assert doc["sessionId"] == SESSION
    assert doc["numTurns"] == 3
    assert doc["durationMs"] == 1234
    assert doc["costUsd"] == 0.5
    assert doc["model"] == "claude-opus-x"
    assert doc["models"] == ["claude-opus-x", "claude-haiku-x"]  # by cost, highest first
    assert doc["usage"] == {"inputTokens": 10, "outputTokens": 20, "cacheReadInputTokens": 30,
                            "cacheCreationInputTokens": 40}
    [only] = doc["permissionDenials"]
    assert only["tool"] == "Bash"
    assert len(only["input"]) == 501 and only["input"].endswith("…")
    assert parser.summary() == "Done."


def test_no_result_means_no_report_and_the_last_text_is_the_summary() -> None:
    parser = StreamParser()
    parser.feed(line({"type": "assistant", "message": {"content": [{"type": "text", "text": "Working on it"}]}}))
    parser.feed(line({"type": "assistant", "message": {"content": [{"type": "text", "text": "  "}]}}))

    assert parser.report() is None
    assert parser.summary() == "Working on it"
    assert parser.cost_seen is None


@pytest.mark.parametrize("raw", [b"plain text\n", b"[1, 2]\n", b'{"type": "result", "usage": 3, "num_turns": "x",'
                                 b' "modelUsage": [], "permission_denials": {}}\n', b"\xff\xfe\n"])
def test_odd_lines_never_raise(raw: bytes) -> None:
    parser = StreamParser()

    lines = parser.feed(raw)

    assert isinstance(lines, list)
    report = parser.report()
    if report is not None:
        assert report.num_turns is None and report.usage.input_tokens == 0 and report.permission_denials == ()


def test_api_error_messages_are_remembered() -> None:
    parser = StreamParser()
    parser.feed(line({"type": "assistant", "error": "authentication_failed", "is_api_error_message": True,
                      "message": {"content": [{"type": "text", "text": "Invalid API key"}]}}))

    assert parser.api_error == "authentication_failed"


def test_over_long_stream_lines_are_skipped_with_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "STREAM_LINE_LIMIT", 1024)
    huge = line({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t",
                                                          "content": "x" * 10_000}]}})
    src = io.BytesIO(huge + line(result_event()) + b"no newline at the end")
    dst = io.BytesIO()
    parser = StreamParser()

    agent._pump_stream(src, dst, parser, None)

    printed = dst.getvalue().decode()
    assert "xxxx" not in printed
    assert "agent: finished (ok" in printed
    assert printed.endswith("no newline at the end\n")
    assert parser.summary() == "Done."


# -------------------------------------------------------------------------------- classifier


@pytest.mark.parametrize(("end", "cls", "message"), [
    (AgentEnd(0, result_event()), None, None),
    (AgentEnd(0), None, None),  # a custom agent with text output
    (AgentEnd(3), FailureClass.AGENT_FAILED, "the agent exited with code 3"),
    (AgentEnd(0, result_event(is_error=True, result="boom")), FailureClass.AGENT_FAILED,
     "the agent reported an error: boom"),
    (AgentEnd(1, result_event(is_error=True, subtype="success", terminal_reason="api_error", api_error_status=401,
                              result="Invalid API key")),
     FailureClass.MODEL_AUTH_FAILED, "the model API refused the credentials (HTTP 401): Invalid API key"),
    (AgentEnd(1, result_event(is_error=True, terminal_reason="api_error", result="Not logged in"),
              api_error="authentication_failed"), FailureClass.MODEL_AUTH_FAILED,
     "the model API refused the credentials: Not logged in"),
    (AgentEnd(1, result_event(is_error=True, terminal_reason="api_error", api_error_status=500, result="API Error")),
     FailureClass.MODEL_UNAVAILABLE, "the model API kept failing (HTTP 500): API Error"),
    (AgentEnd(1, result_event(is_error=True, terminal_reason="api_error", api_error_status=None, result="refused")),
     FailureClass.MODEL_UNAVAILABLE, "the model API kept failing: refused"),
    (AgentEnd(1, result_event(is_error=True, terminal_reason="api_error", api_error_status=400, result="too long")),
     FailureClass.AGENT_FAILED, "the agent reported an error: too long"),
    (AgentEnd(1, result_event(is_error=True, subtype="error_max_turns", terminal_reason="max_turns", errors=[])),
     FailureClass.LIMIT_REACHED, "the agent reached agent.maxTurns: limit reached"),
    (AgentEnd(1, result_event(is_error=True, subtype="error_max_budget_usd", errors=["Reached maximum budget ($1)"])),
     FailureClass.LIMIT_REACHED, "the agent reached agent.maxCostUsd: Reached maximum budget ($1)"),
    (AgentEnd(143, timed_out_after=600, time_limit="agent.timeoutSeconds"), FailureClass.AGENT_TIMED_OUT,
     "the agent did not finish within agent.timeoutSeconds (600s) and was stopped"),
    (AgentEnd(143, timed_out_after=-3, time_limit="agent.deadline"), FailureClass.AGENT_TIMED_OUT,
     "the agent did not finish within agent.deadline (0s) and was stopped"),
    (AgentEnd(143, result_event(total_cost_usd=7.0), stopped_at_cost=7.0), FailureClass.LIMIT_REACHED,
     "the agent was stopped: its reported cost $7.0000 passed agent.maxCostUsd"),
    (AgentEnd(127, start_error="agent command not found: claude"), FailureClass.AGENT_FAILED,
     "agent command not found: claude"),
    # is_error wins over the exit code, both ways
    (AgentEnd(0, result_event(is_error=True, result="")), FailureClass.AGENT_FAILED, "the agent reported an error"),
    (AgentEnd(2, result_event()), FailureClass.AGENT_FAILED, "the agent exited with code 2"),
])
def test_classify(end: AgentEnd, cls: FailureClass | None, message: str | None) -> None:
    assert classify(end) == (cls, message)


def test_every_failure_class_has_its_own_exit_code() -> None:
    assert set(EXIT_CODES) == set(FailureClass)
    codes = list(EXIT_CODES.values())
    assert len(set(codes)) == len(codes)
    assert ExitCode.OK not in codes


# --------------------------------------------------------------------------- argv and env


def test_default_argv_bypasses_prompts() -> None:
    assert claude_argv(DEFAULT_AGENT_COMMAND, AgentOptions(), system_prompt_file=None) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"]


def test_resume_continues_the_recorded_session() -> None:
    argv = claude_argv(DEFAULT_AGENT_COMMAND, AgentOptions(), system_prompt_file=None,
                       resume="f506f506-0916-48c7-a3d3-48d4e0987a34")
    assert argv[5:7] == ["--resume", "f506f506-0916-48c7-a3d3-48d4e0987a34"]


@pytest.mark.parametrize(("text", "session"), [
    ("f506f506-0916-48c7-a3d3-48d4e0987a34\n", "f506f506-0916-48c7-a3d3-48d4e0987a34"),
    (None, None), ("", None), ("--dangerously-skip-permissions", None), ("a b", None), ("x" * 200, None),
])
def test_only_a_session_shaped_record_is_resumed(text: str | None, session: str | None) -> None:
    assert session_to_resume(text) == session  # never a flag, never free text, as an argv element


def test_every_option_maps_to_its_flag() -> None:
    options = AgentOptions(
        model="claude-sonnet-x", max_turns=30, allowed_tools=("Read", "Bash(npm test:*)"),
        disallowed_tools=("WebFetch",), append_system_prompt="ignored: travels as a file",
        mcp_config=Path("/ctx/mcp.json"), max_cost_usd=2.5,
    )

    argv = claude_argv(DEFAULT_AGENT_COMMAND, options, system_prompt_file=Path("/run/prompt.md"))

    assert argv[len(DEFAULT_AGENT_COMMAND):] == [
        "--permission-mode", "dontAsk", "--allowedTools", "Read", "Bash(npm test:*)",
        "--disallowedTools", "WebFetch", "--model", "claude-sonnet-x", "--max-turns", "30",
        "--max-budget-usd", "2.5", "--append-system-prompt-file", "/run/prompt.md",
        "--mcp-config", "/ctx/mcp.json", "--strict-mcp-config",
    ]
    assert is_stream_json(argv)


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (0.1, "0.1"), (12.3456789, "12.3456789"), (1e-9, "0.000000001")])
def test_budget_is_a_plain_decimal(value: float, text: str) -> None:
    argv = claude_argv(("claude",), AgentOptions(max_cost_usd=value), system_prompt_file=None)

    assert argv[argv.index("--max-budget-usd") + 1] == text


@pytest.mark.parametrize(("argv", "stream"), [
    (["claude", "-p", "--output-format", "stream-json", "--verbose"], True),
    (["claude", "-p", "--output-format=stream-json"], True),
    (["claude", "-p", "--output-format", "text"], False),
    (["my-agent", "stream-json"], False),
    (["claude", "--output-format"], False),
])
def test_is_stream_json(argv: list[str], stream: bool) -> None:
    assert is_stream_json(argv) is stream


def test_env_points_everything_into_the_context_dir() -> None:
    dirs = AgentDirs.under(Path("/ctx"))
    inherited = {"HOME": "/home/daytona", "TMPDIR": "/tmp", "PATH": "/usr/bin", "CLAUDE_CODE_MAX_RETRIES": "9"}

    env = claude_env(inherited, dirs=dirs, operator_keys=frozenset(), euid=1001)

    assert env["HOME"] == "/ctx/home"
    assert env["XDG_CONFIG_HOME"] == "/ctx/home/.config"
    assert env["XDG_CACHE_HOME"] == "/ctx/home/.cache"
    assert env["XDG_DATA_HOME"] == "/ctx/home/.local/share"
    assert env["XDG_STATE_HOME"] == "/ctx/home/.local/state"
    assert env["TMPDIR"] == env["CLAUDE_CODE_TMPDIR"] == "/ctx/tmp"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == env["DISABLE_TELEMETRY"] == env["DISABLE_ERROR_REPORTING"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "9"  # the image or the operator chose: kept
    assert env["PATH"] == "/usr/bin"
    assert "IS_SANDBOX" not in env


def test_env_as_root_sets_is_sandbox_and_operator_values_win() -> None:
    env = claude_env({"HOME": "/op/home", "PATH": "/bin"}, dirs=AgentDirs.under(Path("/ctx")),
                     operator_keys=frozenset({"HOME"}), euid=0)

    assert env["IS_SANDBOX"] == "1"
    assert env["HOME"] == "/op/home"
    assert env["TMPDIR"] == "/ctx/tmp"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "4"


# ------------------------------------------------------------------------- task.json options


def _load(tmp_path: Path, agent_doc: dict[str, Any]) -> AgentOptions:
    ctx = tmp_path / "agenttask"
    ctx.mkdir(exist_ok=True)
    (ctx / "prompt.md").write_text("Fix it.")
    (ctx / "task.json").write_text(json.dumps({
        "task": {"namespace": "ns", "name": "t", "uid": "u-1", "attempt": 1},
        "repository": {"url": "https://github.com/acme/widgets.git", "baseBranch": "main", "dir": "repo"},
        "agent": agent_doc,
    }))
    return load_context({}, tmp_path).agent.options


def test_agent_options_are_read(tmp_path: Path) -> None:
    (tmp_path / "agenttask").mkdir()
    (tmp_path / "agenttask" / "mcp.json").write_text("{}")

    options = _load(tmp_path, {"command": None, "model": "m", "maxTurns": 5, "allowedTools": [],
                               "disallowedTools": ["WebFetch"], "appendSystemPrompt": "Be brief.",
                               "mcpConfig": "mcp.json", "maxCostUsd": 3, "timeoutSeconds": 60})

    assert load_context({}, tmp_path).agent.timeout_seconds == 60.0
    assert options == AgentOptions(model="m", max_turns=5, allowed_tools=(), disallowed_tools=("WebFetch",),
                                   append_system_prompt="Be brief.", mcp_config=tmp_path / "agenttask" / "mcp.json",
                                   max_cost_usd=3.0)


@pytest.mark.parametrize(("agent_doc", "message"), [
    ({"maxTurns": 0}, "agent.maxTurns must be between 1 and"),
    ({"maxTurns": 1.5}, "agent.maxTurns must be an integer"),
    ({"model": "--dangerously-skip-permissions"}, "agent.model must be a model name"),
    ({"model": ""}, "agent.model must be a model name"),
    ({"allowedTools": ["Read", "--verbose"]}, "agent.allowedTools must be a list of tool names"),
    ({"allowedTools": ["Read", " "]}, "agent.allowedTools must be a list of tool names"),
    ({"disallowedTools": "Bash"}, "agent.disallowedTools must be a list of tool names"),
    ({"mcpConfig": "../task.json"}, "agent.mcpConfig must be a file name relative to the context directory"),
    ({"mcpConfig": "/etc/passwd"}, "agent.mcpConfig must be a file name relative to the context directory"),
    ({"mcpConfig": "mcp.json"}, "mcp.json does not exist"),
    ({"maxCostUsd": -1}, "agent.maxCostUsd must be a positive number"),
    ({"maxCostUsd": True}, "agent.maxCostUsd must be a positive number"),
    ({"maxCostUsd": float("nan")}, "agent.maxCostUsd must be a positive number"),
    ({"timeoutSeconds": "60"}, "agent.timeoutSeconds must be a positive number"),
    ({"appendSystemPrompt": ["x"]}, "agent.appendSystemPrompt must be a string"),
    ({"deadline": "tomorrow"}, "agent.deadline must be an RFC 3339 timestamp"),
    ({"deadline": "2026-01-02T03:04:05"}, "agent.deadline must carry a time zone"),
    ({"appendSystemPrompt": "x" * (256 * 1024 + 1)}, "agent.appendSystemPrompt must be at most"),
])
def test_bad_agent_options_are_context_errors(tmp_path: Path, agent_doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ContextError, match=message.replace("(", r"\(")) as caught:
        _load(tmp_path, agent_doc)

    assert caught.value.failure_class is FailureClass.BAD_CONTEXT


def test_agent_deadline_is_read_as_epoch_seconds(tmp_path: Path) -> None:
    _load(tmp_path, {"deadline": "2026-01-02T03:04:05Z"})

    assert load_context({}, tmp_path).agent.deadline == 1767323045.0


def test_the_agent_image_carries_the_runners_claude_code_defaults() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "images" / "agent" / "Dockerfile.slim").read_text()
    joined = dockerfile.replace("\\\n", " ")
    image_env: dict[str, str] = {}
    for instruction in joined.splitlines():
        if instruction.startswith("ENV "):
            image_env |= dict(pair.split("=", 1) for pair in instruction[4:].split())

    assert {k: image_env.get(k) for k in QUIET_ENV} == QUIET_ENV
    assert "USER 1001:1001" in dockerfile.splitlines()
