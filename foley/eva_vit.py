"""EVA-CLIP ViT-g/14 vision tower as GRAM/VAST use it (papers.md §4 (FoleyGRAM: EVA-CLIP ViT-g/14 video
encoder, GRAM/VAST layout)).

Written from scratch; the parameter names follow the state-dict layout of a GRAM checkpoint so its
weights load strictly once the outer prefix is stripped. In a GRAM checkpoint the tower lives under
``vision_encoder.visual.`` (GRAM builds the whole EVA-CLIP ``CustomCLIP`` as ``vision_encoder``;
``model/general_module.py::load_clip_model`` and ``model/vision_encoders/evaclip/model.py`` in
ispamm/GRAM). The tower itself (``eva_vit_model.py::EVAVisionTransformer``, EVA01-CLIP-g-14 config in
``model_configs/EVA01-CLIP-g-14.json``):

* ``patch_embed.proj`` — Conv2d(3, 1408, 14, stride 14) with bias; ``cls_token`` [1, 1, 1408];
  ``pos_embed`` [1, 1 + 16², 1408] (learned, absolute, trained at 224 px).
* 40 pre-norm ``blocks.N``: ``norm1`` → attention (``attn.qkv.weight`` without bias, separate
  ``attn.q_bias`` / ``attn.v_bias``, the key bias being zero; ``attn.proj`` with bias; 16 heads of 88)
  → ``norm2`` → ``mlp.fc1`` (1408 → 6144) → exact GELU → ``mlp.fc2``. LayerNorm eps 1e-6, no layer
  scale, no rotary/relative position, no sub-LN.
* final ``norm`` (LayerNorm, eps 1e-6; EVA-CLIP's CLS pooling variant) and the CLIP ``head``
  (Linear 1408 → 1024 with bias). GRAM calls the tower with ``return_all_features=True`` — all
  tokens after ``norm``, ``head`` unused — then takes each frame's CLS token, averages over frames and
  applies its own bias-free ``contra_head_v`` (1408 → 512).

Frames are CLIP-normalised (OpenAI mean/std) at 224 px: ``Resize(224) + CenterCrop(224)`` in the
retrieval evaluation configs, ``Resize((224, 224))`` where no crop is configured (``data/vision_mapper.py``).
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: OpenAI CLIP normalisation, used by GRAM for the EVA-CLIP tower (``data/vision_mapper.py``).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: Where a GRAM checkpoint keeps the tower (``vision_encoder`` = EVA-CLIP CustomCLIP, ``.visual``).
GRAM_VISION_PREFIX = "vision_encoder.visual."


@dataclass(frozen=True)
class EVAViTConfig:
    """Shape of an EVA-CLIP (EVA01) vision tower (papers.md §4 (FoleyGRAM: EVA-CLIP ViT-g/14 video
    encoder, GRAM/VAST layout)).

    ``embed_dim`` is the output size of the CLIP ``head`` (0 = no head in the layout);
    ``final_norm`` / ``qkv_bias`` say whether ``norm.*`` and ``attn.q_bias``/``attn.v_bias`` exist.
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 40
    heads: int = 16
    mlp_dim: int = 6144
    embed_dim: int = 1024
    in_chans: int = 3
    ln_eps: float = 1e-6
    final_norm: bool = True
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "in_chans"):
            if getattr(self, name) < 1:
                raise ValueError(f"EVAViTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim < 0:
            raise ValueError(f"EVAViTConfig.embed_dim must be >= 0, got {self.embed_dim}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def grid(self) -> int:
        """Patches per side at the trained image size."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


#: EVA01-CLIP-g/14 as in GRAM (``EVA01-CLIP-g-14.json``: layers 40, width 1408, head_width 88,
#: mlp_ratio 4.3637 → int(1408 · 4.3637) = 6144, patch 14, image 224, CLIP embed_dim 1024).
EVA_VIT_G14 = EVAViTConfig()

#: A tiny tower with the same layout, for tests.
TINY_EVA_VIT = EVAViTConfig(
    image_size=32, patch_size=8, width=64, depth=2, heads=4, mlp_dim=128, embed_dim=32
)

# Head count is not recoverable from tensor shapes (qkv is [3·width, width] for any head count).
_HEADS_BY_WIDTH: dict[int, int] = {
    EVA_VIT_G14.width: EVA_VIT_G14.heads,  # EVA01-CLIP-g/14 (and g/14-plus): 16 heads of 88
    TINY_EVA_VIT.width: TINY_EVA_VIT.heads,
}


# ----------------------------------------------------------------------------------------------
# modules (names = the GRAM/EVA-CLIP state-dict layout)
# ----------------------------------------------------------------------------------------------


class _PatchEmbed(nn.Module):
    """Non-overlapping patch projection (``patch_embed.proj``)."""

    def __init__(self, cfg: EVAViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, width]


class _Attention(nn.Module):
    """EVA self-attention: one bias-free qkv matmul, with learned query/value biases (key: none)."""

    def __init__(self, cfg: EVAViTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        if cfg.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(cfg.width))
            self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        else:
            self.q_bias = None
            self.v_bias = None
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, cfg: EVAViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, cfg: EVAViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = _Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = _Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """[1, 1 + g², C] → [1, 1 + grid_h·grid_w, C]: the CLS entry kept, the square patch grid resized
    bicubically (align_corners=False, computed in fp32), as EVA-CLIP's ``resize_evaclip_pos_embed``."""
    n = pos_embed.shape[1] - 1
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    grid = patch_pos.float().reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(pos_embed.dtype)
    return torch.cat((cls_pos, patch_pos), dim=1)


class EVAVisionTransformer(nn.Module):
    """EVA-CLIP vision tower (papers.md §4 (FoleyGRAM: EVA-CLIP ViT-g/14 video encoder, GRAM/VAST
    layout)); ``forward`` returns every token after the final norm, as GRAM consumes it."""

    def __init__(self, cfg: EVAViTConfig = EVA_VIT_G14) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.width))
        self.patch_embed = _PatchEmbed(cfg)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps) if cfg.final_norm else nn.Identity()
        self.head = nn.Linear(cfg.width, cfg.embed_dim) if cfg.embed_dim > 0 else None
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- position embedding ------------------------------------------------------------------

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``pos_embed`` for a ``grid_h × grid_w`` patch grid: the trained table, or its patch part
        resized bicubically (align_corners=False, as EVA-CLIP's ``resize_evaclip_pos_embed``)."""
        if (grid_h, grid_w) == (self.cfg.grid, self.cfg.grid):
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid_h, grid_w)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B, 3, H, W], already CLIP-normalised (H, W multiples of the patch size) →
        tokens [B, 1 + (H/p)(W/p), width] (CLS first) after the final norm."""
        if images.ndim != 4 or images.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"expected images [B, {self.cfg.in_chans}, H, W], got shape {tuple(images.shape)}"
            )
        b, _, h, w = images.shape
        if b == 0:
            raise ValueError("EVA ViT got 0 frames (empty batch): nothing to encode")
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        x = self.patch_embed(images.to(self.pos_embed.dtype))
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + self.position_embedding(h // p, w // p)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def encode_video(self, pixels: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """GRAM's vision pooling before ``contra_head_v``: CLS token of each frame, mean over frames.

        ``pixels`` [T, 3, S, S] → [width]; or [B, T, 3, S, S] → [B, width]."""
        if pixels.ndim == 4:
            return self.encode_video(pixels.unsqueeze(0), chunk_size)[0]
        if pixels.ndim != 5:
            raise ValueError(f"expected pixels [T, 3, S, S] or [B, T, 3, S, S], got {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        if b == 0 or t == 0:
            raise ValueError(f"EVA ViT got 0 frames (pixels shape {tuple(pixels.shape)})")
        flat = pixels.reshape(b * t, *pixels.shape[2:])
        step = chunk_size or flat.shape[0]
        cls = torch.cat([self(flat[i : i + step])[:, 0] for i in range(0, flat.shape[0], step)])
        return cls.reshape(b, t, -1).mean(dim=1)

    def preprocess(
        self, frames: torch.Tensor | np.ndarray, mode: Literal["center_crop", "squash"] = "center_crop"
    ) -> torch.Tensor:
        """:func:`preprocess` at this tower's trained image size."""
        return preprocess(frames, self.cfg.image_size, mode=mode)


# ----------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------


def preprocess(
    frames: torch.Tensor | np.ndarray,
    image_size: int = EVA_VIT_G14.image_size,
    *,
    mode: Literal["center_crop", "squash"] = "center_crop",
    antialias: bool = False,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """RGB frames [T, H, W, 3] (float in 0..1, or uint8) → CLIP-normalised [T, 3, S, S] float32
    (papers.md §4 (FoleyGRAM: EVA-CLIP ViT-g/14 video encoder, GRAM/VAST layout)).

    ``center_crop`` = GRAM's evaluation transform (``Resize(S)`` of the short side, then
    ``CenterCrop(S)``); ``squash`` = ``Resize((S, S))``. Bilinear; GRAM pins torchvision 0.15, whose
    tensor ``Resize`` does not antialias, hence ``antialias=False`` by default.
    """
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("preprocess got 0 frames: nothing to encode")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"frames have an empty spatial size: {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if mode == "squash":
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=antialias)
    elif mode == "center_crop":
        # torchvision Resize(int): short side → S, long side → int(S · long / short)
        if h <= w:
            size = (image_size, int(image_size * w / h))
        else:
            size = (int(image_size * h / w), image_size)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        top = int(round((size[0] - image_size) / 2.0))
        left = int(round((size[1] - image_size) / 2.0))
        x = x[..., top : top + image_size, left : left + image_size]
    else:
        raise ValueError(f"unknown preprocess mode {mode!r} (use 'center_crop' or 'squash')")
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def config_from_state_dict(sd: Mapping[str, torch.Tensor], *, heads: int | None = None) -> EVAViTConfig:
    """Infer an :class:`EVAViTConfig` from a tower state dict (keys without the outer prefix).

    Width, patch size, image size (square grid), depth, MLP size, head size and the presence of
    the final norm / q-v biases come from the tensors; the head count is not in any shape, so it
    comes from ``heads`` or a table of known widths (1408 → 16 for EVA01-g/14)."""
    for key in ("pos_embed", "cls_token", "patch_embed.proj.weight"):
        if key not in sd:
            raise ValueError(f"not an EVA ViT state dict: no '{key}' (keys: {_preview(sd)})")
    pos = sd["pos_embed"]
    width = int(pos.shape[-1])
    patch_w = sd["patch_embed.proj.weight"]
    patch = int(patch_w.shape[-1])
    n = int(pos.shape[-2]) - 1
    grid = math.isqrt(max(n, 0))
    if n < 1 or grid * grid != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    depths = {int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))}
    if not depths:
        raise ValueError("EVA ViT state dict has no 'blocks.N.*' keys")
    depth = max(depths) + 1
    if len(depths) != depth:
        missing = sorted(set(range(depth)) - depths)
        raise ValueError(f"EVA ViT state dict skips blocks {missing[:5]} (highest block {depth - 1})")
    if "blocks.0.mlp.fc1.weight" not in sd:
        raise ValueError("EVA ViT state dict has no 'blocks.0.mlp.fc1.weight'")
    mlp_dim = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    if heads is None:
        heads = _HEADS_BY_WIDTH.get(width)
        if heads is None:
            if width % 64:
                raise ValueError(f"cannot infer the head count for width {width}: pass heads=")
            heads = width // 64
    head_w = sd.get("head.weight")
    return EVAViTConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        depth=depth,
        heads=heads,
        mlp_dim=mlp_dim,
        embed_dim=int(head_w.shape[0]) if head_w is not None else 0,
        in_chans=int(patch_w.shape[1]),
        final_norm="norm.weight" in sd,
        qkv_bias="blocks.0.attn.q_bias" in sd,
    )


def _preview(keys, k: int = 5) -> str:
    keys = list(keys)
    more = f", … ({len(keys)} in all)" if len(keys) > k else ""
    return ", ".join(repr(x) for x in keys[:k]) + more


def _normalise_key(key: str) -> str:
    """GRAM's own key fix-ups: DDP's ``module.`` dropped (``utils/build_model.py``) and the older
    VAST name ``evaclip_model`` read as ``vision_encoder`` (``MMGeneralModule.modify_checkpoint``)."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("evaclip_model."):
        key = "vision_encoder." + key[len("evaclip_model."):]
    return key


def _unwrap(obj: object, name: str) -> Mapping[str, object]:
    """Descend into a top-level ``model`` / ``state_dict`` / ``module`` dict (GRAM's ``build_model``
    and EVA-CLIP's loader accept those wrappings); GRAM's own ``ModelSaver`` writes a flat dict."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            raise ValueError(f"{name}: expected a state dict, got {type(obj).__name__}")
        for wrapper in ("model", "state_dict", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
        else:
            return obj
    return obj


def _no_prefix_error(name: str, prefix: str, keys) -> ValueError:
    tops = sorted({_normalise_key(str(k)).split(".")[0] for k in keys})
    return ValueError(
        f"{name}: no keys under prefix {prefix!r} (top-level names: {_preview(tops, 8)}); "
        f"GRAM checkpoints use {GRAM_VISION_PREFIX!r}, the EVA-CLIP release 'visual.'"
    )


def _read_file(path: Path, prefix: str) -> Mapping[str, object]:
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"EVA ViT checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            for k in keys:
                if _normalise_key(k).startswith(prefix):
                    out[k] = f.get_tensor(k)
        if not out:
            raise _no_prefix_error(name, prefix, keys)
        return out
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            return _unwrap(
                torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)),
                name,
            )
        except pickle.UnpicklingError as e:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
            why = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
            raise ValueError(
                f"{name}: refused to load — it holds objects other than tensors and plain "
                f"containers, and only weights_only unpickling is allowed"
                + (f" ({why})" if why else "")
            ) from e
    raise ValueError(f"{name}: unsupported checkpoint type {suffix!r} (use .safetensors, .pt or .pth)")


def load_eva_vit(
    state_dict_or_path: Mapping[str, torch.Tensor] | str | Path,
    prefix: str = GRAM_VISION_PREFIX,
    *,
    heads: int | None = None,
    dtype: torch.dtype | None = None,
) -> EVAVisionTransformer:
    """Build and strictly load the tower from a GRAM checkpoint (papers.md §4 (FoleyGRAM: EVA-CLIP
    ViT-g/14 video encoder, GRAM/VAST layout)).

    Accepts a state dict or a file (``.safetensors`` read with safetensors; ``.pt``/``.pth`` with
    ``torch.load(weights_only=True)`` only). Unwraps a top-level ``model``/``state_dict``/``module``,
    drops a DDP ``module.`` key prefix, keeps the keys under ``prefix`` (GRAM:
    ``vision_encoder.visual.``; the raw EVA-CLIP file: ``visual.``; a bare tower: ``""``), infers
    the config and loads strictly. Returns the model in eval mode, in the checkpoint's dtype unless
    ``dtype`` is given. Raises ValueError naming the file and the first missing/unexpected keys.
    """
    if isinstance(state_dict_or_path, (str, Path)):
        path = Path(state_dict_or_path)
        name = path.name
        raw = _read_file(path, prefix)
    else:
        name = "<state dict>"
        raw = _unwrap(state_dict_or_path, name)

    sub: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        nk = _normalise_key(str(k))
        if nk.startswith(prefix):
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"{name}: '{k}' is a {type(v).__name__}, not a tensor")
            sub[nk[len(prefix):]] = v
    if not sub:
        raise _no_prefix_error(name, prefix, raw)
    try:
        cfg = config_from_state_dict(sub, heads=heads)
    except ValueError as e:
        raise ValueError(f"{name} (prefix {prefix!r}): {e}") from e

    with torch.device("meta"):
        model = EVAVisionTransformer(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sub]
    unexpected = [k for k in sub if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_preview([prefix + k for k in missing])}")
        if unexpected:
            parts.append(
                f"unexpected {len(unexpected)} key(s): {_preview([prefix + k for k in unexpected])}"
            )
        raise ValueError(f"{name}: EVA ViT weights do not match the layout — " + "; ".join(parts))
    bad = [
        f"{prefix}{k}: {tuple(sub[k].shape)} vs {tuple(t.shape)}"
        for k, t in expected.items()
        if tuple(sub[k].shape) != tuple(t.shape)
    ]
    if bad:
        raise ValueError(f"{name}: EVA ViT tensor shapes do not match the inferred config: {bad[:5]}")
    model.load_state_dict(sub, strict=True, assign=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "EVA_VIT_G14",
    "GRAM_VISION_PREFIX",
    "TINY_EVA_VIT",
    "EVAViTConfig",
    "EVAVisionTransformer",
    "config_from_state_dict",
    "load_eva_vit",
    "preprocess",
    "resize_pos_embed",
]
