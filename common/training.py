"""The shared training loop of every AVLab trainer (design.md "Scale").

One loop for the toy video models (LightCache benchmarks), the FlowRVS DiT, the concert cutter,
GRAM and the envelope ControlNet: AdamW, gradient clipping, optional EMA, warmup + cosine LR,
deterministic seeding, tqdm progress on rank 0, checkpoints in safetensors with a small JSON
(`trainer_state.json`), exact resume, and a callback that can stop the run (cancellation).

It runs unchanged in one process or under ``torchrun --nproc_per_node=N``: when ``WORLD_SIZE > 1``
the process group is initialised (gloo on CPU, nccl on CUDA), the model is wrapped in
``DistributedDataParallel`` and only rank 0 writes files. Data sources shard themselves with
:func:`rank_info`.

Checkpoint directory layout (``config.out_dir``)::

    model.safetensors      raw weights (unwrapped from DDP)
    ema.safetensors        EMA weights (when ``ema`` is set)
    optimizer.pt           optimizer + scheduler state (loaded with ``weights_only=True``)
    trainer_state.json     {"step", "config", "seed", "world_size", "metrics": last values}
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]
Callback = Callable[[int, dict], "bool | None"]


@dataclass
class TrainConfig:
    """Settings of one training run (defaults suit small CPU runs).

    Args:
        steps: optimizer steps to reach (a resumed run continues up to this number).
        lr, weight_decay, betas: AdamW.
        grad_clip: max global grad norm (``None`` or ``0`` disables).
        ema: EMA decay (e.g. 0.999) or ``None``.
        warmup_steps: linear warmup; then cosine decay to ``min_lr_ratio * lr`` when ``cosine``.
        log_every: metrics logging period (steps). save_every: checkpoint period (0 = only at end).
        out_dir: checkpoint directory (``None`` = never write).
        seed: base seed; rank r uses ``seed + r`` for its data/noise RNGs, the model init uses ``seed``.
        device: "cpu", "cuda" or "auto". bf16: autocast to bf16 on CUDA (no-op on CPU).
        resume: continue from ``out_dir`` when it holds a checkpoint.
        progress: show a tqdm bar on rank 0.
    """

    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    ema: float | None = None
    warmup_steps: int = 0
    cosine: bool = False
    min_lr_ratio: float = 0.0
    log_every: int = 10
    save_every: int = 0
    out_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    resume: bool = False
    progress: bool = True

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    model: nn.Module | None = None
    ema_model: nn.Module | None = None


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's rank / world size (from torchrun's env vars, or 0/1 alone)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return RankInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)))
    return RankInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def training_mode():
    """Leave ComfyUI's ``torch.inference_mode()`` (every node runs under it) and enable grads.

    Tensors created under inference mode cannot take part in autograd: callers must build the
    model and data inside this context (or ``.clone()`` them here).
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def distributed_context(device: torch.device):
    """Initialise the process group under torchrun (gloo on CPU, nccl on CUDA); tear it down after."""
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", 1))
    started = False
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        started = True
    try:
        yield rank_info()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _detach_from_inference_mode(model: nn.Module) -> None:
    """Replace parameters/buffers created under ``torch.inference_mode()`` by normal tensors."""
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_inference():
                setattr(module, name, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
        for name, b in list(module.named_buffers(recurse=False)):
            if b is not None and b.is_inference():
                module._buffers[name] = b.clone()


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if not cfg.cosine:
            return 1.0
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema ← decay·ema + (1−decay)·θ`` for parameters; buffers are copied."""
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers()):
        e.copy_(b)


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: nn.Module, optimizer=None, scheduler=None,
                    ema_model: nn.Module | None = None, step: int = 0, config: TrainConfig | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint directory (see the module docstring); returns its path."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_state_dict_cpu(model), str(out / "model.safetensors"))
    if ema_model is not None:
        save_file(_state_dict_cpu(ema_model), str(out / "ema.safetensors"))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": _rng_state()}, out / "optimizer.pt")
    state = {"step": step, "config": config.to_json() if config else None,
             "seed": config.seed if config else None, "world_size": rank_info().world_size,
             "metrics": metrics or {}, **(extra or {})}
    (out / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
    return out


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a ``.safetensors`` file (or a checkpoint dir's ``model.safetensors``) into ``model``."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    model.load_state_dict(load_file(str(path)), strict=strict)
    return model


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "python": repr(random.getstate())}


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    import ast
    random.setstate(ast.literal_eval(state["python"]))


def _infinite(data: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("train: the data iterable yielded no batch")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device)
        return batch.clone() if batch.is_inference() else batch
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def train(model: nn.Module, loss_fn: LossFn, data: Iterable, config: TrainConfig,
          callback: Callback | None = None) -> TrainResult:
    """Train ``model`` with ``loss_fn(model, batch)`` on batches from ``data``.

    Args:
        model: the module to train (moved to the config's device; wrapped in DDP under torchrun).
        loss_fn: returns a scalar loss, or ``(loss, {"name": value})`` for extra metrics.
        data: an iterable of batches (re-iterated when exhausted). Shard it per rank yourself
            (:func:`rank_info`); batches are moved to the device recursively (tensors, dicts, lists).
        config: :class:`TrainConfig`.
        callback: ``callback(step, metrics)`` after each step; returning ``False`` stops the run.

    Returns:
        :class:`TrainResult` with the final step, last metrics, logged history, the (unwrapped)
        model and the EMA model.
    """
    device = _resolve_device(config.device)
    with training_mode(), distributed_context(device) as ri:
        seed_everything(config.seed + ri.rank)
        _detach_from_inference_mode(model)
        model = model.to(device)
        ema_model = None
        if config.ema:
            ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
        step = 0
        out_dir = Path(config.out_dir) if config.out_dir else None
        if config.resume and out_dir is not None and (out_dir / "trainer_state.json").exists():
            step = _resume(out_dir, model, optimizer, scheduler, ema_model, device)
            logger.info("resumed from %s at step %d", out_dir, step)
            seed_everything(config.seed + ri.rank + 1_000_003 * step)
        net: nn.Module = model
        if ri.world_size > 1:
            ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
            net = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)

        bar = None
        if config.progress and ri.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=config.steps, initial=step, desc="train", leave=False)
        history: list[dict[str, float]] = []
        metrics: dict[str, float] = {}
        stopped = False
        batches = _infinite(data)
        # Data already consumed before a resume is skipped so the run continues where it stopped.
        for _ in range(step):
            next(batches)
        net.train()
        try:
            while step < config.steps:
                batch = _to_device(next(batches), device)
                autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                            if config.bf16 and device.type == "cuda" else contextlib.nullcontext())
                with autocast:
                    out = loss_fn(net, batch)
                loss, extra = (out if isinstance(out, tuple) else (out, {}))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"train: loss is {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = None
                if config.grad_clip:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip))
                optimizer.step()
                scheduler.step()
                if ema_model is not None:
                    ema_update(ema_model, model, config.ema)
                step += 1
                metrics = {"loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                           **{k: float(v) for k, v in extra.items()}}
                if grad_norm is not None:
                    metrics["grad_norm"] = grad_norm
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}")
                if config.log_every and step % config.log_every == 0:
                    history.append({"step": step, **metrics})
                    if ri.is_main:
                        logger.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                if out_dir is not None and config.save_every and step % config.save_every == 0 and step < config.steps:
                    _save(out_dir, ri, model, optimizer, scheduler, ema_model, step, config, metrics)
                if callback is not None and callback(step, metrics) is False:
                    stopped = True
                    break
            if out_dir is not None:
                _save(out_dir, ri, model, optimizer, scheduler, ema_model, step, config, metrics)
        finally:
            if bar is not None:
                bar.close()
        net.eval()
        return TrainResult(step=step, metrics=metrics, history=history, stopped_early=stopped,
                           model=model.eval(), ema_model=ema_model)


def _save(out_dir, ri: RankInfo, model, optimizer, scheduler, ema_model, step, config, metrics) -> None:
    if ri.is_main:
        save_checkpoint(out_dir, model, optimizer, scheduler, ema_model, step, config, metrics)
    if ri.world_size > 1:
        torch.distributed.barrier()


def _resume(out_dir: Path, model, optimizer, scheduler, ema_model, device) -> int:
    from safetensors.torch import load_file

    state = json.loads((out_dir / "trainer_state.json").read_text())
    model.load_state_dict(load_file(str(out_dir / "model.safetensors"), device=str(device)))
    if ema_model is not None and (out_dir / "ema.safetensors").exists():
        ema_model.load_state_dict(load_file(str(out_dir / "ema.safetensors"), device=str(device)))
    opt_path = out_dir / "optimizer.pt"
    if opt_path.exists():
        blob = torch.load(opt_path, map_location=device, weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        if blob.get("scheduler") is not None:
            scheduler.load_state_dict(blob["scheduler"])
    return int(state["step"])
