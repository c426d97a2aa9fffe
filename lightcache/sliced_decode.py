"""Sliced VAE decoding of video latents (LightCache, paper 1 "Sliced decoding").

Decoding a whole clip at once holds every frame's full-resolution decoder activations at the
same time; that, not the denoiser, is often the peak. Here the latent is decoded a few frames at a
time and each decoded slice is copied at once into a preallocated output on ``output_device``
(the CPU by default), so the compute device holds one slice's activations and never the clip.

Three decoder kinds, three strategies:

* **Per-frame image VAEs** (SD/SDXL/AnimateDiff: the latent batch *is* the frames) —
  :func:`decode_frames`. Every frame is decoded independently, so slicing is exact.
* **Temporal decoders that mix over the whole decode batch** (SVD's ``VideoDecoder`` /
  diffusers ``AutoencoderKLTemporalDecoder``: time convolutions, and GroupNorm statistics over the
  clip) — :func:`decode_temporal_blend`. No slicing is exact. Windows of ``frames_per_slice``
  frames advance by ``frames_per_slice - overlap``; frames decoded by two windows are cross-faded
  with linear weights (a window's weight ramps over its first/last ``overlap`` frames, except at the
  clip ends; the blend divides by the summed weights). This is the usual sliding-window choice:
  each output frame comes from windows in which it has temporal context on both sides, and seams
  are smoothed instead of cut. The deviation from a whole-clip decode is measured in
  ``tests/test_sliced_decode.py`` and ``benchmarks/lightcache_memory.py``.
* **Causal 3-D VAEs** (Wan 2.1/2.2, ComfyUI ``comfy.ldm.wan.vae*.WanVAE`` and diffusers
  ``AutoencoderKLWan``) — :func:`decode_causal`. The decoder is driven one latent frame at a time
  with its own causal feature cache, exactly as its ``decode`` does internally, and each decoded
  chunk (1, then 4 pixel frames) goes to the output device before the next latent frame starts.
  No quality change: the result equals the full decode. ``frames_per_slice`` does not apply — one
  latent frame is the decoder's own causal step and the only exact one.

All functions take a k-diffusion style ``callback(info)`` called once per slice with
``{"i", "total", "start", "stop"}`` (latent frame range) after the slice reached the output
device; raising from it cancels the decode (ComfyUI's progress bar hook raises on interrupt).
The functions only duck-type the models and never import a host.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from ..common.errors import NodeInputError

logger = logging.getLogger(__name__)

_NODE = "AVLab Sliced VAE Decode"

DecodeFn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], Any]


def plan_slices(num_frames: int, frames_per_slice: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` covering ``num_frames``; consecutive windows share ``overlap`` frames.

    Without overlap the windows tile the frames (the last one may be shorter). With overlap the
    last window is shifted back to end at ``num_frames`` so it keeps a full clip of temporal context
    (it then shares more than ``overlap`` frames with its neighbour; the blend handles that).
    """
    if isinstance(frames_per_slice, bool) or not isinstance(frames_per_slice, int) or frames_per_slice < 1:
        raise NodeInputError(_NODE, "frames_per_slice", "an integer >= 1", frames_per_slice)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise NodeInputError(_NODE, "overlap", "an integer >= 0", overlap)
    if num_frames < 1:
        raise NodeInputError(_NODE, "samples", "a latent with at least one frame", num_frames)
    if num_frames <= frames_per_slice:
        return [(0, num_frames)]
    if overlap >= frames_per_slice:
        raise NodeInputError(_NODE, "overlap", f"less than frames_per_slice ({frames_per_slice})", overlap)
    stride = frames_per_slice - overlap
    windows, start = [], 0
    while True:
        stop = start + frames_per_slice
        if stop >= num_frames:
            windows.append((max(0, num_frames - frames_per_slice) if overlap else start, num_frames))
            break
        windows.append((start, stop))
        start += stride
    # A shifted last window can coincide with the previous one.
    return list(dict.fromkeys(windows))


def blend_weights(start: int, stop: int, num_frames: int, overlap: int) -> torch.Tensor:
    """Linear cross-fade weights ``[stop - start]`` of one window (1 inside, ramps at shared edges)."""
    n = stop - start
    w = torch.ones(n, dtype=torch.float32)
    if overlap <= 0:
        return w
    pos = torch.arange(n, dtype=torch.float32)
    if start > 0:
        w = torch.minimum(w, (pos + 1) / (overlap + 1))
    if stop < num_frames:
        w = torch.minimum(w, (n - pos) / (overlap + 1))
    return w


def _notify(callback: Callback | None, i: int, total: int, start: int, stop: int) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "start": start, "stop": stop})


def _alloc_like(piece: torch.Tensor, dim: int, length: int, device, dtype) -> torch.Tensor:
    shape = list(piece.shape)
    shape[dim] = length
    return torch.empty(shape, dtype=dtype or piece.dtype, device=device)


@torch.no_grad()
def decode_frames(decode_fn: DecodeFn, latent: torch.Tensor, frames_per_slice: int, *,
                  callback: Callback | None = None, output_device="cpu",
                  output_dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Per-frame VAE: decode ``latent[F, C, h, w]`` ``frames_per_slice`` frames at a time (exact).

    Args:
        decode_fn: maps a latent slice ``[f, C, h, w]`` to decoded frames with the frame axis first
            (e.g. ``[f, 3, H, W]`` or ``[f, H, W, 3]``); moves data to its device itself.
        latent: frames along dim 0.
        frames_per_slice: latent frames per decoder call.
        callback: called per slice; raise to cancel.
        output_device / output_dtype: where and how the result is kept (preallocated once).

    Returns:
        Decoded frames, frame axis first, on ``output_device``.
    """
    slices = plan_slices(latent.shape[0], frames_per_slice)
    out = None
    for i, (a, b) in enumerate(slices):
        piece = decode_fn(latent[a:b])
        if out is None:
            out = _alloc_like(piece, 0, latent.shape[0], output_device, output_dtype)
        out[a:b].copy_(piece)
        del piece
        _notify(callback, i, len(slices), a, b)
    return out


@torch.no_grad()
def decode_temporal_blend(decode_fn: DecodeFn, latent: torch.Tensor, frames_per_slice: int,
                          overlap: int, *, callback: Callback | None = None, output_device="cpu",
                          output_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Clip-mixing temporal decoder (SVD): overlapping windows, linear cross-fade (approximate).

    Args:
        decode_fn: decodes a latent window ``[f, C, h, w]`` *as one clip* to ``[f, ...]``.
        latent: frames along dim 0.
        frames_per_slice: window length in latent frames (= pixel frames for SVD).
        overlap: frames shared by consecutive windows (0: hard cuts).
        callback / output_device / output_dtype: as in :func:`decode_frames`.
    """
    num_frames = latent.shape[0]
    slices = plan_slices(num_frames, frames_per_slice, overlap)
    if len(slices) == 1:
        return decode_frames(decode_fn, latent, num_frames, callback=callback,
                             output_device=output_device, output_dtype=output_dtype)
    out = wsum = None
    for i, (a, b) in enumerate(slices):
        piece = decode_fn(latent[a:b]).to(output_device, output_dtype)
        if out is None:
            out = _alloc_like(piece, 0, num_frames, output_device, output_dtype).zero_()
            wsum = torch.zeros(num_frames, dtype=torch.float32)
        w = blend_weights(a, b, num_frames, overlap)
        out[a:b].add_(piece * w.to(output_device, output_dtype).view(-1, *([1] * (piece.ndim - 1))))
        wsum[a:b] += w
        del piece
        _notify(callback, i, len(slices), a, b)
    out /= wsum.to(output_device, output_dtype).view(-1, *([1] * (out.ndim - 1)))
    return out


# --------------------------------------------------------------------------------------------
# causal 3-D VAEs (Wan)


class _CausalWanStepper:
    """Runs a Wan-style causal decoder one latent frame at a time, like its own ``decode``.

    Three layouts are recognised by their attributes: ComfyUI Wan 2.1 (``conv2`` + a decoder taking
    ``feat_cache``/``feat_idx``), ComfyUI Wan 2.2 (``conv2`` + ``clear_cache``/``_feat_map``,
    ``first_chunk``, spatial unpatchify) and diffusers ``AutoencoderKLWan`` (``post_quant_conv`` +
    ``clear_cache``/``_feat_map``, optional ``config.patch_size``, output clamped to [-1, 1]).
    """

    def __init__(self, model: nn.Module, unpatchify: Callable[[torch.Tensor], torch.Tensor] | None):
        self.model = model
        self.unpatchify = unpatchify
        decoder = getattr(model, "decoder", None)
        if not isinstance(decoder, nn.Module):
            raise NodeInputError(_NODE, "vae", "a causal video VAE with a decoder", type(model).__name__)
        self.decoder = decoder
        if hasattr(model, "post_quant_conv") and hasattr(model, "clear_cache"):
            self.flavor = "diffusers"
            self.prep = model.post_quant_conv
            patch = getattr(getattr(model, "config", None), "patch_size", None)
            if patch is not None and self.unpatchify is None:
                from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify as _unpatchify

                self.unpatchify = lambda x: _unpatchify(x, patch_size=patch)
        elif hasattr(model, "conv2") and hasattr(model, "clear_cache") and hasattr(model, "_feat_map"):
            self.flavor = "comfy_cached"  # Wan 2.2: needs the caller's unpatchify
            self.prep = model.conv2
        elif hasattr(model, "conv2"):
            self.flavor = "comfy"
            self.prep = model.conv2
        else:
            raise NodeInputError(_NODE, "vae", "a Wan-style causal VAE (ComfyUI WanVAE or diffusers "
                                 "AutoencoderKLWan)", type(model).__name__)
        self._feat_map: list | None = None

    def start(self, z: torch.Tensor) -> torch.Tensor:
        if self.flavor == "comfy":
            n = sum(1 for m in self.decoder.modules() if type(m).__name__ == "CausalConv3d")
            self._feat_map = [None] * n
        else:
            self.model.clear_cache()
        return self.prep(z)

    def step(self, x_i: torch.Tensor, i: int) -> torch.Tensor:
        if self.flavor == "comfy":
            out = self.decoder(x_i, feat_cache=self._feat_map, feat_idx=[0])
        else:
            self.model._conv_idx = [0]
            kwargs = {"first_chunk": True} if i == 0 else {}
            out = self.decoder(x_i, feat_cache=self.model._feat_map, feat_idx=self.model._conv_idx, **kwargs)
        if self.unpatchify is not None:
            out = self.unpatchify(out)
        if self.flavor == "diffusers":
            out = torch.clamp(out, min=-1.0, max=1.0)
        return out

    def close(self) -> None:
        self._feat_map = None
        if self.flavor != "comfy":
            self.model.clear_cache()


@torch.no_grad()
def decode_causal(model: nn.Module, latent: torch.Tensor, *, postprocess: Callable | None = None,
                  frame_dim: int = 2, callback: Callback | None = None, output_device="cpu",
                  output_dtype: torch.dtype | None = torch.float32,
                  unpatchify: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Wan causal VAE: decode ``latent[B, C, T', h, w]`` one latent frame at a time (≡ full decode).

    Args:
        model: ComfyUI ``WanVAE`` (2.1 or 2.2) or diffusers ``AutoencoderKLWan``; already on its
            device and dtype (``latent`` too).
        postprocess: applied to each decoded chunk ``[B, 3, t, H, W]`` on the device (e.g. value
            mapping and a layout change); the frame axis of its output is ``frame_dim``.
        frame_dim: frame axis of the (post-processed) chunks.
        callback: called per latent frame; raise to cancel.
        output_device / output_dtype: the preallocated output's place and type.
        unpatchify: spatial unpatchify for ComfyUI Wan 2.2 (``comfy.ldm.wan.vae2_2.unpatchify``
            with ``patch_size=2``); diffusers models bring their own.

    Returns:
        All decoded frames (``1 + 4·(T'-1)`` for Wan) concatenated along ``frame_dim`` on
        ``output_device``.
    """
    if latent.ndim != 5:
        raise NodeInputError(_NODE, "samples", "a 5-D video latent [B, C, T, h, w]", tuple(latent.shape))
    stepper = _CausalWanStepper(model, unpatchify)
    num_latent = latent.shape[2]
    out = first = None
    pos = 0
    try:
        x = stepper.start(latent)
        for i in range(num_latent):
            piece = stepper.step(x[:, :, i:i + 1], i)
            if postprocess is not None:
                piece = postprocess(piece)
            t = piece.shape[frame_dim]
            if i == 0:
                # Chunk 0 is shorter (causal first frame); size the buffer from chunk 1.
                first = piece.to(output_device, output_dtype or piece.dtype)
                if num_latent == 1:
                    out = first
            else:
                if out is None:
                    total = first.shape[frame_dim] + t * (num_latent - 1)
                    out = _alloc_like(piece, frame_dim, total, output_device, output_dtype)
                    out.narrow(frame_dim, 0, first.shape[frame_dim]).copy_(first)
                    pos = first.shape[frame_dim]
                    first = None
                if pos + t > out.shape[frame_dim]:
                    raise RuntimeError("causal decoder produced uneven chunks; cannot preallocate")
                out.narrow(frame_dim, pos, t).copy_(piece)
                pos += t
            del piece
            _notify(callback, i, num_latent, i, i + 1)
    finally:
        stepper.close()
    return out


@torch.no_grad()
def full_decode_to(decode_fn: DecodeFn, latent: torch.Tensor, output_device="cpu",
                   output_dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """The unsliced reference: one decoder call, then the result moves to ``output_device``."""
    out = decode_fn(latent)
    return out.to(output_device, output_dtype or out.dtype)
