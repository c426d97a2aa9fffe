"""FlowRVS flow network: a diffusers ``WanTransformer3DModel`` (papers.md §2, "Base model", "DVI").

The network predicts the velocity ``v ≈ video - mask`` from ``x_t``, ``t`` (timestep ``t·1000``) and
the umT5 text states. **Direct Video Injection** (DVI): the normalised video latent is concatenated
to ``x_t`` on the channel axis before the patch embedding (order ``[x_t, video]``, 16 → 32 input
channels, the new weights zero-initialised so the widened model equals the 16-channel one at init).
Released FlowRVS weights have 16 channels (no DVI); both are supported.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common.errors import NodeInputError, check

NODE = "FlowRVS model"

LATENT_CHANNELS = 16

# Wan2.1-T2V-1.3B (papers.md §2): dim 1536 = 12 heads × 128, 30 layers, FFN 8960, umT5-XXL 4096.
FULL_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                   in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                   num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)


def tiny_config(**overrides) -> dict:
    """A tiny ``WanTransformer3DModel`` config for tests (1 layer, dim 32, text_dim 32)."""
    cfg = dict(FULL_CONFIG, num_layers=1, attention_head_dim=16, num_attention_heads=2, ffn_dim=64,
               text_dim=32, freq_dim=16, rope_max_seq_len=64)
    cfg.update(overrides)
    return cfg


def build_transformer(config: dict):
    """``WanTransformer3DModel(**config)`` (diffusers imported lazily)."""
    from diffusers import WanTransformer3DModel
    return WanTransformer3DModel(**config)


def _transformer(model):
    return model.transformer if isinstance(model, FlowRVSModel) else model


def enable_dvi(model):
    """Widen the patch embedding of a 16-channel Wan transformer (or :class:`FlowRVSModel`) to
    ``[x_t, video]`` = 32 input channels, in place: the first 16 input channels keep their weights,
    the 16 new ones are zero, the bias is kept (papers.md §2, DVI). Returns ``model``."""
    tr = _transformer(model)
    pe = getattr(tr, "patch_embedding", None)
    if not isinstance(pe, nn.Conv3d):
        raise NodeInputError(NODE, "model", "a Wan transformer with a Conv3d patch_embedding",
                             type(tr).__name__)
    if pe.in_channels != LATENT_CHANNELS:
        raise NodeInputError(NODE, "model", f"{LATENT_CHANNELS} input channels before enabling DVI",
                             pe.in_channels)
    new = nn.Conv3d(2 * LATENT_CHANNELS, pe.out_channels, kernel_size=pe.kernel_size, stride=pe.stride,
                    padding=pe.padding, bias=pe.bias is not None,
                    device=pe.weight.device, dtype=pe.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :LATENT_CHANNELS].copy_(pe.weight)
        if pe.bias is not None:
            new.bias.copy_(pe.bias)
    new.train(pe.training)
    new.weight.requires_grad_(pe.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(pe.bias.requires_grad)
    tr.patch_embedding = new
    if hasattr(tr, "register_to_config"):
        tr.register_to_config(in_channels=2 * LATENT_CHANNELS)
    return model


class FlowRVSModel(nn.Module):
    """Velocity network ``forward(x_t, t, text, video=None) -> v`` around a ``WanTransformer3DModel``.

    ``x_t``/``video``: ``[B,16,T,H,W]``; ``t``: float or ``[B]`` in [0, 1] (timestep ``t·1000``);
    ``text``: ``[B,L,text_dim]`` encoder states. With DVI, ``video`` is required and concatenated
    after ``x_t``; without DVI it is ignored.
    """

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    @classmethod
    def from_config(cls, config: dict | None = None, dvi: bool = False) -> FlowRVSModel:
        model = cls(build_transformer(tiny_config() if config is None else config))
        return enable_dvi(model) if dvi else model

    @property
    def in_channels(self) -> int:
        return int(self.transformer.patch_embedding.in_channels)

    @property
    def dvi(self) -> bool:
        return self.in_channels == 2 * LATENT_CHANNELS

    def enable_dvi(self) -> FlowRVSModel:
        return enable_dvi(self)

    def forward(self, x_t: torch.Tensor, t, text: torch.Tensor, video: torch.Tensor | None = None):
        check(x_t.dim() == 5 and x_t.shape[1] == LATENT_CHANNELS, NODE, "x_t",
              f"[B,{LATENT_CHANNELS},T,H,W]", tuple(x_t.shape))
        if self.dvi:
            check(video is not None and tuple(video.shape) == tuple(x_t.shape), NODE, "video",
                  f"the video latent of shape {tuple(x_t.shape)} (DVI model)",
                  None if video is None else tuple(video.shape))
            inp = torch.cat([x_t, video.to(x_t.dtype)], dim=1)
        else:
            inp = x_t
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x_t.shape[0])
        check(t.numel() == x_t.shape[0], NODE, "t", f"a scalar or {x_t.shape[0]} values", t.numel())
        out = self.transformer(hidden_states=inp, timestep=t * 1000, encoder_hidden_states=text,
                               return_dict=False)
        return out[0] if isinstance(out, (tuple, list)) else out
