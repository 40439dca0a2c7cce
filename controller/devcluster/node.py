"""A real single-node Kubernetes inside a network namespace of its own: `dev-cluster up --node`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (Debian, with runc and
the CNI bridge/host-local/portmap plugins), kubelet, kube-proxy and dnsmasq (cluster DNS) all run
inside the namespace (`netns.py`); the only thing on the host network is a socat on 127.0.0.1
forwarding to the apiserver (`bridge.py`), so host kubectl and helm work with `kubeconfig`.
Pods reach the apiserver through the real `kubernetes` Service (kube-proxy's rules) and
processes started with `spawn()` (e.g. the embedded sandbox server) at the node address.

Images come from the project's podman (`controller.images`): `load_image()` saves a docker
archive and imports it into containerd; Pods use them with `imagePullPolicy: Never`. Nothing
is ever pulled from a registry.

`stop()` (and `stop_node_from_state()` for `dev-cluster down`) stops every process, kills what
is left in the node's cgroups and namespace, unmounts everything below the state directory,
removes the cgroups and the fixed-path directories it created, and restores the kernel
tunables kubelet changed (`hoststate.py`). The state directory records what is needed for that.
Requires root (namespaces, mounts, cgroups), as kubelet does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import certs, hoststate, nodeconfig
from .bridge import socat_argv
from .build import Binaries, ensure_built
from .cluster import ClusterError, TokenUser, _alive, _die_with_parent, free_port, terminate
from .netns import Netns, processes_in

STATE_FILE = "node.json"
REQUIRED_TOOLS = ("nsenter", "unshare", "ip", "mount", "umount", "socat", "containerd", "ctr", "runc", "iptables",
                  "dnsmasq", "podman")
# stop order: what depends on others first
_STOP_ORDER = ("bridge", "dnsmasq", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager")
_CONTROL = ("kube-apiserver", "etcd")


def node_id(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


@dataclass
class NodeCluster:
    """A control plane plus one real node. Use as a context manager or call start()/stop()."""

    state_dir: Path
    owned: bool = True
    images: tuple[str, ...] = ()  # podman references to import into containerd at start
    binaries: Binaries | None = None
    host_port: int = 0
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tokens: dict[str, TokenUser] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()
        self.layout = nodeconfig.NodeLayout(state=self.state_dir, node_id=node_id(self.state_dir))
        self.netns = Netns(self.state_dir / "netns")
        self.sysctls = hoststate.SysctlGuard(self.layout.node_id)

    # ---------------------------------------------------------------- access

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.host_port}"

    @property
    def ca_file(self) -> Path:
        return self.layout.pki / "ca.crt"

    @property
    def kubectl(self) -> Path:
        assert self.binaries is not None
        return self.binaries.kubectl

    @property
    def node_ip(self) -> str:
        return self.layout.node_ip

    @property
    def admin(self) -> TokenUser:
        return self._tokens["admin"]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    # ----------------------------------------------------------------- start

    def start(self, *, timeout: float = 300.0, log: Callable[[str], None] | None = None) -> NodeCluster:
        say = log or (lambda _m: None)
        if os.geteuid() != 0:
            raise ClusterError("a dev-cluster node needs root (network namespace, mounts, cgroups), like kubelet")
        if missing := missing_tools():
            raise ClusterError(f"missing {', '.join(missing)}: run ./hack/node-deps.sh")
        self.binaries = self.binaries or ensure_built(node=True)
        if read_node_state(self.state_dir):
            raise ClusterError(f"a dev-cluster node is recorded in {self.state_dir}; run `dev-cluster down` first")
        from controller.images.build import archive, ensure_image  # the node's pause image and its archive

        pause = ensure_image("pause", log=say).ref
        archives = [archive(pause), *(archive(ref) for ref in self.images)]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        if mounted := hoststate.mounts_below(self.state_dir):
            raise ClusterError(f"mounts left below {self.state_dir} ({mounted[0]}, ...): run `dev-cluster down`")
        for stale in ("etcd", "kubelet", "containerd", "cni", "pod-logs", "logs"):  # every node starts empty
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        started = time.monotonic()
        state: dict[str, Any] = {"node_id": self.layout.node_id, "preexisting": hoststate.existing_leftover_dirs(),
                                 "started": time.time()}
        self.sysctls.acquire()
        try:
            self.netns.create(node_ip=self.layout.node_ip, service_cidr=self.layout.service_cidr)
            state["netns_inode"] = self.netns.inode()
            self._write_state(state)
            self._configure(pause)
            self.host_port = self.host_port or free_port()
            self._spawn("bridge", socat_argv(netns_file=self.netns.file, listen_port=self.host_port,
                                             target_host="127.0.0.1", target_port=self.layout.apiserver_port),
                        inside=False)
            state["host_port"] = self.host_port
            say(f"starting etcd and kube-apiserver {self.binaries.kubernetes_version} in the node's namespace")
            self._spawn("etcd", nodeconfig.etcd_argv(self.layout, self.binaries.etcd))
            self._spawn("kube-apiserver", nodeconfig.apiserver_argv(self.layout, self.binaries.kube_apiserver,
                                                                     tokens=self.state_dir / "tokens.csv"))
            self._write_state(state)
            self._wait(lambda: self._get("/readyz") is not None, timeout, "kube-apiserver /readyz")
            self._spawn("kube-controller-manager",
                        nodeconfig.controller_manager_argv(self.layout, self.binaries.path("kube-controller-manager")))
            self._spawn("kube-scheduler", nodeconfig.scheduler_argv(self.layout, self.binaries.path("kube-scheduler")))
            say("starting containerd, importing images")
            self._spawn("containerd", ["containerd", f"--config={self.layout.containerd_dir / 'config.toml'}"])
            self._write_state(state)
            self._wait(self.layout.containerd_socket.exists, timeout, "containerd socket")
            for path in archives:
                self._ctr("images", "import", str(path))
            hoststate.create_cgroups(self.layout.cgroup_root)
            say("starting kubelet and kube-proxy")
            self._spawn("kubelet", [
                str(self.binaries.path("kubelet")), f"--config={self.state_dir / 'kubelet.json'}",
                f"--kubeconfig={self.layout.kubeconfig_path('kubelet')}", f"--root-dir={self.layout.kubelet_dir}",
                f"--node-ip={self.layout.node_ip}", f"--hostname-override={self.layout.node_name}"])
            self._spawn("kube-proxy", [str(self.binaries.path("kube-proxy")),
                                       f"--config={self.state_dir / 'kube-proxy.json'}"])
            self._spawn("dnsmasq", nodeconfig.dnsmasq_argv(self.layout))
            self._write_state(state)
            self._wait(self._node_ready, timeout, f"node {self.layout.node_name} Ready")
            restored = self.sysctls.restore()
            if restored:
                say("restored the kernel tunables kubelet changed: "
                    + ", ".join(f"{k.replace('/', '.')} {a}->{b}" for k, (a, b) in restored.items()))
            self._wait(lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                       timeout, "the default ServiceAccount")
            self._wait(self._kube_proxy_synced, timeout, "kube-proxy's service rules")
        except BaseException:
            self.stop()
            raise
        self._write_kubeconfig()
        say(f"node {self.layout.node_name} Ready in {time.monotonic() - started:.0f}s")
        return self

    def _configure(self, pause: str) -> None:
        assert self.binaries is not None
        lay = self.layout
        certs.generate(lay.pki, extra_ips=(lay.node_ip, lay.kubernetes_service_ip),
                       extra_dns=(f"kubernetes.default.svc.{lay.cluster_domain}",))
        self._tokens = {
            "admin": TokenUser("agenttask-admin", secrets.token_hex(16), ("system:masters",)),
            "kubelet": TokenUser(f"system:node:{lay.node_name}", secrets.token_hex(16), ("system:nodes",)),
            "kube-controller-manager": TokenUser("system:kube-controller-manager", secrets.token_hex(16)),
            "kube-scheduler": TokenUser("system:kube-scheduler", secrets.token_hex(16)),
            "kube-proxy": TokenUser("system:kube-proxy", secrets.token_hex(16)),
        }
        lines = []
        for user in self._tokens.values():
            groups = f',"{",".join(user.groups)}"' if user.groups else ""
            lines.append(f"{user.token},{user.name},{user.name}{groups}")
        _write(self.state_dir / "tokens.csv", "\n".join(lines) + "\n")
        for key, user in self._tokens.items():
            _write(lay.kubeconfig_path(key), nodeconfig.kubeconfig(
                server=lay.inside_server, ca_file=self.ca_file, user=user.name, token=user.token))
        runc = shutil.which("runc") or "runc"
        _write(lay.containerd_dir / "config.toml", nodeconfig.containerd_config(lay, sandbox_image=pause, runc=runc))
        _write(lay.cni_conf_dir / "10-agenttask.conflist", nodeconfig.cni_conflist(lay))
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        _write(self.state_dir / "kubelet.json", nodeconfig.kubelet_config(
            lay, max_open_files=nofile if nofile != resource.RLIM_INFINITY else 1048576))
        _write(self.state_dir / "kube-proxy.json", nodeconfig.kube_proxy_config(lay))
        (self.state_dir / "pod-logs").mkdir(exist_ok=True)

    def _spawn(self, name: str, argv: Sequence[str], *, inside: bool = True,
               env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                self.netns.enter(argv) if inside else list(argv), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent if self.owned else None)
        self._procs[name] = proc
        return proc

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              inside: bool = True) -> subprocess.Popen[bytes]:
        """Run `argv` inside the node's namespace (reachable from Pods at `node_ip`), stopped with the node.
        Its output goes to `<state>/logs/<name>.log`."""
        if name in self._procs or name in (*_STOP_ORDER, *_CONTROL, "containerd"):
            raise ValueError(f"a process named {name} is already part of the node")
        proc = self._spawn(name, argv, env=env, inside=inside)
        state = read_node_state(self.state_dir)
        state.setdefault("extra", []).append(name)
        self._write_state(state)
        return proc

    def bridge(self, port: int, *, name: str | None = None) -> int:
        """A host port on 127.0.0.1 forwarding to `node_ip:port` inside the namespace."""
        host_port = free_port()
        self.spawn(name or f"bridge-{port}", socat_argv(netns_file=self.netns.file, listen_port=host_port,
                                                        target_host=self.layout.node_ip, target_port=port),
                   inside=False)
        return host_port

    def load_image(self, ref: str) -> None:
        """Import a podman image into the node's containerd (Pods use it with imagePullPolicy: Never)."""
        from controller.images.build import archive

        self._ctr("images", "import", str(archive(ref)))

    def _ctr(self, *args: str) -> str:
        done = subprocess.run(["ctr", f"--address={self.layout.containerd_socket}", "--namespace=k8s.io", *args],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    # ---------------------------------------------------------------- checks

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _get(self, path: str) -> dict[str, Any] | None:
        req = urllib.request.Request(f"{self.server}{path}",
                                     headers={"Authorization": f"Bearer {self.admin.token}"})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl()) as resp:
                body = resp.read()
                try:
                    data: dict[str, Any] = json.loads(body)
                except ValueError:
                    data = {"raw": body.decode(errors="replace")}
                return data
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return None

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{self.layout.node_name}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _kube_proxy_synced(self) -> bool:
        done = subprocess.run(self.netns.enter(["iptables", "-t", "nat", "-S", "KUBE-SERVICES"]),
                              capture_output=True, text=True, check=False)
        return done.returncode == 0 and self.layout.kubernetes_service_ip in done.stdout

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None and name not in read_node_state(self.state_dir).get("extra", []):
                    tail = (self.state_dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise ClusterError(f"{name} exited with {proc.returncode}:\n{tail}")
            if check():
                return
            time.sleep(0.2)
        raise ClusterError(f"{what}: not ready after {timeout:.0f}s; logs in {self.state_dir / 'logs'}")

    # ------------------------------------------------------------- state

    def _write_state(self, state: dict[str, Any]) -> None:
        state["pids"] = self.pids()
        _write(self.state_dir / STATE_FILE, json.dumps(state, indent=2))

    def _write_kubeconfig(self) -> None:
        _write(self.kubeconfig, nodeconfig.kubeconfig(server=self.server, ca_file=self.ca_file,
                                                      user=self.admin.name, token=self.admin.token))

    # -------------------------------------------------------------- stop

    def stop(self) -> None:
        state = read_node_state(self.state_dir)
        if not state:
            state = {"node_id": self.layout.node_id, "pids": self.pids(), "preexisting": []}
        teardown(self.state_dir, state)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> NodeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def read_node_state(state_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data


def _shims(socket: Path) -> list[int]:
    """containerd-shim processes serving this containerd (they outlive it by design)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if argv and b"containerd-shim" in argv[0] and str(socket).encode() in argv:
                    found.append(int(entry))
    return found


def _container_ids(socket: Path) -> list[str]:
    """Ids of every container and pod sandbox this containerd knows (their CNI cache entries)."""
    if not socket.exists():
        return []
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run(["ctr", f"--address={socket}", "--namespace=k8s.io", "containers", "list", "--quiet"],
                              capture_output=True, text=True, timeout=15, check=False)
        return done.stdout.split() if done.returncode == 0 else []
    return []


def teardown(state_dir: Path, state: Mapping[str, Any]) -> list[str]:
    """Stop and remove everything a node recorded in `state`; what could not be removed."""
    state_dir = state_dir.resolve()
    layout = nodeconfig.NodeLayout(state=state_dir, node_id=str(state.get("node_id") or node_id(state_dir)))
    netns = Netns(state_dir / "netns")
    pids: dict[str, int] = {k: int(v) for k, v in dict(state.get("pids") or {}).items()}
    extra = [n for n in pids if n not in (*_STOP_ORDER, *_CONTROL, "containerd")]
    # processes spawned into the node (sandbox server, bridges), then the node's own components
    terminate([pids[n] for n in extra if _alive(pids[n])], grace=15)
    terminate([pids[n] for n in _STOP_ORDER if n in pids and _alive(pids[n])], grace=10)
    # containers: whatever still runs in the node's cgroups, then the shims, then containerd
    containers = _container_ids(layout.containerd_socket)
    hoststate.remove_cgroups(layout.cgroup_root, timeout=0.5)
    for pid in _shims(layout.containerd_socket):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if "containerd" in pids and _alive(pids["containerd"]):
        terminate([pids["containerd"]], grace=10)
    # the apiserver drains watch connections for up to a minute; nothing here needs that
    for name in _CONTROL:
        if name in pids and _alive(pids[name]):
            terminate([pids[name]], grace=3)
    inode = state.get("netns_inode")
    if isinstance(inode, int):
        for pid in processes_in(inode):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_in(inode) and time.monotonic() < deadline:
            time.sleep(0.1)
    problems = []
    keep = (str(netns.directory), str(netns.file))
    problems += [f"still mounted: {m}" for m in hoststate.unmount_below(state_dir, keep=keep)]
    with contextlib.suppress(OSError):
        netns.delete()
    problems += [f"cgroup left: {p}" for p in hoststate.remove_cgroups(layout.cgroup_root)]
    last = hoststate.SysctlGuard(layout.node_id).release()
    hoststate.remove_leftover_dirs(list(state.get("preexisting") or []), network=layout.network_name,
                                   containers=containers, last_node=last)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    return problems


def stop_node_from_state(state_dir: Path) -> bool:
    """`dev-cluster down` of a node started by another process; False if none is recorded."""
    state = read_node_state(state_dir)
    if not state:
        return False
    problems = teardown(state_dir, state)
    if problems:
        raise ClusterError("; ".join(problems))
    return True
