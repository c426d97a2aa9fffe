"""AVLab — a ComfyUI node pack for five 2025 audio-visual research systems.

ComfyUI imports this file from ``custom_nodes/<folder>/__init__.py`` and calls
:func:`comfy_entrypoint` (V3 node API). Outside ComfyUI the same folder is the Python package
``avlab`` (``pip install -e .`` maps the repository root to it), used by tests, scripts and the CLI.

Nothing heavy is imported here: the host-free cores (``avlab.lightcache``, ``avlab.synthetic``,
``avlab.common``...) and ``torch`` are imported only when a node module or the caller needs them.
``NODE_CLASS_MAPPINGS`` is deliberately absent: ComfyUI would then ignore the V3 entrypoint.
"""

__version__ = "0.1.0"

WEB_DIRECTORY = None


async def comfy_entrypoint():
    """Return the AVLab ``ComfyExtension`` (called by ComfyUI's custom-node loader)."""
    from .nodes import AVLabExtension

    return AVLabExtension()
