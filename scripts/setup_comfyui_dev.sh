#!/usr/bin/env bash
# Prepare / check a ComfyUI checkout for AVLab's host test tier (tests/host/).
#
# The host tier runs only when COMFYUI_PATH points at a ComfyUI source checkout (>= 0.3.64: a
# directory with main.py and comfy/). This script never downloads ComfyUI or any weights; get a
# checkout yourself, e.g. (documentation only, not run here):
#     git clone --branch v0.3.64 https://github.com/comfyanonymous/ComfyUI /path/to/ComfyUI
# The tests link this repository into a temporary base directory as custom_nodes/avlab and start
# `main.py --cpu` on a free 127.0.0.1 port; tiny random checkpoints are generated on first use into
# $AVLAB_TEST_CACHE (default ~/.cache/avlab-tests, ~1.3 GB), never committed.
#
# Usage: scripts/setup_comfyui_dev.sh [--install] [--smoke] [COMFYUI_PATH]
#   --install   pip-install ComfyUI's requirements.txt (+ requests, for the tests) into the project venv (the only network use;
#               torch is already there and is not upgraded when it satisfies the requirement)
#   --smoke     start ComfyUI once with --quick-test-for-ci to check that it imports
# Env: VENV (default .venv), PYTHON (interpreter, overrides VENV), COMFYUI_PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INSTALL=0
SMOKE=0
COMFY="${COMFYUI_PATH:-}"
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) COMFY="$arg" ;;
  esac
done

if [ -z "$COMFY" ]; then
  echo "COMFYUI_PATH is not set and no path was given." >&2
  echo "Point it at a ComfyUI (>= 0.3.64) source checkout: COMFYUI_PATH=/path/to/ComfyUI $0" >&2
  exit 2
fi
COMFY="$(cd "$COMFY" && pwd)"
if [ ! -f "$COMFY/main.py" ] || [ ! -d "$COMFY/comfy" ]; then
  echo "$COMFY is not a ComfyUI checkout (needs main.py and comfy/)." >&2
  exit 2
fi

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
else
  VENV="${VENV:-$ROOT/.venv}"
  PY="$VENV/bin/python"
fi
if [ ! -x "$(command -v "$PY" || true)" ]; then
  echo "No Python at $PY: run scripts/setup_env.sh first or set PYTHON=/path/to/python." >&2
  exit 2
fi

VERSION="$(sed -n 's/^__version__ *= *["'\'']\(.*\)["'\'']/\1/p' "$COMFY/comfyui_version.py" 2>/dev/null || true)"
echo "ComfyUI checkout: $COMFY (version ${VERSION:-unknown})"
"$PY" - "$VERSION" <<'EOF'
import sys
v = sys.argv[1]
try:
    parts = tuple(int(p) for p in v.split(".")[:3])
except ValueError:
    parts = None
if parts is None:
    print("warning: could not read the ComfyUI version; AVLab needs >= 0.3.64")
elif parts < (0, 3, 64):
    print(f"warning: ComfyUI {v} is older than 0.3.64, which AVLab requires")
EOF

if [ "$INSTALL" = 1 ]; then
  echo "Installing ComfyUI requirements into $PY ..."
  "$PY" -m pip install --quiet -r "$COMFY/requirements.txt" requests
fi

if ! "$PY" -c "import aiohttp, yaml, safetensors, torchsde, einops, av, PIL" 2>/dev/null; then
  echo "ComfyUI's requirements are missing in $PY: rerun with --install." >&2
  exit 1
fi

if [ "$SMOKE" = 1 ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  mkdir -p "$TMP/custom_nodes" "$TMP/user"
  ln -s "$ROOT" "$TMP/custom_nodes/avlab"
  (cd "$COMFY" && "$PY" main.py --cpu --quick-test-for-ci --base-directory "$TMP" \
      --database-url "sqlite:///$TMP/user/comfyui.db" >"$TMP/log" 2>&1) || {
    cat "$TMP/log" >&2; echo "ComfyUI failed to start." >&2; exit 1; }
  if grep -q "IMPORT FAILED" "$TMP/log"; then
    grep -B2 -A2 "IMPORT FAILED" "$TMP/log" >&2
    echo "A custom node pack failed to import (see above)." >&2
    exit 1
  fi
  echo "ComfyUI starts and imports custom_nodes/avlab."
fi

echo
echo "Run the host tier with:"
echo "  cd $ROOT && COMFYUI_PATH=$COMFY $PY -m pytest -q tests/host"
