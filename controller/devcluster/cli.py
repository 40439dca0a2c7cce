"""`agenttask dev-cluster up|down|build|load`: the local control plane (and node) from the command line.

`up` starts etcd + kube-apiserver detached from the terminal, prints `KUBECONFIG=<path>` when
the apiserver is ready, and exits leaving them running; `down` stops what `up` started (found
through the state directory). Ctrl-C during `up` stops everything it had started.

`up --node` adds a real node in a network namespace of its own (`node.py`); `--image REF`
imports podman images into it at start, `load REF` later; `--sandbox-server` also runs the
embedded Daytona-compatible server inside the node, where Pods reach it, and prints its URL.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from .build import BuildError, ensure_built
from .cluster import ClusterError, DevCluster, stop_from_state
from .node import NodeCluster, read_node_state, stop_node_from_state

SANDBOX_PORT = 8900  # inside the node's namespace, where nothing else listens on it


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agenttask" / "dev-cluster"


def add_parser(sub: Any, name: str) -> None:
    parser = sub.add_parser(name, help="run a local etcd + kube-apiserver (no cloud), optionally a real node")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("up", "start it and print KUBECONFIG=<path> once ready"),
        ("down", "stop a cluster started with 'up'"),
        ("build", "only build (or locate) the cached binaries and print their directory"),
        ("load", "import podman images into a running node (like `kind load`)"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                       help="where certificates, data, logs and the kubeconfig live "
                            "(default: %(default)s)")
        if action in ("up", "build"):
            p.add_argument("--node", action="store_true",
                           help="also a real node: kubelet, containerd, CNI, kube-proxy, controller-manager, "
                                "scheduler and DNS in a network namespace of its own (docs/install.md)")
        if action == "up":
            p.add_argument("--image", action="append", default=[], metavar="REF",
                           help="with --node: import this podman image (repeatable), e.g. "
                                "localhost/agenttask-operator:dev from `agenttask images build`")
            p.add_argument("--sandbox-server", action="store_true",
                           help="with --node: run the embedded sandbox server inside the node and print "
                                "DAYTONA_API_URL (for Pods) and DAYTONA_API_KEY_FILE")
        if action == "load":
            p.add_argument("refs", nargs="+", metavar="REF", help="podman image references")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.expanduser().resolve()
    try:
        if args.action == "build":
            print(ensure_built(node=args.node).directory)
            return 0
        if args.action == "down":
            if stop_node_from_state(state_dir) or stop_from_state(state_dir):
                print(f"stopped the dev cluster in {state_dir}")
            else:
                print(f"no dev cluster running in {state_dir}")
            return 0
        if args.action == "load":
            return _load(state_dir, args.refs)
        if args.node:
            return _up_node(state_dir, args)
        cluster = DevCluster(state_dir=state_dir, owned=False)
        try:
            cluster.start(log=_say)
        except KeyboardInterrupt:
            cluster.stop()
            return 130
        print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        _say(f"# kubectl: {cluster.kubectl}   stop with: agenttask dev-cluster down --state-dir {state_dir}")
        return 0
    except (BuildError, ClusterError) as exc:
        _say(f"agenttask dev-cluster: {exc}")
        return 1


def _up_node(state_dir: Path, args: argparse.Namespace) -> int:
    node = NodeCluster(state_dir=state_dir, owned=False, images=tuple(args.image))
    try:
        node.start(log=_say)
        if args.sandbox_server:
            key = secrets.token_hex(16)
            key_file = state_dir / "daytona-api-key"
            key_file.write_text(key)
            key_file.chmod(0o600)
            node.spawn("sandbox-server", [
                sys.executable, "-m", "controller.cli", "sandbox-server", "--host", node.node_ip,
                "--port", str(SANDBOX_PORT), "--root", str(state_dir / "sandboxes")], env={"DAYTONA_API_KEY": key})
    except KeyboardInterrupt:
        node.stop()
        return 130
    except BaseException:
        node.stop()
        raise
    print(f"KUBECONFIG={node.kubeconfig}", flush=True)
    if args.sandbox_server:
        print(f"DAYTONA_API_URL=http://{node.node_ip}:{SANDBOX_PORT}/api", flush=True)
        print(f"DAYTONA_API_KEY_FILE={state_dir / 'daytona-api-key'}", flush=True)
    _say(f"# kubectl: {node.kubectl}   node address: {node.node_ip}   "
         f"stop with: agenttask dev-cluster down --state-dir {state_dir}")
    return 0


def _load(state_dir: Path, refs: list[str]) -> int:
    state = read_node_state(state_dir)
    if not state:
        _say(f"agenttask dev-cluster: no node running in {state_dir} (start one with `up --node`)")
        return 1
    node = NodeCluster(state_dir=state_dir, owned=False)
    for ref in refs:
        node.load_image(ref)
        _say(f"loaded {ref}")
    return 0
