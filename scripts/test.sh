#!/usr/bin/env bash
# Set up the environment (idempotent) and run the test suite.
# Host tests (tests/host/) run when COMFYUI_PATH points at a ComfyUI checkout, else they skip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
VENV="${VENV:-$ROOT/.venv}"
cd "$ROOT"
# The tests use tiny models: one BLAS thread per process is fastest and keeps 2-core CI machines calm.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$VENV/bin/python" -m pytest -q "$@"
