#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) with the pinned dependency set.
# Re-running is cheap: the install is skipped when pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" - <<'PYEOF' || { echo "bootstrap: Python 3.11+ is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

stamp=.venv/.agenttask-install-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the pinned dependencies into .venv (first run takes a minute)" >&2
  {
    .venv/bin/python -m pip install --disable-pip-version-check --upgrade "pip>=24" &&
    .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'
  } > .venv/install.log 2>&1 || { tail -50 .venv/install.log >&2; exit 1; }
  echo "$want" > "$stamp"
fi
