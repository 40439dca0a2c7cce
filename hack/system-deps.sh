#!/usr/bin/env bash
# Debian packages the tests use; installs only what is missing (needs root or passwordless sudo then).
#   git                 repositories the agent works on
#   prometheus          promtool and a real Prometheus server scraping the operator in tests
#   chromium            headless browser for the status page test
#   lua5.1, lua-cjson   the Argo CD health check (docs/argocd.md) run against real AgentTask objects;
#                       Lua 5.1 is the dialect of gopher-lua, Argo CD's interpreter
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v lua5.1 >/dev/null || need+=(lua5.1)
lua5.1 -e 'require "cjson"' 2>/dev/null || need+=(lua-cjson)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "system-deps: installing ${need[*]}" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the Debian prometheus package starts a system service; the tests run their own server
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
  fi
fi
