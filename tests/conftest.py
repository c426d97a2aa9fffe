"""Make the repository importable as ``avlab`` without putting the repo root on ``sys.path``.

With ``pip install -e .`` the package is found normally; otherwise the root ``__init__.py`` is
loaded under the name ``avlab`` by file location (the root must never shadow ComfyUI's ``nodes``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if "avlab" not in sys.modules and importlib.util.find_spec("avlab") is None:
    spec = importlib.util.spec_from_file_location(
        "avlab", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["avlab"] = module
    spec.loader.exec_module(module)
