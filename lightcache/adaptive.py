"""Adaptive block caching: decide per model call whether the cached feature may be reused
(LightCache part 2; the criterion follows EasyCache's / TeaCache's idea — predict the output change
from the input change — while LightCache keeps reusing only the *deep* blocks' feature).

For each cache key (slot × shape × context window) a :class:`ReuseEstimator` keeps, from the last
full call, a subsample of the **probe** ``x`` (ComfyUI DiTs: the hidden state entering the cached
block range; U-Nets and diffusers models: the model's input) and of the cached **feature** ``f``
(DiT: the range's residual; U-Net: the deep part's output). Between two full calls it measures the
feature's sensitivity ``k = mean|Δf| / mean|Δx|``. A later call may reuse the cache when

    predicted relative error  =  k · mean|x − x_full| / mean|f_full|   ≤   ``adaptive_error``,

i.e. the L1 distance of the true feature from the cached one, relative to the feature's size, as
the linear model predicts it. ``k`` absorbs what the probe does not see (the timestep's effect on the
feature), so a step where the feature changes fast forces full calls. Until two full calls have
been seen there is no ``k`` and the call runs full; ``adaptive_error = 0`` therefore never reuses
(bit-exact with no cache). Probes are strided subsamples of at most :data:`PROBE_SIZE` values in
float32: a few KB per key, kept on the compute device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PROBE_SIZE = 4096
_EPS = 1e-12


def probe(t: torch.Tensor, size: int = PROBE_SIZE) -> torch.Tensor:
    """A fixed strided subsample (float32 copy) of ``t`` — the same positions for the same shape."""
    flat = t.detach().reshape(-1)
    stride = max(1, flat.numel() // size)
    return flat[::stride][:size].to(torch.float32, copy=True)


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.abs().mean())


@dataclass
class ReuseEstimator:
    """What one cache key remembers for the reuse decision (see the module docstring)."""

    x: torch.Tensor | None = None     # probe at the last full call
    f: torch.Tensor | None = None     # feature probe at the last full call
    k: float | None = None            # mean|Δf| / mean|Δx| between the last two full calls
    run: int = 0                      # consecutive reuses since the last full call

    def observe_full(self, x: torch.Tensor, f: torch.Tensor) -> None:
        """A full call computed feature ``f`` (probe) from input ``x`` (probe)."""
        if self.x is not None and self.f is not None and self.x.shape == x.shape and self.f.shape == f.shape:
            dx = _mean_abs(x - self.x)
            if dx > _EPS:
                self.k = _mean_abs(f - self.f) / dx
        self.x, self.f, self.run = x, f, 0

    def predicted_error(self, x: torch.Tensor) -> float | None:
        """Predicted relative L1 error of reusing the cached feature at input ``x`` (None = unknown)."""
        if self.k is None or self.x is None or self.f is None or self.x.shape != x.shape:
            return None
        return self.k * _mean_abs(x - self.x) / max(_mean_abs(self.f), _EPS)


__all__ = ["PROBE_SIZE", "ReuseEstimator", "probe"]
