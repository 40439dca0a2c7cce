"""The project's own podman: configuration, storage and runtime state under the user's cache.

podman reads three files selected by environment variables, so nothing under /etc/containers is
changed and the host's own podman storage is never touched:

- `storage.conf`: overlay driver, graphroot and runroot under `<cache>/images/`;
- `containers.conf`: `cgroup_manager = "cgroupfs"` (no systemd needed), `events_logger = "file"`,
  `runtime = "runc"` (crun refuses hybrid cgroup hosts: "cgroups in hybrid mode not supported"),
  `tmp_dir` under the cache, and `default_ulimits` no higher than this process's hard limits
  (podman asks for 1048576 open files by default, which fails without CAP_SYS_RESOURCE:
  "setrlimit `RLIMIT_NOFILE`: Operation not permitted");
- `registries.conf`: no unqualified search registries, so a short name never reaches a registry.

It runs podman and returns its output; it knows nothing about which images exist (`build.py`).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class PodmanError(RuntimeError):
    """podman is missing or a podman command failed."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agenttask" / "images"


def ulimits(*, nofile_hard: int, nproc_hard: int) -> list[str]:
    """podman's default ulimits, capped at what this process may set (hard limits)."""
    def cap(want: int, hard: int) -> int:
        return want if hard == resource.RLIM_INFINITY else min(want, hard)
    nofile, nproc = cap(1048576, nofile_hard), cap(32768, nproc_hard)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def render_configs(root: Path, *, limits: Sequence[str]) -> dict[str, str]:
    """The three config files (name -> TOML text) for a podman rooted at `root`."""
    storage = (
        "[storage]\n"
        'driver = "overlay"\n'
        f"graphroot = {json.dumps(str(root / 'storage'))}\n"
        f"runroot = {json.dumps(str(root / 'run'))}\n"
    )
    containers = (
        "[containers]\n"
        f"default_ulimits = {json.dumps(list(limits))}\n"
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f"events_logfile_path = {json.dumps(str(root / 'events.log'))}\n"
        'runtime = "runc"\n'
        f"tmp_dir = {json.dumps(str(root / 'tmp'))}\n"
    )
    registries = "unqualified-search-registries = []\n"
    return {"storage.conf": storage, "containers.conf": containers, "registries.conf": registries}


@dataclass(frozen=True)
class Podman:
    root: Path

    @classmethod
    def default(cls) -> Podman:
        return cls(cache_root())

    @property
    def config_dir(self) -> Path:
        return self.root / "podman"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(self.config_dir / "storage.conf"),
            "CONTAINERS_CONF": str(self.config_dir / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.config_dir / "registries.conf"),
        }

    def prepare(self) -> None:
        if shutil.which("podman") is None:
            raise PodmanError("podman is not installed (run ./hack/node-deps.sh)")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        for name, text in render_configs(self.root, limits=ulimits(nofile_hard=nofile, nproc_hard=nproc)).items():
            path = self.config_dir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def run(self, *args: str, stdin: int | None = subprocess.DEVNULL, log: Path | None = None,
            timeout: float = 3600) -> str:
        """Run `podman ARGS`; its stdout, or PodmanError with the end of its output."""
        self.prepare()
        argv = ["podman", *args]
        if log is not None:
            with log.open("ab") as out:
                done = subprocess.run(argv, env=self.env(), stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout, check=False)
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-4000:]
                raise PodmanError(f"podman {args[0]} failed ({done.returncode}); {log}:\n{tail}")
            return ""
        proc = subprocess.run(argv, env=self.env(), stdin=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-4000:]}")
        return proc.stdout

    def exists(self, ref: str) -> bool:
        self.prepare()
        done = subprocess.run(["podman", "image", "exists", ref], env=self.env(), capture_output=True, check=False)
        return done.returncode == 0

    def inspect(self, ref: str) -> dict[str, object]:
        data = json.loads(self.run("image", "inspect", ref))
        if not data:
            raise PodmanError(f"no image {ref}")
        first: dict[str, object] = data[0]
        return first

    def image_id(self, ref: str) -> str:
        return str(self.inspect(ref)["Id"])

    def size(self, ref: str) -> int:
        return int(str(self.inspect(ref)["Size"]))
