"""`agenttask dev-cluster up|down|build`: the local control plane from the command line.

`up` starts etcd + kube-apiserver detached from the terminal, prints `KUBECONFIG=<path>` when
the apiserver is ready, and exits leaving them running; `down` stops what `up` started (found
through the state directory). Ctrl-C during `up` stops everything it had started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .build import BuildError, ensure_built
from .cluster import ClusterError, DevCluster, stop_from_state


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agenttask" / "dev-cluster"


def add_parser(sub: Any, name: str) -> None:
    parser = sub.add_parser(name, help="run a local etcd + kube-apiserver (no cloud, no containers)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("up", "start it and print KUBECONFIG=<path> once ready"),
        ("down", "stop a cluster started with 'up'"),
        ("build", "only build (or locate) the cached binaries and print their directory"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                       help="where certificates, data, logs and the kubeconfig live "
                            "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.expanduser().resolve()
    try:
        if args.action == "build":
            print(ensure_built().directory)
            return 0
        if args.action == "down":
            if stop_from_state(state_dir):
                print(f"stopped the dev cluster in {state_dir}")
            else:
                print(f"no dev cluster running in {state_dir}")
            return 0
        cluster = DevCluster(state_dir=state_dir, owned=False)
        try:
            cluster.start(log=lambda m: print(m, file=sys.stderr, flush=True))
        except KeyboardInterrupt:
            cluster.stop()
            return 130
        print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        print(f"# kubectl: {cluster.kubectl}   stop with: agenttask dev-cluster down "
              f"--state-dir {state_dir}", file=sys.stderr)
        return 0
    except (BuildError, ClusterError) as exc:
        print(f"agenttask dev-cluster: {exc}", file=sys.stderr)
        return 1
