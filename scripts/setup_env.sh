#!/usr/bin/env bash
# Create (or reuse) the project venv and install the pack with its test/dev dependencies.
# Usage: scripts/setup_env.sh   (VENV=/path overrides the venv location, default .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.avlab-deps"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/pyproject.toml" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -r "$ROOT/requirements-dev.txt" -r "$ROOT/requirements.txt"
  python -m pip install --quiet --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
