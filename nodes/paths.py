"""Model folders AVLab adds to ComfyUI (``folder_paths``) and the lookup that names what is missing.

Users put weights in ``ComfyUI/models/<folder>/``. Nothing is ever downloaded: a missing file is a
:class:`~avlab.common.errors.NodeInputError` naming the node, the folder and the expected file.
"""

from __future__ import annotations

import os

import folder_paths

from ..common.errors import NodeInputError

_WEIGHTS = {".safetensors", ".pt", ".pth", ".ckpt"}

#: Folder names of the pack's systems: ``models/avlab/<system>/`` (issue 13's one scheme).
CONCERT = "avlab_concert"
FLOWRVS = "avlab_flowrvs"
GRAM = "avlab_gram"
CONTROLNET = "avlab_controlnet"

# folder name -> (path under ComfyUI/models, accepted extensions)
MODEL_FOLDERS: dict[str, tuple[str, set[str]]] = {
    "avlab": ("avlab", _WEIGHTS),
    "avlab_concert": (os.path.join("avlab", "concert"), _WEIGHTS | {".json"}),   # = CONCERT
    "avlab_flowrvs": (os.path.join("avlab", "flowrvs"), _WEIGHTS),                # = FLOWRVS
    "avlab_gram": (os.path.join("avlab", "gram"), _WEIGHTS),                      # = GRAM
    "avlab_controlnet": (os.path.join("avlab", "controlnet"), _WEIGHTS),          # = CONTROLNET
}


def register_model_folders() -> None:
    """Add ``models/<path>`` for each AVLab folder (idempotent)."""
    for name, (rel, exts) in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, rel)
        folder_paths.add_model_folder_path(name, path)
        paths, known = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(known) | exts)


def _folder_roots(folder: str) -> list[str]:
    if folder not in folder_paths.folder_names_and_paths:
        register_model_folders()
    return list(folder_paths.get_folder_paths(folder))


def model_subfolders(folder: str, marker: str) -> list[str]:
    """Names of the sub-folders of model folder ``folder`` that hold ``marker`` (a model set per folder)."""
    names = set()
    for root in _folder_roots(folder):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, marker)))
    return sorted(names)


def model_subfolder(node: str, folder: str, name: str) -> str:
    """Full path of sub-folder ``name`` of model folder ``folder``, or a clear error for ``node``."""
    roots = _folder_roots(folder)
    for root in roots:
        path = os.path.join(root, name)
        if name and os.path.isdir(path) and os.path.commonpath([root, os.path.abspath(path)]) == os.path.abspath(root):
            return path
    raise NodeInputError(node, "model", f"a folder {name!r} in {' or '.join(roots) or 'models/avlab/concert'} "
                         "holding the model files; AVLab never downloads weights")


def model_file(node: str, folder: str, filename: str) -> str:
    """Full path of ``filename`` in model folder ``folder`` or a clear error for ``node``."""
    path = folder_paths.get_full_path(folder, filename) if filename else None
    if path is None:
        searched = folder_paths.get_folder_paths(folder) if folder in folder_paths.folder_names_and_paths else []
        raise NodeInputError(
            node, "model_name",
            f"a weights file {filename!r} in the '{folder}' model folder "
            f"(looked in: {', '.join(searched) or 'models/' + folder}); AVLab never downloads weights",
        )
    return path
