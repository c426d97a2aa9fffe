"""Wan 2.1 DiT state-dict keys: diffusers ``WanTransformer3DModel`` ⇄ original Wan (ComfyUI ``WanModel``).

Shared helper (papers.md §1 LightCache benchmarks, §2 FlowRVS released weights): the FlowRVS DiT
``FlowRVS_dit_mevis.pth`` and the pack's toy Wan DiT are stored with diffusers key names, while
ComfyUI 0.3.64 detects and builds Wan models only from the original layout (``head.modulation``,
``blocks.N.self_attn.q`` ...). The conversion is a pure renaming — every tensor keeps its shape:

===========================================  =============================================
original Wan / ComfyUI                       diffusers
===========================================  =============================================
``patch_embedding``                          ``patch_embedding`` (any ``in_dim``, e.g. 32 with DVI)
``text_embedding.{0,2}``                     ``condition_embedder.text_embedder.linear_{1,2}``
``time_embedding.{0,2}``                     ``condition_embedder.time_embedder.linear_{1,2}``
``time_projection.1``                        ``condition_embedder.time_proj``
``blocks.N.self_attn.{q,k,v,o}``             ``blocks.N.attn1.{to_q,to_k,to_v,to_out.0}``
``blocks.N.cross_attn.{q,k,v,o}``            ``blocks.N.attn2.{to_q,to_k,to_v,to_out.0}``
``blocks.N.*_attn.norm_{q,k}``               ``blocks.N.attn{1,2}.norm_{q,k}``
``blocks.N.cross_attn.{k_img,v_img}``        ``blocks.N.attn2.{add_k_proj,add_v_proj}`` (I2V)
``blocks.N.cross_attn.norm_k_img``           ``blocks.N.attn2.norm_added_k`` (I2V)
``blocks.N.norm3`` (cross-attn LayerNorm)    ``blocks.N.norm2``  (the two names are swapped;
                                             the affine-free FFN norm has no weights)
``blocks.N.ffn.{0,2}``                       ``blocks.N.ffn.net.0.proj`` / ``blocks.N.ffn.net.2``
``blocks.N.modulation`` ``[1,6,dim]``        ``blocks.N.scale_shift_table`` ``[1,6,dim]``
``head.head``                                ``proj_out``
``head.modulation`` ``[1,2,dim]``            ``scale_shift_table`` ``[1,2,dim]``
``img_emb.proj.{0,1,3,4}``                   ``condition_embedder.image_embedder.{norm1,ff.net.0.proj,ff.net.2,norm2}``
``img_emb.emb_pos``                          ``condition_embedder.image_embedder.pos_embed``
===========================================  =============================================

Both modulation tables use the same order (shift, scale, gate, ffn shift, ffn scale, ffn gate;
head: shift, scale) and the same ``[1, n, dim]`` shape, so no transpose is needed; the shapes are
checked anyway. Inputs may carry a ``model.diffusion_model.`` / ``diffusion_model.`` (ComfyUI) or
``module.`` (DDP) prefix, or be a checkpoint dict holding the state dict under ``"model"`` /
``"state_dict"`` (as ``FlowRVS_dit_mevis.pth`` does). ComfyUI's Wan detection reads the head width
as ``dim // 128``: a model only computes the same thing in both hosts if its head dim is 128.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from .errors import NodeInputError

__all__ = [
    "diffusers_to_comfy_wan",
    "comfy_to_diffusers_wan",
    "to_comfy_wan",
    "detect_wan_layout",
    "unwrap_checkpoint",
    "expand_patch_embedding",
]

_WHO = "Wan key converter"

# (original/ComfyUI module path, diffusers module path) for modules whose params are weight/bias.
_TOP_MODULES = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
)
# Bare parameters (full key, no weight/bias suffix).
_TOP_PARAMS = (
    ("head.modulation", "scale_shift_table"),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
)
_BLOCK_MODULES = (
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.k_img", "attn2.add_k_proj"),
    ("cross_attn.v_img", "attn2.add_v_proj"),
    ("cross_attn.norm_k_img", "attn2.norm_added_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
)
_BLOCK_PARAMS = (("modulation", "scale_shift_table"),)
# Keys a layout may carry that have no counterpart (diffusers ignores them on load too).
_DROPPABLE = {"diffusers": re.compile(r"^blocks\.\d+\.attn2\.norm_added_q\.weight$")}

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _table(src: int):
    """Exact-key lookup tables for one direction (src 0: comfy→diffusers, 1: diffusers→comfy)."""
    dst = 1 - src
    top = {}
    for pair in _TOP_MODULES:
        for p in ("weight", "bias"):
            top[f"{pair[src]}.{p}"] = f"{pair[dst]}.{p}"
    for pair in _TOP_PARAMS:
        top[pair[src]] = pair[dst]
    block = {}
    for pair in _BLOCK_MODULES:
        for p in ("weight", "bias"):
            block[f"{pair[src]}.{p}"] = f"{pair[dst]}.{p}"
    for pair in _BLOCK_PARAMS:
        block[pair[src]] = pair[dst]
    return top, block


_C2D = _table(0)
_D2C = _table(1)


def unwrap_checkpoint(sd: Mapping) -> dict:
    """Return the flat state dict of a checkpoint (``{"model": sd}``, ``{"state_dict": sd}`` or ``sd``)
    with a leading ``model.diffusion_model.`` / ``diffusion_model.`` / ``module.`` / ``model.`` prefix
    removed when *every* key carries it."""
    for wrap in ("model", "state_dict", "module"):
        inner = sd.get(wrap) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Mapping) or hasattr(v, "shape")
                                                       for v in inner.values()):
            sd = inner
            break
    sd = dict(sd)
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def detect_wan_layout(sd: Mapping) -> str:
    """``"comfy"`` (original Wan keys), ``"diffusers"``, or raise :class:`NodeInputError`."""
    keys = set(unwrap_checkpoint(sd))
    if "head.modulation" in keys:
        return "comfy"
    if "scale_shift_table" in keys and "proj_out.weight" in keys:
        return "diffusers"
    raise NodeInputError(_WHO, "state_dict", "a Wan 2.1 DiT state dict (original keys with "
                         "'head.modulation' or diffusers keys with 'scale_shift_table'/'proj_out')",
                         f"{len(keys)} keys, e.g. {sorted(keys)[:3]}")


def _convert(sd: Mapping, tables, src_name: str, strict: bool) -> dict:
    top, block = tables
    sd = unwrap_checkpoint(sd)
    out, unknown = {}, []
    for key, value in sd.items():
        new = top.get(key)
        if new is None:
            m = _BLOCK_RE.match(key)
            if m and m.group(2) in block:
                new = f"blocks.{m.group(1)}.{block[m.group(2)]}"
        if new is None:
            drop = _DROPPABLE.get(src_name)
            if drop is not None and drop.match(key):
                continue
            unknown.append(key)
            if not strict:
                out[key] = value
            continue
        out[new] = value
    if unknown and strict:
        raise NodeInputError(_WHO, "state_dict", f"only {src_name} Wan 2.1 DiT keys",
                             f"{len(unknown)} unknown keys, e.g. {unknown[:5]}")
    _check_shapes(out if src_name == "diffusers" else sd)
    return out


def _check_shapes(comfy_sd: Mapping) -> None:
    """Modulation tables must be ``[1, 6, dim]`` per block and ``[1, 2, dim]`` in the head."""
    head = comfy_sd.get("head.modulation")
    if head is not None and (head.ndim != 3 or tuple(head.shape[:2]) != (1, 2)):
        raise NodeInputError(_WHO, "state_dict", "head modulation of shape [1, 2, dim]",
                             tuple(head.shape))
    for k, v in comfy_sd.items():
        if k.endswith(".modulation") and k.startswith("blocks.") and (
                v.ndim != 3 or tuple(v.shape[:2]) != (1, 6)):
            raise NodeInputError(_WHO, "state_dict", f"{k} of shape [1, 6, dim]", tuple(v.shape))


def diffusers_to_comfy_wan(sd: Mapping, strict: bool = True) -> dict:
    """Rename diffusers ``WanTransformer3DModel`` keys to the original Wan keys ComfyUI loads.

    Args:
        sd: diffusers state dict (or a checkpoint dict wrapping one; prefixes are stripped).
        strict: raise on keys that are not part of a Wan 2.1 DiT (else pass them through).

    Returns:
        A new dict with the same tensors (not copied) under original Wan names.
    """
    return _convert(sd, _D2C, "diffusers", strict)


def comfy_to_diffusers_wan(sd: Mapping, strict: bool = True) -> dict:
    """Rename original Wan / ComfyUI ``WanModel`` keys to diffusers ``WanTransformer3DModel`` keys."""
    return _convert(sd, _C2D, "comfy", strict)


def to_comfy_wan(sd: Mapping) -> dict:
    """Return an original-layout state dict whatever layout ``sd`` is in (unwrapped, prefix-free)."""
    if detect_wan_layout(sd) == "comfy":
        return unwrap_checkpoint(sd)
    return diffusers_to_comfy_wan(sd)


def expand_patch_embedding(sd: Mapping, in_channels: int) -> dict:
    """Zero-pad the patch embedding to ``in_channels`` input channels (DVI: 16 → 32, new channels
    appended after the existing ones and initialised to zero so the output is unchanged).

    Works on either layout (the key is ``patch_embedding.weight`` in both)."""
    sd = dict(sd)
    w = sd.get("patch_embedding.weight")
    if w is None:
        raise NodeInputError(_WHO, "state_dict", "a 'patch_embedding.weight' tensor", "none")
    if in_channels < w.shape[1]:
        raise NodeInputError(_WHO, "in_channels", f">= the current {w.shape[1]} channels", in_channels)
    if in_channels > w.shape[1]:
        pad = w.new_zeros((w.shape[0], in_channels - w.shape[1], *w.shape[2:]))
        sd["patch_embedding.weight"] = torch.cat([w, pad], dim=1)
    return sd
