"""The dev-cluster node's configuration, rendered from one layout: pure functions, no I/O.

Addresses exist only inside the node's network namespace (`netns.py`): the node IP on its
loopback, the service range routed over loopback, the pod range on the CNI bridge. Every path
is below the state directory. The choices that this machine type needs, with the errors they
avoid (measured in notes/realnode.md):

- kubelet `failCgroupV1: false` (kubelet >= 1.35 refuses cgroup v1 hosts otherwise);
  `cgroupDriver: cgroupfs` (no systemd); `oomScoreAdj: 0` and containerd
  `restrict_oom_score_adj` (without CAP_SYS_RESOURCE no process may lower its OOM score);
  `maxOpenFiles` at the process's hard limit; `resolvConf: ""` so Pods get only cluster DNS;
- containerd: runc (crun rejects hybrid cgroups), root/state/socket/opt and pod netns mounts
  under the state directory, the project's pause image as the sandbox image;
- kube-proxy: iptables mode inside the namespace, conntrack tunables left alone (they are
  machine-wide);
- CNI: bridge without masquerading (traffic has nowhere to go but the namespace) + host-local
  with its data under the state directory + portmap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeLayout:
    state: Path
    node_id: str  # short, unique per state directory: cgroup root and CNI network name
    node_name: str = "agenttask-node"
    node_ip: str = "172.31.255.1"
    service_cidr: str = "10.96.0.0/24"
    kubernetes_service_ip: str = "10.96.0.1"
    pod_cidr: str = "10.244.0.0/24"
    cluster_domain: str = "cluster.local"
    apiserver_port: int = 6443
    etcd_port: int = 2379

    # ---------------------------------------------------------------- paths

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def containerd_dir(self) -> Path:
        return self.state / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.state / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def cgroup_root(self) -> str:
        return f"agenttask-{self.node_id}"

    @property
    def network_name(self) -> str:
        return f"agenttask-{self.node_id}"

    @property
    def inside_server(self) -> str:
        """The apiserver as processes in the namespace reach it."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    def kubeconfig_path(self, user: str) -> Path:
        return self.state / "kubeconfigs" / f"{user}.kubeconfig"


def kubeconfig(*, server: str, ca_file: Path, user: str, token: str, namespace: str = "default") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "agenttask-dev", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "agenttask-dev",
                      "context": {"cluster": "agenttask-dev", "user": user, "namespace": namespace}}],
        "current-context": "agenttask-dev",
    }, indent=2)


def etcd_argv(layout: NodeLayout, etcd: Path) -> list[str]:
    url = f"http://127.0.0.1:{layout.etcd_port}"
    return [str(etcd), f"--data-dir={layout.state / 'etcd'}", f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}", "--listen-peer-urls=http://127.0.0.1:2380",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=8589934592"]


def apiserver_argv(layout: NodeLayout, apiserver: Path, *, tokens: Path) -> list[str]:
    pki = layout.pki
    issuer = f"https://kubernetes.default.svc.{layout.cluster_domain}"
    return [
        str(apiserver),
        f"--etcd-servers=http://127.0.0.1:{layout.etcd_port}",
        "--bind-address=0.0.0.0",  # inside the namespace only
        f"--advertise-address={layout.node_ip}",
        f"--secure-port={layout.apiserver_port}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--service-account-issuer={issuer}", f"--api-audiences={issuer}",
        f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={layout.service_cidr}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--token-auth-file={tokens}", "--allow-privileged=true", "--profiling=false",
        # logs/exec reach kubelet at the node IP: the node's name resolves nowhere
        "--kubelet-preferred-address-types=InternalIP",
        f"--cert-dir={pki}",
    ]


def controller_manager_argv(layout: NodeLayout, binary: Path) -> list[str]:
    return [str(binary), f"--kubeconfig={layout.kubeconfig_path('kube-controller-manager')}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={layout.pki / 'sa.key'}",
            f"--root-ca-file={layout.pki / 'ca.crt'}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--profiling=false"]


def scheduler_argv(layout: NodeLayout, binary: Path) -> list[str]:
    return [str(binary), f"--kubeconfig={layout.kubeconfig_path('kube-scheduler')}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--profiling=false"]


def containerd_config(layout: NodeLayout, *, sandbox_image: str, runc: str) -> str:
    d = layout.containerd_dir
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    q = json.dumps  # TOML basic strings are JSON strings for these values
    return "\n".join([
        "version = 2",
        f"root = {q(str(d / 'root'))}",
        f"state = {q(str(d / 'state'))}",
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
        '"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", '
        '"io.containerd.internal.v1.tracing"]',
        "[grpc]", f"  address = {q(str(layout.containerd_socket))}",
        "[ttrpc]", f"  address = {q(str(d / 'containerd.sock.ttrpc'))}",
        "[debug]", '  address = ""',
        "[metrics]", '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]', f"  path = {q(str(d / 'opt'))}",
        f"[{cri}]",
        f"  sandbox_image = {q(sandbox_image)}",
        "  netns_mounts_under_state_dir = true",
        "  restrict_oom_score_adj = true",
        '  stream_server_address = "127.0.0.1"',
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
        f"  BinaryName = {q(runc)}",
        f"  Root = {q(str(d / 'runc'))}",
        f"[{cri}.cni]",
        '  bin_dir = "/usr/lib/cni"',
        f"  conf_dir = {q(str(layout.cni_conf_dir))}",
        "",
    ])


def cni_conflist(layout: NodeLayout) -> str:
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": layout.network_name,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": layout.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(layout.state / "cni" / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def kubelet_config(layout: NodeLayout, *, max_open_files: int) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.state / "pod-logs"),
        "maxOpenFiles": max_open_files,
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "clusterDNS": [layout.node_ip],
        "clusterDomain": layout.cluster_domain,
        "resolvConf": "",
        "address": layout.node_ip,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # the namespace is reachable only from its own processes; the apiserver calls kubelet
        # (logs, exec) without a client certificate
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                         "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
    }, indent=2)


def kube_proxy_config(layout: NodeLayout) -> str:
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": layout.pod_cidr,
        "hostnameOverride": layout.node_name,
        "clientConnection": {"kubeconfig": str(layout.kubeconfig_path("kube-proxy"))},
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "oomScoreAdj": 0,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, indent=2)


def dnsmasq_argv(layout: NodeLayout) -> list[str]:
    """Authoritative for the cluster domain, with the `kubernetes` Service's name; nothing is forwarded."""
    domain = layout.cluster_domain
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--bind-interfaces", f"--listen-address={layout.node_ip}", f"--pid-file={layout.state / 'dnsmasq.pid'}",
            "--user=root", f"--local=/{domain}/",
            f"--host-record=kubernetes.default.svc.{domain},{layout.kubernetes_service_ip}",
            "--log-facility=-"]
