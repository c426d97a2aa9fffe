"""Quality metrics shared by the demo and the benchmarks (papers.md §1 reports PSNR/SSIM)."""

from __future__ import annotations

import math

import torch


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB over all elements (float64 MSE); ``inf`` for identical inputs."""
    mse = float((a.double() - b.double()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def video_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame SSIM of videos ``[B,T,H,W,3]`` in 0..1 (scikit-image, a dev dependency)."""
    from skimage.metrics import structural_similarity

    an, bn = a.numpy(), b.numpy()
    values = [structural_similarity(an[i, t], bn[i, t], data_range=1.0, channel_axis=-1, win_size=7)
              for i in range(an.shape[0]) for t in range(an.shape[1])]
    return sum(values) / len(values)
