"""U-Net branch caching (paper 1, "Block caching", DeepCache semantics) for ComfyUI and diffusers.

A U-Net's skip connections, in the order the down path produces them, are ``S[0..T-1]`` (``S[0]``
is the input conv; ComfyUI: one per ``input_blocks`` entry; diffusers: ``conv_in``, then each down
block's resnets and its downsampler). The up path consumes them in reverse. ``cache_depth = k``
makes ``S[0..k]`` and the up layers that consume them the **shallow** path; everything between
(deeper down layers, the middle block, the up layers that consume ``S[k+1..]``) is the **deep** part.

* Full step: the whole network runs; the hidden state entering the first shallow up layer (the deep
  part's output) is cached.
* Cache step: only the shallow down layers run (their skips are needed), the cached deep feature is
  taken, the shallow up layers and the output head run.

For SD-style levels (2 res blocks + a downsampler) ``k`` equals DeepCache's ``cache_branch_id``
(``block = k // 3``, ``layer = k % 3``); ``k = 0`` keeps only the input conv and the last up layer.

ComfyUI (``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel``, duck-typed, never imported):
* Full steps call the host's own forward (the ``DIFFUSION_MODEL`` executor) unchanged; the deep
  feature is captured by an ``output_block_patch`` placed first in this call's patch list (it sees
  ``h`` at ``("output", N-1-k)`` before any other patch, e.g. FreeU, and keeps it untouched: if
  other output patches exist they get a copy).
* Cache steps run :func:`comfy_unet_cached_forward`, which mirrors ``UNetModel._forward`` line by
  line for the blocks it runs — time embedding, ``emb_patch``, label embedding ``y``,
  ``transformer_options["block"]`` / ``original_shape`` / ``transformer_index`` (restored to the value
  recorded at the full step), control (entries of skipped blocks are popped so the rest line up),
  ``input_block_patch`` / ``input_block_patch_after_skip`` / ``output_block_patch``, and
  ``num_video_frames`` / ``image_only_indicator`` / ``time_context`` passed untouched to
  ``forward_timestep_embed`` (SVD). The helper functions are taken from the U-Net class's own module,
  so a monkey-patched ``forward_timestep_embed`` is honoured; AnimateDiff-Evolved motion modules live
  inside the blocks and run as they do uncached.

diffusers (``UNet2DConditionModel``, ``UNetMotionModel``, ``UNetSpatioTemporalConditionModel``):
the deep modules get a forward override (:class:`~._override.ForwardOverride`). On full steps they
run and record their output shapes; on cache steps they return zero-cost stand-ins of those shapes
(expanded zero scalars that only feed other skipped modules), except the *boundary* — the last deep
module in execution order — which returns the cached feature. Whole blocks are skipped where all of
their layers are deep; inside the block at the branch, single resnets/attentions/motion modules are.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._override import ForwardOverride, build, make_template
from .cache import FULL, OFF, CacheState

UNET_FEATURE = "unet"

# ------------------------------------------------------------------------------------------------
# ComfyUI UNetModel
# ------------------------------------------------------------------------------------------------

_COMFY_HELPERS = ("forward_timestep_embed", "apply_control", "timestep_embedding")


def comfy_unet_namespace(unet: nn.Module):
    """The module that defines ``unet``'s class and its forward helpers (``None`` if not a ComfyUI U-Net)."""
    for cls in type(unet).__mro__:
        mod = sys.modules.get(cls.__module__)
        if mod is not None and all(callable(getattr(mod, h, None)) for h in _COMFY_HELPERS):
            return mod
    return None


def is_comfy_unet(m: Any) -> bool:
    """Duck-typed check for ComfyUI's ``UNetModel`` (openaimodel)."""
    need = ("input_blocks", "output_blocks", "middle_block", "out", "time_embed", "model_channels",
            "_forward")
    return all(hasattr(m, a) for a in need) and comfy_unet_namespace(m) is not None


def comfy_unet_max_depth(unet: nn.Module) -> int:
    return min(len(unet.input_blocks), len(unet.output_blocks)) - 1


def comfy_unet_full_forward(executor, args: tuple, kwargs: dict, depth: int, captured: dict):
    """Run the host forward; put ``h`` entering output block ``N-1-depth`` into ``captured``."""
    transformer_options = args[5]
    n_out = len(executor.class_obj.output_blocks)
    target = ("output", n_out - 1 - depth)
    old = transformer_options.get("patches", None)
    patches = dict(old or {})
    others = list(patches.get("output_block_patch", []))

    def capture(h, hsp, to):
        if "h" not in captured and to.get("block") == target:
            captured["h"] = h
            captured["transformer_index"] = to.get("transformer_index")
            if others:  # later patches (FreeU...) may edit h in place: they get a copy
                h = h.clone()
        return h, hsp

    patches["output_block_patch"] = [capture] + others
    transformer_options["patches"] = patches
    try:
        return executor(*args, **kwargs)
    finally:
        if old is None:
            transformer_options.pop("patches", None)
        else:
            transformer_options["patches"] = old


def _pop_control(control, name: str) -> None:
    if control is not None and name in control and len(control[name]) > 0:
        control[name].pop()


def comfy_unet_cached_forward(unet: nn.Module, x, timesteps=None, context=None, y=None, control=None,
                              transformer_options=None, *, depth: int, h_deep: torch.Tensor,
                              transformer_index=None, **kwargs):
    """``UNetModel._forward`` with the deep part replaced by ``h_deep`` (see the module docstring)."""
    ns = comfy_unet_namespace(unet)
    forward_timestep_embed, apply_control = ns.forward_timestep_embed, ns.apply_control
    if transformer_options is None:
        transformer_options = {}
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    transformer_patches = transformer_options.get("patches", {})

    num_video_frames = kwargs.get("num_video_frames", unet.default_num_video_frames)
    image_only_indicator = kwargs.get("image_only_indicator", None)
    time_context = kwargs.get("time_context", None)

    assert (y is not None) == (unet.num_classes is not None), \
        "must specify y if and only if the model is class-conditional"
    hs = []
    t_emb = ns.timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype)
    emb = unet.time_embed(t_emb)

    if "emb_patch" in transformer_patches:
        for p in transformer_patches["emb_patch"]:
            emb = p(emb, unet.model_channels, transformer_options)

    if unet.num_classes is not None:
        assert y.shape[0] == x.shape[0]
        emb = emb + unet.label_emb(y)

    h = x
    n_in = len(unet.input_blocks)
    for id, module in enumerate(unet.input_blocks):
        if id > depth:  # deep input block: skipped, its control entry consumed as the host would
            _pop_control(control, "input")
            continue
        transformer_options["block"] = ("input", id)
        h = forward_timestep_embed(module, h, emb, context, transformer_options, time_context=time_context,
                                   num_video_frames=num_video_frames, image_only_indicator=image_only_indicator)
        h = apply_control(h, control, "input")
        if "input_block_patch" in transformer_patches:
            for p in transformer_patches["input_block_patch"]:
                h = p(h, transformer_options)
        hs.append(h)
        if "input_block_patch_after_skip" in transformer_patches:
            for p in transformer_patches["input_block_patch_after_skip"]:
                h = p(h, transformer_options)
    assert len(hs) == min(depth + 1, n_in)

    _pop_control(control, "middle")  # middle block: skipped
    if transformer_index is not None:
        transformer_options["transformer_index"] = transformer_index
    h = h_deep

    n_out = len(unet.output_blocks)
    for id, module in enumerate(unet.output_blocks):
        if id < n_out - 1 - depth:  # deep output block: skipped
            _pop_control(control, "output")
            continue
        transformer_options["block"] = ("output", id)
        hsp = hs.pop()
        hsp = apply_control(hsp, control, "output")
        if "output_block_patch" in transformer_patches:
            for p in transformer_patches["output_block_patch"]:
                h, hsp = p(h, hsp, transformer_options)
        h = torch.cat([h, hsp], dim=1)
        del hsp
        output_shape = hs[-1].shape if len(hs) > 0 else None
        h = forward_timestep_embed(module, h, emb, context, transformer_options, output_shape,
                                   time_context=time_context, num_video_frames=num_video_frames,
                                   image_only_indicator=image_only_indicator)
    h = h.type(x.dtype)
    if getattr(unet, "predict_codebook_ids", False):
        return unet.id_predictor(h)
    return unet.out(h)


def comfy_unet_wants_fresh(transformer_options: dict) -> bool:
    """True when other output patches may modify the fed-back feature in place."""
    return bool(transformer_options.get("patches", {}).get("output_block_patch"))


# ------------------------------------------------------------------------------------------------
# diffusers U-Nets
# ------------------------------------------------------------------------------------------------

def is_diffusers_unet(m: Any) -> bool:
    return (isinstance(m, nn.Module) and all(hasattr(m, a) for a in ("down_blocks", "up_blocks", "conv_in",
                                                                      "conv_out", "mid_block"))
            and type(m).__module__.startswith("diffusers"))


def _layer_modules(block: nn.Module, i: int) -> list[nn.Module]:
    """The modules of layer ``i`` of a diffusers block, in execution order."""
    mods = [block.resnets[i]]
    for name in ("attentions", "motion_modules"):
        group = getattr(block, name, None)
        if group is not None and len(group) > i and group[i] is not None:
            mods.append(group[i])
    return mods


def diffusers_unet_skip_count(unet: nn.Module) -> int:
    n = 1  # conv_in
    for blk in unet.down_blocks:
        n += len(blk.resnets) + (1 if getattr(blk, "downsamplers", None) else 0)
    return n


@dataclass
class DiffusersUNetPlan:
    """Which modules are deep, which one is the boundary and which up block consumes it."""

    depth: int
    deep: list = field(default_factory=list)       # (name, module)
    boundary: str = ""
    consumer: nn.Module | None = None               # the up block holding the first shallow layer
    feeds_consumer: set = field(default_factory=set)  # deep modules whose output enters ``consumer``


def plan_diffusers_unet(unet: nn.Module, depth: int) -> DiffusersUNetPlan:
    """Deep modules for branch ``depth`` (see the module docstring); raises ``ValueError`` if out of range."""
    total = diffusers_unet_skip_count(unet)
    if not 0 <= depth <= total - 1:
        raise ValueError(f"cache_depth must be in [0, {total - 1}] for this U-Net ({total} skip connections)")
    up_total = sum(len(b.resnets) for b in unet.up_blocks)
    if up_total != total:
        raise ValueError(f"unsupported U-Net layout: {total} skips but {up_total} up resnets")
    plan = DiffusersUNetPlan(depth=depth)
    # down path: skip index s > depth is deep
    s = 1
    for bi, blk in enumerate(unet.down_blocks):
        n_layers = len(blk.resnets)
        has_down = bool(getattr(blk, "downsamplers", None))
        first = s
        if first > depth:
            plan.deep.append((f"down_blocks.{bi}", blk))
        else:
            for li in range(n_layers):
                if first + li > depth:
                    for j, m in enumerate(_layer_modules(blk, li)):
                        plan.deep.append((f"down_blocks.{bi}.layer{li}.{j}", m))
            if has_down and first + n_layers > depth:
                for j, m in enumerate(blk.downsamplers):
                    plan.deep.append((f"down_blocks.{bi}.downsamplers.{j}", m))
        s += n_layers + (1 if has_down else 0)
    if unet.mid_block is not None:
        plan.deep.append(("mid_block", unet.mid_block))
    # up path: the first (total - 1 - depth) up resnets in execution order are deep
    n_deep_up = total - 1 - depth
    p = 0
    for ui, blk in enumerate(unet.up_blocks):
        n_layers = len(blk.resnets)
        if p + n_layers <= n_deep_up:
            plan.deep.append((f"up_blocks.{ui}", blk))
        else:
            if plan.consumer is None:
                plan.consumer = blk
                plan.feeds_consumer.add(plan.deep[-1][0])  # previous up block or the mid block
                for li in range(n_layers):
                    if p + li < n_deep_up:
                        for j, m in enumerate(_layer_modules(blk, li)):
                            plan.deep.append((f"up_blocks.{ui}.layer{li}.{j}", m))
                            plan.feeds_consumer.add(plan.deep[-1][0])
        p += n_layers
    if not plan.deep:
        raise ValueError("nothing to cache at this depth")
    plan.boundary = plan.deep[-1][0]
    return plan


def _freeu_enabled(block: nn.Module | None) -> bool:
    return block is not None and all(getattr(block, a, None) for a in ("s1", "s2", "b1", "b2"))


def install_diffusers_unet_gates(unet: nn.Module, plan: DiffusersUNetPlan, state: CacheState) -> list[ForwardOverride]:
    """Override the deep modules' forwards (order: as planned); returns the overrides to restore."""
    overrides: list[ForwardOverride] = []

    def make(name: str):
        is_boundary = name == plan.boundary

        def factory(inner):
            def gated_forward(*args, **kwargs):
                call = state.current
                if call is None or call.mode == OFF or (call.mode == FULL and not call.store):
                    return inner(*args, **kwargs)
                if call.mode == FULL:
                    out = inner(*args, **kwargs)
                    templates = call.scratch.setdefault("templates", {})
                    template, leaves = make_template(out)
                    templates[name] = template
                    if is_boundary:
                        for i, leaf in enumerate(leaves):
                            state.store_feature(call, f"{UNET_FEATURE}.{i}", leaf, owned=False,
                                                meta=dict(templates) if i == 0 else None)
                    return out
                templates = state.feature_meta(call, f"{UNET_FEATURE}.0")
                template = templates[name]
                # FreeU edits the hidden state entering each up layer in place
                writable = name in plan.feeds_consumer and _freeu_enabled(plan.consumer)
                if is_boundary:
                    n_leaves = sum(1 for _ in _iter_leaves(template))
                    leaves = [state.fetch_feature(call, f"{UNET_FEATURE}.{i}", fresh=writable)
                              for i in range(n_leaves)]
                    return build(template, leaves)
                return build(template, writable=writable)
            return gated_forward
        return factory

    try:
        for name, module in plan.deep:
            overrides.append(ForwardOverride(module, make(name)))
    except BaseException:
        for o in reversed(overrides):
            o.restore()
        raise
    return overrides


def _iter_leaves(template):
    from ._override import _T

    if isinstance(template, _T):
        yield template
    elif isinstance(template, (tuple, list)):
        for v in template:
            yield from _iter_leaves(v)
    elif isinstance(template, dict):
        for v in template.values():
            yield from _iter_leaves(v)
