"""The runner's happy paths end to end: real subprocess, real git, bare origin, fake GitHub."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.fakes.github import FakeGitHub
from tests.runner.conftest import OWNER, REPO, UID, Sandbox, git

BRANCH = f"agenttask/42-{UID[:8]}"
DEFAULT_IDENTITY = "AgentTask <agenttask@users.noreply.invalid>"

CHANGE_AGENT = """
(OUT / "prompt.copy").write_bytes(sys.stdin.buffer.read())
pathlib.Path("src/app.py").write_text("def save():\\n    return True\\n")
pathlib.Path("docs").mkdir(exist_ok=True)
pathlib.Path("docs/fix.md").write_text("a new, untracked file\\n")
print("working...", flush=True)
print("Fixed save() so that it no longer raises.")
"""

ANSWER_AGENT = """
sys.stdin.buffer.read()
print("The crash comes from a full disk; no code change is needed.")
"""


@pytest.mark.parametrize("zipapp", [False, True], ids=["module", "zipapp"])
async def test_changes_are_pushed_and_a_draft_pull_request_opened(
    gh_sandbox: Sandbox, github: FakeGitHub, zipapp: bool,
) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent(CHANGE_AGENT))

    run = await asyncio.to_thread(sb.run, zipapp=zipapp)

    assert run.returncode == 0, run.stderr.decode()
    result = run.result
    assert result is not None
    bare = str(sb.origin.bare)
    assert result["outcome"] == "PullRequestOpened"
    assert result["branch"] == BRANCH
    assert result["commit"] == git("--git-dir", bare, "rev-parse", f"refs/heads/{BRANCH}").strip()
    assert sorted(result["changedFiles"]) == ["docs/fix.md", "src/app.py"]
    assert result["agentExitCode"] == 0
    assert result["error"] is None
    assert result["summary"].endswith("Fixed save() so that it no longer raises.")

    # The branch on the origin: the change, on top of main, with the issue in the message.
    assert "return True" in sb.origin.show(f"{BRANCH}:src/app.py")
    assert git("--git-dir", bare, "rev-parse", f"{BRANCH}~1").strip() == \
        git("--git-dir", bare, "rev-parse", "main").strip()
    message = git("--git-dir", bare, "log", "-1", "--format=%B", BRANCH)
    assert message.startswith("Fix #42: Crash when saving\n\n")
    assert "Fixed save() so that it no longer raises." in message
    assert f"AgentTask-UID: {UID}" in message
    who = git("--git-dir", bare, "log", "-1", "--format=%an <%ae>|%cn <%ce>", BRANCH).strip()
    assert who == f"{DEFAULT_IDENTITY}|{DEFAULT_IDENTITY}"

    # The pull request on the fake GitHub.
    [pull] = github.pulls(OWNER, REPO)
    assert pull["draft"] is True
    assert pull["head"]["ref"] == BRANCH
    assert pull["base"]["ref"] == "main"
    assert pull["title"] == "Fix #42: Crash when saving"
    assert pull["body"].startswith("Closes #42\n\n")
    assert "Fixed save() so that it no longer raises." in pull["body"]
    assert result["pullRequestUrl"] == pull["html_url"]
    [request] = [r for r in github.requests if r.method == "POST"]
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"

    # The agent got the prompt on stdin; its output streamed through.
    assert (sb.out / "prompt.copy").read_bytes() == (sb.ctx / "prompt.md").read_bytes()
    assert b"working...\n" in run.stdout
    assert b"agenttask-runner: " in run.stderr
    assert list(sb.tmp.iterdir()) == []  # the private askpass dir is gone


async def test_no_changes_comment_the_answer_on_the_issue(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent(ANSWER_AGENT))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "NoChanges"
    assert run.result["branch"] is None
    assert run.result["commit"] is None
    assert run.result["changedFiles"] == []
    [comment] = github.comments(OWNER, REPO, 42)
    assert comment["body"].startswith("The crash comes from a full disk; no code change is needed.\n")
    assert "made no changes" in comment["body"]
    assert sb.origin.branches() == ["main"]
    assert github.pulls(OWNER, REPO) == []


async def test_agent_failure_is_agent_failed_with_its_exit_code(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent("""
        print("trying hard")
        print("giving up", file=sys.stderr)
        pathlib.Path("half-done.txt").write_text("x")
        sys.exit(3)
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 65
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert run.result["failureClass"] == "AgentFailed"
    assert run.result["agentExitCode"] == 3
    assert "exited with code 3" in run.result["error"]
    assert run.result["summary"] == "trying hard"
    assert b"giving up\n" in run.stderr
    assert sb.origin.branches() == ["main"]
    assert github.requests == []


async def test_summary_file_wins_and_context_paths_are_in_the_agent_env(
    gh_sandbox: Sandbox, github: FakeGitHub,
) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent("""
        (OUT / "env.json").write_text(json.dumps(dict(os.environ)))
        (OUT / "cwd").write_text(os.getcwd())
        pathlib.Path(os.environ["AGENTTASK_SUMMARY_FILE"]).write_text("Summary from the file.\\n")
        pathlib.Path("src/app.py").write_text("fixed\\n")
        print("noise that is not the summary")
    """))
    (sb.ctx / "summary.md").write_text("stale summary of an earlier attempt")

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["summary"] == "Summary from the file."
    [pull] = github.pulls(OWNER, REPO)
    assert "Summary from the file." in pull["body"]
    assert "noise" not in pull["body"]
    env = json.loads((sb.out / "env.json").read_text())
    assert env["AGENTTASK_PROMPT_FILE"] == str(sb.ctx / "prompt.md")
    assert env["AGENTTASK_ISSUE_FILE"] == str(sb.ctx / "issue.md")
    assert env["AGENTTASK_CONTEXT_DIR"] == str(sb.ctx)
    assert (sb.out / "cwd").read_text() == str(sb.checkout)


@pytest.mark.parametrize("with_api", [False, True], ids=["no-github", "create-false"])
async def test_changes_pushed_without_pull_request(sandbox: Sandbox, github: FakeGitHub, with_api: bool) -> None:
    sb = sandbox
    sb.api_url = github.url if with_api else None
    sb.write_context(command=sb.agent(CHANGE_AGENT),
                     pull_request={"create": False, "draft": False, "branchPrefix": "bot/"} if with_api else None)

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "ChangesPushed"
    assert run.result["pullRequestUrl"] is None
    branch = f"bot/42-{UID[:8]}" if with_api else BRANCH
    assert run.result["branch"] == branch
    assert branch in sb.origin.branches()
    assert github.requests == []


async def test_without_an_issue(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent(CHANGE_AGENT), issue=None)

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["branch"] == f"agenttask/task-{UID[:8]}"
    [pull] = github.pulls(OWNER, REPO)
    assert pull["title"] == "AgentTask default/fix-42"
    assert "Closes" not in pull["body"]


async def test_existing_checkout_is_used_and_agent_commits_are_pushed(
    gh_sandbox: Sandbox, github: FakeGitHub,
) -> None:
    sb = gh_sandbox
    git("clone", "--quiet", sb.origin.url, str(sb.checkout))
    sb.write_context(working_dir="src", command=sb.agent("""
        (OUT / "cwd").write_text(os.getcwd())
        pathlib.Path("app.py").write_text("committed by the agent\\n")
        ident = ["-c", "user.name=Agent", "-c", "user.email=agent@example.invalid"]
        subprocess.run(["git", *ident, "commit", "-q", "-am", "agent's own commit"], check=True)
        print("I committed it myself.")
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "PullRequestOpened"
    assert run.result["changedFiles"] == ["src/app.py"]
    assert (sb.out / "cwd").read_text() == str(sb.checkout / "src")
    assert git("--git-dir", str(sb.origin.bare), "log", "-1", "--format=%s", BRANCH).strip() == "agent's own commit"
    runner_git = [argv for _, argv in sb.shim_calls() if "commit" not in argv]
    assert not any("clone" in argv for argv in runner_git)


async def test_a_retried_attempt_reuses_the_open_pull_request(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent(CHANGE_AGENT))
    first = await asyncio.to_thread(sb.run)
    assert first.returncode == 0, first.stderr.decode()
    shutil.rmtree(sb.checkout)  # a new sandbox for the next attempt

    second = await asyncio.to_thread(sb.run)

    assert second.returncode == 0, second.stderr.decode()
    assert second.result is not None
    assert first.result is not None
    assert second.result["pullRequestUrl"] == first.result["pullRequestUrl"]
    assert len(github.pulls(OWNER, REPO)) == 1
    assert second.result["commit"] == git(
        "--git-dir", str(sb.origin.bare), "rev-parse", f"refs/heads/{BRANCH}").strip()


async def test_context_dir_inside_the_checkout_is_not_committed(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    git("clone", "--quiet", sb.origin.url, str(sb.checkout))
    sb.ctx_dir = "repo/.agenttask"
    sb.write_context(command=sb.agent(CHANGE_AGENT))

    run = await asyncio.to_thread(sb.run, zipapp=True)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert sorted(run.result["changedFiles"]) == ["docs/fix.md", "src/app.py"]
    assert (sb.ctx / "result.json").exists()
