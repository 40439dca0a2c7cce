"""``POST /git/clone``: a real ``git clone`` into the sandbox, run safely.

Does: accept local repositories (absolute host paths) and ``file://``, ``http://`` and
``https://`` URLs, rejecting every other form (``ssh://``, ``git://``, ``ext::``,
``user@host:path``, option-looking strings) with a 400; run git as an argv list (never a
shell string) with ``--`` before the URL, ``GIT_ALLOW_PROTOCOL=file:http:https``, no
system/global git config and prompts disabled (the server's own TLS trust variables, e.g.
``GIT_SSL_CAINFO``, do apply); pass ``username``/``password`` only through
a temporary ``GIT_ASKPASS`` helper that reads them from its environment (never in the URL,
the argv or a file); check out ``commitId`` when given; and map git's failures to the
daemon's error codes (``GIT_AUTH_FAILED``, ``GIT_REPO_NOT_FOUND``, ``GIT_BRANCH_NOT_FOUND``,
``GIT_TRANSPORT_FAILED``), with credentials redacted from messages.

Local paths are host paths: in plain isolation a sandbox can read the host anyway, and this
is what lets a local operator clone a checkout without a network.

Does not: map the destination path (the caller passes the host directory) or clone over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError, daemon_error

CLONE_TIMEOUT = 600.0
_REF_RE = re.compile(r"^[A-Za-z0-9._/@+-]{1,255}$")
_CRED_RE = re.compile(r"(://)[^/@\s]+@")
TLS_TRUST_ENV = frozenset({"GIT_SSL_CAINFO", "GIT_SSL_CAPATH", "SSL_CERT_FILE", "SSL_CERT_DIR"})
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$LOCALSANDBOX_GIT_USERNAME" ;;
  *) printf '%s\\n' "$LOCALSANDBOX_GIT_PASSWORD" ;;
esac
"""


def check_url(url: str) -> str:
    """The kind of clone source (``local``, ``file``, ``http``, ``https``); 400 otherwise."""
    if not url or url.startswith("-") or "\x00" in url or "\n" in url:
        raise daemon_error(400, "invalid repository URL")
    if url.startswith("/"):
        if "::" in url:
            raise daemon_error(400, "invalid repository path")
        return "local"
    if "::" in url:
        raise daemon_error(400, "git remote helpers (<transport>::<address>) are not allowed")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("file", "http", "https") and "://" in url:
        return scheme
    raise daemon_error(
        400, f"unsupported repository URL scheme {scheme or '(none)'!r}: use a local path, file://, http(s)://"
    )


def check_ref(value: str, what: str) -> str:
    """Validate a branch or commit name (no leading '-', no odd characters)."""
    if value.startswith("-") or ".." in value or not _REF_RE.match(value):
        raise daemon_error(400, f"invalid {what} {value!r}")
    return value


def redact(text: str) -> str:
    """Remove ``user:pass@`` from URLs in git output."""
    return _CRED_RE.sub(r"\1***@", text)


def classify_failure(stderr: str) -> ApiError:
    """Turn git's stderr into the daemon error the SDK expects."""
    low = stderr.lower()
    message = redact(stderr.strip().splitlines()[-1] if stderr.strip() else "git clone failed")
    if "authentication failed" in low or "could not read username" in low or "could not read password" in low:
        return daemon_error(401, message, "GIT_AUTH_FAILED")
    if "remote branch" in low and "not found" in low:
        return daemon_error(404, message, "GIT_BRANCH_NOT_FOUND")
    if "already exists and is not an empty directory" in low:
        return daemon_error(409, message, "CONFLICT")
    if (
        "does not appear to be a git repository" in low
        or "repository not found" in low
        or "does not exist" in low
        or ("not found" in low and "repository" in low)
    ):
        return daemon_error(404, message, "GIT_REPO_NOT_FOUND")
    return daemon_error(400, message, "GIT_TRANSPORT_FAILED")


def clone_argv(url: str, dest: str, branch: str | None, depth: int | None) -> list[str]:
    """The ``git clone`` argv."""
    argv = ["git", "clone", "--quiet"]
    if branch:
        argv += ["--branch", branch]
    if depth:
        argv += ["--depth", str(depth)]
    return [*argv, "--", url, dest]


def _git_env(
    home: str, askpass: str | None, username: str | None, password: str | None, insecure: bool
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": "file:http:https",
    }
    # the host's trust configuration (a local CA), as a sandbox image's CA store would be in Daytona
    env.update({k: v for k, v in os.environ.items() if k in TLS_TRUST_ENV})
    if askpass is not None:
        env["GIT_ASKPASS"] = askpass
        env["LOCALSANDBOX_GIT_USERNAME"] = username or ""
        env["LOCALSANDBOX_GIT_PASSWORD"] = password or ""
    if insecure:
        env["GIT_SSL_NO_VERIFY"] = "1"
    return env


def _prepare_dest(dest: str, shown: Any) -> None:
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise daemon_error(409, f"destination path {shown!r} already exists and is not empty", "CONFLICT")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)


def _write_askpass(helper_dir: str) -> str:
    """Write the askpass helper (it reads the credentials from its environment)."""
    path = os.path.join(helper_dir, "askpass.sh")
    with open(path, "w") as fh:
        fh.write(_ASKPASS)
    os.chmod(path, stat.S_IRWXU)
    return path


def _existing_dir(path: str, fallback: str) -> str:
    return path if os.path.isdir(path) else fallback


async def _run(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise daemon_error(408, "git clone timed out", "REQUEST_TIMEOUT") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode("utf-8", "replace")


async def clone(body: dict[str, Any], dest: str, home: str, timeout: float = CLONE_TIMEOUT) -> None:
    """Clone per a ``GitCloneRequest`` body into host directory `dest`; raises `ApiError`."""
    url = body.get("url")
    if not isinstance(url, str):
        raise daemon_error(400, "url is required")
    check_url(url)
    branch = body.get("branch") or None
    commit = body.get("commit_id") or body.get("commitId") or None
    depth = body.get("depth")
    username, password = body.get("username"), body.get("password")
    for value, what in ((branch, "branch"), (commit, "commit")):
        if value is not None and not isinstance(value, str):
            raise daemon_error(400, f"{what} must be a string")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise daemon_error(400, "depth must be a positive integer")
    if branch:
        check_ref(branch, "branch")
    if commit:
        check_ref(commit, "commit")
    _prepare_dest(dest, body.get("path"))
    helper_dir = tempfile.mkdtemp(prefix="localsandbox-askpass-")
    try:
        askpass = _write_askpass(helper_dir) if (username or password) else None
        insecure = bool(body.get("insecure_skip_tls") or body.get("insecureSkipTls"))
        env = _git_env(_existing_dir(home, helper_dir), askpass, username, password, insecure)
        code, err = await _run(clone_argv(url, dest, branch, depth), env, helper_dir, timeout)
        if code != 0:
            raise classify_failure(err)
        if commit:
            code, err = await _run(["git", "-C", dest, "checkout", "--quiet", commit, "--"], env, helper_dir, timeout)
            if code != 0:
                raise daemon_error(404, redact(err.strip() or f"commit {commit} not found"), "NOT_FOUND")
    finally:
        shutil.rmtree(helper_dir, ignore_errors=True)
