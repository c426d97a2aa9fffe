"""Model folders AVLab adds to ComfyUI (``folder_paths``) and the lookup that names what is missing.

Users put weights in ``ComfyUI/models/<folder>/``. Nothing is ever downloaded: a missing file is a
:class:`~avlab.common.errors.NodeInputError` naming the node, the folder and the expected file.
"""

from __future__ import annotations

import os

import folder_paths

from ..common.errors import NodeInputError

# folder name -> accepted extensions
MODEL_FOLDERS: dict[str, set[str]] = {
    "avlab": {".safetensors", ".pt", ".pth", ".ckpt"},
}


def register_model_folders() -> None:
    """Add ``models/<name>`` for each AVLab folder (idempotent)."""
    for name, exts in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, name)
        folder_paths.add_model_folder_path(name, path)
        paths, known = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(known) | exts)


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
