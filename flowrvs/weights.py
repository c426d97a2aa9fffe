"""FlowRVS released weights: safe loading, config inference, safetensors conversion (papers.md §2).

Host-free (torch + safetensors only). The two official files are pickles:

* ``FlowRVS_dit_mevis.pth`` — a dict with ``'model'`` (diffusers ``WanTransformer3DModel`` keys,
  possibly ``module.``-prefixed; 16 patch-embedding input channels, 32 with Direct Video
  Injection), maybe ``'ema'`` / ``'model_ema'`` (preferred when present) and maybe an
  ``argparse.Namespace`` under ``'args'``.
* ``tuned_vae.pth`` — ``vae.``-prefixed diffusers ``AutoencoderKLWan`` keys whose decoder
  ``conv_out`` has 1 output channel (the mask decoder).

Both are opened **only** with ``torch.load(path, map_location="cpu", weights_only=True)``; the one
extra global allowed is ``argparse.Namespace`` (issue 13). Anything else — a pickle needing other
globals, a non-dict, a dict without tensors, keys that are not a Wan DiT / Wan VAE — raises
:class:`~avlab.common.errors.NodeInputError` naming the file.

Key renaming to ComfyUI's ``WanModel`` layout is delegated to :mod:`avlab.common.wan_convert`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping
from contextlib import contextmanager

import torch

from ..common.errors import NodeInputError
from ..common.wan_convert import diffusers_to_comfy_wan, unwrap_checkpoint

__all__ = [
    "convert_flowrvs_to_safetensors",
    "flowrvs_dit_to_comfy",
    "infer_dit_config",
    "load_flowrvs_dit",
    "load_flowrvs_mask_vae",
    "safe_torch_load",
]

log = logging.getLogger(__name__)

_DIT = "FlowRVS DiT loader"
_VAE = "FlowRVS mask VAE loader"
_EMA_KEYS = ("model_ema", "ema", "ema_model", "state_dict_ema")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")
# Keys every diffusers Wan 2.1 DiT has (the check that a dict "is a Wan DiT").
_DIT_REQUIRED = (
    "patch_embedding.weight", "proj_out.weight", "scale_shift_table",
    "condition_embedder.text_embedder.linear_1.weight",
    "condition_embedder.time_embedder.linear_1.weight",
    "blocks.0.attn1.to_q.weight", "blocks.0.ffn.net.0.proj.weight",
)
_VAE_REQUIRED = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
                 "post_quant_conv.weight", "quant_conv.weight")


@contextmanager
def _namespace_allowed():
    """Allow ``argparse.Namespace`` (and nothing else) as an extra weights-only global."""
    ser = torch.serialization
    if hasattr(ser, "safe_globals"):
        with ser.safe_globals([argparse.Namespace]):
            yield
    else:  # pragma: no cover - torch < 2.5
        ser.add_safe_globals([argparse.Namespace])
        yield


def safe_torch_load(path: str, node: str = _DIT, input_name: str = "model"):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with ``argparse.Namespace``
    allowed; any failure becomes a :class:`NodeInputError` naming the file."""
    if not os.path.isfile(path):
        raise NodeInputError(node, input_name, "an existing checkpoint file", repr(path))
    try:
        with _namespace_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... all refused
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        # torch names the refused class on a "WeightsUnpickler error: Unsupported global: ..." line.
        hit = [ln for ln in lines if "Unsupported global" in ln or "Unsupported operand" in ln]
        first = (hit or lines or [type(exc).__name__])[0]
        raise NodeInputError(
            node, input_name,
            "a plain tensor state dict loadable with torch.load(weights_only=True) "
            "(only argparse.Namespace is allowed besides tensors)",
            f"{os.path.basename(path)!r} which cannot be loaded safely ({type(exc).__name__}: "
            f"{first[:300]})") from None


def _is_tensor_dict(d) -> bool:
    return isinstance(d, Mapping) and bool(d) and any(isinstance(v, torch.Tensor) for v in d.values())


def _flat_state(obj) -> dict | None:
    """A flat ``{name: tensor}`` dict from ``obj`` (unwrapped, prefixes stripped) or None."""
    if not isinstance(obj, Mapping):
        return None
    sd = unwrap_checkpoint(obj)
    if not _is_tensor_dict(sd):
        return None
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # unwrap_checkpoint strips one of its prefixes; a second (e.g. "module.model.") is rare but cheap.
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd) and "patch_embedding.weight" not in sd:
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _args_dict(ckpt) -> dict:
    args = ckpt.get("args") if isinstance(ckpt, Mapping) else None
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    return {}


def _missing(sd: Mapping, required) -> list[str]:
    return [k for k in required if k not in sd]


def infer_dit_config(sd: Mapping, num_heads: int | None = None, args: Mapping | None = None) -> dict:
    """Infer the ``WanTransformer3DModel`` config from tensor shapes (diffusers keys).

    The head count is not visible in the shapes (the q/k norm spans all heads): it comes from
    ``num_heads``, else from the checkpoint ``args`` (``num_heads`` / ``num_attention_heads`` /
    ``heads``), else ``dim // 128`` (Wan 2.1's head dim) when ``dim`` is a multiple of 128.
    """
    missing = _missing(sd, _DIT_REQUIRED)
    if missing:
        raise NodeInputError(_DIT, "model", "a diffusers Wan 2.1 DiT state dict",
                             f"missing {missing[:3]}")
    pe = sd["patch_embedding.weight"]
    if pe.ndim != 5:
        raise NodeInputError(_DIT, "model", "a 5-D Conv3d patch embedding", tuple(pe.shape))
    dim, in_channels = int(pe.shape[0]), int(pe.shape[1])
    patch = tuple(int(s) for s in pe.shape[2:])
    layers = 1 + max(int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k)))
    ffn = int(sd["blocks.0.ffn.net.0.proj.weight"].shape[0])
    text_dim = int(sd["condition_embedder.text_embedder.linear_1.weight"].shape[1])
    freq_dim = int(sd["condition_embedder.time_embedder.linear_1.weight"].shape[1])
    proj = sd["proj_out.weight"]
    prod = patch[0] * patch[1] * patch[2]
    if proj.shape[0] % prod:
        raise NodeInputError(_DIT, "model", f"proj_out rows divisible by the patch volume {prod}",
                             tuple(proj.shape))
    out_channels = int(proj.shape[0]) // prod
    if num_heads is None and args:
        for name in ("num_heads", "num_attention_heads", "heads", "n_heads"):
            if isinstance(args.get(name), int) and args[name] > 0:
                num_heads = int(args[name])
                break
    if num_heads is None:
        if dim % 128:
            raise NodeInputError(_DIT, "num_heads", "the attention head count (not inferable: "
                                 f"dim {dim} is not a multiple of Wan's head dim 128)", None)
        num_heads = dim // 128
    if dim % num_heads:
        raise NodeInputError(_DIT, "num_heads", f"a divisor of dim {dim}", num_heads)
    image_dim = None
    if "condition_embedder.image_embedder.norm1.weight" in sd:
        image_dim = int(sd["condition_embedder.image_embedder.norm1.weight"].shape[0])
    added_kv = int(sd["blocks.0.attn2.add_k_proj.weight"].shape[1]) \
        if "blocks.0.attn2.add_k_proj.weight" in sd else None
    return {
        "patch_size": list(patch), "num_attention_heads": num_heads,
        "attention_head_dim": dim // num_heads, "in_channels": in_channels,
        "out_channels": out_channels, "text_dim": text_dim, "freq_dim": freq_dim,
        "ffn_dim": ffn, "num_layers": layers, "image_dim": image_dim,
        "added_kv_proj_dim": added_kv,
    }


def _config_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _load_safetensors(path: str, node: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file
    try:
        sd = load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad input
        raise NodeInputError(node, "model", "a readable safetensors file",
                             f"{os.path.basename(path)!r} ({type(exc).__name__}: {exc})") from None
    meta = {}
    cfg = _config_path(path)
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as fh:
            meta = json.load(fh)
    return sd, meta


def load_flowrvs_dit(path: str, num_heads: int | None = None) -> tuple[dict, dict, dict]:
    """Load the FlowRVS DiT (official ``.pth`` or our ``.safetensors`` + ``.json``).

    Returns:
        ``(state_dict, config, info)``: the state dict in diffusers ``WanTransformer3DModel``
        keys (prefix-free, ``torch.float*`` tensors as stored), the inferred config (kwargs for
        ``WanTransformer3DModel``) and ``info`` with ``ema_used`` (bool), ``ema_key``,
        ``dvi`` (``in_channels == 32``), ``source`` and ``args`` (the Namespace as a dict).
    """
    name = os.path.basename(path)
    if path.endswith(".safetensors"):
        sd, meta = _load_safetensors(path, _DIT)
        if "patch_embedding.weight" not in sd and "head.modulation" in sd:
            from ..common.wan_convert import comfy_to_diffusers_wan
            sd = comfy_to_diffusers_wan(sd)
        missing = _missing(sd, _DIT_REQUIRED)
        if missing:
            raise NodeInputError(_DIT, "model", "a diffusers Wan 2.1 DiT state dict",
                                 f"{name!r} missing {missing[:3]}")
        heads = num_heads or (meta.get("config") or {}).get("num_attention_heads")
        config = infer_dit_config(sd, heads, meta.get("args"))
        info = {"ema_used": bool(meta.get("ema_used", False)), "ema_key": meta.get("ema_key"),
                "dvi": config["in_channels"] == 32, "source": name, "args": meta.get("args", {})}
        return sd, config, info

    return _dit_from_ckpt(safe_torch_load(path, _DIT, "model"), name, num_heads)


def _dit_from_ckpt(ckpt, name: str, num_heads: int | None) -> tuple[dict, dict, dict]:
    if not isinstance(ckpt, Mapping):
        raise NodeInputError(_DIT, "model", "a checkpoint dict (with 'model' holding the DiT)",
                             f"{name!r} holding a {type(ckpt).__name__}")
    args = _args_dict(ckpt)
    sd, ema_key = None, None
    for key in _EMA_KEYS:
        cand = _flat_state(ckpt.get(key))
        if cand is not None and not _missing(cand, _DIT_REQUIRED):
            sd, ema_key = cand, key
            break
    if sd is None:
        sd = _flat_state(ckpt)
    if sd is None:
        raise NodeInputError(_DIT, "model", "a dict holding tensors (diffusers Wan DiT keys)",
                             f"{name!r} with no tensors (top-level keys {sorted(map(str, ckpt))[:5]})")
    missing = _missing(sd, _DIT_REQUIRED)
    if missing:
        raise NodeInputError(_DIT, "model", "a diffusers Wan 2.1 DiT state dict "
                             "(WanTransformer3DModel keys under 'model')",
                             f"{name!r} missing {missing[:3]}, e.g. keys {sorted(sd)[:3]}")
    config = infer_dit_config(sd, num_heads, args)
    if ema_key:
        log.info("FlowRVS DiT %s: using EMA weights from '%s'", name, ema_key)
    else:
        log.info("FlowRVS DiT %s: no EMA weights, using 'model'", name)
    info = {"ema_used": ema_key is not None, "ema_key": ema_key,
            "dvi": config["in_channels"] == 32, "source": name,
            "args": {k: v for k, v in args.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    return sd, config, info


def load_flowrvs_mask_vae(path: str) -> tuple[dict, dict]:
    """Load ``tuned_vae.pth`` (``vae.``-prefixed diffusers ``AutoencoderKLWan`` keys, 1-channel head).

    Returns ``(state_dict, config)``: prefix-free diffusers keys and the config inferred from the
    shapes (``base_dim``, ``z_dim``, ``in_channels``, ``out_channels`` = 1).
    """
    name = os.path.basename(path)
    if path.endswith(".safetensors"):
        sd, _meta = _load_safetensors(path, _VAE)
    else:
        sd = _vae_from_ckpt(safe_torch_load(path, _VAE, "mask_vae"), name)
    return _vae_checked(sd, name)


def _vae_from_ckpt(ckpt, name: str) -> dict:
    """Flat prefix-free tensor dict of a loaded mask-VAE checkpoint (``vae.`` / ``module.`` stripped)."""
    if not isinstance(ckpt, Mapping):
        raise NodeInputError(_VAE, "mask_vae", "a dict of 'vae.'-prefixed tensors",
                             f"{name!r} holding a {type(ckpt).__name__}")
    for wrap in ("model", "state_dict"):
        if isinstance(ckpt.get(wrap), Mapping) and _is_tensor_dict(ckpt[wrap]):
            ckpt = ckpt[wrap]
            break
    sd = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise NodeInputError(_VAE, "mask_vae", "a dict of 'vae.'-prefixed tensors",
                             f"{name!r} with no tensors")
    for prefix in ("module.", "vae."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _vae_checked(sd: dict, name: str) -> tuple[dict, dict]:
    missing = _missing(sd, _VAE_REQUIRED)
    if missing:
        raise NodeInputError(_VAE, "mask_vae", "a Wan VAE (diffusers AutoencoderKLWan keys, "
                             "'vae.'-prefixed)", f"{name!r} missing {missing[:3]}, "
                             f"e.g. keys {sorted(sd)[:3]}")
    head = sd["decoder.conv_out.weight"]
    if head.shape[0] != 1:
        raise NodeInputError(_VAE, "mask_vae", "the FlowRVS mask decoder (decoder.conv_out with 1 "
                             "output channel)", f"{name!r} with a {head.shape[0]}-channel head "
                             "(a plain RGB Wan VAE? use the tuned mask VAE)")
    config = {"base_dim": int(sd["encoder.conv_in.weight"].shape[0]),
              "decoder_base_dim": None,
              "z_dim": int(sd["post_quant_conv.weight"].shape[0]),
              "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
              "out_channels": 1}
    return sd, config


def convert_flowrvs_to_safetensors(src: str, dst: str, fp16: bool = False, kind: str = "auto",
                                   num_heads: int | None = None) -> dict:
    """Convert an official FlowRVS ``.pth`` (DiT or mask VAE) to ``dst`` (safetensors, diffusers
    keys) plus ``<dst stem>.json`` with the config. ``kind``: ``"dit"``, ``"vae"`` or ``"auto"``
    (DiT unless the file holds ``vae.`` keys). Returns the JSON written."""
    from safetensors.torch import save_file

    name = os.path.basename(src)
    ckpt = safe_torch_load(src, _DIT if kind != "vae" else _VAE, "model")  # loaded once
    if kind == "auto":
        kind = "vae" if isinstance(ckpt, Mapping) and any(
            str(k).startswith(("vae.", "module.vae.")) for k in ckpt) else "dit"
    if kind == "dit":
        sd, config, info = _dit_from_ckpt(ckpt, name, num_heads)
        meta = {"kind": "flowrvs_dit", "layout": "diffusers", "config": config,
                "ema_used": info["ema_used"], "ema_key": info["ema_key"], "dvi": info["dvi"],
                "args": info["args"], "source": info["source"]}
    elif kind == "vae":
        sd, config = _vae_checked(_vae_from_ckpt(ckpt, name), name)
        meta = {"kind": "flowrvs_mask_vae", "layout": "diffusers", "config": config,
                "source": name}
    else:
        raise NodeInputError("FlowRVS converter", "kind", "'dit', 'vae' or 'auto'", kind)
    del ckpt
    out = {}
    for k, v in sd.items():
        v = v.detach()
        if fp16 and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    meta["dtype"] = "float16" if fp16 else "as stored"
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    save_file(out, dst, metadata={"avlab": json.dumps({"kind": meta["kind"]})})
    with open(_config_path(dst), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, default=str)
    return meta


def flowrvs_dit_to_comfy(state_dict: Mapping) -> dict:
    """Diffusers FlowRVS DiT keys → ComfyUI ``WanModel`` (original Wan) keys, via
    :func:`avlab.common.wan_convert.diffusers_to_comfy_wan` (strict). ComfyUI then detects
    WAN21 from ``head.modulation`` with ``in_dim`` = the patch embedding's 16 or 32 channels."""
    return diffusers_to_comfy_wan(state_dict, strict=True)
