#!/usr/bin/env bash
# Set up the environment (idempotent) and run the AVLab demo on the built-in synthetic domain.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
VENV="${VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" -m avlab.cli demo "$@"
