"""Make the repository importable as ``avlab`` without putting the repo root on ``sys.path``.

With ``pip install -e .`` the package is found normally; otherwise the root ``__init__.py`` is
loaded under the name ``avlab`` by file location (the root must never shadow ComfyUI's ``nodes``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if "avlab" not in sys.modules and importlib.util.find_spec("avlab") is None:
    spec = importlib.util.spec_from_file_location(
        "avlab", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["avlab"] = module
    spec.loader.exec_module(module)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tests run tiny models: threads gain nothing, and on shared cores two are many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
