"""The git token and the GitHub API token, read fresh at every use so the operator can refresh them.

A GitHub App installation token lives one hour; a task may run longer. So the runner never keeps
a token: each git process that talks to the remote and each GitHub API request asks
`Credentials` again, which reads `<ctx>/git-token` (and `<ctx>/github-token` for the API, falling
back to the git token) at that moment. The operator refreshes a token by uploading the file again;
the next clone, push or API call uses the new value. Without the files, the token is
`AGENTTASK_GIT_TOKEN` from the environment (env.json), as before.

Every value read is handed to the redactor before it is returned, so a refreshed token is masked
in logs and result.json like the first one. The file is read whole (at most 64 KiB) and stripped
of surrounding whitespace; an empty or missing file means "no token from this file".

This module does not talk to git or GitHub and does not decide when a token is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .context import TOKEN_ENV
from .log import REDACTOR, log

GIT_TOKEN_FILE = "git-token"  # noqa: S105 (a file name)
GITHUB_TOKEN_FILE = "github-token"  # noqa: S105 (a file name)
_MAX_BYTES = 64 * 1024


class Credentials:
    def __init__(self, *, ctx_dir: Path, environ: Mapping[str, str]) -> None:
        self._git_file = ctx_dir / GIT_TOKEN_FILE
        self._github_file = ctx_dir / GITHUB_TOKEN_FILE
        self._env_token = environ.get(TOKEN_ENV) or None
        REDACTOR.add(self._env_token)

    def git_token(self) -> str | None:
        """The token for git's remote operations, as it is right now."""
        return _read(self._git_file) or self._env_token

    def github_token(self) -> str | None:
        """The token for the GitHub REST API, as it is right now."""
        return _read(self._github_file) or self.git_token()

    def any(self) -> bool:
        """True if a token may be available now or later (a file can appear during the run)."""
        return self._env_token is not None or self._git_file.exists() or self._github_file.exists()


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        log(f"cannot read {path.name}: {e.strerror}")
        return None
    if len(raw) > _MAX_BYTES:
        log(f"ignoring {path.name}: larger than {_MAX_BYTES} bytes")
        return None
    token = raw.decode("utf-8", "replace").strip()
    REDACTOR.add(token)
    return token or None
