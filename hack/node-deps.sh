#!/usr/bin/env bash
# Debian packages that `agenttask images build` and `agenttask dev-cluster up --node` use; installs
# only what is missing (needs root or passwordless sudo then). Nothing is started or enabled:
# the project starts containerd and dnsmasq itself, inside the node's network namespace.
#   podman buildah        build the operator and agent images (Dockerfile, images/agent/Dockerfile.slim)
#   mmdebstrap            make the Debian bookworm base images locally when no registry is reachable
#   containerd runc       the node's container runtime (CRI) and OCI runtime
#   containernetworking-plugins   CNI bridge, host-local and portmap (/usr/lib/cni)
#   iptables conntrack    kube-proxy's service rules (inside the node's network namespace)
#   dnsmasq-base          the node's cluster DNS
#   socat                 the loopback-only bridge from the host to the node's apiserver
#   bubblewrap            the embedded sandbox server's bwrap and container modes (--isolation)
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }
for pkg in podman buildah mmdebstrap containerd runc containernetworking-plugins iptables conntrack \
    dnsmasq-base socat bubblewrap; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ "${1:-}" = "--check" ]; then
  [ "${#need[@]}" -eq 0 ] && exit 0
  echo "node-deps: missing ${need[*]}" >&2
  exit 1
fi
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "node-deps: installing ${need[*]}" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the Debian containerd package may start its own service where an init system runs;
  # the node starts its own containerd with its own state directories
  if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    $SUDO systemctl stop containerd || true
    $SUDO systemctl disable containerd || true
  fi
fi
