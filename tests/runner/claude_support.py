"""What the tests that run the real Claude Code share: the test repository, the scripted fix, checks.

The repository has a failing unit test; the scripted model reads the file, edits it, runs the
tests with Bash and answers. `with_claude` sets a runner sandbox up the way the operator does:
Claude Code on PATH, the API key and the fake's URL in env.json.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from tests.fakes.anthropic import FakeAnthropic, say, use
from tests.runner.conftest import UID, Sandbox

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
