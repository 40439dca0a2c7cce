"""Fixtures for the runner's tests: a bare origin repository, a sandbox home, the fake GitHub.

The runner always runs as a real subprocess (`python -m controller.runner`, or the built
zipapp under `python -I -S`), in a temporary "sandbox home" as its cwd with a relative
`AGENTTASK_CONTEXT_DIR`, with real git against a local bare repository. A `git` shim first on
PATH logs every git invocation the runner makes (argv, and whether askpass and the token were
in its environment). Agents are small Python scripts written per test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.runner.pack import build_zipapp
from tests.fakes.github import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
TOKEN = f"agenttask-test-token-{secrets.token_hex(12)}"
OWNER, REPO = "acme", "widgets"
UID = "1a2b3c4d-5e6f-4711-8899-aabbccddeeff"
ISSUE = {"number": 42, "title": "Crash when saving", "url": "https://github.com/acme/widgets/issues/42",
         "author": "octocat"}
REAL_GIT = shutil.which("git") or "/usr/bin/git"
_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.invalid",
    "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.invalid",
}

AGENT_PRELUDE = """\
import json, os, pathlib, subprocess, sys
OUT = pathlib.Path(os.environ["TEST_OUT"])
"""


def git(*args: str, cwd: Path | None = None) -> str:
    """Run the real git (test side, isolated from the user's config); return stdout."""
    done = subprocess.run(
        [REAL_GIT, *args], cwd=cwd, env={**os.environ, **_GIT_ENV}, capture_output=True, check=False,
    )
    assert done.returncode == 0, f"git {args}: {done.stderr.decode()}"
    return done.stdout.decode("utf-8", "replace")


@dataclass
class Origin:
    bare: Path

    @property
    def url(self) -> str:
        return self.bare.as_uri()  # file:///...

    def show(self, rev: str) -> str:
        return git("--git-dir", str(self.bare), "show", rev)

    def branches(self) -> list[str]:
        out = git("--git-dir", str(self.bare), "for-each-ref", "--format=%(refname:short)", "refs/heads")
        return out.split()


def make_origin(root: Path, name: str = "widgets.git", *, extra: dict[str, str] | None = None) -> Origin:
    bare = root / name
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = root / f"{name}-seed"
    git("init", "--quiet", "--initial-branch=main", str(seed))
    (seed / "README.md").write_text("# widgets\n")
    (seed / "src").mkdir()
    (seed / "src" / "app.py").write_text("def save():\n    raise RuntimeError('boom')\n")
    for path, text in (extra or {}).items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(text)
    git("add", ".", cwd=seed)
    git("commit", "--quiet", "-m", "initial commit", cwd=seed)
    git("push", "--quiet", str(bare), "main", cwd=seed)
    return Origin(bare)


@dataclass
class RunResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    result: dict[str, Any] | None


@dataclass
class Sandbox:
    home: Path  # the runner's cwd
    origin: Origin
    out: Path  # where scripted agents put their observations
    bin: Path  # the git shim, first on PATH
    tmp: Path  # TMPDIR of the runner
    api_url: str | None = None
    token: str | None = TOKEN
    pyz: bytes | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    ctx_dir: str = "agenttask"  # AGENTTASK_CONTEXT_DIR, relative to home
    run_as: int | None = None  # run the runner as this uid (and gid), through setpriv
    python: str = sys.executable

    @property
    def ctx(self) -> Path:
        return self.home / self.ctx_dir

    @property
    def checkout(self) -> Path:
        return self.home / "repo"

    @property
    def shim_log(self) -> Path:
        return self.bin.parent / "git-shim.log"

    def agent(self, code: str, name: str = "agent.py") -> list[str]:
        """Write a scripted agent and return its argv."""
        path = self.bin.parent / name
        path.write_text(AGENT_PRELUDE + textwrap.dedent(code))
        return [sys.executable, str(path)]

    def write_context(
        self, *, command: list[str] | None, issue: dict[str, Any] | None = ISSUE,
        issue_md: bytes = b"Crash when saving\n\nSaving raises RuntimeError.\n", prompt: bytes | None = None,
        pull_request: dict[str, Any] | None = None, github: bool = True, repo_url: str | None = None,
        working_dir: str | None = None, uid: str = UID, agent_options: dict[str, Any] | None = None,
    ) -> None:
        self.ctx.mkdir(parents=True, exist_ok=True)
        task = {
            "task": {"namespace": "default", "name": "fix-42", "uid": uid, "attempt": 1},
            "repository": {"url": repo_url or self.origin.url, "baseBranch": "main", "dir": "repo"},
            "issue": issue,
            "agent": {"command": command, "workingDir": working_dir, **(agent_options or {})},
            "pullRequest": pull_request or {"create": True, "draft": True, "branchPrefix": "agenttask/"},
            "github": {"owner": OWNER, "repo": REPO} if github else None,
        }
        (self.ctx / "task.json").write_text(json.dumps(task))
        if issue is not None:
            (self.ctx / "issue.md").write_bytes(issue_md)
        (self.ctx / "prompt.md").write_bytes(prompt if prompt is not None else b"Fix it.\n\n" + issue_md)

    def write_env_json(self, env: dict[str, str]) -> None:
        """The agent's environment as the operator uploads it (the runner reads and deletes it)."""
        self.ctx.mkdir(parents=True, exist_ok=True)
        (self.ctx / "env.json").write_text(json.dumps(env))

    def env(self, *, zipapp: bool) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "AGENTTASK_CONTEXT_DIR": self.ctx_dir,
            "TEST_OUT": str(self.out),
            "GIT_SHIM_LOG": str(self.shim_log),
        }
        if self.token is not None:
            env |= {"AGENTTASK_GIT_TOKEN": self.token, "GITHUB_TOKEN": self.token, "GH_TOKEN": self.token}
        if self.api_url is not None:
            env["AGENTTASK_GITHUB_API_URL"] = self.api_url
        if not zipapp:
            env["PYTHONPATH"] = str(ROOT)
        return env | self.extra_env

    def argv(self, *, zipapp: bool = False) -> list[str]:
        user = [] if self.run_as is None else [
            "setpriv", f"--reuid={self.run_as}", f"--regid={self.run_as}", "--clear-groups"]
        if zipapp:
            assert self.pyz is not None
            (self.ctx / "runner.pyz").write_bytes(self.pyz)
            return [*user, self.python, "-I", "-S", f"{self.ctx_dir}/runner.pyz"]  # stdlib only, no site
        return [*user, self.python, "-m", "controller.runner"]

    def run(self, *, zipapp: bool = False, timeout: float = 60) -> RunResult:
        """Run the runner to completion (blocking: call it via asyncio.to_thread in async tests)."""
        done = subprocess.run(
            self.argv(zipapp=zipapp), cwd=self.home, env=self.env(zipapp=zipapp), capture_output=True,
            timeout=timeout, check=False,
        )
        result_file = self.ctx / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        return RunResult(done.returncode, done.stdout, done.stderr, result)

    def shim_calls(self) -> list[tuple[dict[str, str], list[str]]]:
        """Every git invocation through the shim: ({askpass, password_env}, argv)."""
        calls = []
        for line in self.shim_log.read_text().splitlines():
            flags, _, argv = line.partition(" argv=")
            info = dict(part.split("=", 1) for part in flags.split())
            calls.append((info, [a for a in argv.split("\x1f") if a]))
        return calls


_SHIM = """#!/bin/sh
{{
  printf 'askpass=%s password_env=%s argv=' "${{GIT_ASKPASS:+set}}" "${{AGENTTASK_ASKPASS_PASSWORD:+set}}"
  printf '%s\\037' "$@"
  printf '\\n'
}} >> "$GIT_SHIM_LOG"
exec {git} "$@"
"""


@pytest.fixture(scope="session")
def runner_pyz() -> bytes:
    return build_zipapp()


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The real Claude Code CLI, installed once by hack/tools.sh at Dockerfile.slim's version."""
    tools = ROOT / "hack" / "tools.sh"
    subprocess.run([str(tools), "claude"], check=True, cwd=ROOT, timeout=1200)
    out = subprocess.run([str(tools), "paths"], check=True, cwd=ROOT, capture_output=True, text=True).stdout
    path = Path(dict(line.split("=", 1) for line in out.splitlines() if "=" in line)["CLAUDE"])
    assert path.exists(), path
    return path


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    (tmp_path / "remote").mkdir()
    return make_origin(tmp_path / "remote")


@pytest.fixture
def sandbox(tmp_path: Path, origin: Origin, runner_pyz: bytes) -> Sandbox:
    home, out, bin_dir, tmp = (tmp_path / d for d in ("home", "out", "bin", "tmp"))
    for d in (home, out, bin_dir, tmp):
        d.mkdir()
    shim = bin_dir / "git"
    shim.write_text(_SHIM.format(git=REAL_GIT))
    shim.chmod(0o755)
    return Sandbox(home=home, origin=origin, out=out, bin=bin_dir, tmp=tmp, pyz=runner_pyz)


@pytest.fixture
async def github(origin: Origin) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(OWNER, REPO, git_dir=origin.bare)
        fake.add_issue(OWNER, REPO, 42, title="Crash when saving", body="Saving raises RuntimeError.")
        yield fake


@pytest.fixture
def gh_sandbox(sandbox: Sandbox, github: FakeGitHub) -> Sandbox:
    """A sandbox whose runner talks to the fake GitHub."""
    sandbox.api_url = github.url
    return sandbox


class ArgvSampler:
    """Collects the argv of every process visible in /proc, polling in a thread while active."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                            self.seen.add(f.read())
                    except OSError:
                        pass
            self._stop.wait(0.002)

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

