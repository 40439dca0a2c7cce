"""Security properties of the runner, observed from outside with real processes.

Hostile issue text reaches the agent byte for byte and executes nothing; the token never shows
up in any process's argv, in git's remote config, in the runner's output, in the agent's
environment or in any file; git gets it only through the askpass helper, which a real
smart-HTTP server with Basic auth exercises end to end; an agent that rewrites the repository's
git config or installs hooks cannot redirect the push or capture the credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.runner.main import TITLE_CHARS
from tests.fakes.githttp import GitHttpServer
from tests.fakes.github import FakeGitHub
from tests.runner.conftest import OWNER, REPO, TOKEN, UID, ArgvSampler, Sandbox, git, make_origin

BRANCH = f"agenttask/42-{UID[:8]}"


def hostile_issue(canary: Path) -> tuple[str, bytes]:
    """A title and an issue.md that would run `touch <canary>` if anything interpreted them."""
    touch = f"touch {canary}"
    title = f"""Crash "{touch}" '{touch}' `{touch}` $({touch}) ; {touch} && {touch} | {touch}
second line $HOME \\ %s %n {{}}"""
    body = b"".join([
        title.encode(), b"\n\n",
        f"$({touch})\n`{touch}`\n\"; {touch}; \"\n'; {touch}; '\n$(touch CANARY)\n".encode(),
        b"non-UTF-8: \xff\xfe\x80\xc3\x28 NUL:\x00 ESC:\x1b[31mred\x1b[0m CRLF\r\n",
        b"A" * (1 << 20), b"\nlast line without newline",
    ])
    return title, body


async def test_hostile_issue_text_reaches_the_agent_byte_for_byte(
    gh_sandbox: Sandbox, github: FakeGitHub, tmp_path: Path,
) -> None:
    sb = gh_sandbox
    canary = tmp_path / "CANARY"
    title, issue_md = hostile_issue(canary)
    prompt = b"Fix the issue below.\n\n" + issue_md
    sb.write_context(
        issue={"number": 42, "title": title, "url": None, "author": "mallory"},
        issue_md=issue_md, prompt=prompt,
        command=sb.agent("""
            (OUT / "issue.copy").write_bytes(pathlib.Path(os.environ["AGENTTASK_ISSUE_FILE"]).read_bytes())
            (OUT / "stdin.copy").write_bytes(sys.stdin.buffer.read())
            pathlib.Path("fix.txt").write_text("fixed\\n")
        """),
    )

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert (sb.out / "issue.copy").read_bytes() == issue_md
    assert (sb.out / "stdin.copy").read_bytes() == prompt
    assert not canary.exists()
    assert list(tmp_path.rglob("*CANARY*")) == []
    subject = "Fix #42: " + " ".join(title.split())[:TITLE_CHARS]
    assert git("--git-dir", str(sb.origin.bare), "log", "-1", "--format=%s", BRANCH).strip() == subject
    [pull] = github.pulls(OWNER, REPO)
    assert pull["title"] == subject
    assert b"touch" not in run.stderr  # the runner never logs issue text


async def test_token_never_leaks(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    sb.write_context(command=sb.agent("""
        cmdlines = []
        for proc in pathlib.Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdlines.append((proc / "cmdline").read_bytes())
                except OSError:
                    pass
        (OUT / "cmdlines").write_bytes(b"\\n".join(cmdlines))
        (OUT / "ps").write_bytes(subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout)
        (OUT / "env.json").write_text(json.dumps(dict(os.environ)))
        pathlib.Path("CHANGELOG.md").write_text("fixed\\n")
        print("done")
    """))

    with ArgvSampler() as sampler:
        run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    token = TOKEN.encode()
    assert len(sampler.seen) > 1
    assert not [argv for argv in sampler.seen if token in argv]
    assert b"controller.runner" in (sb.out / "cmdlines").read_bytes()  # it did see the runner
    assert token not in (sb.out / "cmdlines").read_bytes()
    assert token not in (sb.out / "ps").read_bytes()
    env = json.loads((sb.out / "env.json").read_text())
    assert not {"AGENTTASK_GIT_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"} & env.keys()
    assert not [k for k, v in env.items() if TOKEN in v]
    assert token not in run.stdout
    assert token not in run.stderr
    assert TOKEN not in git("remote", "-v", cwd=sb.checkout)
    assert token not in (sb.checkout / ".git" / "config").read_bytes()
    for path in sb.home.rglob("*"):  # checkout, .git, context dir, result.json
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert [r for r in github.requests if TOKEN in json.dumps(r.json) + str(dict(r.headers))] == []
    # git got the token only through askpass, only for the commands that talk to the remote.
    calls = sb.shim_calls()
    assert {argv[argv.index("-c") + 6] for _, argv in calls} >= {"clone", "push", "commit"}
    for info, argv in calls:
        assert TOKEN not in " ".join(argv)
        remote = any(cmd in argv for cmd in ("clone", "push"))
        assert info == ({"askpass": "set", "password_env": "set"} if remote else
                        {"askpass": "", "password_env": ""}), argv


async def test_agent_output_is_redacted(gh_sandbox: Sandbox, github: FakeGitHub) -> None:
    sb = gh_sandbox
    secretish = "ghp_" + "A1b2C3d4" * 5
    sb.write_context(command=sb.agent(f"""
        print("pushing with https://x-access-token:{secretish}@github.com/acme/widgets")
        print("Authorization: Bearer {secretish}", file=sys.stderr)
        print("found {secretish} in the logs")
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert secretish.encode() not in run.stdout + run.stderr
    assert b"https://***@github.com/acme/widgets" in run.stdout
    assert b"Authorization: Bearer ***" in run.stderr
    assert run.result is not None
    assert secretish not in run.result["summary"]
    [comment] = github.comments(OWNER, REPO, 42)
    assert secretish not in comment["body"]


@pytest.fixture
async def git_server(tmp_path: Path) -> AsyncIterator[GitHttpServer]:
    root = tmp_path / "served"
    root.mkdir()
    make_origin(root)
    async with GitHttpServer(root, username="x-access-token", password=TOKEN) as server:
        yield server


async def test_clone_and_push_over_http_authenticate_through_askpass(
    sandbox: Sandbox, git_server: GitHttpServer,
) -> None:
    sb = sandbox
    url = git_server.repo_url("widgets.git")
    sb.write_context(repo_url=url, github=False, command=sb.agent("""
        pathlib.Path("src/app.py").write_text("fixed over http\\n")
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert run.result is not None
    assert run.result["outcome"] == "ChangesPushed"
    served = git_server.root / "widgets.git"
    assert git("--git-dir", str(served), "show", f"{BRANCH}:src/app.py") == "fixed over http\n"
    # Both directions were refused without credentials first, then accepted with askpass's.
    seen = [(r.method, r.path.removeprefix("/widgets.git"), r.username) for r in git_server.requests]
    assert seen[0] == ("GET", "/info/refs", None)
    assert ("POST", "/git-upload-pack", "x-access-token") in seen
    assert ("POST", "/git-receive-pack", "x-access-token") in seen
    assert [user for _, _, user in seen].count(None) == 2  # one refusal each: clone, push
    assert git("remote", "get-url", "origin", cwd=sb.checkout).strip() == url
    assert TOKEN.encode() not in (sb.checkout / ".git" / "config").read_bytes()
    assert TOKEN.encode() not in run.stdout + run.stderr


async def test_wrong_token_fails_as_a_git_error_and_is_redacted(
    sandbox: Sandbox, git_server: GitHttpServer,
) -> None:
    sb = sandbox
    sb.token = "wrong-" + TOKEN
    sb.write_context(repo_url=git_server.repo_url("widgets.git"), github=False, command=sb.agent("pass"))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 73  # the clone, a GitFailed
    assert run.result is not None
    assert run.result["outcome"] == "Failed"
    assert "git clone failed" in run.result["error"]
    assert sb.token.encode() not in run.stdout + run.stderr
    assert sb.token not in json.dumps(run.result)


async def test_agent_cannot_redirect_the_push_or_capture_credentials(
    sandbox: Sandbox, git_server: GitHttpServer, tmp_path: Path,
) -> None:
    sb = sandbox
    url = git_server.repo_url("widgets.git")
    evil = tmp_path / "evil.git"
    git("init", "--quiet", "--bare", str(evil))
    sb.write_context(repo_url=url, github=False, command=sb.agent(f"""
        def cfg(*args):
            subprocess.run(["git", "config", *args], check=True)
        cfg("remote.origin.url", {str(evil.as_uri())!r})
        cfg("url.{evil.as_uri()}.insteadOf", {url!r})
        cfg("credential.helper", "!f() {{ cat >> {sb.out}/stolen; }}; f")
        cfg("core.askPass", "/bin/false")
        hooks = pathlib.Path(".git/hooks")
        for name in ("pre-commit", "commit-msg", "pre-push"):
            (hooks / name).write_text("#!/bin/sh\\nenv >> {sb.out}/hook-ran\\n")
            (hooks / name).chmod(0o755)
        pathlib.Path("README.md").write_text("changed\\n")
    """))

    run = await asyncio.to_thread(sb.run)

    assert run.returncode == 0, run.stderr.decode()
    assert b"restoring it" in run.stderr
    assert not (sb.out / "stolen").exists()
    assert not (sb.out / "hook-ran").exists()
    assert BRANCH in git("--git-dir", str(git_server.root / "widgets.git"), "branch", "--list", BRANCH)
    assert git("--git-dir", str(evil), "for-each-ref") == ""
    assert git("remote", "get-url", "origin", cwd=sb.checkout).strip() == url


def test_the_askpass_directory_is_private(tmp_path: Path) -> None:
    from controller.runner.git import write_askpass

    private = tmp_path / "p"
    private.mkdir(mode=0o700)
    script = write_askpass(private)
    assert os.stat(script).st_mode & 0o777 == 0o700
    assert TOKEN not in script.read_text()
