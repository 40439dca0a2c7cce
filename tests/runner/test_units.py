"""Unit tests of the runner's pieces: askpass helper, git environment, redaction, clipping, logging."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controller.runner.git import ASKPASS_PASSWORD_ENV, ASKPASS_USERNAME_ENV, Git, write_askpass
from controller.runner.log import PREFIX, Redactor, log
from controller.runner.result import clip

TOKEN = "s3cr3t-token-value"


@pytest.fixture
def askpass(tmp_path: Path) -> Path:
    return write_askpass(tmp_path)


@pytest.mark.parametrize(("prompt", "answer"), [
    ("Username for 'https://github.com': ", "x-access-token"),
    ("Password for 'https://x-access-token@github.com': ", TOKEN),
    ("username for 'https://github.com': ", "x-access-token"),
    ("Enter passphrase for key: ", TOKEN),
])
def test_askpass_answers_from_the_environment(askpass: Path, prompt: str, answer: str) -> None:
    env = {ASKPASS_USERNAME_ENV: "x-access-token", ASKPASS_PASSWORD_ENV: TOKEN}

    done = subprocess.run([str(askpass), prompt], env=env, capture_output=True, text=True, check=True)

    assert done.stdout == answer + "\n"


def test_askpass_script_holds_no_secret(askpass: Path) -> None:
    assert askpass.stat().st_mode & 0o777 == 0o700
    assert TOKEN not in askpass.read_text()


def test_git_gets_the_token_only_in_the_env_of_remote_commands(askpass: Path) -> None:
    environ = {"PATH": "/usr/bin:/bin", "AGENTTASK_GIT_TOKEN": TOKEN, "GITHUB_TOKEN": TOKEN,
               "GH_TOKEN": TOKEN, "GIT_ASKPASS": "/evil", "SSH_ASKPASS": "/evil", "KEEP": "me"}
    git = Git(environ=environ, token=lambda: TOKEN, username="x-access-token", askpass=askpass)

    remote, local = git.env(auth=True), git.env(auth=False)

    assert remote["GIT_ASKPASS"] == str(askpass)
    assert remote[ASKPASS_PASSWORD_ENV] == TOKEN
    assert remote[ASKPASS_USERNAME_ENV] == "x-access-token"
    assert [k for k, v in remote.items() if v == TOKEN] == [ASKPASS_PASSWORD_ENV]
    assert TOKEN not in local.values()
    assert "GIT_ASKPASS" not in local
    assert "SSH_ASKPASS" not in local
    assert "SSH_ASKPASS" not in remote
    assert remote["GIT_TERMINAL_PROMPT"] == local["GIT_TERMINAL_PROMPT"] == "0"
    assert remote["KEEP"] == local["KEEP"] == "me"


def test_git_without_a_token_has_no_askpass() -> None:
    git = Git(environ={"PATH": "/usr/bin"}, token=lambda: None, username="x-access-token", askpass=None)

    assert "GIT_ASKPASS" not in git.env(auth=True)


@pytest.mark.parametrize(("text", "expected"), [
    (f"token {TOKEN} here", "token *** here"),
    ("https://x-access-token:abc123@github.com/a/b", "https://***@github.com/a/b"),
    ("x-access-token:abc123 more", "x-access-token:*** more"),
    ("key ghp_" + "a" * 36 + " end", "key *** end"),
    ("github_pat_" + "A1_" * 10, "***"),
    ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
    ("authorization: token abc", "authorization: token ***"),
    ("https://user:pw@example.com/x", "https://***@example.com/x"),
    ("nothing secret", "nothing secret"),
])
def test_redactor(text: str, expected: str) -> None:
    redactor = Redactor()
    redactor.add(TOKEN)
    redactor.add("")

    assert redactor.text(text) == expected
    assert redactor.bytes(text.encode()) == expected.encode()


def test_redactor_handles_non_utf8_bytes() -> None:
    redactor = Redactor()
    redactor.add(TOKEN)

    assert redactor.bytes(b"\xff\xfe" + TOKEN.encode() + b"\x80") == b"\xff\xfe***\x80"


def test_log_prefixes_every_line_and_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.runner.log import REDACTOR

    REDACTOR.add(TOKEN)
    log(f"first {TOKEN}\nsecond")

    assert capsys.readouterr().err == f"{PREFIX} first ***\n{PREFIX} second\n"


def test_clip_keeps_whole_characters() -> None:
    text = "é" * 3000  # 6000 bytes

    head, tail = clip(text, keep="head"), clip(text, keep="tail")

    assert len(head.encode()) <= 4096
    assert len(tail.encode()) <= 4096
    assert set(head) == set(tail) == {"é"}
    assert clip("short", keep="tail") == "short"
