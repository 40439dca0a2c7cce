"""Start and stop a real local control plane: etcd + kube-apiserver on loopback.

Like controller-runtime's envtest: no kube-controller-manager, no scheduler, no kubelet, so no
pods run, namespaces never finish terminating and ownerReference GC does not happen. What the
apiserver does itself is all real: CRDs with structural schemas and CEL, defaulting, status
subresources, finalizers, watches, RBAC, ServiceAccount tokens (TokenRequest).

Authentication is a static token file with an admin (`system:masters`) and an unprivileged
user, plus ServiceAccount tokens signed by a key generated at start. The kubeconfig written to
the state directory uses the admin token.

Processes run in their own sessions. `DevCluster.stop()` terminates them (SIGTERM, then SIGKILL
after a grace period) and waits, so nothing is left behind; `owned=True` additionally asks the
kernel to kill them if the starting process dies (tests). The state directory records the pids
so `agenttask dev-cluster down` can stop a cluster started by another process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import certs
from .build import Binaries, ensure_built

STATE_FILE = "cluster.json"
_PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """The control plane failed to start or to become ready."""


@dataclass(frozen=True)
class TokenUser:
    name: str
    token: str
    groups: tuple[str, ...] = ()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def terminate(pids: list[int], *, grace: float = 10.0) -> None:
    """SIGTERM each process group, wait up to `grace` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


@dataclass
class DevCluster:
    """A local etcd + kube-apiserver pair. Use as a context manager or call start()/stop()."""

    state_dir: Path
    owned: bool = True
    binaries: Binaries | None = None
    extra_users: tuple[TokenUser, ...] = ()
    extra_apiserver_args: tuple[str, ...] = ()
    admin: TokenUser = field(
        default_factory=lambda: TokenUser("agenttask-admin", secrets.token_hex(16), ("system:masters",))
    )
    unprivileged: TokenUser = field(
        default_factory=lambda: TokenUser("agenttask-nobody", secrets.token_hex(16))
    )
    apiserver_port: int = 0
    etcd_port: int = 0
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -------------------------------------------------------------- paths

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def kubectl(self) -> Path:
        assert self.binaries is not None
        return self.binaries.kubectl

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    # ------------------------------------------------------------- start

    def start(self, *, timeout: float = 120.0, log: Callable[[str], None] | None = None) -> DevCluster:
        say = log or (lambda _m: None)
        self.binaries = self.binaries or ensure_built()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        recorded = read_state(self.state_dir).get("pids")
        if isinstance(recorded, dict) and any(_alive(int(p)) for p in recorded.values()):
            raise ClusterError(f"a dev cluster is already running from {self.state_dir}; stop it first")
        pki = certs.generate(self.state_dir / "pki")
        self.etcd_port = self.etcd_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        try:
            self._start_etcd(say)
            self._wait(f"http://127.0.0.1:{self.etcd_port}/health", timeout, "etcd", tls=False)
            self._start_apiserver(pki, say)
            self._wait(f"{self.server}/readyz", timeout, "kube-apiserver", tls=True)
            self._wait_for_default_namespace(timeout)
        except BaseException:
            self.stop()
            raise
        self._write_kubeconfig()
        self._write_state()
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        logfile = (self.state_dir / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.owned else None,
        )
        logfile.close()

    def _start_etcd(self, say: Callable[[str], None]) -> None:
        assert self.binaries is not None
        url = f"http://127.0.0.1:{self.etcd_port}"
        say(f"starting etcd {self.binaries.etcd_version} on {url}")
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=8589934592",
            ],
        )

    def _start_apiserver(self, pki: certs.CertPaths, say: Callable[[str], None]) -> None:
        assert self.binaries is not None
        tokens = self.state_dir / "tokens.csv"
        lines = []
        for user in (self.admin, self.unprivileged, *self.extra_users):
            groups = f',"{",".join(user.groups)}"' if user.groups else ""
            lines.append(f"{user.token},{user.name},{user.name}{groups}")
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        say(f"starting kube-apiserver {self.binaries.kubernetes_version} on {self.server}")
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                f"--api-audiences={self.server}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--cert-dir={self.state_dir / 'pki'}",
                *self.extra_apiserver_args,
            ],
        )

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wait(self, url: str, timeout: float, what: str, *, tls: bool) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.state_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise ClusterError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=self._ssl() if tls else None) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ClusterError(f"{what} not ready after {timeout:.0f}s ({last}); see {self.state_dir}")

    def _wait_for_default_namespace(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req = urllib.request.Request(
                f"{self.server}/api/v1/namespaces/default",
                headers={"Authorization": f"Bearer {self.admin.token}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=2, context=self._ssl()) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ClusterError("namespace 'default' was not created in time")

    def wait_established(self, *crds: str, timeout: float = 60.0) -> None:
        """Wait until every CRD (by name) is Established, reading its conditions over the API.

        Not `kubectl wait --for=condition=Established`: right after a CRD is created its
        `status.conditions` can still be null, and kubectl then fails at once ("accessor error:
        <nil> is of the type <nil>") instead of waiting."""
        deadline = time.monotonic() + timeout
        pending = list(crds)
        while pending:
            name = pending[0]
            req = urllib.request.Request(
                f"{self.server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                headers={"Authorization": f"Bearer {self.admin.token}"})
            try:
                with urllib.request.urlopen(req, timeout=5, context=self._ssl()) as resp:
                    conditions = (json.loads(resp.read()).get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    pending.pop(0)
                    continue
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"CRD {name} was not Established within {timeout:.0f}s")
            time.sleep(0.1)

    def kubeconfig_for(self, user: TokenUser, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig that authenticates as `user` (by token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "agenttask-dev", "cluster": {"server": self.server,
                                                      "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user.name, "user": {"token": user.token}}],
            "contexts": [
                {"name": "agenttask-dev",
                 "context": {"cluster": "agenttask-dev", "user": user.name, "namespace": namespace}}
            ],
            "current-context": "agenttask-dev",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def _write_kubeconfig(self) -> None:
        self.kubeconfig_for(self.admin, self.kubeconfig)

    def _write_state(self) -> None:
        assert self.binaries is not None
        state = {
            "pids": self.pids(),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "binaries": str(self.binaries.directory),
            "etcd": f"http://127.0.0.1:{self.etcd_port}",
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    # -------------------------------------------------------------- stop

    def stop(self) -> None:
        # the apiserver first, so it does not log etcd connection errors while stopping
        order = [p for p in ("kube-apiserver", "etcd") if p in self._procs]
        terminate([self._procs[name].pid for name in order])
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    def restart_apiserver(self, *, timeout: float = 120.0) -> None:
        """Stop and start kube-apiserver only; etcd keeps the data (chaos tests)."""
        proc = self._procs.pop("kube-apiserver")
        terminate([proc.pid])
        proc.wait(timeout=5)
        pki = self.state_dir / "pki"
        paths = certs.CertPaths(
            pki / "ca.crt", pki / "apiserver.crt", pki / "apiserver.key", pki / "sa.pub", pki / "sa.key"
        )
        self._start_apiserver(paths, lambda _m: None)
        self._wait(f"{self.server}/readyz", timeout, "kube-apiserver", tls=True)
        self._write_state()

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_state(state_dir: Path) -> dict[str, object]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    data: dict[str, object] = json.loads(path.read_text())
    return data


def stop_from_state(state_dir: Path) -> bool:
    """Stop a cluster recorded in `state_dir` by another process. False if none was running."""
    state = read_state(state_dir)
    pids = state.get("pids")
    if not isinstance(pids, dict):
        return False
    ordered = [int(pids[n]) for n in ("kube-apiserver", "etcd") if n in pids]
    running = [p for p in ordered if _alive(p)]
    terminate(running)
    (state_dir / STATE_FILE).unlink()
    return bool(running)


@contextlib.contextmanager
def running(state_dir: Path, **kwargs: object) -> Iterator[DevCluster]:
    cluster = DevCluster(state_dir=state_dir, **kwargs)  # type: ignore[arg-type]
    with cluster:
        yield cluster
