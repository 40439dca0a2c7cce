"""Where things live under the server's ``--root`` directory, and the sandbox skeleton.

Layout::

    <root>/<sandbox id>/            the sandbox's filesystem root ("/" for file APIs)
        home/<user>/                its user's home (HOME), the default working directory
        tmp/                        TMPDIR
    <root>/.logs/<sandbox id>/      session command logs (outside the sandbox's reach)
    <root>/.pools/<pool id>/<n>/    pre-created skeletons waiting in a warm pool

Does: compute these paths and create/remove them.
Does not: decide when (see `store` and `catalog`).
"""

from __future__ import annotations

import os
import shutil
import stat

from .isolation import home_of


def sandbox_dir(root: str, sandbox_id: str) -> str:
    """Host directory of a sandbox."""
    return os.path.join(root, sandbox_id)


def log_dir(root: str, sandbox_id: str) -> str:
    """Host directory of a sandbox's command logs."""
    return os.path.join(root, ".logs", sandbox_id)


def pools_dir(root: str) -> str:
    """Host directory holding warm-pool skeletons."""
    return os.path.join(root, ".pools")


def make_skeleton(path: str, user: str) -> None:
    """Create an empty sandbox filesystem for `user` at `path`."""
    os.makedirs(os.path.join(path, home_of(user).lstrip("/")), mode=0o755, exist_ok=True)
    os.makedirs(os.path.join(path, "tmp"), mode=0o777, exist_ok=True)


def remove_tree(path: str) -> None:
    """Remove a directory tree, making read-only parts writable first (git objects are 0444)."""

    def onerror(func: object, failed: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            os.chmod(failed, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)
