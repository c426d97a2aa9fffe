"""Mask previews shared by the CLI demo and the nodes: frames tinted where a mask is set."""

from __future__ import annotations

import torch

from .errors import check


def overlay_mask(frames: torch.Tensor, mask: torch.Tensor, colour=(1.0, 0.1, 0.1), alpha: float = 0.55,
                 node: str = "mask overlay") -> torch.Tensor:
    """Frames ``[T,H,W,3]`` in 0..1 with ``mask`` ``[T,H,W]`` (or one ``[H,W]`` / ``[1,H,W]`` for every
    frame) tinted by ``colour`` with opacity ``alpha`` × mask value."""
    check(torch.is_tensor(frames) and frames.dim() == 4 and frames.shape[-1] == 3, node, "images",
          "an IMAGE batch [T,H,W,3]", getattr(frames, "shape", type(frames)))
    check(torch.is_tensor(mask) and mask.dim() in (2, 3), node, "mask", "a MASK [T,H,W]",
          getattr(mask, "shape", type(mask)))
    m = mask[None] if mask.dim() == 2 else mask
    check(tuple(m.shape[1:]) == tuple(frames.shape[1:3]) and m.shape[0] in (1, frames.shape[0]), node, "mask",
          f"{frames.shape[0]} (or 1) masks of {frames.shape[2]}x{frames.shape[1]} like the images",
          f"{m.shape[0]} masks of {m.shape[2]}x{m.shape[1]}")
    check(0.0 <= float(alpha) <= 1.0, node, "alpha", "an opacity in [0, 1]", alpha)
    tint = torch.tensor(colour, dtype=frames.dtype, device=frames.device).view(1, 1, 1, 3)
    a = m.to(frames.device, frames.dtype).clamp(0, 1).unsqueeze(-1) * float(alpha)
    return frames * (1 - a) + tint * a
