#!/usr/bin/env bash
# Prepare / check a ComfyUI checkout for AVLab's host test tier (tests/host/).
#
# The host tier runs only when COMFYUI_PATH points at a ComfyUI source checkout (>= 0.3.64: a
# directory with main.py and comfy/). This script never downloads ComfyUI or any weights; get a
# checkout yourself, e.g. (documentation only, not run here):
#     git clone --branch v0.3.64 https://github.com/comfyanonymous/ComfyUI /path/to/ComfyUI
# The tests link this repository into a temporary base directory as custom_nodes/avlab and start
# `main.py --cpu` on a free 127.0.0.1 port; tiny random checkpoints are generated on first use into
# $AVLAB_TEST_CACHE (default ~/.cache/avlab-tests, ~1.3 GB + ~2.5 GB for AnimateDiff), never committed.
#
# AnimateDiff-Evolved (the AnimateDiff node pack; GPL, a test fixture, never part of AVLab) is copied
# into COMFYUI_PATH/custom_nodes/ when its source is found: $AVLAB_ANIMATEDIFF_PATH, else
# $AVLAB_SHARED/host/ComfyUI-AnimateDiff-Evolved, else ../shared/host/ComfyUI-AnimateDiff-Evolved
# beside this repository (read-only; the copy is made writable). The host tests take it from there
# (without it, the AnimateDiff tests are skipped and say why).
#
# Usage: scripts/setup_comfyui_dev.sh [--install] [--smoke] [--no-animatediff] [COMFYUI_PATH]
#   --install   pip-install ComfyUI's requirements.txt (+ requests, for the tests) into the project venv (the only network use;
#               torch is already there and is not upgraded when it satisfies the requirement)
#   --smoke     start ComfyUI once with --quick-test-for-ci to check that it imports (with AnimateDiff-Evolved)
#   --no-animatediff  do not copy AnimateDiff-Evolved into COMFYUI_PATH/custom_nodes/
# Env: VENV (default .venv), PYTHON (interpreter, overrides VENV), COMFYUI_PATH, AVLAB_ANIMATEDIFF_PATH
#      (none = don't copy), AVLAB_SHARED (folder holding host/, default ../shared).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INSTALL=0
SMOKE=0
ANIMATEDIFF=1
COMFY="${COMFYUI_PATH:-}"
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --smoke) SMOKE=1 ;;
    --no-animatediff) ANIMATEDIFF=0 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
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

ADE_NAME="ComfyUI-AnimateDiff-Evolved"
ADE_DST="$COMFY/custom_nodes/$ADE_NAME"
if [ "$ANIMATEDIFF" = 1 ]; then
  ADE_SRC=""
  case "${AVLAB_ANIMATEDIFF_PATH:-}" in
    0|none|off|no|false) ANIMATEDIFF=0 ;;
    "") for cand in ${AVLAB_SHARED:+"$AVLAB_SHARED/host/$ADE_NAME"} "$ROOT/../shared/host/$ADE_NAME"; do
          if [ -f "$cand/animatediff/motion_module_ad.py" ]; then ADE_SRC="$cand"; break; fi
        done ;;
    *) ADE_SRC="$AVLAB_ANIMATEDIFF_PATH"
       if [ ! -f "$ADE_SRC/animatediff/motion_module_ad.py" ]; then
         echo "AVLAB_ANIMATEDIFF_PATH=$ADE_SRC is not an AnimateDiff-Evolved source folder." >&2
         exit 2
       fi ;;
  esac
  if [ -n "$ADE_SRC" ]; then
    ADE_SRC="$(cd "$ADE_SRC" && pwd)"
    if [ "$ADE_SRC" = "$(cd "$(dirname "$ADE_DST")" 2>/dev/null && pwd)/$ADE_NAME" ]; then
      echo "AnimateDiff-Evolved: $ADE_DST"
    elif mkdir -p "$COMFY/custom_nodes" 2>/dev/null && [ -w "$COMFY/custom_nodes" ]; then
      if [ -e "$ADE_DST" ]; then chmod -R u+w "$ADE_DST"; rm -rf "$ADE_DST"; fi
      cp -R "$ADE_SRC" "$ADE_DST"
      rm -rf "$ADE_DST/.git"
      chmod -R u+w "$ADE_DST"
      echo "AnimateDiff-Evolved: $ADE_DST (from $ADE_SRC)"
    else
      echo "note: $COMFY/custom_nodes is not writable; AnimateDiff-Evolved not copied there" \
           "(the host tests copy it from $ADE_SRC themselves)."
    fi
  elif [ "$ANIMATEDIFF" = 1 ] && [ ! -d "$ADE_DST" ]; then
    echo "note: AnimateDiff-Evolved not found (set AVLAB_ANIMATEDIFF_PATH or put it in ../shared/host/);" \
         "the host tier's AnimateDiff tests will be skipped."
  fi
fi

if [ "$SMOKE" = 1 ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  mkdir -p "$TMP/custom_nodes" "$TMP/user"
  ln -s "$ROOT" "$TMP/custom_nodes/avlab"
  if [ "$ANIMATEDIFF" = 1 ] && [ -d "$ADE_DST" ]; then
    cp -R "$ADE_DST" "$TMP/custom_nodes/$ADE_NAME"
  fi
  (cd "$COMFY" && "$PY" main.py --cpu --quick-test-for-ci --base-directory "$TMP" \
      --database-url "sqlite:///$TMP/user/comfyui.db" >"$TMP/log" 2>&1) || {
    cat "$TMP/log" >&2; echo "ComfyUI failed to start." >&2; exit 1; }
  if grep -q "IMPORT FAILED" "$TMP/log"; then
    grep -B2 -A2 "IMPORT FAILED" "$TMP/log" >&2
    echo "A custom node pack failed to import (see above)." >&2
    exit 1
  fi
  echo "ComfyUI starts and imports custom_nodes/avlab$( [ -d "$TMP/custom_nodes/$ADE_NAME" ] && echo " and $ADE_NAME")."
fi

echo
echo "Run the host tier with:"
echo "  cd $ROOT && COMFYUI_PATH=$COMFY $PY -m pytest -q tests/host"
