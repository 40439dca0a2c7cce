"""What the tests that run the real Claude Code share: the test repository, the scripted fix, checks.

The repository has a failing unit test; the scripted model reads the file, edits it, runs the
tests with Bash and answers. `with_claude` sets a runner sandbox up the way the operator does:
Claude Code on PATH, the API key and the fake's URL in env.json.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from daytona import FileUpload

from tests.fakes.anthropic import FakeAnthropic, say, use
from tests.runner.conftest import ISSUE, OWNER, REPO, TOKEN, UID, Sandbox

API_KEY = f"sk-ant-api03-test-{secrets.token_hex(16)}"
BRANCH = f"agenttask/42-{UID[:8]}"
TESTS = {".gitignore": "__pycache__/\n", "tests/test_app.py": """\
import pathlib, sys, unittest
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))
from app import save


class SaveTest(unittest.TestCase):
    def test_save_returns_true(self):
        self.assertIs(save(), True)
"""}
RUN_TESTS = "python3 -m unittest discover -s tests -v"
FIXED = "Fixed save(): it returns True instead of raising. The tests pass."


def fix_script(checkout: Path) -> list[Any]:
    """Read -> Edit -> Bash (the repository's tests) -> final text."""
    app = str(checkout / "src" / "app.py")
    return [
        use("Read", file_path=app),
        use("Edit", file_path=app, old_string="    raise RuntimeError('boom')", new_string="    return True"),
        use("Bash", command=RUN_TESTS, description="Run the tests"),
        say(FIXED),
    ]


def with_claude(sb: Sandbox, claude_bin: Path, api: FakeAnthropic, *, key: str = API_KEY, **env: str) -> None:
    """Claude Code on the sandbox's PATH, its key and endpoint in env.json as the operator uploads them."""
    sb.extra_env["PATH"] = f"{sb.bin}:{claude_bin.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    sb.write_env_json({"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": api.url, **env})


def assert_usage_matches(result: dict[str, Any], api: FakeAnthropic) -> None:
    total = api.usage_total()
    assert result["agent"]["usage"] == {
        "inputTokens": total.input_tokens,
        "outputTokens": total.output_tokens,
        "cacheReadInputTokens": total.cache_read_input_tokens,
        "cacheCreationInputTokens": total.cache_creation_input_tokens,
    }
    # Claude Code's own estimate at list prices ($4 / $20 per million input / output tokens for
    # this model, plus something for the cache): at least the uncached part, well below double.
    floor = total.input_tokens * 4e-6 + total.output_tokens * 20e-6
    assert floor <= result["agent"]["costUsd"] < 2 * floor


def operator_context(repo_url: str, env: dict[str, str], *, ctx: str = "agenttask",
                     runner: bytes | None = None) -> list[FileUpload]:
    """The context files the operator uploads for issue 42 (relative to the sandbox user's home):
    task.json (checkout in workspace/repo, a draft pull request), issue, prompt, env.json, the git
    token, and the runner when given (else the sandbox's own is used)."""
    task = {
        "task": {"namespace": "default", "name": "fix-42", "uid": UID, "attempt": 1},
        "repository": {"url": repo_url, "baseBranch": "main", "dir": "workspace/repo"},
        "issue": ISSUE,
        "agent": {"command": None, "workingDir": None, "maxTurns": 20, "maxCostUsd": 5, "timeoutSeconds": 300},
        "pullRequest": {"create": True, "draft": True, "branchPrefix": "agenttask/"},
        "github": {"owner": OWNER, "repo": REPO},
    }
    files = [
        FileUpload(source=json.dumps(task).encode(), destination=f"{ctx}/task.json"),
        FileUpload(source=b"# Crash when saving\n\nSaving raises.\n", destination=f"{ctx}/issue.md"),
        FileUpload(source=b"Resolve the issue; run the tests.\n", destination=f"{ctx}/prompt.md"),
        FileUpload(source=json.dumps(env).encode(), destination=f"{ctx}/env.json"),
        FileUpload(source=TOKEN.encode(), destination=f"{ctx}/git-token"),
    ]
    if runner is not None:
        files.append(FileUpload(source=runner, destination=f"{ctx}/runner.pyz"))
    return files
