"""Build (once) and locate the control-plane binaries: kube-apiserver, kubectl and etcd, and on
demand the node's: kubelet, kube-controller-manager, kube-scheduler and kube-proxy.

No package registry ships kube-apiserver, so `hack/controlplane/` is a small Go module that
requires upstream k8s.io/kubernetes and go.etcd.io/etcd/server/v3 at pinned versions. This
module compiles it into a cache directory keyed by those versions and a hash of go.mod/go.sum,
so the slow first build (minutes) happens once per machine and version. Binaries are never
written into the source tree.

It does not start anything: see `cluster.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("kube-apiserver", "kubectl", "etcd")
# `agenttask dev-cluster up --node` only; built into the same directory the first time a node starts
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy")
_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
}


class BuildError(RuntimeError):
    """The control plane could not be built or found."""


@dataclass(frozen=True)
class Binaries:
    directory: Path
    kubernetes_version: str
    etcd_version: str

    @property
    def kube_apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.directory / "kubectl"

    @property
    def etcd(self) -> Path:
        return self.directory / "etcd"

    def path(self, name: str) -> Path:
        return self.directory / name

    def present(self, names: tuple[str, ...] = BINARIES) -> bool:
        return all(os.access(self.directory / b, os.X_OK) for b in names)


def source_dir() -> Path:
    """Where the Go recipe lives: $AGENTTASK_CONTROLPLANE_SRC or the repository's hack/controlplane."""
    env = os.environ.get("AGENTTASK_CONTROLPLANE_SRC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "hack" / "controlplane"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agenttask" / "controlplane"


def parse_versions(go_mod: str) -> tuple[str, str]:
    """(kubernetes, etcd) versions required by the recipe's go.mod."""
    k8s = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", go_mod, re.M)
    etcd = re.search(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", go_mod, re.M)
    if not k8s or not etcd:
        raise BuildError("hack/controlplane/go.mod must require k8s.io/kubernetes and etcd server/v3")
    return k8s.group(1), etcd.group(1)


def expected(src: Path | None = None) -> Binaries:
    """The cache location for the recipe in `src` (nothing is built)."""
    prebuilt = os.environ.get("AGENTTASK_CONTROLPLANE_BIN")
    src = src or source_dir()
    go_mod = (src / "go.mod").read_text()
    k8s, etcd = parse_versions(go_mod)
    if prebuilt:
        return Binaries(Path(prebuilt), k8s, etcd)
    digest = hashlib.sha256(go_mod.encode() + (src / "go.sum").read_bytes()).hexdigest()[:12]
    return Binaries(cache_root() / f"k8s-{k8s}-etcd-{etcd}-{digest}", k8s, etcd)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(*, src: Path | None = None, log: bool = True, node: bool = False) -> Binaries:
    """Return the cached binaries, building them first if they are missing (with `node`, also
    the node's).

    Concurrent callers (parallel test sessions, CI and a developer) serialise on a lock file;
    each build goes to a temporary directory whose binaries are moved into place only when all of
    them are complete.
    """
    src = src or source_dir()
    bins = expected(src)
    wanted = BINARIES + NODE_BINARIES if node else BINARIES
    if bins.present(wanted):
        return bins
    if os.environ.get("AGENTTASK_CONTROLPLANE_BIN"):
        raise BuildError(f"AGENTTASK_CONTROLPLANE_BIN={bins.directory} lacks {', '.join(wanted)}")
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain is needed once to build the control plane (go not on PATH)")
    with _lock(bins.directory.with_suffix(".lock")):
        if not bins.present(BINARIES):
            _build(go, src, bins, BINARIES, log=log, what=f"kube-apiserver, kubectl {bins.kubernetes_version} "
                                                          f"and etcd {bins.etcd_version}")
        if node and not bins.present(NODE_BINARIES):
            _build(go, src, bins, NODE_BINARIES, log=log,
                   what=f"kubelet, kube-controller-manager, kube-scheduler, kube-proxy {bins.kubernetes_version}")
    if not bins.present(wanted):
        raise BuildError(f"build finished but binaries are missing in {bins.directory}")
    return bins


def _build(go: str, src: Path, bins: Binaries, names: tuple[str, ...], *, log: bool, what: str) -> None:
    minor = bins.kubernetes_version.split(".")[1]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={bins.kubernetes_version}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    bins.directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bins.directory.parent, prefix=".build-") as tmp:
        out = Path(tmp)
        env = {**os.environ, "CGO_ENABLED": "0"}
        if log:
            print(f"building {what} into {bins.directory} (first time only; takes minutes)",
                  file=sys.stderr, flush=True)
        for name in names:
            done = subprocess.run(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out / name), _PACKAGES[name]],
                cwd=src, env=env, capture_output=True, text=True,
            )
            if done.returncode != 0:
                raise BuildError(f"go build {_PACKAGES[name]} failed:\n{done.stderr[-4000:]}")
        bins.directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            (out / name).rename(bins.directory / name)
