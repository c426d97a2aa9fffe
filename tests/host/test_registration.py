"""The pack loads inside a real ComfyUI and every AVLab node registers with the conventions
(design.md "Layers": ``AVLab`` ids, ``AVLab/`` categories, a tooltip on every input).

The expected node set is read from the pack's source (``node_id="AVLab..."`` in ``nodes/*.py``),
so nodes added later are checked without touching this file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from comfy_host import tracebacks

REPO = Path(__file__).resolve().parents[2]
NODE_ID_RE = re.compile(r"""node_id\s*=\s*["'](AVLab\w*)["']""")
PACK_MODULE = "custom_nodes.avlab"  # RELATIVE_PYTHON_MODULE ComfyUI gives the pack's node classes


def declared_node_ids() -> set[str]:
    ids: set[str] = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        ids.update(NODE_ID_RE.findall(path.read_text(encoding="utf-8")))
    return ids


def declared_model_folders() -> set[str]:
    """Keys of the ``MODEL_FOLDERS`` literal in ``nodes/paths.py``."""
    tree = ast.parse((REPO / "nodes" / "paths.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "MODEL_FOLDERS" and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return set()


@pytest.fixture(scope="module")
def object_info(comfy_client) -> dict:
    return comfy_client.object_info()


@pytest.fixture(scope="module")
def pack_nodes(object_info) -> dict:
    return {name: info for name, info in object_info.items() if info.get("python_module") == PACK_MODULE}


def test_pack_declares_nodes():
    assert declared_node_ids(), "no node_id=\"AVLab...\" found in nodes/*.py: the pack provides no nodes"


def test_every_declared_node_is_registered(object_info):
    missing = sorted(declared_node_ids() - set(object_info))
    assert not missing, f"declared in nodes/*.py but not in /object_info: {missing}"


def test_registered_pack_nodes_use_the_avlab_prefix(pack_nodes):
    assert all(name.startswith("AVLab") for name in pack_nodes), sorted(pack_nodes)


def test_pack_nodes_have_avlab_category(pack_nodes):
    wrong = {name: info.get("category") for name, info in pack_nodes.items()
             if not str(info.get("category", "")).startswith("AVLab/")}
    assert not wrong, f"category must start with 'AVLab/': {wrong}"


def test_every_pack_node_input_has_a_tooltip(pack_nodes):
    missing = []
    for name, info in pack_nodes.items():
        for section in ("required", "optional"):
            for input_name, spec in (info.get("input", {}).get(section) or {}).items():
                opts = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 else {}
                if not (isinstance(opts, dict) and str(opts.get("tooltip") or "").strip()):
                    missing.append(f"{name}.{input_name}")
    assert not missing, f"inputs without tooltip: {missing}"


def test_pack_model_folders_are_registered(comfy_client):
    folders = declared_model_folders()
    assert folders, "nodes/paths.py declares no MODEL_FOLDERS"
    missing = sorted(folders - set(comfy_client.model_folders()))
    assert not missing, f"model folders not registered with folder_paths: {missing}"


def test_pack_imported_without_failure(comfy_host):
    log = comfy_host.startup_log()
    loaded = [line for line in log.splitlines() if line.rstrip().endswith("custom_nodes/avlab")]
    assert loaded, "the import-times table does not list custom_nodes/avlab"
    assert not any("IMPORT FAILED" in line for line in loaded), loaded
    assert "IMPORT FAILED" not in log, [line for line in log.splitlines() if "IMPORT FAILED" in line]


def test_startup_log_has_no_avlab_traceback(comfy_host):
    log = comfy_host.startup_log()
    bad = [tb for tb in tracebacks(log) if "avlab" in tb.lower()]
    assert not bad, "\n\n".join(bad)
    assert "AVLab: node module" not in log, "a node module failed to import (see the server log)"
