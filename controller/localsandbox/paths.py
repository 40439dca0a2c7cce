"""Mapping sandbox paths in requests to host paths under the sandbox directory.

Does: treat an absolute request path as relative to the sandbox root
(``/workspace/repo`` -> ``<root>/<id>/workspace/repo``), a relative one as relative to the
sandbox user's home (``/home/<user>``), and reject paths that climb above the root with
``..``, contain NUL bytes or are empty. `ensure_inside` additionally resolves symlinks of the
existing part of a path, so a link planted inside the sandbox cannot lead file APIs outside;
the only links it follows out are a sandbox's volume mounts, registered with `allow_mount`
(a process-wide registry keyed by the sandbox directory, emptied by `forget_mounts`).

Does not: create, read or write anything (only `ensure_inside` looks at the filesystem).
"""

from __future__ import annotations

import os
import posixpath

from .errors import daemon_error


class PathError(ValueError):
    """A request path that does not stay inside the sandbox."""


def virtual_path(path: str, home: str) -> str:
    """Normalise a request path to an absolute in-sandbox path; raises `PathError`."""
    if not path or "\x00" in path:
        raise PathError("path must be a non-empty string without NUL bytes")
    full = path if path.startswith("/") else posixpath.join(home, path)
    parts: list[str] = []
    for part in full.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathError(f"path {path!r} escapes the sandbox")
            parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def host_path(root: str, virtual: str) -> str:
    """The host path of an already normalised in-sandbox path."""
    return os.path.join(root, virtual.lstrip("/")) if virtual != "/" else root


def resolve(root: str, home: str, path: str) -> tuple[str, str]:
    """(in-sandbox path, host path) for a request path, or a 400 daemon `ApiError`."""
    try:
        virtual = virtual_path(path, home)
    except PathError as exc:
        raise daemon_error(400, str(exc), "INVALID_FILE_PATH") from exc
    return virtual, host_path(root, virtual)


_MOUNTS: dict[str, set[str]] = {}  # real sandbox directory -> real volume directories mounted in it


def allow_mount(root: str, target: str) -> None:
    """Let paths of the sandbox at `root` lead into the volume directory `target`."""
    _MOUNTS.setdefault(os.path.realpath(root), set()).add(os.path.realpath(target))


def forget_mounts(root: str) -> None:
    """The sandbox at `root` is gone: forget its mounts."""
    _MOUNTS.pop(os.path.realpath(root), None)


def _within(real: str, base: str) -> bool:
    return real == base or real.startswith(base + os.sep)


def ensure_inside(root: str, host: str) -> None:
    """Raise a 400 daemon `ApiError` if the existing part of `host` resolves outside `root`
    (and outside the volumes mounted in it)."""
    real_root = os.path.realpath(root)
    probe = host
    while not os.path.lexists(probe) and probe != root and len(probe) > len(root):
        probe = os.path.dirname(probe)
    real = os.path.realpath(probe)
    if not _within(real, real_root) and not any(_within(real, m) for m in _MOUNTS.get(real_root, ())):
        raise daemon_error(400, "path leads outside the sandbox", "INVALID_FILE_PATH")
