#!/usr/bin/env bash
# The project's whole check, as CI runs it: virtualenv, cached control-plane build,
# ruff, mypy --strict, pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

./hack/bootstrap.sh
./hack/system-deps.sh

echo "== control plane (cached build)"
.venv/bin/agenttask dev-cluster build

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
