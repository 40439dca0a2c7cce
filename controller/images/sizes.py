"""Where an image's bytes go: its layers (podman history) and its file tree by directory.

`tree()` mounts the image read-only through podman, sums the sizes of regular files (hard links
once) per directory prefix and unmounts it; `group()` is the pure part. Used by
`agenttask images sizes` and for docs/images.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .podman import Podman


@dataclass(frozen=True)
class Layer:
    size: int
    created_by: str


def group(entries: Iterable[tuple[str, int]], *, depth: int) -> Counter[str]:
    """Sum sizes of relative paths by their first `depth` components (files above that depth
    count under their own directory)."""
    totals: Counter[str] = Counter()
    for rel, size in entries:
        parts = rel.split("/")
        key = "/".join(parts[:depth]) if len(parts) > depth else "/".join(parts[:-1]) or "."
        totals["/" + key.lstrip("/") if key != "." else "/"] += size
    return totals


def walk(root: Path) -> Iterable[tuple[str, int]]:
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            yield os.path.relpath(path, root), st.st_size


def tree(podman: Podman, ref: str, *, depth: int = 3) -> Counter[str]:
    mountpoint = Path(podman.run("image", "mount", ref).strip())
    try:
        return group(walk(mountpoint), depth=depth)
    finally:
        podman.run("image", "unmount", ref)


def layers(podman: Podman, ref: str) -> list[Layer]:
    history = json.loads(podman.run("history", "--format=json", "--no-trunc", ref))
    return [Layer(int(h.get("size", 0)), str(h.get("CreatedBy") or h.get("createdBy") or ""))
            for h in history]
