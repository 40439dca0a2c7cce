#!/usr/bin/env bash
# The project's whole check, as CI runs it: virtualenv, cached control-plane and tool builds,
# static checks (Dockerfiles, chart), ruff, mypy --strict, pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

./hack/bootstrap.sh
./hack/system-deps.sh
./hack/node-deps.sh   # podman, mmdebstrap, containerd, ... for the real-node tests (tests/node)

echo "== control plane and node binaries (cached build)"
.venv/bin/agenttask dev-cluster build --node

echo "== test tools (cached: helm from its Go module, checkov in its own virtualenv)"
./hack/tools.sh

echo "== static checks: hadolint (Dockerfiles), checkov (rendered chart)"
./hack/tools.sh static-checks

echo "== ruff"
.venv/bin/ruff check controller tests bench
echo "== mypy --strict"
.venv/bin/mypy --strict controller

echo "== pytest"
set +e
.venv/bin/pytest -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
echo "== total $(( $(date +%s) - start ))s"
exit "$code"
