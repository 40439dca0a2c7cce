#!/usr/bin/env bash
# Debian packages the tests use (git for the repositories the agent works on).
# Installs only what is missing; needs root or passwordless sudo when something is.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
