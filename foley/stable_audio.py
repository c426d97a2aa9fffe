"""Stable Audio Open DiT, host-free — papers.md §4 (the Stable Audio Open DiT that FoleyGRAM conditions).

This is the pack's host-free training / inference path for the diffusion backbone of Stable Audio Open
("Stable Audio Open", Evans et al., 2024; architecture of stable-audio-tools' ``DiffusionTransformer``
with the ``continuous_transformer`` backbone and ``prepend`` global conditioning). It is written from
scratch (no ``comfy`` import) but is *key-compatible* with ComfyUI's loader: :class:`StableAudioDiT`'s
``state_dict()`` has exactly the keys and shapes of ``comfy.ldm.audio.dit.AudioDiffusionTransformer``
and computes the same function (host test ``tests/host/test_stable_audio_equivalence.py``), and
:func:`checkpoint_state_dict` writes the single-file layout ComfyUI's checkpoint loader recognises
(``model.diffusion_model.*`` + ``conditioner.conditioners.seconds_{start,total}.*``).

Model (``x`` latent ``[B, io, N]``, time ``t`` in ``[0, 1]``, cross tokens ``[B, M, cond_token_dim]``,
global vector ``[B, global_cond_dim]``; all LayerNorms bias-free with a ``gamma`` gain):

1. ``g = to_global_embed(global) + to_timestep_embed(FourierFeatures(t))`` — one prepended token;
2. ``x = preprocess_conv(x) + x`` (1×1 conv, residual); tokens ``[B, N, io]``; ``project_in``;
   ``h = cat(g, x)`` so the sequence has ``1 + N`` positions;
3. ``depth`` pre-norm blocks: self-attention with partial rotary embeddings (the first
   ``max(head_width // 2, 32)`` dims of every head, positions ``0..N`` counted over the whole sequence
   including the prepended token), cross-attention to ``to_cond_embed(tokens)`` with grouped key/value
   heads, SwiGLU feed-forward (inner width ``4 · dim``);
4. ``project_out``, drop the prepended position, ``out = postprocess_conv(out) + out``. The output is
   the v-prediction ``v = cos(tπ/2)·ε − sin(tπ/2)·x0``.

Seconds conditioning (:class:`StableAudioConditioner`) reproduces ComfyUI's ``StableAudio1.extra_conds``
(two ``NumberConditioner(768, min_val=0, max_val=512)``), with per-item values allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SAO_OPEN", "StableAudioDiTConfig", "StableAudioDiT", "TransformerBlock", "SecondsEmbedder",
    "StableAudioConditioner", "checkpoint_state_dict", "split_checkpoint_state_dict", "v_target", "noisy",
    "x0_from_v", "sample",
]

TIMESTEP_FEATURES = 256          # Fourier features of t (128 frequencies, cos and sin)
SECONDS_FEATURES = 256           # learned Fourier features of the normalised seconds value
ROTARY_BASE = 10000.0
DIT_PREFIX = "model.diffusion_model."
SAT_DIT_PREFIX = "model.model."  # stable-audio-tools' own wrapper prefix (also accepted by ComfyUI)
CONDITIONER_PREFIX = "conditioner.conditioners."

# Fixed entries of ComfyUI's unet_config for this architecture.
_COMFY_FIXED = dict(audio_model="dit1.0", patch_size=1, input_concat_dim=0, prepend_cond_dim=0,
                    transformer_type="continuous_transformer", global_cond_type="prepend")


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class StableAudioDiTConfig:
    """Architecture of the DiT; the defaults are Stable Audio Open 1.0 (1.06 B parameters)."""

    io_channels: int = 64
    embed_dim: int = 1536
    depth: int = 24
    num_heads: int = 24
    cond_token_dim: int = 768
    global_cond_dim: int = 1536
    project_cond_tokens: bool = False
    project_global_cond: bool = True

    def __post_init__(self) -> None:
        for name in ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"StableAudioDiTConfig: {name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"StableAudioDiTConfig: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        hw = self.head_width
        if hw < 32 or self.rotary_dim % 2:
            raise ValueError(f"StableAudioDiTConfig: head width {hw} (embed_dim / num_heads) must be at least 32 "
                             f"and give an even rotary width max(head_width // 2, 32) = {self.rotary_dim}")
        cdim = self.cond_embed_dim
        what = "embed_dim (projected tokens)" if self.project_cond_tokens else "cond_token_dim (unprojected tokens)"
        if cdim % hw:
            raise ValueError(f"StableAudioDiTConfig: the cross-attention key/value width {cdim} = {what} is not a "
                             f"multiple of the head width {hw}")
        kv = cdim // hw
        if kv > self.num_heads or self.num_heads % kv:
            raise ValueError(
                f"StableAudioDiTConfig: cross-attention has {kv} key/value heads ({what} {cdim} / head width {hw}) "
                f"but {self.num_heads} query heads; the key/value head count must divide the query head count "
                "and be at most it (ComfyUI's implementation silently degenerates otherwise) — project the "
                "cond tokens (project_cond_tokens=True) or pick num_heads/cond_token_dim accordingly")
        if not self.project_global_cond and self.global_cond_dim != self.embed_dim:
            raise ValueError(f"StableAudioDiTConfig: with project_global_cond=False global_cond_dim "
                             f"({self.global_cond_dim}) must equal embed_dim ({self.embed_dim})")

    @property
    def head_width(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return max(self.head_width // 2, 32)

    @property
    def cond_embed_dim(self) -> int:
        return self.embed_dim if self.project_cond_tokens else self.cond_token_dim

    @property
    def kv_heads(self) -> int:
        return self.cond_embed_dim // self.head_width

    def comfy_unet_config(self) -> dict:
        """The ``unet_config`` for ``comfy.supported_models.StableAudio`` / ``AudioDiffusionTransformer``."""
        out = dict(_COMFY_FIXED)
        out.update(self.to_dict())
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "StableAudioDiTConfig":
        """Inverse of :meth:`to_dict`; also accepts :meth:`comfy_unet_config` (its fixed entries must match)."""
        names = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key in names:
                continue
            if key in _COMFY_FIXED and value == _COMFY_FIXED[key]:
                continue
            raise ValueError(f"StableAudioDiTConfig: unsupported config entry {key}={value!r}")
        return cls(**{k: data[k] for k in names if k in data})


SAO_OPEN = StableAudioDiTConfig()


# --------------------------------------------------------------------------------------------- layers
class FourierFeatures(nn.Module):
    """``[B, in] -> [B, out]``: ``cat(cos(2π·x·Wᵀ), sin(2π·x·Wᵀ))``, ``W`` ``[out/2, in]`` ~ N(0, std²)."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        if out_features % 2:
            raise ValueError("FourierFeatures: out_features must be even")
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: Tensor) -> Tensor:
        f = (2 * math.pi * x) @ self.weight.to(x.dtype).t()
        return torch.cat([f.cos(), f.sin()], dim=-1)


class LayerNorm(nn.Module):
    """Bias-free LayerNorm (gain ``gamma``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], weight=self.gamma.to(x.dtype))


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _apply_rotary(x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate the first ``rot`` dims of every head of ``x`` ``[B, H, L, D]`` (computed in fp32)."""
    cos, sin = rotary
    rot = cos.shape[-1]
    xf = x.float()
    head, rest = xf[..., :rot], xf[..., rot:]
    head = head * cos + _rotate_half(head) * sin
    return torch.cat((head, rest), dim=-1).to(x.dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = ROTARY_BASE):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    def forward(self, length: int, device) -> tuple[Tensor, Tensor]:
        pos = torch.arange(length, device=device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos(), freqs.sin()


class SelfAttention(nn.Module):
    def __init__(self, dim: int, head_width: int):
        super().__init__()
        self.heads, self.head_width = dim // head_width, head_width
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, self.head_width).transpose(1, 2)
                   for t in self.to_qkv(x).chunk(3, dim=-1))
        if rotary is not None:
            q, k = _apply_rotary(q, rotary), _apply_rotary(k, rotary)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys/values from the context with ``kv_heads`` grouped heads."""

    def __init__(self, dim: int, context_dim: int, head_width: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_width = dim // head_width, context_dim // head_width, head_width
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * context_dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, _ = x.shape
        m = context.shape[1]
        q = self.to_q(x).reshape(b, n, self.heads, self.head_width).transpose(1, 2)
        k, v = (t.reshape(b, m, self.kv_heads, self.head_width).transpose(1, 2)
                for t in self.to_kv(context).chunk(2, dim=-1))
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.silu(gate)


class FeedForward(nn.Module):
    """SwiGLU: ``ff.0`` GLU (``proj`` to 2 × inner), ``ff.1`` identity, ``ff.2`` Linear back."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention (rotary), cross-attention, SwiGLU feed-forward, all residual."""

    def __init__(self, dim: int, head_width: int, context_dim: int):
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = SelfAttention(dim, head_width)
        self.cross_attend_norm = LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, context_dim, head_width)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor | None = None,
                rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = x + self.self_attn(self.pre_norm(x), rotary)
        if context is not None:
            x = x + self.cross_attn(self.cross_attend_norm(x), context)
        return x + self.ff(self.ff_norm(x))


class ContinuousTransformer(nn.Module):
    def __init__(self, config: StableAudioDiTConfig):
        super().__init__()
        self.dim, self.depth = config.embed_dim, config.depth
        self.project_in = nn.Linear(config.io_channels, config.embed_dim, bias=False)
        self.project_out = nn.Linear(config.embed_dim, config.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(config.rotary_dim)
        self.layers = nn.ModuleList(TransformerBlock(config.embed_dim, config.head_width, config.cond_embed_dim)
                                    for _ in range(config.depth))


def _mlp(d_in: int, d_out: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out, bias=bias), nn.SiLU(), nn.Linear(d_out, d_out, bias=bias))


ControlFn = Callable[[Tensor, Callable[[nn.Module, Tensor], Tensor]], Sequence[Tensor]]


class StableAudioDiT(nn.Module):
    """The Stable Audio Open DiT (state-dict compatible with ComfyUI's ``AudioDiffusionTransformer``)."""

    def __init__(self, config: StableAudioDiTConfig = SAO_OPEN):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.timestep_features = FourierFeatures(1, TIMESTEP_FEATURES)
        self.to_timestep_embed = _mlp(TIMESTEP_FEATURES, dim, bias=True)
        self.to_cond_embed = _mlp(config.cond_token_dim, config.cond_embed_dim, bias=False)
        global_dim = dim if config.project_global_cond else config.global_cond_dim
        self.to_global_embed = _mlp(config.global_cond_dim, global_dim, bias=False)
        self.transformer = ContinuousTransformer(config)
        self.preprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Trainable init: Linear weights N(0, 0.02²), biases 0, norm gains 1, Fourier weights N(0, 1),
        the residual pre/post 1×1 convs 0 (identity at init, as in stable-audio-tools), rotary frequencies
        ``1 / 10000^(2i/d)``."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, LayerNorm):
                    nn.init.ones_(m.gamma)
                elif isinstance(m, FourierFeatures):
                    nn.init.normal_(m.weight, std=1.0)
            nn.init.zeros_(self.preprocess_conv.weight)
            nn.init.zeros_(self.postprocess_conv.weight)
            d = self.config.rotary_dim
            self.transformer.rotary_pos_emb.inv_freq.copy_(
                1.0 / ROTARY_BASE ** (torch.arange(0, d, 2, dtype=torch.float32) / d))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.layers

    @property
    def dim(self) -> int:
        return self.transformer.dim

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None,
                global_embed: Tensor | None = None, control: ControlFn | None = None) -> Tensor:
        """``x`` ``[B, io, N]``, ``t`` ``[B]`` (or a scalar) in ``[0, 1]``, ``context`` ``[B, M, cond_token_dim]``,
        ``global_embed`` ``[B, global_cond_dim]`` -> ``v`` ``[B, io, N]``.

        ``control(h, run_block)`` (optional) is called once before block 0 with the hidden state ``h``
        ``[B, 1 + N, dim]`` (prepended token first) and ``run_block(block, h)``, which runs one
        :class:`TransformerBlock` with this call's rotary embedding and context; it returns K ≤ depth
        residuals ``[B, 1 + N, dim]``, residual j being added to the hidden state right before block j.
        """
        if x.ndim != 3 or x.shape[1] != self.config.io_channels:
            raise ValueError(f"StableAudioDiT: x must be [B, {self.config.io_channels}, N], got {tuple(x.shape)}")
        b, dtype = x.shape[0], x.dtype
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        t = t.reshape(-1, 1).float()

        g = self.to_timestep_embed(self.timestep_features(t).to(dtype))
        if global_embed is not None:
            g = self.to_global_embed(global_embed.to(dtype)) + g
        ctx = self.to_cond_embed(context.to(dtype)) if context is not None else None

        x = self.preprocess_conv(x) + x
        h = self.transformer.project_in(x.transpose(1, 2))
        h = torch.cat((g.unsqueeze(1), h), dim=1)
        rotary = self.transformer.rotary_pos_emb(h.shape[1], h.device)

        def run_block(block: nn.Module, hidden: Tensor) -> Tensor:
            return block(hidden, context=ctx, rotary=rotary)

        residuals: Sequence[Tensor] = ()
        if control is not None:
            residuals = list(control(h, run_block))
            if len(residuals) > len(self.blocks):
                raise ValueError(f"StableAudioDiT: control returned {len(residuals)} residuals for "
                                 f"{len(self.blocks)} blocks")
        for i, block in enumerate(self.blocks):
            if i < len(residuals):
                h = h + residuals[i]
            h = run_block(block, h)

        out = self.transformer.project_out(h).transpose(1, 2)[:, :, 1:]
        return self.postprocess_conv(out) + out


# ---------------------------------------------------------------------------------- seconds conditioning
class _LearnedFourier(nn.Module):
    """``[B] -> [B, 1 + dim]``: ``cat(x, sin(2π·x·w), cos(2π·x·w))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, None]
        f = x * self.weights[None, :] * 2 * math.pi
        return torch.cat((x, f.sin(), f.cos()), dim=-1)


class _NumberEmbedder(nn.Module):
    def __init__(self, features: int, dim: int = SECONDS_FEATURES):
        super().__init__()
        self.features = features
        self.embedding = nn.Sequential(_LearnedFourier(dim), nn.Linear(dim + 1, features))


class SecondsEmbedder(nn.Module):
    """A number (seconds) → ``[B, output_dim]`` embedding; the keys of stable-audio-tools' /
    ComfyUI's ``NumberConditioner`` (``embedder.embedding.0.weights``, ``embedder.embedding.1.{weight,bias}``).
    Values are clamped to ``[min_val, max_val]`` and normalised to ``[0, 1]`` first."""

    def __init__(self, output_dim: int = 768, min_val: float = 0.0, max_val: float = 512.0):
        super().__init__()
        if max_val <= min_val:
            raise ValueError("SecondsEmbedder: max_val must be greater than min_val")
        self.output_dim, self.min_val, self.max_val = int(output_dim), float(min_val), float(max_val)
        self.embedder = _NumberEmbedder(self.output_dim)
        lin = self.embedder.embedding[1]
        with torch.no_grad():
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, values: float | Sequence[float] | Tensor) -> Tensor:
        w = self.embedder.embedding[1].weight
        v = torch.as_tensor(values, dtype=torch.float32).to(w.device).reshape(-1)
        v = (v.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        return self.embedder.embedding(v.to(w.dtype))


def _per_item(value, batch: int) -> Tensor:
    v = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if v.numel() == 1:
        return v.expand(batch)
    if v.numel() != batch:
        raise ValueError(f"StableAudioConditioner: {v.numel()} seconds values for a batch of {batch}")
    return v


class StableAudioConditioner(nn.Module):
    """``seconds_start`` / ``seconds_total`` embedders (``NumberConditioner(768, 0, 512)`` each), combined
    with the text tokens exactly like ComfyUI's ``StableAudio1.extra_conds``."""

    def __init__(self, dim: int = 768, min_val: float = 0.0, max_val: float = 512.0):
        super().__init__()
        self.seconds_start = SecondsEmbedder(dim, min_val, max_val)
        self.seconds_total = SecondsEmbedder(dim, min_val, max_val)

    def forward(self, tokens: Tensor, seconds_start: float | Tensor,
                seconds_total: float | Tensor) -> tuple[Tensor, Tensor]:
        """``tokens`` ``[B, M, dim]`` -> ``(context [B, M + 2, dim], global_embed [B, 2·dim])``; seconds values
        are scalars (whole batch) or ``[B]`` (per item)."""
        b = tokens.shape[0]
        start = self.seconds_start(_per_item(seconds_start, b)).to(tokens.device, tokens.dtype)
        total = self.seconds_total(_per_item(seconds_total, b)).to(tokens.device, tokens.dtype)
        context = torch.cat((tokens, start[:, None], total[:, None]), dim=1)
        return context, torch.cat((start, total), dim=-1)


# ------------------------------------------------------------------------------------- checkpoint layout
def checkpoint_state_dict(dit: StableAudioDiT, conditioner: StableAudioConditioner,
                          dit_prefix: str = DIT_PREFIX) -> dict[str, Tensor]:
    """Single-file layout: ``model.diffusion_model.*`` (DiT) + ``conditioner.conditioners.seconds_{start,total}.*``.
    ``dit_prefix="model.model."`` gives stable-audio-tools' own prefix; ComfyUI's loader accepts both."""
    out = {dit_prefix + k: v for k, v in dit.state_dict().items()}
    out.update({CONDITIONER_PREFIX + k: v for k, v in conditioner.state_dict().items()})
    return out


_ZERO_NORM_BIASES = (".pre_norm.beta", ".cross_attend_norm.beta", ".ff_norm.beta")


def split_checkpoint_state_dict(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Inverse of :func:`checkpoint_state_dict`: ``(dit_sd, conditioner_sd)``. The DiT prefix may be
    ``model.diffusion_model.`` or ``model.model.`` (the released SAO file); the all-zero LayerNorm
    ``beta`` buffers of stable-audio-tools files are dropped (as ComfyUI does); other entries (VAE,
    text encoder, prompt conditioner) are ignored."""
    found = [p for p in (DIT_PREFIX, SAT_DIT_PREFIX) if any(k.startswith(p) for k in sd)]
    if not found:
        raise ValueError(f"split_checkpoint_state_dict: no DiT keys (expected '{DIT_PREFIX}*' or '{SAT_DIT_PREFIX}*')")
    if len(found) > 1:
        raise ValueError("split_checkpoint_state_dict: the state dict holds both 'model.diffusion_model.' and "
                         "'model.model.' keys")
    prefix = found[0]
    dit = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and not k.endswith(_ZERO_NORM_BIASES)}
    cond = {}
    for name in ("seconds_start.", "seconds_total."):
        p = CONDITIONER_PREFIX + name
        cond.update({name + k[len(p):]: v for k, v in sd.items() if k.startswith(p)})
    return dit, cond


# --------------------------------------------------------------------------------- v-objective helpers
def _angle(t, like: Tensor) -> Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    if t.ndim == 1:
        t = t.reshape(-1, *([1] * (like.ndim - 1)))
    return t * (math.pi / 2)


def noisy(x0: Tensor, noise: Tensor, t) -> Tensor:
    """``x_t = cos(tπ/2)·x0 + sin(tπ/2)·noise`` (``t`` scalar or ``[B]``)."""
    a = _angle(t, x0)
    return a.cos() * x0 + a.sin() * noise


def v_target(x0: Tensor, noise: Tensor, t) -> Tensor:
    """``v = cos(tπ/2)·noise − sin(tπ/2)·x0``."""
    a = _angle(t, x0)
    return a.cos() * noise - a.sin() * x0


def x0_from_v(xt: Tensor, v: Tensor, t) -> Tensor:
    """``x0 = cos(tπ/2)·x_t − sin(tπ/2)·v``."""
    a = _angle(t, xt)
    return a.cos() * xt - a.sin() * v


@torch.no_grad()
def sample(model_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int = 50,
           t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Deterministic DDIM in angle space (``a = tπ/2``): ``steps`` calls of ``model_fn(x_t, t_batch) -> v``
    on the uniform grid ``t_max → t_min`` (then a last jump to ``t = 0`` if ``t_min > 0``, as ComfyUI
    appends σ = 0); start ``x = sin(a_max)·noise``, step ``x ← cos(a−b)·x − sin(a−b)·v``; returns x0.

    Equivalence with ComfyUI's ``V_PREDICTION_CONTINUOUS`` (σ = tan a, timestep = atan σ·2/π, c_in = 1/√(1+σ²)):
    x_σ = x0 + σε ⇒ c_in·x_σ = cos a·x0 + sin a·ε = x_t; denoised = c_skip·x_σ + c_out·v = cos a·x_t − sin a·v;
    DDIM/Euler in σ (x_σ' = x0̂ + σ'ε̂) scaled by c_in(σ') = cos b·x0̂ + sin b·ε̂ = cos(a−b)·x_t − sin(a−b)·v.
    """
    if steps < 1:
        raise ValueError("sample: steps must be >= 1")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError("sample: need 0 <= t_min < t_max <= 1")
    if t_min > 0:
        ts = torch.cat((torch.linspace(t_max, t_min, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)))
    else:
        ts = torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)
    angles = ts * (math.pi / 2)
    x = math.sin(angles[0].item()) * noise
    b = noise.shape[0]
    for i in range(steps):
        a, a_next = angles[i].item(), angles[i + 1].item()
        v = model_fn(x, torch.full((b,), ts[i].item(), device=noise.device, dtype=noise.dtype))
        x = math.cos(a - a_next) * x - math.sin(a - a_next) * v
    return x
