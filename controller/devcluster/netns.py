"""A network namespace of the dev cluster's own, kept alive by a bind mount in its state directory.

Not `ip netns`: that keeps namespaces under the machine-wide /run/netns and its `exec` remounts
/sys, which hides the cgroup mounts kubelet needs. Here the namespace is bound to
`<state>/netns/net` (the `netns` directory is first bind-mounted onto itself and made private,
so the binding works whatever the propagation of the file system above it), and processes
enter it with `nsenter --net=<that file>`, keeping the host's mount namespace.

Inside it: `lo` up with 127.0.0.1 and the node address (a /32 on lo: kubelet refuses a loopback
node IP and there may be no dummy interface), and a route for the service range over lo, so
node-local processes reach ClusterIPs through kube-proxy's rules. No interface connects it to
the host network: nothing inside can reach, or be reached from, anything outside (host tools
come in through `bridge.py`). This module does not start any component.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class NetnsError(RuntimeError):
    """The namespace could not be created or entered."""


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return any(line.split()[4] == target for line in info)


@dataclass(frozen=True)
class Netns:
    directory: Path  # <state>/netns

    @property
    def file(self) -> Path:
        return self.directory / "net"

    def exists(self) -> bool:
        return _mounted(self.file)

    def inode(self) -> int:
        return os.stat(self.file).st_ino

    def enter(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace (exec'd by nsenter: the pid stays the program's)."""
        return ["nsenter", f"--net={self.file}", "--", *argv]

    def create(self, *, node_ip: str, service_cidr: str) -> None:
        if self.exists():
            raise NetnsError(f"{self.file} is already a network namespace; run `dev-cluster down` first")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not _mounted(self.directory):
            _run(["mount", "--bind", str(self.directory), str(self.directory)])
        _run(["mount", "--make-private", str(self.directory)])
        self.file.touch()
        _run(["unshare", f"--net={self.file}", "true"])
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{node_ip}/32", "dev", "lo"],
            ["ip", "route", "add", service_cidr, "dev", "lo", "src", node_ip],
        ):
            _run(self.enter(cmd))

    def delete(self) -> None:
        """Unbind the namespace (it goes away with its last process) and the directory mount."""
        for path in (self.file, self.directory):
            if _mounted(path):
                _run(["umount", str(path)])
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()

    def processes(self) -> list[int]:
        """Pids of the processes inside this namespace (for teardown)."""
        if not self.exists():
            return []
        return processes_in(self.inode())


def processes_in(inode: int) -> list[int]:
    """Pids of the processes whose network namespace has this inode (also after it was unbound)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    found.append(int(entry))
    return found
