"""What a dev-cluster node changes outside its state directory, and how it is put back.

- Kernel tunables. kubelet sets a few machine-wide sysctls once at start (vm.overcommit_memory,
  kernel.panic, kernel.panic_on_oops, ...); `protectKernelDefaults` is no way out (kubelet then
  refuses to start). `SysctlGuard` saves the originals before the first node of this machine
  starts and writes them back once its kubelet is up and again when a node stops. Nodes register
  in a machine-wide directory on tmpfs, under a lock, so the first node's originals are the ones
  restored however several nodes overlap.
- Cgroups. kubelet gets a cgroup root of the node's own (`/agenttask-<id>`, created here in every
  hierarchy), so its `kubepods` tree never mixes with another node's; `remove_cgroups` kills
  what is left in it and removes it bottom-up.
- Mounts. containerd (container root file systems, pod network namespaces) and kubelet (volumes)
  mount only below the state directory; `unmount_below` removes them deepest first.
- Directories containerd 1.6 and libcni create at fixed paths (`LEFTOVER_DIRS`): removed when
  empty, and only if they did not exist before the node started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
REGISTRY = Path("/run/agenttask-dev-cluster")
LEFTOVER_DIRS = ("/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni")
CGROUP_FS = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    registry.mkdir(parents=True, exist_ok=True)
    with (registry / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class SysctlGuard:
    def __init__(self, node_id: str, *, registry: Path = REGISTRY, proc_sys: Path = Path("/proc/sys")):
        self.node_id, self.registry, self.proc_sys = node_id, registry, proc_sys

    @property
    def _saved(self) -> Path:
        return self.registry / "sysctls.json"

    def read(self) -> dict[str, str]:
        values = {}
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                values[key] = (self.proc_sys / key).read_text().strip()
        return values

    def acquire(self) -> None:
        with _locked(self.registry):
            nodes = self.registry / "nodes"
            nodes.mkdir(exist_ok=True)
            if not any(nodes.iterdir()) or not self._saved.exists():
                self._saved.write_text(json.dumps(self.read()))
            (nodes / self.node_id).touch()

    def originals(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self._saved.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def restore(self) -> dict[str, tuple[str, str]]:
        """Write back every tunable that differs from the saved original; {key: (found, restored)}."""
        changed = {}
        current = self.read()
        for key, value in self.originals().items():
            if current.get(key) not in (None, value):
                (self.proc_sys / key).write_text(value)
                changed[key] = (current[key], value)
        return changed

    def release(self) -> bool:
        """Unregister this node and restore the tunables; True if no other node is registered."""
        with _locked(self.registry):
            self.restore()
            with contextlib.suppress(FileNotFoundError):
                (self.registry / "nodes" / self.node_id).unlink()
            nodes = self.registry / "nodes"
            last = not nodes.is_dir() or not any(nodes.iterdir())
            if last:
                self._saved.unlink(missing_ok=True)
            return last


# ------------------------------------------------------------------------------------ cgroups

def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, file system type) of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            left, _, right = line.partition(" - ")
            out.append((_unescape(left.split()[4]), right.split()[0]))
    return out


def cgroup_hierarchies() -> list[Path]:
    return [Path(p) for p, fstype in _mountinfo()
            if fstype in ("cgroup", "cgroup2") and Path(p).is_relative_to(CGROUP_FS)]


def create_cgroups(name: str) -> None:
    """`/<name>` in every hierarchy (cpuset needs its cpus and mems copied from the root)."""
    for root in cgroup_hierarchies():
        path = root / name
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (root / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((root / knob).read_text())


def cgroup_paths(name: str) -> list[Path]:
    return [root / name for root in cgroup_hierarchies() if (root / name).exists()]


def remove_cgroups(name: str, *, timeout: float = 20.0) -> list[Path]:
    """Kill what is left in `/<name>` and remove it bottom-up; the paths that could not be removed."""
    deadline = time.monotonic() + timeout
    left: list[Path] = []
    for top in cgroup_paths(name):
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for path in dirs:
            while True:
                with contextlib.suppress(OSError):
                    for pid in (path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        left.append(path)
                        break
                    time.sleep(0.1)
    return left


# ------------------------------------------------------------------------------------- mounts

def mounts_below(prefix: Path) -> list[str]:
    base = str(prefix.resolve())
    return [p for p, _ in _mountinfo() if p == base or p.startswith(base + "/")]


def unmount_below(prefix: Path, *, keep: tuple[str, ...] = ()) -> list[str]:
    """Unmount everything at or below `prefix` (but `keep`), deepest first; what is still mounted."""
    for _ in range(5):
        targets = [p for p in mounts_below(prefix) if p not in keep]
        if not targets:
            return []
        for path in sorted(targets, key=lambda p: p.count("/"), reverse=True):
            done = subprocess.run(["umount", path], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "--lazy", path], capture_output=True, check=False)
    return [p for p in mounts_below(prefix) if p not in keep]


# -------------------------------------------------------------------------------- leftovers

def existing_leftover_dirs() -> list[str]:
    return [d for d in LEFTOVER_DIRS if os.path.isdir(d)]


def remove_leftover_dirs(preexisting: list[str], *, network: str, containers: list[str], last_node: bool,
                         timeout: float = 5.0) -> None:
    """Remove this node's CNI results (its network's, and containerd's loopback entries of its
    `containers`) and the fixed directories it created. The shim sockets that
    containerd 1.6 keeps in /run/containerd/s (named by hashes, so not attributable to a node)
    are removed only when no other node runs: killed shims leave theirs behind."""
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for entry in results.glob(f"{network}-*"):
            entry.unlink(missing_ok=True)
        for cid in containers:
            for entry in results.glob(f"*-{cid}-*"):
                entry.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    for path in LEFTOVER_DIRS:  # children before parents
        if path in preexisting:
            continue
        while os.path.isdir(path):
            if last_node and path == "/run/containerd/s":
                for entry in Path(path).iterdir():
                    if entry.is_socket():
                        entry.unlink(missing_ok=True)
            try:
                os.rmdir(path)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
