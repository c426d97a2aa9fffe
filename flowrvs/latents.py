"""FlowRVS frame geometry and latent conventions (papers.md §2, "Latents"; issues 8 and 13).

* Frames of any size and count are accepted: the working size fits inside 480×832 (H×W) keeping the
  aspect ratio, floored to multiples of 16; T is padded to 4k+1 by repeating the last frame; the
  output masks are cropped to the original T and resized back to the original H×W.
* Video: frames in [-1, 1] → Wan VAE encoder → posterior **mean** (inference) → normalised
  ``(z - mean) / std`` with the VAE's per-channel latent statistics.
* Mask: ``[T,H,W]`` in 0..1 → 3 channels, ``*2 - 1`` → Wan VAE encoder → posterior **mean**,
  **not** normalised.

Host-free: the VAE is any object whose ``encode(x)`` returns something with ``.latent_dist.mean``
(diffusers ``AutoencoderKLWan`` style), ``x`` being ``[B,3,T,H,W]`` in [-1, 1].
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

from ..common.errors import NodeInputError, check

NODE = "FlowRVS latents"

MAX_H, MAX_W, MULTIPLE = 480, 832, 16

# Wan 2.1 VAE per-channel latent statistics: the ``latents_mean`` / ``latents_std`` defaults of
# diffusers ``AutoencoderKLWan`` (the Wan2.1-T2V-1.3B ``vae/config.json``; ComfyUI's
# ``latent_formats.Wan21`` uses the same values). Checked against diffusers 0.42.1's defaults in
# tests/test_flowrvs_core.py.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
LATENT_CHANNELS = 16


# ---------------------------------------------------------------------------------------------- geometry
def working_size(h: int, w: int, max_h: int = MAX_H, max_w: int = MAX_W,
                 multiple: int = MULTIPLE) -> tuple[int, int]:
    """The FlowRVS working size of an ``h``×``w`` video (papers.md §2): scale by
    ``min(1, max_h/h, max_w/w)`` (fit inside 480×832, keep aspect, never upscale), floor each side to
    a multiple of 16 (at least 16). Exact rational arithmetic, so e.g. 720×1280 → 468×832 → 464×832."""
    check(isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0, NODE, "size",
          "positive integer height and width", (h, w))
    scale = min(Fraction(1), Fraction(max_h, h), Fraction(max_w, w))
    nh, nw = int(h * scale), int(w * scale)  # floor (non-negative)
    return max(multiple, nh // multiple * multiple), max(multiple, nw // multiple * multiple)


def padded_length(t: int) -> int:
    """Smallest ``4k+1 >= t`` (the Wan VAE's temporal grouping; papers.md §2)."""
    check(isinstance(t, int) and t >= 1, NODE, "frames", "at least one frame", t)
    return (t - 1 + 3) // 4 * 4 + 1


def pad_frames(frames: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pad ``frames`` (time on dim 0, e.g. ComfyUI IMAGE ``[T,H,W,C]`` or masks ``[T,H,W]``) to
    ``4k+1`` frames by repeating the last one (papers.md §2). Returns ``(padded, original_T)``."""
    check(torch.is_tensor(frames) and frames.dim() >= 1 and frames.shape[0] >= 1, NODE, "frames",
          "a tensor with at least one frame on dim 0", getattr(frames, "shape", type(frames)))
    t = int(frames.shape[0])
    extra = padded_length(t) - t
    if extra == 0:
        return frames, t
    return torch.cat([frames, frames[-1:].expand(extra, *frames.shape[1:])], dim=0), t


def resize_frames(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinearly resize ComfyUI-style frames ``[T,H,W,C]`` to ``h``×``w`` (no-op if equal)."""
    check(torch.is_tensor(frames) and frames.dim() == 4, NODE, "frames", "[T,H,W,C] tensor",
          getattr(frames, "shape", type(frames)))
    if tuple(frames.shape[1:3]) == (h, w):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).to(frames.dtype)


def restore(masks: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    """Undo :func:`pad_frames` and the working size (papers.md §2): keep the first ``t`` frames of
    ``masks`` ``[T',H',W']`` (logits or probabilities) and resize them bilinearly to ``h``×``w``.
    Threshold *after* this (at logit 0). Exact when the size already matches."""
    check(torch.is_tensor(masks) and masks.dim() == 3, NODE, "masks", "[T,H,W] tensor",
          getattr(masks, "shape", type(masks)))
    check(1 <= t <= masks.shape[0], NODE, "frames", f"1..{masks.shape[0]} original frames", t)
    masks = masks[:t]
    if tuple(masks.shape[1:]) == (h, w):
        return masks
    out = F.interpolate(masks[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    return out[:, 0].to(masks.dtype)


# ---------------------------------------------------------------------------------------------- latents
def _stats(z: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(WAN21_LATENTS_MEAN if mean is None else mean, dtype=z.dtype, device=z.device)
    std = torch.as_tensor(WAN21_LATENTS_STD if std is None else std, dtype=z.dtype, device=z.device)
    check(z.dim() == 5 and z.shape[1] == mean.numel() == std.numel(), NODE, "latent",
          f"[B,{mean.numel()},T,H,W] (a Wan 2.1 VAE latent)", tuple(z.shape))
    shape = (1, -1, 1, 1, 1)
    return mean.view(shape), std.view(shape)


def normalise_video_latent(z: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """``(z - mean) / std`` per channel (papers.md §2); defaults: the Wan 2.1 constants."""
    m, s = _stats(z, mean, std)
    return (z - m) / s


def denormalise_video_latent(z: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Inverse of :func:`normalise_video_latent`: ``z * std + mean``."""
    m, s = _stats(z, mean, std)
    return z * s + m


def mask_to_vae_input(mask: torch.Tensor) -> torch.Tensor:
    """Mask ``[T,H,W]`` (or ``[B,1,T,H,W]``) in 0..1 → ``[B,3,T,H,W]`` in [-1, 1]: repeated to 3
    channels, ``*2 - 1`` (papers.md §2)."""
    check(torch.is_tensor(mask) and (mask.dim() == 3 or (mask.dim() == 5 and mask.shape[1] == 1)),
          NODE, "mask", "[T,H,W] or [B,1,T,H,W] tensor in 0..1", getattr(mask, "shape", type(mask)))
    m = mask[None, None] if mask.dim() == 3 else mask
    m = m.float() if not m.is_floating_point() else m
    return m.expand(-1, 3, -1, -1, -1) * 2 - 1


def frames_to_vae_input(frames: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[T,H,W,3]`` in 0..1 → ``[1,3,T,H,W]`` in [-1, 1]."""
    check(torch.is_tensor(frames) and frames.dim() == 4 and frames.shape[-1] == 3, NODE, "frames",
          "[T,H,W,3] tensor in 0..1", getattr(frames, "shape", type(frames)))
    return frames.permute(3, 0, 1, 2)[None] * 2 - 1


def _encode_mean(vae, x: torch.Tensor, input_name: str) -> torch.Tensor:
    if not hasattr(vae, "encode"):
        raise NodeInputError(NODE, "vae", "a Wan 2.1 VAE (encode(x).latent_dist.mean)", type(vae).__name__)
    out = vae.encode(x)
    dist = getattr(out, "latent_dist", None)
    if dist is None and isinstance(out, (tuple, list)) and out:
        dist = out[0]
    z = getattr(dist, "mean", None)
    if not torch.is_tensor(z):
        raise NodeInputError(NODE, "vae", "a diffusers-style VAE whose encode(x) has .latent_dist.mean",
                             type(out).__name__)
    if z.dim() != 5 or z.shape[1] != LATENT_CHANNELS:
        raise NodeInputError(NODE, "vae", f"a Wan 2.1 VAE ({LATENT_CHANNELS} latent channels) for the "
                             f"{input_name}", f"latent of shape {tuple(z.shape)}")
    return z


def encode_mask(vae, mask: torch.Tensor) -> torch.Tensor:
    """Mask latent (the flow's t=0 end; papers.md §2): :func:`mask_to_vae_input` → encoder posterior
    **mean** (never a sample), **not** normalised."""
    return _encode_mean(vae, mask_to_vae_input(mask), "mask")


def video_latent(vae, frames: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Normalised video latent (the flow's t=1 end; papers.md §2): encoder posterior mean of the
    frames, then :func:`normalise_video_latent`. ``frames``: ComfyUI IMAGE ``[T,H,W,3]`` in 0..1, or
    ``[B,3,T,H,W]`` already in [-1, 1]."""
    check(torch.is_tensor(frames) and frames.dim() in (4, 5), NODE, "frames",
          "[T,H,W,3] in 0..1 or [B,3,T,H,W] in [-1,1]", getattr(frames, "shape", type(frames)))
    x = frames_to_vae_input(frames) if frames.dim() == 4 else frames
    return normalise_video_latent(_encode_mean(vae, x, "video"), mean, std)
