"""CI guard (issue 7 §1): with ``AVLAB_REQUIRE_HOST=1`` a skipped host module fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest_host_module(require: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env["AVLAB_REQUIRE_HOST"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/host/test_registration.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_skipped_host_module_fails_when_the_host_is_required():
    proc = _pytest_host_module("1")
    assert proc.returncode != 0
    assert "AVLAB_REQUIRE_HOST=1 but host module test_registration.py was skipped" in proc.stdout
    assert "COMFYUI_PATH not set" in proc.stdout


def test_without_the_requirement_the_host_tier_skips_visibly():
    proc = _pytest_host_module("")
    assert proc.returncode in (0, 5), proc.stdout[-2000:]  # 5: nothing ran (the module skipped)
    assert "1 skipped" in proc.stdout
