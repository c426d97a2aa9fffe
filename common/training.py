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
    rng_rank<r>.pt         rank r's torch / CUDA / numpy / python RNG states after the last step
    trainer_state.json     {"step", "config", "seed", "world_size", "metrics": last values}

Exact resume: a run stopped at step k and resumed ends bit-identical to an uninterrupted run. The
weights, EMA, optimizer, scheduler and every rank's RNG state are restored, and the data continues
at batch k without replaying the first k batches when it can seek (a :class:`SeekableData` with
``iter_from(step)``, or a sequence indexed by step: see :func:`iter_batches`); a plain iterator is
replayed (its batches are drawn and dropped), which is exact only when it draws no global RNG.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

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
        ema: EMA decay (e.g. 0.999) or ``None``. ema_warmup: use ``min(ema, (1+n)/(10+n))`` at update n
            (the EMA follows the raw weights closely early on, as in DDPM/ADM trainers).
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
    ema_warmup: bool = False
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


def ema_decay(config: TrainConfig, step: int) -> float:
    """EMA decay for the update after ``step`` completed steps (see ``TrainConfig.ema_warmup``)."""
    if config.ema_warmup:
        return min(config.ema, (1 + step) / (10 + step))
    return config.ema


def read_config_file(config_path: str | None, node: str) -> dict:
    """The JSON object of a trainer's ``--config`` file (``None`` = all defaults), or a
    :class:`~avlab.common.errors.NodeInputError` naming the file."""
    from .errors import NodeInputError

    if not config_path:
        return {}
    path = Path(config_path)
    if not path.is_file():
        raise NodeInputError(node, "config", "a JSON file", str(path))
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NodeInputError(node, "config", "valid JSON", f"{path}: {exc}") from None
    if not isinstance(config, dict):
        raise NodeInputError(node, "config", "a JSON object", f"{path}: {type(config).__name__}")
    return config


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU tensors of the state dict; tied weights (one storage under two names, e.g. a text encoder's
    shared embedding) are copied so safetensors can store both names."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v.contiguous()
        seen.add(ptr)
    return out


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
                    "scheduler": scheduler.state_dict() if scheduler is not None else None},
                   out / "optimizer.pt")
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


def rng_state() -> dict:
    """This process's torch (CPU + CUDA), numpy and python RNG states, as ``weights_only``-loadable data."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "mt": list(mt), "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / f"rng_rank{rank}.pt"


@runtime_checkable
class SeekableData(Protocol):
    """A data source that can start at any step without producing the batches before it."""

    def iter_from(self, step: int) -> Iterator[Any]:
        """Batches for steps ``step, step + 1, ...`` (this rank's shard)."""
        ...


class IndexedBatches:
    """Seekable random mini-batches over in-memory tensors: batch ``s`` of rank ``r`` draws its
    indices from a generator seeded by ``(seed, r, s)``, so any step is produced in O(1).

    Args:
        tensors: tensors with the same first dimension (e.g. latents and labels).
        batch_size: items per batch (with replacement across batches, without within one).
        seed: base seed; rank and step are mixed in.
        rank: this process's rank (default: :func:`rank_info`).
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, rank: int | None = None):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("IndexedBatches: tensors must share their first dimension")
        if not 0 < batch_size <= len(tensors[0]):
            raise ValueError(f"IndexedBatches: batch_size must be in 1..{len(tensors[0])}, got {batch_size}")
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.rank = rank_info().rank if rank is None else rank

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_033 + step)
        idx = torch.randperm(len(self.tensors[0]), generator=g)[: self.batch_size]
        return tuple(t[idx] for t in self.tensors)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            yield self.batch(step)
            step += 1


def iter_batches(data: Iterable | SeekableData | Sequence, start: int) -> Iterator:
    """Batches for steps ``start, start + 1, ...``: ``data.iter_from(start)`` for a
    :class:`SeekableData`; ``data[s % len(data)]`` for a sequence; else the iterable re-iterated
    when exhausted, its first ``start`` batches drawn and dropped (replayed)."""
    if isinstance(data, SeekableData):
        return data.iter_from(start)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            raise ValueError("train: the data sequence is empty (no batch)")
        return (data[s % len(data)] for s in itertools.count(start))
    batches = _infinite(data)
    if start:
        logger.info("train: the data cannot seek; replaying %d consumed batches", start)
    for _ in range(start):
        next(batches)
    return batches


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
        resumed = (config.resume and out_dir is not None and (out_dir / "trainer_state.json").exists())
        if resumed:
            step = _resume(out_dir, model, optimizer, scheduler, ema_model, device)
            logger.info("resumed from %s at step %d", out_dir, step)
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
        # Data already consumed before a resume is skipped so the run continues where it stopped;
        # the RNG states are restored after that, so a replaying iterator cannot disturb them.
        batches = iter_batches(data, step)
        if resumed:
            _restore_rng(out_dir, ri, step, config.seed)
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
                    ema_update(ema_model, model, ema_decay(config, step))
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
    """Rank 0 writes the checkpoint; every rank writes its own RNG state beside it."""
    if ri.is_main:
        save_checkpoint(out_dir, model, optimizer, scheduler, ema_model, step, config, metrics)
    if ri.world_size > 1:
        torch.distributed.barrier()
    torch.save(rng_state(), _rng_path(out_dir, ri.rank))
    if ri.world_size > 1:
        torch.distributed.barrier()


def _restore_rng(out_dir: Path, ri: RankInfo, step: int, seed: int) -> None:
    """Restore this rank's RNG state; a checkpoint of another world size cannot resume exactly."""
    saved_world = json.loads((out_dir / "trainer_state.json").read_text()).get("world_size")
    path = _rng_path(out_dir, ri.rank)
    if saved_world == ri.world_size and path.exists():
        set_rng_state(torch.load(path, weights_only=True))
        return
    logger.warning("train: %s was written with world size %s (now %d)%s: resuming with fresh random "
                   "streams, so this run will not match an uninterrupted one", out_dir, saved_world,
                   ri.world_size, "" if path.exists() else f" and has no {path.name}")
    seed_everything(seed + ri.rank + 1_000_003 * step)


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
