"""Diffusion formulations and samplers of the toy video models (papers.md §1 benchmarks).

* DDPM v-prediction (Salimans & Ho 2022; SD 2.x) with the Stable Diffusion "scaled_linear" β schedule
  (β 0.00085 → 0.012, 1000 steps), sampled with deterministic DDIM (η = 0, "leading" timesteps,
  offset 1, last step to ᾱ = 1). Used by the U-Net. (AnimateDiff is ε-prediction; v-prediction
  keeps x0 estimates sane at high noise for a model trained for minutes — the same sampler and
  the same cost per step.)
* Rectified flow (x_σ = (1 − σ)·x0 + σ·ε, velocity target ε − x0, model timestep σ·1000), sampled
  with Euler on a shifted grid σ = s·t / (1 + (s − 1)·t) — Wan 2.1's convention and ComfyUI's CONST
  type (``denoised = x − σ·v``). Used by the DiT.

Samplers are free functions ``(model_fn, x, ..., callback=None)`` in the k-diffusion style;
``model_fn(x, timestep, context) -> prediction`` and classifier-free guidance batches
``[uncond, cond]`` into one call, as diffusers pipelines do.
"""

from __future__ import annotations

from typing import Callable

import torch

NUM_TRAIN_TIMESTEPS = 1000


def sd_alphas_cumprod(n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """ᾱ_t of Stable Diffusion's scaled_linear schedule (float64)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def ddim_timesteps(steps: int, n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Descending "leading" timesteps with offset 1 (SD's DDIM setting)."""
    ratio = n // steps
    return (torch.arange(steps) * ratio + 1).flip(0)


def flow_sigmas(steps: int, shift: float) -> torch.Tensor:
    """``steps + 1`` descending σ from 1 to 0 on the shifted grid."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def _guided(model_fn, x, t, context, uncond, guidance):
    if uncond is None or guidance == 1.0:
        return model_fn(x, t, context)
    pred_u, pred_c = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, context])).chunk(2)
    return pred_u + guidance * (pred_c - pred_u)


@torch.no_grad()
def sample_ddim(model_fn: Callable, x: torch.Tensor, context: torch.Tensor, steps: int,
                uncond: torch.Tensor | None = None, guidance: float = 1.0,
                callback: Callable | None = None) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, η = 0) for a v-prediction model, x_T = ``x`` → x_0."""
    abar = sd_alphas_cumprod().to(x.device)
    ts = ddim_timesteps(steps)
    ratio = NUM_TRAIN_TIMESTEPS // steps
    for i, t in enumerate(ts.tolist()):
        a_t = abar[t].float()
        a_prev = abar[t - ratio].float() if t - ratio >= 0 else torch.ones((), device=x.device)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        v = _guided(model_fn, x, tt, context, uncond, guidance)
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * v
        eps = (1 - a_t).sqrt() * x + a_t.sqrt() * v
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        if callback is not None:
            callback({"i": i, "x": x, "denoised": x0, "t": t})
    return x


@torch.no_grad()
def sample_euler_flow(model_fn: Callable, x: torch.Tensor, context: torch.Tensor, steps: int,
                      shift: float = 3.0, uncond: torch.Tensor | None = None, guidance: float = 1.0,
                      callback: Callable | None = None) -> torch.Tensor:
    """Euler on the rectified-flow ODE dx/dσ = v from σ = 1 (noise ``x``) to σ = 0."""
    sigmas = flow_sigmas(steps, shift).to(x.device)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        tt = torch.full((x.shape[0],), float(s) * NUM_TRAIN_TIMESTEPS, device=x.device)
        v = _guided(model_fn, x, tt, context, uncond, guidance)
        if callback is not None:
            callback({"i": i, "x": x, "denoised": x - s * v, "sigma": float(s)})
        x = x + (s_next - s) * v
    return x


def ddpm_v_loss(model_fn: Callable, x0: torch.Tensor, context: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """v-prediction MSE (target √ᾱ·ε − √(1−ᾱ)·x0) at uniformly drawn t."""
    abar = sd_alphas_cumprod().to(x0.device).float()
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    a = abar[t].view(-1, 1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return torch.nn.functional.mse_loss(model_fn(xt, t, context), a.sqrt() * noise - (1 - a).sqrt() * x0)


def flow_loss(model_fn: Callable, x0: torch.Tensor, context: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Rectified-flow velocity MSE at logit-normal σ (SD3 / Wan training)."""
    sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=generator)).to(x0)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    s = sigma.view(-1, 1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    return torch.nn.functional.mse_loss(model_fn(xt, sigma * NUM_TRAIN_TIMESTEPS, context), noise - x0)
