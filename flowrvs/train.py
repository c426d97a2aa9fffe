"""FlowRVS training and evaluation (papers.md §2 "Flow", "BBS", "SPA", "DVI", "Mask VAE decoder",
"Training", "Metric"), on the pack's shared loop (:func:`avlab.common.training.train`: AdamW, warm-up +
cosine, grad clip, EMA, exact resume, DDP under ``torchrun``).

Three stages, each ``python -m avlab train <stage> --config cfg.json --out DIR``:

* ``flowrvs-vae`` — the tiny Wan VAE on the synthetic domain (frames **and** masks as 3-channel
  ``·2−1`` images: both ends of the flow go through the same encoder): L1 + MSE reconstruction + a
  small KL, on random 5-frame 48×48 crops (the VAE is convolutional; full clips at inference).
* ``flowrvs`` — the flow network (DiT + text encoder) on cached latents. Per example: the video latent
  is a posterior **sample**, normalised with the domain's latent statistics; the mask latent is the
  encoder **mean** of the mask, not normalised. **SPA**: the start point is perturbed explicitly,
  ``x₁ = video + s·ε`` (``spa_scale`` s, default 0.1 of the unit-variance normalised latent; 0 = off;
  the official code only relies on the posterior sample, papers.md §2) — the straight path then
  starts at ``x₁``: ``x_t = t·x₁ + (1−t)·mask``, target ``u = x₁ − mask``. **BBS**: ``t = 1`` with
  probability ``bbs_special_freq`` (0.5), else the timestep is uniform in 1..1000 (general form
  ``u^{1/(β+1)}``, ``bbs_beta`` = 0); ``bbs_special_freq = 0`` is the "without BBS" ablation.
  **DVI**: the (unperturbed) video latent is concatenated after ``x_t`` (``dvi``). MSE loss; EMA;
  grad clip 1.0.
* ``flowrvs-mask-decoder`` — the mask decoder: the VAE with a 1-channel ``conv_out`` (initialised from
  the RGB head), encoder frozen, decoder trained with **BCE + Dice** on the output logits (the
  paper's loss is unpublished), from the encoder-mean latents of ground-truth masks with a small
  Gaussian jitter (``latent_jitter``, so that the decoder tolerates the flow's imperfect latents).

* ``flowrvs-mask-adapt`` — after the flow (:func:`run_mask_adaptation_stage`, also run by
  ``scripts/train_flowrvs_synthetic.py``): a trained model's mask decoder fine-tuned once more, on the
  flow's own one-step latents of the training examples (no jitter: they carry the flow's real errors);
  ``"model"`` is the folder of a complete model (the ``flowrvs`` stage's ``model/``), the adapted
  model is written to ``out/model``.

Evaluation: DAVIS J&F (:mod:`.metrics`) of thresholded masks against ground truth on the held-out
split of :mod:`avlab.synthetic.referring` (colour/shape/motion triples never seen in training).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ..common.errors import NodeInputError, check
from ..common.training import IndexedBatches, TrainConfig, rank_info, read_config_file, train
from ..synthetic.referring import ReferringConfig, make_referring_clip, vocabulary
from . import latents as L
from .metrics import j_and_f, mean_j_and_f
from .sampler import flowrvs_sigmas, sample
from .tiny import (BUNDLE_JSON, SYNTHETIC_DIT, TEXT_LENGTH, TINY_VAE, FlowRVSSystem, TinyFlowRVS, WordTokenizer,
                   build_system, build_vae, decode_unclamped, load_fp16, mask_vae_from, posterior, save_fp16)

logger = logging.getLogger(__name__)

NODE = "FlowRVS trainer"


# ---------------------------------------------------------------------------------------------- configs
@dataclass
class DataConfig:
    """Clips of :mod:`avlab.synthetic.referring` (train / val / test seed ranges are disjoint).
    ``all_objects``: every training clip gives one example per object its own sentence names uniquely
    (:meth:`ReferringClip.referable`: one video, several expressions, as MeViS has), so the flow cannot
    tell the target from the video alone and must read the sentence; val / test keep one target per clip."""

    train_clips: int = 2400
    val_clips: int = 32
    test_clips: int = 64
    frames: int = 9
    size: int = 96
    all_objects: bool = True


@dataclass
class FlowConfig:
    """The paper's three mechanisms (module docstring)."""

    bbs_special_freq: float = 0.5
    bbs_beta: float = 0.0
    spa_scale: float = 0.1
    dvi: bool = True
    batch_size: int = 16
    #: DiT config overrides on :data:`.tiny.SYNTHETIC_DIT` (e.g. ``{"num_layers": 6}``)
    dit: dict = field(default_factory=dict)

    def validate(self) -> None:
        check(0.0 <= self.bbs_special_freq <= 1.0, NODE, "bbs_special_freq", "a probability in [0, 1]",
              self.bbs_special_freq)
        check(self.bbs_beta > -1.0, NODE, "bbs_beta", "a number > -1", self.bbs_beta)
        check(self.spa_scale >= 0.0, NODE, "spa_scale", "a scale >= 0", self.spa_scale)
        check(isinstance(self.dit, dict) and set(self.dit) <= set(SYNTHETIC_DIT), NODE, "dit",
              f"a dict of DiT config keys among {sorted(SYNTHETIC_DIT)}", self.dit)

    def dit_config(self) -> dict:
        return {**SYNTHETIC_DIT, **self.dit}


@dataclass
class VAEStageConfig:
    batch_size: int = 4          # clips per step (their frames and their masks: 2× images)
    crop: int = 48
    crop_frames: int = 5
    kl_weight: float = 1e-4


@dataclass
class MaskDecoderConfig:
    batch_size: int = 4
    latent_crop: int = 6
    latent_jitter: float = 0.05  # × the per-channel std of the mask latents
    dice_weight: float = 1.0


def _from_dict(cls, d: dict | None, section: str):
    d = dict(d or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise NodeInputError(NODE, f"config.{section}", f"keys among {sorted(names)}", unknown)
    return cls(**d)


def train_config(d: dict | None, **defaults) -> TrainConfig:
    merged = {**defaults, **(d or {})}
    if "betas" in merged:
        merged["betas"] = tuple(merged["betas"])
    return _from_dict(TrainConfig, merged, "train")


# ---------------------------------------------------------------------------------------------- data
def render_clips(split: str, count: int, data: DataConfig) -> dict:
    """``count`` clips of ``split`` as examples: ``{"frames" [N,T,H,W,3] (one per clip), "masks"
    [E,T,H,W] uint8, "sentences" (E), "clip_index" [E] (the clip of each example)}``. One example per
    clip (its target), or with ``data.all_objects`` on the train split one per referable object."""
    cfg = ReferringConfig(frames=data.frames, height=data.size, width=data.size)
    frames = torch.empty(count, cfg.frames, cfg.height, cfg.width, 3)      # filled clip by clip (memory)
    masks, sentences, index = [], [], []
    for i in range(count):
        c = make_referring_clip(split, i, cfg)
        frames[i] = c.frames
        for k in (c.referable() if (data.all_objects and split == "train") else [c.target]):
            masks.append(c.object_masks[k].to(torch.uint8))
            sentences.append(c.sentence_of(k))
            index.append(i)
    return {"frames": frames, "masks": torch.stack(masks), "sentences": sentences,
            "clip_index": torch.tensor(index, dtype=torch.long)}


def example_frames(clips: dict, examples) -> torch.Tensor:
    """The frames of ``examples`` (indices or a slice into the examples of :func:`render_clips`)."""
    return clips["frames"][clips["clip_index"][examples]]


def to_vae_images(frames: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
    """``[N,T,H,W,3]`` frames in 0..1 and/or ``[N,T,H,W]`` masks → ``[M,3,T,H,W]`` in [-1, 1]
    (masks repeated to 3 channels, papers.md §2)."""
    parts = []
    if frames is not None:
        parts.append(frames.permute(0, 4, 1, 2, 3) * 2 - 1)
    if masks is not None:
        parts.append(masks[:, None].expand(-1, 3, -1, -1, -1).float() * 2 - 1)
    return torch.cat(parts)


class VAECrops:
    """Seekable batches of random crops (``crop_frames`` × ``crop``²; start frame 0 or a multiple of 4,
    offsets multiples of 8) of frames and masks."""

    def __init__(self, clips: dict, stage: VAEStageConfig, seed: int):
        self.frames, self.masks, self.stage = clips["frames"], clips["masks"], stage
        self.clip_index = clips["clip_index"]
        self.seed, self.rank = seed, rank_info().rank

    def batch(self, step: int):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_033 + step)
        n, t, h, w = self.masks.shape
        s = self.stage
        idx = torch.randint(n, (s.batch_size,), generator=g)
        t0 = int(torch.randint((t - s.crop_frames) // 4 + 1, (1,), generator=g)) * 4
        y0 = int(torch.randint((h - s.crop) // 8 + 1, (1,), generator=g)) * 8
        x0 = int(torch.randint((w - s.crop) // 8 + 1, (1,), generator=g)) * 8
        sl = (idx, slice(t0, t0 + s.crop_frames), slice(y0, y0 + s.crop), slice(x0, x0 + s.crop))
        return (to_vae_images(self.frames[(self.clip_index[idx],) + sl[1:]], self.masks[sl]),)

    def iter_from(self, step: int):
        while True:
            yield self.batch(step)
            step += 1


def vae_loss(vae, batch, kl_weight: float):
    (x,) = batch
    dist = vae.encode(x).latent_dist
    rec = decode_unclamped(vae, dist.sample())
    l1, mse = (rec - x).abs().mean(), (rec - x).square().mean()
    kl = 0.5 * (dist.mean.square() + dist.var - 1.0 - dist.logvar).mean()
    return l1 + mse + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def encode_latents(vae, clips: dict, batch: int = 8) -> dict:
    """Per example: posterior mean / std of its clip's frames (each clip encoded once) and the mask
    latent (encoder mean of the mask)."""
    vae.eval()
    vm, vs, mm = [], [], []
    for i in range(0, len(clips["frames"]), batch):
        m, s = posterior(vae, to_vae_images(frames=clips["frames"][i:i + batch]))
        vm.append(m)
        vs.append(s)
    for i in range(0, len(clips["masks"]), batch):
        mm.append(posterior(vae, to_vae_images(masks=clips["masks"][i:i + batch]))[0])
    index = clips["clip_index"]
    return {"video_mean": torch.cat(vm)[index], "video_std": torch.cat(vs)[index], "mask_latent": torch.cat(mm)}


def latent_statistics(video_mean: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean / std of the training video latents (the domain's ``latents_mean`` / ``std``)."""
    x = video_mean.transpose(0, 1).reshape(video_mean.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()


# ---------------------------------------------------------------------------------------------- flow stage
def sample_t(n: int, special_freq: float = 0.5, beta: float = 0.0, generator=None) -> torch.Tensor:
    """Boundary-Biased Sampling (papers.md §2): ``t = 1`` (timestep 1000) with probability
    ``special_freq``, else the integer timestep ``ceil(1000·u^{1/(β+1)})`` in 1..1000, ``/1000``."""
    u = torch.rand(n, generator=generator)
    general = torch.ceil(1000.0 * u.pow(1.0 / (beta + 1.0))).clamp(1, 1000) / 1000.0
    special = torch.rand(n, generator=generator) < special_freq
    return torch.where(special, torch.ones_like(general), general)


def flow_loss(net, batch, flow: FlowConfig):
    """Flow-matching MSE with BBS, SPA and DVI (module docstring)."""
    vmean, vstd, mask, ids, att = batch
    video = vmean + vstd * torch.randn_like(vmean)          # posterior sample (normalised units)
    start = video + flow.spa_scale * torch.randn_like(video) if flow.spa_scale else video
    t = sample_t(video.shape[0], flow.bbs_special_freq, flow.bbs_beta).to(video.device)
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = tt * start + (1 - tt) * mask
    v = net(x_t, t, ids, att, video=video if flow.dvi else None)
    loss = F.mse_loss(v, start - mask)
    return loss, {"t1_frac": float((t == 1).float().mean())}


def flow_batches(lat: dict, tokens: tuple, stats: tuple, batch_size: int, seed: int) -> IndexedBatches:
    mean = torch.tensor(stats[0]).view(1, -1, 1, 1, 1)
    std = torch.tensor(stats[1]).view(1, -1, 1, 1, 1)
    return IndexedBatches((lat["video_mean"] - mean) / std, lat["video_std"] / std, lat["mask_latent"],
                          tokens[0], tokens[1], batch_size=batch_size, seed=seed)


# ---------------------------------------------------------------------------------------------- mask decoder
class MaskLatentCrops:
    """Seekable batches: ground-truth mask latents (cropped ``latent_crop``² in space) + the masks."""

    def __init__(self, mask_latent: torch.Tensor, masks: torch.Tensor, stage: MaskDecoderConfig, seed: int):
        self.z, self.masks, self.stage = mask_latent, masks, stage
        self.seed, self.rank = seed, rank_info().rank
        self.scale = mask_latent.transpose(0, 1).reshape(mask_latent.shape[1], -1).std(1).view(1, -1, 1, 1, 1)

    def batch(self, step: int):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_033 + step)
        s, (n, _, _, h, w) = self.stage, self.z.shape
        idx = torch.randint(n, (s.batch_size,), generator=g)
        c = min(s.latent_crop, h, w)
        y0 = int(torch.randint(h - c + 1, (1,), generator=g))
        x0 = int(torch.randint(w - c + 1, (1,), generator=g))
        z = self.z[idx][..., y0:y0 + c, x0:x0 + c]
        z = z + s.latent_jitter * self.scale * torch.randn(z.shape, generator=g)
        m = self.masks[idx][..., y0 * 8:(y0 + c) * 8, x0 * 8:(x0 + c) * 8].float()
        return z, m

    def iter_from(self, step: int):
        while True:
            yield self.batch(step)
            step += 1


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def bce_dice(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0):
    """BCE (with logits) + ``dice_weight`` × soft Dice: the mask decoder's loss (papers.md §2 leaves it open)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = dice_loss(logits, target)
    return bce + dice_weight * dice, {"bce": float(bce.detach()), "dice": float(dice.detach())}


def mask_decoder_loss(mask_vae, batch, stage: MaskDecoderConfig):
    """:func:`bce_dice` on the decoder's unclamped logits."""
    z, m = batch
    return bce_dice(decode_unclamped(mask_vae, z)[:, 0], m, stage.dice_weight)


def prepare_mask_decoder(vae) -> torch.nn.Module:
    mvae = mask_vae_from(vae)
    mvae.requires_grad_(False)
    for module in (mvae.post_quant_conv, mvae.decoder):
        module.requires_grad_(True)
    return mvae


@torch.no_grad()
def flow_predictions(tiny: TinyFlowRVS, lat: dict, tokens: tuple, batch: int = 32) -> torch.Tensor:
    """The flow's one-step mask latents for every training example, from the posterior-mean video latent
    as at inference (:meth:`TinyFlowRVS.segment`): the decoder's real input."""
    out = []
    for i in range(0, len(lat["video_mean"]), batch):
        video = L.normalise_video_latent(lat["video_mean"][i:i + batch], tiny.latent_mean, tiny.latent_std)
        text = tiny.system.text_encoder(tokens[0][i:i + batch], tokens[1][i:i + batch])
        out.append(sample(tiny.velocity_fn(text, video), video, flowrvs_sigmas(1)))
    return torch.cat(out)


def run_mask_adaptation_stage(tiny: TinyFlowRVS, lat: dict, tokens: tuple, masks: torch.Tensor,
                              stage: MaskDecoderConfig, cfg: TrainConfig, seed: int = 0):
    """Fine-tune the mask decoder (encoder frozen, BCE + Dice, papers.md §2 "Mask VAE decoder") on the
    flow's own one-step latents → ground-truth masks, starting from the decoder trained on
    ground-truth latents. The paper does not publish what its decoder is tuned on; a decoder that
    has only seen encoder latents of clean masks meets the flow's smoother latents at inference."""
    return run_mask_decoder_stage(tiny.vae, {"mask_latent": flow_predictions(tiny, lat, tokens)}, masks, stage, cfg,
                                  seed, start=tiny.mask_vae)


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(tiny: TinyFlowRVS, clips: dict, steps: int = 1, shift: float = 3.0, batch: int = 8,
             lightcache: dict | None = None) -> dict:
    """DAVIS J&F of ``tiny`` on ``clips`` (one referring expression per clip). ``lightcache``: settings
    for :func:`avlab.lightcache.apply` on the DiT (multi-step sampling with block caching)."""
    results, seconds = [], 0.0
    handle = None
    if lightcache:
        from .. import lightcache as lc
        handle = lc.apply(tiny.system.flow.transformer, **lightcache)
    try:
        for i in range(0, len(clips["masks"]), batch):
            frames, gt = example_frames(clips, slice(i, i + batch)), clips["masks"][i:i + batch]
            text = tiny.encode_text(clips["sentences"][i:i + batch])
            video = torch.cat([tiny.video_latent(f) for f in frames])
            t0 = time.perf_counter()
            with handle.run(num_steps=steps) if handle is not None else contextlib.nullcontext():
                z = sample(tiny.velocity_fn(text, video), video, flowrvs_sigmas(steps, shift))
            seconds += time.perf_counter() - t0
            logits = tiny.decode_mask(z)
            for k in range(len(gt)):
                pred = L.restore(logits[k], gt.shape[1], gt.shape[2], gt.shape[3]) > 0
                results.append(j_and_f(pred.numpy(), gt[k].numpy() > 0.5))
    finally:
        if handle is not None:
            handle.remove()
    agg = mean_j_and_f(results)
    return {"J&F": round(agg["J&F"], 4), "J": round(agg["J"], 4), "F": round(agg["F"], 4),
            "clips": agg["n_objects"], "flow_seconds": round(seconds, 2)}


@torch.no_grad()
def mask_reconstruction(vae, mask_vae, clips: dict, batch: int = 8) -> dict:
    """J&F of encode → mask decoder on ground-truth masks: the ceiling the flow can reach."""
    results = []
    for i in range(0, len(clips["masks"]), batch):
        gt = clips["masks"][i:i + batch]
        z = posterior(vae, to_vae_images(masks=gt))[0]
        results += logits_j_and_f(decode_unclamped(mask_vae, z)[:, 0], gt)
    agg = mean_j_and_f(results)
    return {"J&F": round(agg["J&F"], 4), "J": round(agg["J"], 4), "F": round(agg["F"], 4)}


def logits_j_and_f(logits: torch.Tensor, masks: torch.Tensor) -> list[dict]:
    """Per clip: J&F of mask logits ``[B,T,H,W]`` thresholded at 0 against ground-truth masks of the same size."""
    return [j_and_f((logits[k] > 0).numpy(), masks[k].numpy() > 0.5) for k in range(len(masks))]


# ---------------------------------------------------------------------------------------------- stages
def _tokens(sentences, length: int = TEXT_LENGTH):
    return WordTokenizer(vocabulary(), length)(sentences)


def run_vae_stage(clips: dict, stage: VAEStageConfig, cfg: TrainConfig, seed: int = 0):
    torch.manual_seed(seed)
    vae = build_vae(TINY_VAE)
    data = VAECrops(clips, stage, seed)
    res = train(vae, lambda m, b: vae_loss(m, b, stage.kl_weight), data, cfg)
    return res.ema_model or res.model, res


def run_flow_stage(lat: dict, tokens: tuple, stats: tuple, flow: FlowConfig, cfg: TrainConfig, seed: int = 0,
                   start: FlowRVSSystem | None = None):
    """The flow network (DiT + text encoder) from scratch, or continued from ``start``'s weights (a trained
    system of the same DiT config and DVI setting, e.g. for :data:`REFINE_FLOW`)."""
    flow.validate()
    torch.manual_seed(seed)
    tok, system = build_system(vocabulary(), dvi=flow.dvi, dit_config=flow.dit_config())
    if start is not None:
        try:
            system.load_state_dict(start.state_dict())
        except RuntimeError as e:
            raise NodeInputError(NODE, "init", f"a trained flow with this stage's DiT config {flow.dit_config()} "
                                 f"and dvi={flow.dvi}", str(e).splitlines()[0]) from None
    data = flow_batches(lat, tokens, stats, flow.batch_size, seed)
    res = train(system, lambda m, b: flow_loss(m, b, flow), data, cfg)
    return tok, (res.ema_model or res.model), res


def run_mask_decoder_stage(vae, lat: dict, masks: torch.Tensor, stage: MaskDecoderConfig, cfg: TrainConfig,
                           seed: int = 0, start: torch.nn.Module | None = None):
    """The mask decoder on ``lat["mask_latent"]`` → ``masks``; from ``vae``'s RGB head, or ``start``'s weights."""
    torch.manual_seed(seed)
    mvae = prepare_mask_decoder(vae)
    if start is not None:
        mvae.load_state_dict(start.state_dict())
    data = MaskLatentCrops(lat["mask_latent"], masks, stage, seed)
    res = train(mvae, lambda m, b: mask_decoder_loss(m, b, stage), data, cfg)
    return (res.ema_model or res.model), res


# ---------------------------------------------------------------------------------------------- CLI
STAGES = ("flowrvs-vae", "flowrvs", "flowrvs-mask-decoder", "flowrvs-mask-adapt")
#: the mask-decoder adaptation's recipe (stage ``flowrvs-mask-adapt`` and scripts/train_flowrvs_synthetic.py):
#: 600 steps at lr 3e-4, no latent jitter (the flow's latents carry its real errors)
ADAPT_STEPS, ADAPT_LR = 600, 3e-4
ADAPT_DECODER = MaskDecoderConfig(latent_jitter=0.0)
#: the one-step refinement (scripts/train_flowrvs_synthetic.py, variant ``full_t1``): the trained ``full`` flow
#: continued for 3000 steps at lr 3e-4 with BBS at p(t = 1) = 1, i.e. only on the map that 1-step inference
#: uses (BBS's special-timestep frequency taken to its end, papers.md §2; SPA and DVI unchanged)
REFINE_FLOW = FlowConfig(bbs_special_freq=1.0)
REFINE_STEPS, REFINE_LR = 3000, 3e-4


def train_from_config(system: str, config: dict, out: str, resume: bool = False, steps: int | None = None) -> dict:
    """One stage (module docstring). Config JSON: ``{"data": DataConfig, "train": TrainConfig, "flow":
    FlowConfig, "vae_stage": VAEStageConfig, "mask_decoder": MaskDecoderConfig, "vae": "DIR"}``, every
    key optional. ``"vae"`` (stages ``flowrvs`` and ``flowrvs-mask-decoder``): a folder holding
    ``vae.safetensors`` (an earlier ``flowrvs-vae`` run, or the pack's ``weights/flowrvs``). ``"model"``
    (stage ``flowrvs-mask-adapt``, required): the folder of a complete model (``flowrvs_tiny.json``).
    ``"init"`` (stage ``flowrvs``, optional): a complete model whose DiT and text encoder the stage continues
    from instead of starting afresh (the one-step refinement: ``"flow": {"bbs_special_freq": 1.0}``,
    :data:`REFINE_FLOW`)."""
    if system not in STAGES:
        raise NodeInputError(NODE, "system", f"one of {list(STAGES)}", system)
    known = {"data", "train", "flow", "vae_stage", "mask_decoder", "vae", "model", "init", "seed"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise NodeInputError(NODE, "config", f"keys among {sorted(known)}", unknown)
    data = _from_dict(DataConfig, config.get("data"), "data")
    seed = int(config.get("seed", 0))
    out_dir = Path(out)
    adapt = system == "flowrvs-mask-adapt"
    init = config.get("init") if system == "flowrvs" else None     # only the flow stage continues a model
    for key, needed in (("model", adapt), ("init", init is not None)):
        if needed and not (Path(str(config.get(key) or "")) / BUNDLE_JSON).is_file():
            raise NodeInputError(NODE, f"config.{key}", f"the folder of a trained model holding {BUNDLE_JSON} (the "
                                 "`flowrvs` stage's out/model)", config.get(key))
    lr = ADAPT_LR if adapt else 1e-3 if system == "flowrvs-vae" else 5e-4
    # a continued model's EMA starts at its start weights
    tc = train_config(config.get("train"), out_dir=str(out_dir / "checkpoint"), resume=resume, seed=seed, lr=lr,
                      weight_decay=5e-4 if system == "flowrvs" else 0.0, ema=0.999, ema_warmup=init is None,
                      warmup_steps=100,
                      cosine=True, min_lr_ratio=0.05, steps=ADAPT_STEPS if adapt else 2000)
    if steps is not None:
        tc.steps = int(steps)
    t0 = time.perf_counter()
    clips = render_clips("train", data.train_clips, data)
    record = {"stage": system, "data": asdict(data), "train": tc.to_json(), "seed": seed}
    if adapt:
        tiny = TinyFlowRVS.load(config["model"])
        stage = _from_dict(MaskDecoderConfig, {**asdict(ADAPT_DECODER), **(config.get("mask_decoder") or {})},
                           "mask_decoder")
        lat = encode_latents(tiny.vae, clips)
        mvae, res = run_mask_adaptation_stage(tiny, lat, tiny.tokenizer(clips["sentences"]), clips["masks"], stage,
                                              tc, seed)
        if rank_info().is_main:
            tiny.with_mask_decoder(mvae).save(out_dir / "model", {**tiny.record, "mask_decoder": "flow-adapted"})
        record.update(model=str(out_dir / "model"), adapted_from=str(config["model"]), mask_decoder=asdict(stage),
                      metrics=res.metrics)
    elif system == "flowrvs-vae":
        vae, res = run_vae_stage(clips, _from_dict(VAEStageConfig, config.get("vae_stage"), "vae_stage"), tc, seed)
        if rank_info().is_main:
            save_fp16(vae, out_dir / "vae.safetensors")
        record["metrics"] = res.metrics
    else:
        vae_dir = Path(config.get("vae") or Path(__file__).resolve().parents[1] / "weights" / "flowrvs")
        if not (vae_dir / "vae.safetensors").is_file():
            raise NodeInputError(NODE, "config.vae", "a folder holding vae.safetensors (run `train flowrvs-vae` first)",
                                 str(vae_dir))
        vae = load_fp16(build_vae(TINY_VAE), vae_dir / "vae.safetensors")
        lat = encode_latents(vae, clips)
        if system == "flowrvs":
            flow = _from_dict(FlowConfig, config.get("flow"), "flow")
            stats = latent_statistics(lat["video_mean"])
            start = TinyFlowRVS.load(init).system if init is not None else None
            tok, model, res = run_flow_stage(lat, _tokens(clips["sentences"]), stats, flow, tc, seed, start=start)
            record.update(flow=asdict(flow), latent_mean=stats[0], latent_std=stats[1], metrics=res.metrics,
                          init=init)
            mask_file = vae_dir / "mask_vae.safetensors"
            if mask_file.is_file() and rank_info().is_main:     # a complete model: the bundle TinyFlowRVS.load reads
                mvae = load_fp16(build_vae(TINY_VAE, out_channels=1), mask_file)
                TinyFlowRVS(tok, model, vae, mvae, *stats).save(out_dir / "model", {"flow": asdict(flow)})
                record["model"] = str(out_dir / "model")
            elif not mask_file.is_file():
                record["model"] = f"not written: no mask_vae.safetensors in {vae_dir} (train flowrvs-mask-decoder)"
        else:
            stage = _from_dict(MaskDecoderConfig, config.get("mask_decoder"), "mask_decoder")
            mvae, res = run_mask_decoder_stage(vae, lat, clips["masks"], stage, tc, seed)
            if rank_info().is_main:
                save_fp16(mvae, out_dir / "mask_vae.safetensors")
            record.update(mask_decoder=asdict(stage), metrics=res.metrics)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if rank_info().is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "record.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def cli_train(system: str, config_path: str | None, out: str, resume: bool = False, steps: int | None = None) -> dict:
    """Entry of ``python -m avlab train flowrvs*`` (no config file = all defaults)."""
    config = read_config_file(config_path, NODE)
    return train_from_config(system, config, out, resume=resume, steps=steps)


__all__ = ["DataConfig", "FlowConfig", "MaskDecoderConfig", "VAEStageConfig", "cli_train", "dice_loss", "evaluate",
           "encode_latents", "flow_loss", "latent_statistics", "bce_dice", "mask_decoder_loss", "mask_reconstruction",
           "render_clips", "sample_t", "train_from_config", "vae_loss"]
