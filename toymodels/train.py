"""Training of the toy video models (host-free; single process).

A minimal AdamW loop (linear warm-up + cosine decay, grad-norm clip 1.0, EMA of the weights,
classifier-free-guidance dropout of the class prompt) over pre-encoded latent clips. The held-out
loss is measured with a fixed noise/timestep draw so untrained and trained models are compared on
exactly the same problems. Used by ``scripts/train_toy_video_models.py`` and the tests.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Callable

import torch

from .models import ToyModelConfig
from .toy import ToyVideoModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def heldout_loss(toy: ToyVideoModel, latents: torch.Tensor, labels: torch.Tensor,
                 seed: int = 999, repeats: int = 2, batch: int = 8) -> float:
    """Mean training loss on ``latents`` with a fixed draw of noise and timesteps."""
    was_training = toy.model.training
    toy.model.eval()
    g = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for _ in range(repeats):
        for i in range(0, len(latents), batch):
            x, y = latents[i:i + batch], labels[i:i + batch]
            total += float(toy.loss(x, y, generator=g)) * len(x)
            n += len(x)
    toy.model.train(was_training)
    return total / max(n, 1)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def train_toy(config: ToyModelConfig, latents: torch.Tensor, labels: torch.Tensor,
              steps: int | None = None, on_log: Callable[[dict], None] | None = None,
              log_every: int = 50) -> tuple[ToyVideoModel, dict]:
    """Train a toy model from ``config.seed`` on latents ``[N,C,T,h,w]`` with class ids ``[N]``.

    Returns the bundle holding the **EMA** weights (eval mode) and a record (steps, seconds, losses).
    """
    steps = config.steps if steps is None else steps
    torch.manual_seed(config.seed)
    toy = ToyVideoModel(config)
    toy.model.train()
    ema = copy.deepcopy(toy.model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(toy.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(config.seed + 1)
    losses, t0, running = [], time.time(), None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.warmup, steps)
        idx = torch.randint(0, len(latents), (config.batch_size,), generator=g)
        y = labels[idx].clone()
        drop = torch.rand(len(y), generator=g) < config.cond_dropout
        y[drop] = config.num_classes
        loss = toy.loss(latents[idx], y, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(toy.model.parameters(), 1.0)
        opt.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), toy.model.parameters()):
                pe.lerp_(p, 1 - decay)
        running = float(loss.detach()) if running is None else 0.95 * running + 0.05 * float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            entry = {"step": step + 1, "loss": round(running, 5), "seconds": round(time.time() - t0, 1)}
            losses.append(entry)
            logger.info("toy %s step %d loss %.4f (%.0f s)", config.kind, step + 1, running, entry["seconds"])
            if on_log is not None:
                on_log(entry)
    toy.model = ema
    record = {"steps": steps, "train_seconds": round(time.time() - t0, 1), "loss_curve": losses}
    return toy, record
