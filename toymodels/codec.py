"""A fixed linear "VAE" for the toy video models: 4×4 RGB patches → 16 PCA channels (and back).

Real video diffusion models run in a VAE latent (SD/AnimateDiff: 8× spatial, 4 channels; Wan: 8×
spatial, 16 channels). The toy models keep that shape of problem at CPU cost: each frame is cut into
4×4×3 = 48-value patches and projected on the 16 leading principal components of synthetic-domain
patches, divided by one global scale so the latent has unit variance overall (the role of a VAE's
scaling factor). Channels keep their natural spread (leading components carry most of the variance),
as a real VAE latent does: latent MSE is then pixel MSE up to a constant, so training and the
noise schedule weight the visible structure, not the faint high-frequency tail. 32×32 frames give a
``[16, T, 8, 8]`` latent. Decoding is the transpose projection; it is lossy (16 of 48 dims)
but fixed, so cached and uncached samples are compared through the same decoder.
"""

from __future__ import annotations

import torch

PATCH = 4
CHANNELS = 16


class ToyLatentCodec:
    """Linear patch codec. ``encode``: frames ``[B,T,H,W,3]`` in 0..1 → latent ``[B,C,T,H/4,W/4]``."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, scale: torch.Tensor):
        self.mean = mean.float()              # [48]
        self.components = components.float()  # [48, C] orthonormal columns
        self.scale = scale.float()            # [C]  latent = projection / scale (fit: one global value)

    @property
    def channels(self) -> int:
        return self.components.shape[1]

    @staticmethod
    def _patches(frames: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = frames.shape
        x = frames.reshape(b, t, h // PATCH, PATCH, w // PATCH, PATCH, c)
        return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h // PATCH, w // PATCH, PATCH * PATCH * c)

    @classmethod
    def fit(cls, frames: torch.Tensor, channels: int = CHANNELS) -> "ToyLatentCodec":
        """PCA of all 4×4 patches of ``frames`` ``[N,T,H,W,3]``."""
        p = cls._patches(frames.double()).reshape(-1, PATCH * PATCH * 3)
        mean = p.mean(0)
        cov = (p - mean).T @ (p - mean) / p.shape[0]
        evals, evecs = torch.linalg.eigh(cov)               # ascending
        comps = evecs[:, evals.argsort(descending=True)[:channels]]
        comps = comps * torch.sign(comps.sum(0, keepdim=True) + 1e-12)  # deterministic sign
        rms = ((p - mean) @ comps).pow(2).mean().sqrt().clamp_min(1e-4)   # one scale for all channels
        return cls(mean, comps, rms.expand(channels).clone())

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        p = self._patches(frames.float())                   # [B,T,h,w,48]
        z = (p - self.mean) @ self.components / self.scale  # [B,T,h,w,C]
        return z.permute(0, 4, 1, 2, 3).contiguous()         # [B,C,T,h,w]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[B,C,T,h,w]`` → frames ``[B,T,4h,4w,3]`` clamped to 0..1."""
        b, _, t, h, w = latent.shape
        z = latent.float().permute(0, 2, 3, 4, 1)           # [B,T,h,w,C]
        p = (z * self.scale) @ self.components.T + self.mean
        x = p.reshape(b, t, h, w, PATCH, PATCH, 3).permute(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, t, h * PATCH, w * PATCH, 3).clamp(0, 1)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "components": self.components, "scale": self.scale}

    @classmethod
    def from_state_dict(cls, sd: dict) -> "ToyLatentCodec":
        return cls(sd["mean"], sd["components"], sd["scale"])
