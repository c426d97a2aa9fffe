"""ComfyUI adapters (V3 schema API). Only this sub-package imports ``comfy*`` / ``folder_paths``.

One module per system; each exposes ``NODES`` (a list of ``io.ComfyNode`` classes). The extension
collects them here. Modules are imported when ComfyUI asks for the node list, not at pack import.
"""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

logger = logging.getLogger(__name__)

# Node modules, in menu order. A module that fails to import is logged and skipped, so one
# broken optional dependency never hides the rest of the pack.
NODE_MODULES = (
    "synthetic",
    "media_nodes",
    "lightcache",
    "lightcache_decode",
    "concert",
    "masks",
    "flowrvs",
    "foley",
)


def _collect_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for name in NODE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"nodes.{name}"):
                continue  # module not written yet
            logger.exception("AVLab: node module %r failed to import", name)
            continue
        except Exception:  # noqa: BLE001 - a broken module must not take the pack down
            logger.exception("AVLab: node module %r failed to import", name)
            continue
        nodes.extend(getattr(module, "NODES", []))
    return nodes


class AVLabExtension(ComfyExtension):
    async def on_load(self) -> None:
        from . import paths

        paths.register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.64's loader never calls on_load(); register here too (idempotent).
        await self.on_load()
        return _collect_nodes()
