"""Training of the toy video models (host-free).

The toy recipe on the pack's shared loop (:mod:`avlab.common.training`: AdamW, linear warm-up +
cosine decay, grad-norm clip 1.0, EMA with warm-up, exact resume, DDP under torchrun) with
classifier-free-guidance dropout of the class prompt, over pre-encoded latent clips. The held-out
loss is measured with a fixed noise/timestep draw so untrained and trained models are compared on
exactly the same problems. Used by ``scripts/train_toy_video_models.py`` and the tests.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from ..common.training import IndexedBatches, TrainConfig, train
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


def train_config(config: ToyModelConfig, steps: int | None = None, log_every: int = 50,
                 out_dir: str | None = None, resume: bool = False) -> TrainConfig:
    """The toy recipe as a shared-loop config: AdamW (β 0.9/0.99), linear warm-up then cosine decay
    to 5 % of the peak LR, grad-norm clip 1.0, EMA with warm-up (``min(decay, (1+n)/(10+n))``)."""
    return TrainConfig(steps=config.steps if steps is None else steps, lr=config.lr,
                       weight_decay=config.weight_decay, betas=(0.9, 0.99), grad_clip=1.0,
                       ema=config.ema_decay or None, ema_warmup=True, warmup_steps=config.warmup,
                       cosine=True, min_lr_ratio=0.05, log_every=log_every, seed=config.seed + 1,
                       device="cpu", progress=False, out_dir=out_dir, resume=resume)


def train_toy(config: ToyModelConfig, latents: torch.Tensor, labels: torch.Tensor,
              steps: int | None = None, on_log: Callable[[dict], None] | None = None,
              log_every: int = 50, out_dir: str | None = None, resume: bool = False,
              callback: Callable[[int, dict], bool | None] | None = None) -> tuple[ToyVideoModel, dict]:
    """Train a toy model from ``config.seed`` on latents ``[N,C,T,h,w]`` with class ids ``[N]``, on the
    shared loop (:func:`avlab.common.training.train`; ``out_dir`` + ``resume`` continue a stopped run,
    ``callback(step, metrics)`` returning ``False`` stops it).

    Each step draws a seekable random batch, drops the class prompt with probability
    ``config.cond_dropout`` (classifier-free guidance) and takes the model's diffusion loss.
    Returns the bundle holding the **EMA** weights (eval mode) and a record (steps, seconds, losses).
    """
    tcfg = train_config(config, steps, log_every, out_dir, resume)
    torch.manual_seed(config.seed)
    toy = ToyVideoModel(config)
    data = IndexedBatches(latents, labels, batch_size=config.batch_size, seed=config.seed + 1)

    def loss_fn(net, batch):
        x, y = batch
        y = torch.where(torch.rand(len(y)) < config.cond_dropout, torch.full_like(y, config.num_classes), y)
        return toy.loss(x, y, model=net)

    losses, t0, running = [], time.time(), [None]

    def on_step(step: int, metrics: dict) -> bool | None:
        loss = metrics["loss"]
        running[0] = loss if running[0] is None else 0.95 * running[0] + 0.05 * loss
        if step % log_every == 0 or step == tcfg.steps:
            entry = {"step": step, "loss": round(running[0], 5), "seconds": round(time.time() - t0, 1)}
            losses.append(entry)
            logger.info("toy %s step %d loss %.4f (%.0f s)", config.kind, step, running[0], entry["seconds"])
            if on_log is not None:
                on_log(entry)
        return None if callback is None else callback(step, metrics)

    result = train(toy.model, loss_fn, data, tcfg, callback=on_step)
    toy.model = result.ema_model if result.ema_model is not None else result.model
    record = {"steps": result.step, "train_seconds": round(time.time() - t0, 1), "loss_curve": losses,
              "trainer": "avlab.common.training"}
    return toy, record
