"""A real local Kubernetes control plane (etcd + kube-apiserver) for tests, demo and benchmarks.

Imports nothing from the operator. See `build.py` (compiling the pinned upstream binaries once
into a cache) and `cluster.py` (starting/stopping them on loopback).
"""

from .build import Binaries, BuildError, ensure_built
from .cluster import ClusterError, DevCluster, TokenUser, stop_from_state

__all__ = [
    "Binaries",
    "BuildError",
    "ClusterError",
    "DevCluster",
    "TokenUser",
    "ensure_built",
    "stop_from_state",
]
