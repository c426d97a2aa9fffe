"""FlowRVS Euler sampler (papers.md §2, "Flow" and "Inference").

Flow convention: ``x_t = (1-t)·mask + t·video``, target velocity ``u = video - mask``; t=1 is the
(normalised) video latent, t=0 the (unnormalised) mask latent. This is ComfyUI's CONST flow:
``denoised = x - σ·v``. Euler from σ=1 to σ=0: ``x_{σ'} = x_σ - (σ - σ')·v``. Default one step,
so ``mask = video - v``. Multi-step: ``t = linspace(1, 0.001, N+1)[:-1]``, shifted
``σ = shift·t / (1 + (shift-1)·t)`` (SD3/Wan shift; FlowRVS uses shift 3), then a final 0.
"""

from __future__ import annotations

import torch

from ..common.errors import check

NODE = "FlowRVS sampler"

DEFAULT_STEPS = 1
DEFAULT_SHIFT = 3.0


def shift_sigma(t, shift: float = DEFAULT_SHIFT):
    """SD3/Wan timestep shift ``shift·t / (1 + (shift-1)·t)`` (maps 0→0 and 1→1)."""
    return shift * t / (1 + (shift - 1) * t)


def flowrvs_sigmas(steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """``steps + 1`` decreasing σ from exactly 1 to exactly 0 (papers.md §2): the shifted
    ``linspace(1, 0.001, steps+1)[:-1]`` followed by 0. ``steps=1`` gives ``[1, 0]``."""
    check(isinstance(steps, int) and steps >= 1, NODE, "steps", "an integer >= 1", steps)
    check(float(shift) > 0, NODE, "shift", "a positive number", shift)
    t = torch.linspace(1.0, 0.001, steps + 1, dtype=torch.float64)[:-1]
    s = shift_sigma(t, float(shift))
    s[0] = 1.0  # exact (the formula gives 1 up to rounding)
    return torch.cat([s, s.new_zeros(1)]).float()


@torch.no_grad()
def sample(model_fn, x: torch.Tensor, sigmas: torch.Tensor, callback=None, extra_args=None) -> torch.Tensor:
    """Euler-integrate the FlowRVS flow, k-diffusion style (papers.md §2).

    ``model_fn(x, sigma, **extra_args)`` returns the **velocity** ``v`` (``sigma`` is a ``[B]``
    tensor; the network's timestep is ``sigma·1000``). ``x`` is the start latent (the normalised
    video latent at ``sigmas[0] = 1``). Each step: ``x ← x - (σ_i - σ_{i+1})·v``; then
    ``callback({"i", "x", "sigma", "sigma_next", "denoised"})`` with ``denoised = x - σ_i·v`` (the
    mask estimate). An exception raised by ``callback`` (e.g. an interrupt) propagates and stops
    sampling. Returns the mask latent (σ=0).
    """
    extra_args = {} if extra_args is None else extra_args
    sigmas = torch.as_tensor(sigmas)
    check(sigmas.dim() == 1 and sigmas.numel() >= 2, NODE, "sigmas", "a 1-D schedule of >= 2 values",
          tuple(sigmas.shape))
    s_in = x.new_ones([x.shape[0]])
    for i in range(sigmas.numel() - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v = model_fn(x, sigma * s_in, **extra_args)
        denoised = x - sigma * v
        # sigma_next == 0 → exactly the denoised estimate (1 step from σ=1: video - v, bit-exact)
        x = denoised if sigma_next == 0 else x - (sigma - sigma_next) * v
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1],
                      "denoised": denoised})
    return x


def model_fn_for(model, text: torch.Tensor, video: torch.Tensor | None = None):
    """Adapt a :class:`~.model.FlowRVSModel` to :func:`sample`'s ``model_fn`` (``t = σ``); ``video``
    is the DVI input (the start latent) and is ignored by 16-channel models."""
    def fn(x, sigma):
        return model(x, sigma, text, video=video)
    return fn


def segment_latent(model, video: torch.Tensor, text: torch.Tensor, steps: int = DEFAULT_STEPS,
                   shift: float = DEFAULT_SHIFT, callback=None) -> torch.Tensor:
    """Normalised video latent → mask latent with ``steps`` Euler steps (default 1)."""
    return sample(model_fn_for(model, text, video), video, flowrvs_sigmas(steps, shift), callback=callback)
