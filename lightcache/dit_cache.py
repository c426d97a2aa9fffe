"""DiT block caching (paper 1, "Block caching", DiT form): reuse the residual of a block range.

For a stack of ``N`` transformer blocks and ``cache_depth = d``, the blocks ``[d, N - d)`` are cached;
the ``d`` leading and ``d`` trailing blocks always run (the DiT analogue of the U-Net's shallow down
and up paths; ``d = 0`` caches the whole stack, as the official code does for EasyAnimate).

* Full step: the first cached block remembers its input ``x_in``; after the last cached block the
  residual ``out - x_in`` is stored (per slot / shape / window, see :mod:`.cache`).
* Cache step: the first cached block returns ``x_in + residual``; the other cached blocks return
  their input unchanged.

Hosts: ComfyUI models that call ``transformer_options["patches_replace"]["dit"][("double_block", i)]``
for every block with a pure block chain — Wan 2.1/2.2 ``WanModel`` (also ``CameraWanModel`` and
``HumoWanModel``) and Stable Audio's ``ContinuousTransformer`` (inside ``AudioDiffusionTransformer``).
Models that inject extra features *between* blocks (VACE, S2V, Animate) or whose blocks carry a
second stream (Flux, HunyuanVideo, MMDiT) are not cacheable this way. diffusers: the blocks of
``WanTransformer3DModel`` get forward overrides with the same logic (:func:`run_cached_block`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ._override import ForwardOverride
from .cache import CACHE, FULL, OFF, Call, CacheState

DIT_FEATURE = "dit"

#: ComfyUI diffusion-model classes whose ``("double_block", i)`` hook wraps a pure chain of blocks,
#: and where their blocks are.
COMFY_DIT_BLOCKS = {
    "WanModel": "blocks",
    "CameraWanModel": "blocks",
    "HumoWanModel": "blocks",
    "AudioDiffusionTransformer": "transformer.layers",
}

#: diffusers transformer classes with a plain ``for block in self.blocks`` loop.
DIFFUSERS_DIT_BLOCKS = {
    "WanTransformer3DModel": "blocks",
}


def _get(obj: Any, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def comfy_dit_blocks(m: Any) -> nn.ModuleList | None:
    path = COMFY_DIT_BLOCKS.get(type(m).__name__)
    return None if path is None else _get(m, path)


def diffusers_dit_blocks(m: Any) -> nn.ModuleList | None:
    path = DIFFUSERS_DIT_BLOCKS.get(type(m).__name__)
    return None if path is None else _get(m, path)


def dit_range(num_blocks: int, depth: int) -> tuple[int, int]:
    """Inclusive ``(first, last)`` cached block for ``cache_depth = depth``; ``ValueError`` if empty."""
    first, last = depth, num_blocks - 1 - depth
    if depth < 0 or first > last:
        raise ValueError(f"cache_depth must be in [0, {(num_blocks - 1) // 2}] for {num_blocks} blocks "
                         "(leading and trailing blocks that always run)")
    return first, last


def run_cached_block(state: CacheState, call: Call | None, i: int, first: int, last: int,
                     x: torch.Tensor, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Block ``i`` of the cached range ``[first, last]`` with input ``x``; ``run()`` computes it."""
    if call is None or call.mode == OFF or (call.mode == FULL and not call.store):
        return run()
    if call.mode == CACHE:
        if i == first:
            return x + state.fetch_feature(call, DIT_FEATURE)
        return x
    if i == first:
        call.scratch["dit_in"] = x
    out = run()
    if i == last:
        x_in = call.scratch.pop("dit_in", None)
        if x_in is not None and x_in.shape == out.shape:
            state.store_feature(call, DIT_FEATURE, out - x_in, owned=True)
    return out


def install_diffusers_dit_gates(blocks: nn.ModuleList, first: int, last: int,
                                state: CacheState) -> list[ForwardOverride]:
    """Forward overrides for ``blocks[first..last]`` (diffusers blocks take ``hidden_states`` first)."""
    overrides: list[ForwardOverride] = []

    def make(i: int):
        def factory(inner):
            def gated_forward(*args, **kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                return run_cached_block(state, state.current, i, first, last, x,
                                        lambda: inner(*args, **kwargs))
            return gated_forward
        return factory

    try:
        for i in range(first, last + 1):
            overrides.append(ForwardOverride(blocks[i], make(i)))
    except BaseException:
        for o in reversed(overrides):
            o.restore()
        raise
    return overrides
