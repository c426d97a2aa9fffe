"""BEATs audio encoder, host-free — papers.md §4 (FoleyGRAM: BEATs iter3+ AS2M audio encoder).

A from-scratch PyTorch implementation of the encoder of "BEATs: Audio Pre-Training with Acoustic
Tokenizers" (Chen et al., 2022) whose ``state_dict`` uses exactly the parameter names of the official
release, so ``BEATs_iter3_plus_AS2M.pt`` (``{'cfg': {...}, 'model': state_dict}``) loads strictly.

Pipeline (inference only: no dropout, layer-drop or layer-wise gradient decay):

1. Kaldi log-mel filterbank of ``waveform * 2**15`` (16 kHz, 128 bins, 25 ms window, 10 ms hop, Povey
   window, pre-emphasis 0.97, DC removal, snip-edges), normalised as ``(fbank - 15.41663) / (2 * 6.55582)``.
2. ``patch_embedding``: 16x16 conv, stride 16, over (time, mel) -> tokens ordered time-major
   (8 mel patches per 16-frame time patch); ``layer_norm`` over the 512 patch channels;
   ``post_extract_proj`` to the 768-d model width.
3. ``encoder``: padded tokens zeroed, weight-normed grouped ``pos_conv`` (kernel 128, 16 groups, GELU)
   added, ``encoder.layer_norm``, then 12 post-LN DeepNorm layers (residual scaled by ``(2N)**0.25``)
   whose self-attention adds a bucketed relative-position bias (320 buckets, max distance 800) gated per
   query by ``grep_linear`` / ``grep_a``. One bias table serves every layer: the official model aliases
   layer 0's ``relative_attention_bias`` into every layer, so the key appears once *per layer* in the state
   dict, all copies being the same tensor (this module aliases it the same way).

GRAM pools BEATs by the token mean (:meth:`BEATs.pooled`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common.errors import NodeInputError

__all__ = [
    "BEATs",
    "BEATsConfig",
    "FBANK_MEAN",
    "FBANK_STD",
    "N_MELS",
    "SAMPLE_RATE",
    "TINY_BEATS",
    "beats_fbank",
    "kaldi_fbank",
    "load_beats",
    "min_num_samples",
    "num_fbank_frames",
    "num_beats_tokens",
    "padding_mask_from_lengths",
    "relative_position_buckets",
    "save_beats_safetensors",
]

SAMPLE_RATE = 16_000
N_MELS = 128
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
N_FFT = 512  # FRAME_LENGTH rounded up to a power of two (Kaldi's padded window)
PREEMPHASIS = 0.97
WAVEFORM_SCALE = 2.0**15
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582

_NODE = "BEATs encoder"
_LOADER = "BEATs loader"
_CONFIG_META_KEY = "avlab_beats_config"
_SHARED_BIAS = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
_ACTIVATIONS = ("gelu", "relu", "gelu_accurate", "gelu_fast", "tanh", "linear")

MaskRule = Literal["official", "exact"]


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BEATsConfig:
    """Architecture of a BEATs encoder; defaults are ``BEATs_iter3_plus_AS2M.pt`` (papers.md §4).

    Field names follow the official checkpoint's ``cfg`` dict; training-only fields (dropouts,
    layer-drop, gradient decay, ...) are accepted by :meth:`from_dict` and ignored.
    """

    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    embed_dim: int = 512  # patch-embedding channels
    input_patch_size: int = 16
    conv_bias: bool = False  # bias of the patch-embedding conv
    layer_norm_first: bool = False
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False  # AudioSet fine-tuned checkpoints carry a `predictor` head
    predictor_class: int = 527

    def __post_init__(self) -> None:
        checks = (
            ("encoder_layers", self.encoder_layers >= 1, "an integer >= 1"),
            ("encoder_attention_heads", self.encoder_attention_heads >= 1, "an integer >= 1"),
            ("encoder_embed_dim", self.encoder_embed_dim >= 1
             and self.encoder_embed_dim % self.encoder_attention_heads == 0,
             "a positive multiple of encoder_attention_heads"),
            ("encoder_ffn_embed_dim", self.encoder_ffn_embed_dim >= 1, "an integer >= 1"),
            ("embed_dim", self.embed_dim >= 1, "an integer >= 1"),
            ("input_patch_size", 1 <= self.input_patch_size <= N_MELS,
             f"an integer in [1, {N_MELS}] (the official default -1 means the cfg lacked it)"),
            ("conv_pos", self.conv_pos >= 1, "an integer >= 1"),
            ("conv_pos_groups", self.conv_pos_groups >= 1
             and self.encoder_embed_dim % self.conv_pos_groups == 0,
             "a positive divisor of encoder_embed_dim"),
            ("num_buckets", not self.relative_position_embedding or self.num_buckets >= 4,
             "an integer >= 4 when relative_position_embedding is on"),
            ("max_distance", not self.relative_position_embedding
             or self.max_distance > self.num_buckets // 4,
             "larger than num_buckets // 4 when relative_position_embedding is on"),
            ("activation_fn", self.activation_fn in _ACTIVATIONS, f"one of {_ACTIVATIONS}"),
            ("deep_norm", not (self.deep_norm and self.layer_norm_first),
             "False when layer_norm_first is True (the official model asserts this)"),
            ("predictor_class", self.predictor_class >= 1, "an integer >= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise NodeInputError("BEATsConfig", name, expected, getattr(self, name))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BEATsConfig:
        """Build from an official checkpoint ``cfg`` dict (or :meth:`to_dict` output); unknown keys
        are ignored, missing ones take the iter3+ AS2M defaults."""
        if not isinstance(d, Mapping):
            raise NodeInputError("BEATsConfig", "cfg", "a dict of BEATs settings", type(d).__name__)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            kind = type(f.default)
            try:
                if kind is bool:
                    if not isinstance(value, (bool, int)):
                        raise TypeError
                    value = bool(value)
                elif kind is int:
                    if isinstance(value, float) and not value.is_integer():
                        raise TypeError
                    value = int(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise NodeInputError("BEATsConfig", f.name, f"a {kind.__name__}", repr(value)) from None
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (official field names), e.g. for safetensors metadata."""
        return asdict(self)

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads


TINY_BEATS = BEATsConfig(
    encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
    embed_dim=32, conv_pos=16, conv_pos_groups=4,
)
"""A 2-layer, 64-d BEATs for tests (same structure and key names as iter3+ AS2M)."""


# ---------------------------------------------------------------------------------------------------
# Front end: Kaldi filterbank as BEATs uses it
# ---------------------------------------------------------------------------------------------------


def num_fbank_frames(num_samples: int) -> int:
    """Kaldi frames (snip-edges) of a 16 kHz clip: ``1 + (S - 400) // 160``, or 0 if ``S < 400``."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def num_beats_tokens(num_samples: int, cfg: BEATsConfig = BEATsConfig()) -> int:
    """Tokens BEATs emits for ``num_samples`` (16 kHz): ``(frames // p) * (128 // p)`` with patch ``p``."""
    p = cfg.input_patch_size
    return (num_fbank_frames(num_samples) // p) * (N_MELS // p)


def min_num_samples(cfg: BEATsConfig = BEATsConfig()) -> int:
    """Shortest clip giving one token: ``p`` frames, i.e. 2800 samples (0.175 s) for ``p = 16``."""
    return FRAME_LENGTH + (cfg.input_patch_size - 1) * FRAME_SHIFT


def _mel(freq_hz: Tensor | float) -> Tensor | float:
    """Kaldi's mel scale ``1127 ln(1 + f / 700)``."""
    if isinstance(freq_hz, Tensor):
        return 1127.0 * (1.0 + freq_hz / 700.0).log()
    return 1127.0 * math.log(1.0 + freq_hz / 700.0)


@lru_cache(maxsize=4)
def _kaldi_mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                      low_hz: float = 20.0) -> Tensor:
    """Kaldi's triangular mel filters (evenly spaced in mel, upper edge = Nyquist) as ``[n_mels,
    n_fft//2 + 1]``; the Nyquist bin gets weight 0, as in Kaldi. Built in float32 like Kaldi's tooling:
    for near-silent bands of tonal audio the log-mel output is sensitive to the last float32 bit."""
    mel_lo, mel_hi = _mel(low_hz), _mel(sample_rate / 2)
    step = (mel_hi - mel_lo) / (n_mels + 1)
    corners = mel_lo + torch.arange(n_mels + 2, dtype=torch.float32) * step
    left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    bin_mel = _mel(torch.arange(n_fft // 2, dtype=torch.float32) * (sample_rate / n_fft))[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    tri = torch.minimum(rising, falling).clamp_min(0.0)
    return F.pad(tri, (0, 1))


@lru_cache(maxsize=1)
def _povey_window(length: int = FRAME_LENGTH) -> Tensor:
    """Povey window ``hann(symmetric) ** 0.85``, float32 (see :func:`_kaldi_mel_matrix` on precision)."""
    return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(0.85)


def kaldi_fbank(samples: Tensor, n_mels: int = N_MELS) -> Tensor:
    """Batched Kaldi log-mel filterbank, as ``torchaudio.compliance.kaldi.fbank(x, num_mel_bins=128,
    sample_frequency=16000, frame_length=25, frame_shift=10)`` (no dither), for ``samples [B, S]``
    (already on Kaldi's int16 scale). Returns ``[B, T, 128]`` float32, ``T = num_fbank_frames(S)``."""
    x = samples.to(torch.float32)
    dev = x.device
    if x.shape[-1] < FRAME_LENGTH:
        return x.new_zeros(x.shape[0], 0, n_mels)
    frames = x.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # [B, T, 400]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)
    frames = (frames - PREEMPHASIS * previous) * _povey_window().to(dev)
    power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2.0)  # [B, T, 257]
    mel = power @ _kaldi_mel_matrix(n_mels).to(dev).T
    return mel.clamp_min(torch.finfo(torch.float32).eps).log()


def beats_fbank(waveform_16k: Tensor, n_mels: int = N_MELS) -> Tensor:
    """BEATs input features: Kaldi fbank of ``waveform * 2**15`` normalised by BEATs' constants,
    ``(fbank - 15.41663) / (2 * 6.55582)``. ``[B, S]`` in [-1, 1] -> ``[B, T, n_mels]`` float32
    (BEATs: 128 mel bins; GRAM's audio config feeds its BEATs 64)."""
    return (kaldi_fbank(waveform_16k.to(torch.float32) * WAVEFORM_SCALE, n_mels) - FBANK_MEAN) / (2.0 * FBANK_STD)


# ---------------------------------------------------------------------------------------------------
# Padding masks
# ---------------------------------------------------------------------------------------------------


def padding_mask_from_lengths(lengths: Tensor | list[int], num_samples: int) -> Tensor:
    """``[B, num_samples]`` bool mask, True on the padding after each clip's ``length`` samples."""
    lens = torch.as_tensor(lengths, dtype=torch.long).reshape(-1, 1)
    return torch.arange(num_samples).reshape(1, -1) >= lens


def _fold_mask(mask: Tensor, n_out: int) -> Tensor:
    """Official BEATs reduction: drop the ``n_in % n_out`` trailing entries, cut the rest into ``n_out``
    equal runs; an output position is padding when its whole run is."""
    n_in = mask.shape[1]
    if n_in < n_out:
        raise NodeInputError(_NODE, "padding_mask", f"at least {n_out} positions to fold into {n_out}",
                             n_in)
    usable = (n_in // n_out) * n_out
    return mask[:, :usable].reshape(mask.shape[0], n_out, -1).all(dim=-1)


def _token_mask(sample_mask: Tensor, n_frames: int, n_time: int, n_freq: int, patch: int,
                rule: MaskRule) -> Tensor:
    """Map a per-sample padding mask ``[B, S]`` to the ``n_time * n_freq`` tokens (time-major).

    ``"official"`` repeats the reference code: samples are folded evenly onto frames, frames evenly
    onto tokens (as if tokens were a time axis), so at a clip's end some tokens of the partly padded
    16-frame patch stay unmasked. ``"exact"`` masks a token when any sample under its patch is
    padding, so a right-padded clip yields exactly the tokens of the unpadded clip.
    """
    if rule == "official":
        return _fold_mask(_fold_mask(sample_mask, n_frames), n_time * n_freq)
    frame_pad = sample_mask.unfold(1, FRAME_LENGTH, FRAME_SHIFT).any(dim=-1)[:, :n_frames]
    patch_pad = frame_pad[:, : n_time * patch].reshape(-1, n_time, patch).any(dim=-1)
    return patch_pad.repeat_interleave(n_freq, dim=1)


# ---------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------


def relative_position_buckets(n_query: int, n_key: int, num_buckets: int, max_distance: int,
                              device: torch.device | str | None = None) -> Tensor:
    """Bidirectional T5-style buckets of ``key - query`` offsets, as BEATs computes them: half the
    buckets per direction (positive offsets in the upper half), the first quarter exact, the rest
    log-spaced up to ``max_distance`` and clamped. ``[n_query, n_key]`` long."""
    offset = torch.arange(n_key, device=device)[None, :] - torch.arange(n_query, device=device)[:, None]
    per_side = num_buckets // 2
    exact = per_side // 2
    side = (offset > 0).long() * per_side
    dist = offset.abs()
    log_ratio = torch.log(dist.clamp_min(1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (per_side - exact)).long()).clamp_max(per_side - 1)
    return side + torch.where(dist < exact, dist, far)


def _activation(name: str):
    if name == "gelu":
        return lambda t: F.gelu(t.float()).type_as(t)
    if name in ("gelu_accurate", "gelu_fast"):
        return lambda t: F.gelu(t.float(), approximate="tanh").type_as(t)
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    return lambda t: t


class _WeightNormConv1d(nn.Module):
    """Grouped 'same' Conv1d stored as weight-norm factors ``weight_g`` (magnitude, one per kernel tap:
    the norm is taken over every dim but dim 2) and ``weight_v`` (direction), plus ``bias``.

    Holding the factors directly keeps the official key names without ``torch.nn.utils.weight_norm``
    (deprecated) or the parametrizations API (different key names).
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        std = math.sqrt(4.0 / (kernel * channels))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * std)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True).clone())
        self.bias = nn.Parameter(torch.zeros(channels))

    def kernel_weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, L] -> [B, C, L]``: symmetric padding ``k // 2``; for even ``k`` the extra last
        output step is dropped."""
        y = F.conv1d(x, self.kernel_weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        return y[..., : x.shape[-1]]


class _GatedRelPosSelfAttention(nn.Module):
    """Multi-head self-attention with an additive relative-position bias, optionally gated per query
    (gru_rel_pos: ``g = a * (b * grep_a - 1) + 2`` from sigmoids of ``grep_linear(q_head)``)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim = heads, cfg.head_dim
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_attention_bias: nn.Embedding | None = (
            nn.Embedding(cfg.num_buckets, heads) if cfg.relative_position_embedding else None
        )
        self.gated = cfg.gru_rel_pos
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, n: int) -> Tensor:
        """Ungated bias ``[heads, n, n]`` from this layer's bucket table."""
        assert self.relative_attention_bias is not None
        table = self.relative_attention_bias.weight
        buckets = relative_position_buckets(n, n, self.num_buckets, self.max_distance, table.device)
        return F.embedding(buckets, table).permute(2, 0, 1)

    def forward(self, x: Tensor, key_pad: Tensor | None, pos_bias: Tensor | None) -> Tensor:
        """``x [B, L, D]``; ``key_pad [B, L]`` True = ignore; ``pos_bias [H, L, L]`` or None."""
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        additive = None
        if pos_bias is not None:
            additive = pos_bias.unsqueeze(0).to(q.dtype)
            if self.gated:
                gate_logits = self.grep_linear(q).reshape(b, self.heads, n, 2, 4).sum(dim=-1)
                gate_a, gate_b = torch.sigmoid(gate_logits).chunk(2, dim=-1)
                additive = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * additive
        if key_pad is not None:
            blocked = torch.zeros(b, 1, 1, n, dtype=q.dtype, device=q.device)
            blocked = blocked.masked_fill(key_pad[:, None, None, :], float("-inf"))
            additive = blocked if additive is None else additive + blocked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class _EncoderLayer(nn.Module):
    """Transformer layer: post-LN with DeepNorm residual scaling (iter3+), or pre-LN if configured."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = _GatedRelPosSelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first
        self.residual_scale = (2.0 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0
        self.act = _activation(cfg.activation_fn)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, x: Tensor, key_pad: Tensor | None, pos_bias: Tensor | None) -> Tensor:
        if self.pre_norm:
            x = x + self.self_attn(self.self_attn_layer_norm(x), key_pad, pos_bias)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, key_pad, pos_bias))
        return self.final_layer_norm(x * self.residual_scale + self._ffn(x))


class _Encoder(nn.Module):
    """Convolutional position embedding + layer stack (``encoder.*`` keys)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(_WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups))
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.relative = cfg.relative_position_embedding
        if self.relative:
            shared = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = shared  # same module under every layer
        self.layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first

    def forward(self, x: Tensor, token_pad: Tensor | None) -> Tensor:
        if token_pad is not None:
            x = x.masked_fill(token_pad.unsqueeze(-1), 0.0)
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)
        if not self.pre_norm:
            x = self.layer_norm(x)
        # Layer 0's table makes the bias; every layer re-gates that same ungated bias.
        bias = self.layers[0].self_attn.position_bias(x.shape[1]) if self.relative else None
        for layer in self.layers:
            x = layer(x, token_pad, bias)
        return self.layer_norm(x) if self.pre_norm else x


class BEATs(nn.Module):
    """BEATs audio encoder with the official parameter names (papers.md §4, FoleyGRAM: BEATs iter3+
    AS2M audio encoder). ``forward(waveform_16k [B, S], padding_mask [B, S] | None)`` ->
    ``(tokens [B, L, D], token_padding_mask [B, L] | None)``."""

    def __init__(self, cfg: BEATsConfig | None = None, n_mels: int = N_MELS) -> None:
        super().__init__()
        cfg = cfg or BEATsConfig()
        self.cfg = cfg
        self.n_mels = n_mels          # front-end mel bins (not a weight: GRAM feeds 64, BEATs 128)
        p = cfg.input_patch_size
        width = cfg.encoder_embed_dim
        self.post_extract_proj = nn.Linear(cfg.embed_dim, width) if cfg.embed_dim != width else None
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.encoder = _Encoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.predictor = nn.Linear(width, cfg.predictor_class) if cfg.finetuned_model else None

    # -- input checks --------------------------------------------------------------------------------

    def _check_inputs(self, waveform: Tensor, padding_mask: Tensor | None) -> None:
        if not isinstance(waveform, Tensor) or waveform.dim() != 2:
            got = tuple(waveform.shape) if isinstance(waveform, Tensor) else type(waveform).__name__
            raise NodeInputError(_NODE, "waveform_16k", "a [batch, samples] tensor of 16 kHz audio", got)
        if waveform.shape[0] == 0 or waveform.shape[1] == 0:
            raise NodeInputError(_NODE, "waveform_16k", "non-empty audio (got 0-sample audio or an empty "
                                 "batch)", tuple(waveform.shape))
        if not waveform.is_floating_point():
            raise NodeInputError(_NODE, "waveform_16k", "floating-point samples in [-1, 1]", waveform.dtype)
        need = min_num_samples(self.cfg)
        if waveform.shape[1] < need:
            raise NodeInputError(
                _NODE, "waveform_16k",
                f"at least {need} samples ({need / SAMPLE_RATE:.3f} s at 16 kHz) to fill one "
                f"{self.cfg.input_patch_size}-frame patch", f"{waveform.shape[1]} samples")
        if padding_mask is not None and (not isinstance(padding_mask, Tensor)
                                         or tuple(padding_mask.shape) != tuple(waveform.shape)):
            got = (tuple(padding_mask.shape) if isinstance(padding_mask, Tensor)
                   else type(padding_mask).__name__)
            raise NodeInputError(_NODE, "padding_mask", f"a bool tensor shaped like the waveform "
                                 f"{tuple(waveform.shape)}", got)

    # -- forward -------------------------------------------------------------------------------------

    def forward(self, waveform_16k: Tensor, padding_mask: Tensor | None = None, *,
                mask_rule: MaskRule = "official") -> tuple[Tensor, Tensor | None]:
        """Encode 16 kHz audio in [-1, 1]. ``padding_mask`` is True on padded samples; ``mask_rule``
        picks how it reaches the tokens (see :func:`_token_mask`; ``"official"`` reproduces the
        reference). Returns the tokens (time-major, ``128 // p`` per time patch) and the token mask."""
        if mask_rule not in ("official", "exact"):
            raise NodeInputError(_NODE, "mask_rule", "'official' or 'exact'", repr(mask_rule))
        self._check_inputs(waveform_16k, padding_mask)
        weight = self.patch_embedding.weight
        fbank = beats_fbank(waveform_16k.to(weight.device), self.n_mels)  # [B, T, n_mels] float32
        feats = self.patch_embedding(fbank.unsqueeze(1).to(weight.dtype))  # [B, C, T // p, 128 // p]
        n_time, n_freq = feats.shape[2], feats.shape[3]
        tokens = self.layer_norm(feats.flatten(2).transpose(1, 2))
        token_pad = None
        if padding_mask is not None:
            token_pad = _token_mask(padding_mask.to(device=weight.device, dtype=torch.bool), fbank.shape[1],
                                    n_time, n_freq, self.cfg.input_patch_size, mask_rule)
        if self.post_extract_proj is not None:
            tokens = self.post_extract_proj(tokens)
        return self.encoder(tokens, token_pad), token_pad

    def pooled(self, waveform_16k: Tensor, padding_mask: Tensor | None = None, *,
               mask_rule: MaskRule = "official") -> Tensor:
        """GRAM's BEATs embedding: mean of the non-padded output tokens, ``[B, D]``."""
        tokens, token_pad = self.forward(waveform_16k, padding_mask, mask_rule=mask_rule)
        if token_pad is None:
            return tokens.mean(dim=1)
        keep = (~token_pad).unsqueeze(-1).to(tokens.dtype)
        count = keep.sum(dim=1)
        if bool((count == 0).any()):
            empty = (count.squeeze(-1) == 0).nonzero().flatten().tolist()
            raise NodeInputError(_NODE, "padding_mask", "at least one unpadded token per clip (a clip "
                                 f"needs >= {min_num_samples(self.cfg)} real samples)",
                                 f"no real tokens in clip(s) {empty}")
        return (tokens * keep).sum(dim=1) / count

    def class_probs(self, waveform_16k: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """AudioSet probabilities of a fine-tuned checkpoint (``cfg.finetuned_model``): sigmoid of the
        token-mean of ``predictor`` logits (= predictor of the token mean), ``[B, predictor_class]``."""
        if self.predictor is None:
            raise NodeInputError(_NODE, "checkpoint", "a fine-tuned BEATs (cfg.finetuned_model=True) for "
                                 "class probabilities", "a pre-trained encoder without a predictor")
        return torch.sigmoid(self.predictor(self.pooled(waveform_16k, padding_mask)))


# ---------------------------------------------------------------------------------------------------
# Loading and conversion
# ---------------------------------------------------------------------------------------------------


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _is_safetensors(path: str) -> bool:
    """Sniff the safetensors layout: little-endian u64 header size, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def _read_torch_checkpoint(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a loadable BEATs .pt"
        first_line = (str(err).splitlines() or [""])[0][:300]
        raise NodeInputError(
            _LOADER, "checkpoint",
            "a BEATs .pt readable by torch.load(weights_only=True) (arbitrary pickled objects are "
            "refused)", f"{path!r}: {type(err).__name__}: {first_line}") from None


def _read_safetensors(path: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # noqa: BLE001
        raise NodeInputError(_LOADER, "checkpoint", "a readable safetensors file",
                             f"{path!r}: {type(err).__name__}: {err}") from None
    if _CONFIG_META_KEY not in meta:
        raise NodeInputError(_LOADER, "checkpoint", f"a safetensors file written by save_beats_safetensors "
                             f"(config JSON under metadata[{_CONFIG_META_KEY!r}])",
                             f"{path!r} with metadata keys {sorted(meta)}")
    try:
        cfg = json.loads(meta[_CONFIG_META_KEY])
    except json.JSONDecodeError as err:
        raise NodeInputError(_LOADER, "checkpoint", "valid config JSON in the safetensors metadata",
                             f"{path!r}: {err}") from None
    return cfg, tensors


def _split_checkpoint(ckpt: Any, where: str) -> tuple[Mapping[str, Any], Mapping[str, Tensor]]:
    expected = ("an official BEATs checkpoint: a dict {'cfg': dict of settings, 'model': state dict of "
                "tensors}")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("cfg"), Mapping) \
            or not isinstance(ckpt.get("model"), Mapping):
        raise NodeInputError(_LOADER, "checkpoint", expected, f"{where}: {_describe(ckpt)}")
    state = ckpt["model"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if not state or bad:
        raise NodeInputError(_LOADER, "checkpoint", expected,
                             f"{where}: 'model' holds non-tensor entries {bad[:5]}" if bad
                             else f"{where}: 'model' is empty")
    return ckpt["cfg"], state


def _fill_shared_bias(state: dict[str, Tensor], layers: int) -> None:
    """A re-save that dropped the aliased copies of the shared bias table keeps only layer 0's:
    restore the per-layer keys the official layout has."""
    first = state.get(_SHARED_BIAS.format(0))
    if first is None:
        return
    for i in range(1, layers):
        state.setdefault(_SHARED_BIAS.format(i), first)


def beats_config_from_state_dict(sd: Mapping[str, Tensor]) -> BEATsConfig:
    """The BEATs architecture implied by tensor shapes (GRAM checkpoints carry no BEATs ``cfg``)."""
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    dim = sd["post_extract_proj.weight"].shape[0]
    conv = sd["encoder.pos_conv.0.weight_v"]
    rel = sd.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    grep = sd.get("encoder.layers.0.self_attn.grep_a")
    heads = int(grep.shape[1]) if grep is not None else int(rel.shape[1]) if rel is not None else max(1, dim // 64)
    return BEATsConfig(encoder_layers=layers, encoder_embed_dim=dim,
                       encoder_ffn_embed_dim=sd["encoder.layers.0.fc1.weight"].shape[0],
                       encoder_attention_heads=heads, embed_dim=sd["patch_embedding.weight"].shape[0],
                       input_patch_size=sd["patch_embedding.weight"].shape[-1],
                       conv_pos=conv.shape[-1], conv_pos_groups=dim // conv.shape[1],
                       relative_position_embedding=rel is not None,
                       num_buckets=rel.shape[0] if rel is not None else 320, gru_rel_pos=grep is not None)


def _load_strict(model: BEATs, state: Mapping[str, Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{len(items)} {label} key(s): {items[:5]}{' ...' if len(items) > 5 else ''}")
        raise NodeInputError(_LOADER, "checkpoint", "a state dict matching the BEATs config (official key "
                             "names)", f"{where}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_beats(path_or_checkpoint: str | os.PathLike | Mapping[str, Any], device: torch.device | str = "cpu",
               dtype: torch.dtype | None = None) -> BEATs:
    """Load a BEATs encoder (papers.md §4, FoleyGRAM: BEATs iter3+ AS2M audio encoder), in eval mode.

    Accepts the official ``.pt`` (``{'cfg': {...}, 'model': state_dict}``, opened only with
    ``torch.load(..., map_location="cpu", weights_only=True)``), such a dict already in memory, or a
    safetensors file from :func:`save_beats_safetensors`. Keys load strictly; anything else raises a
    ``ValueError`` (:class:`NodeInputError`) naming the file and what was expected.
    """
    if isinstance(path_or_checkpoint, Mapping):
        where = "in-memory checkpoint"
        cfg_dict, state = _split_checkpoint(path_or_checkpoint, where)
    else:
        path = os.fspath(path_or_checkpoint)
        where = repr(path)
        if not os.path.isfile(path):
            raise NodeInputError(_LOADER, "checkpoint", "an existing BEATs checkpoint file (.pt or "
                                 ".safetensors)", where)
        if _is_safetensors(path):
            cfg_dict, state = _read_safetensors(path)
        else:
            cfg_dict, state = _split_checkpoint(_read_torch_checkpoint(path), where)
    try:
        cfg = BEATsConfig.from_dict(cfg_dict)
    except NodeInputError as err:
        raise NodeInputError(_LOADER, "checkpoint", "a valid BEATs 'cfg'", f"{where}: {err}") from None
    model = BEATs(cfg)
    state = dict(state)
    _fill_shared_bias(state, cfg.encoder_layers)
    _load_strict(model, state, where)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    return model.eval()


def save_beats_safetensors(model: BEATs, path: str | os.PathLike) -> None:
    """Write ``model`` as safetensors with the official key names (every layer's alias of the shared
    bias table included) and its config as JSON in the metadata; :func:`load_beats` reads it back."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()  # safetensors refuses tensors sharing memory
        seen.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    save_file(tensors, os.fspath(path), metadata={_CONFIG_META_KEY: json.dumps(model.cfg.to_dict()),
                                                  "format": "pt"})
