"""Make the pack importable as ``avlab`` from a script in ``scripts/`` (editable install, or the
repository root loaded under that name when the pack is not installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_pack() -> None:
    try:
        import avlab  # noqa: F401  (editable install)
    except ImportError:
        spec = importlib.util.spec_from_file_location("avlab", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["avlab"] = module
        spec.loader.exec_module(module)
