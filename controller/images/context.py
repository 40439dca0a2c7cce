"""The build context of a Dockerfile as a content hash: which files `.dockerignore` lets in.

Implements `.dockerignore` as Docker documents it: patterns in order, the last match wins, `!`
re-includes, a pattern also matches every path below a matching directory, `*` and `?` stay
within one path segment and `**` spans any number of them. Pure apart from reading files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

# never part of a context here, and expensive to walk
_PRUNE = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per pattern line."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = os.path.normpath(pattern.lstrip("/")) if pattern.lstrip("/") else ""
        pattern = "" if pattern == "." else pattern
        rules.append((negate, re.compile(_translate(pattern))))
    return rules


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # a match on a directory covers everything below it
    return "^" + "".join(out) + "(?:/.*)?$"


def included(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    keep = True
    for negate, regex in rules:
        if regex.match(path):
            keep = negate
    return keep


def context_files(root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> Iterator[str]:
    """Relative paths (sorted walk) of the regular files in the context."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _PRUNE)
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if included(rel, rules) and os.path.isfile(os.path.join(dirpath, name)):
                yield rel


def digest(root: Path, *, dockerfile: str, extra: Iterable[str] = ()) -> str:
    """sha256 over the Dockerfile, every context file (path and bytes) and `extra` strings."""
    ignore = root / ".dockerignore"
    rules = parse_dockerignore(ignore.read_text()) if ignore.is_file() else []
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + (root / dockerfile).read_bytes() + b"\0")
    for rel in context_files(root, rules):
        h.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    for item in extra:
        h.update(b"extra\0" + item.encode() + b"\0")
    return h.hexdigest()
