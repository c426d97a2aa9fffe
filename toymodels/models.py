"""Toy video diffusion models for LightCache benchmarks (papers.md §1): configs and builders.

Two families, both real diffusers classes at small widths, trained by
``scripts/train_toy_video_models.py`` on the synthetic domain in the 16-channel toy latent
(:mod:`.codec`):

* ``unet_motion`` — :class:`diffusers.UNetMotionModel` (SD-style U-Net + motion modules, the
  AnimateDiff layout): block_out_channels (32, 64, 64), one res block per level, cross-attention
  on the two deeper levels (SDXL-style: no spatial attention at full resolution), motion modules
  on every level. v-prediction with the SD "scaled_linear" DDPM schedule, sampled with DDIM.
* ``wan_dit`` — :class:`diffusers.WanTransformer3DModel` (Wan 2.1 layout): dim 128 with one
  128-wide head (ComfyUI derives heads as dim // 128), 6 blocks, FFN 512, text_dim 4096 (fixed by
  ComfyUI's Wan detection). Rectified flow (velocity ``ε − x0``, timestep = σ·1000), Euler sampling;
  the same convention as ComfyUI's CONST models, so the converted weights sample in ComfyUI.

``ToyModelConfig.objective`` can swap the formulation (``"v"`` or ``"flow"``; default per family).

Conditioning is the scene's class through a *fixed* toy text encoder: a seeded random table
``[num_classes + 1, tokens, width]`` (row ``num_classes`` = the null/unconditional prompt, zeros),
standing in for a frozen text encoder; it is regenerated from ``cond_seed`` and never trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import torch

from ..common.errors import NodeInputError

UNET = "unet_motion"
WAN = "wan_dit"
KINDS = (UNET, WAN)
V_PRED = "v"
FLOW = "flow"
OBJECTIVES = (V_PRED, FLOW)


@dataclass(frozen=True)
class ToyModelConfig:
    """One toy model: architecture, data shape, diffusion formulation and training recipe."""

    kind: str = UNET
    # data / latent
    frames: int = 8
    size: int = 32                  # frame height = width in pixels; latent is size // 4
    latent_channels: int = 16
    num_classes: int = 3             # avlab.synthetic.NUM_CLASSES (shape of object 0)
    cond_tokens: int = 4
    cond_seed: int = 1234
    # architecture (U-Net)
    block_out_channels: tuple = (32, 64, 64)
    layers_per_block: int = 1
    cross_attention_dim: int = 64
    attention_heads: int = 4
    norm_num_groups: int = 16
    # architecture (Wan DiT)
    dim: int = 128
    head_dim: int = 128
    num_layers: int = 6
    ffn_dim: int = 512
    text_dim: int = 4096
    # diffusion formulation: "v" (DDPM v-prediction, DDIM) or "flow" (rectified flow, Euler);
    # "" = the family's default (U-Net "v", DiT "flow")
    objective: str = ""
    # sampling defaults
    sample_steps: int = 50
    guidance: float = 3.0
    flow_shift: float = 3.0
    # training
    seed: int = 0
    steps: int = 400
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    ema_decay: float = 0.995
    cond_dropout: float = 0.1
    train_clips: int = 384
    heldout_clips: int = 32

    def __post_init__(self):
        if self.kind not in KINDS:
            raise NodeInputError("AVLab toy models", "kind", f"one of {KINDS}", self.kind)
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        if not self.objective:
            object.__setattr__(self, "objective", V_PRED if self.kind == UNET else FLOW)
        if self.objective not in OBJECTIVES:
            raise NodeInputError("AVLab toy models", "objective", f"one of {OBJECTIVES}", self.objective)

    @property
    def latent_size(self) -> int:
        return self.size // 4

    @property
    def cond_width(self) -> int:
        return self.cross_attention_dim if self.kind == UNET else self.text_dim

    def latent_shape(self, batch: int = 1) -> tuple:
        return (batch, self.latent_channels, self.frames, self.latent_size, self.latent_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def default_config(kind: str, **changes) -> ToyModelConfig:
    """The committed recipe for ``kind`` (``"unet_motion"`` or ``"wan_dit"``)."""
    if kind == UNET:
        base = ToyModelConfig(kind=UNET, steps=2400, batch_size=8)   # 600 gave grain; 2400 shows objects
    elif kind == WAN:
        base = ToyModelConfig(kind=WAN, sample_steps=30, lr=1e-3, steps=600, batch_size=8)
    else:
        raise NodeInputError("AVLab toy models", "kind", f"one of {KINDS}", kind)
    return ToyModelConfig.from_dict({**asdict(base), **changes})


def build_model(config: ToyModelConfig) -> torch.nn.Module:
    """The diffusers model of ``config`` (random init from the current torch RNG)."""
    if config.kind == UNET:
        from diffusers import UNetMotionModel

        return UNetMotionModel(
            in_channels=config.latent_channels, out_channels=config.latent_channels,
            down_block_types=("DownBlockMotion", "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion"),
            up_block_types=("CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion", "UpBlockMotion"),
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups, cross_attention_dim=config.cross_attention_dim,
            num_attention_heads=config.attention_heads, motion_num_attention_heads=config.attention_heads,
            motion_max_seq_length=32, use_motion_mid_block=True)
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=config.dim // config.head_dim,
        attention_head_dim=config.head_dim, in_channels=config.latent_channels,
        out_channels=config.latent_channels, text_dim=config.text_dim, freq_dim=256,
        ffn_dim=config.ffn_dim, num_layers=config.num_layers)


def cond_table(config: ToyModelConfig) -> torch.Tensor:
    """The fixed toy text encoder ``[num_classes + 1, tokens, width]``; the last row (null) is zero."""
    g = torch.Generator().manual_seed(config.cond_seed)
    table = torch.randn(config.num_classes + 1, config.cond_tokens, config.cond_width, generator=g)
    table[-1] = 0.0
    return table


def encode_labels(config: ToyModelConfig, labels: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """Class ids ``[B]`` (``num_classes`` = null) → context ``[B, tokens, width]``."""
    table = cond_table(config) if table is None else table
    return table[labels.long()]
