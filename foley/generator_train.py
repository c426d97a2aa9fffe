"""The tiny Stable-Audio-family generator and its envelope ControlNet, trained on the synthetic
Foley domain (papers.md §4; issue 10's proof). Three stages of ``python -m avlab train``:

* ``foley-audio-ae`` — a tiny Oobleck VAE (:mod:`avlab.foley.oobleck`, ComfyUI's key layout, hop 2048,
  64 latent channels at 44.1 kHz stereo: Stable Audio Open's latent shape) on the domain's sounds.
  Trained as a deterministic autoencoder (the posterior mean is decoded; the scale channels are pinned
  to a tiny std afterwards): loss = multi-resolution STFT (log floor 0.1) + 0.1 · waveform L1 + a
  log-loudness-envelope L1 + 1e-4 · mean²; no adversarial term (the proof needs loudness over time
  right, not perceptual sharpness). ELU activations (Oobleck's non-Snake option), several times faster
  to train on a CPU. Afterwards the latent scale is
  folded into the encoder's last and the decoder's first convolution so the latents have unit
  standard deviation, as Stable Audio Open's do (ComfyUI applies no latent scale to audio).
* ``foley-base`` — the base model: a tiny Stable Audio DiT (:mod:`avlab.foley.stable_audio`) plus its
  seconds conditioner, conditioned by text as Stable Audio Open is; its "T5" is the pack's built-in
  GRAM text tower through a token projection trained with it. v-objective, t ~ U(0, 1), CFG dropout
  0.1 (zero tokens), EMA.
* ``foley-controlnet`` — FoleyGRAM's training: the base frozen; the envelope ControlNet
  (:mod:`avlab.foley.controlnet`, copies of the first ``round(0.2 · depth)`` blocks) and a GRAM *video*
  → token projection (initialised from the base's text projection: GRAM puts both in one space)
  trained together; the envelope is the clip's causal RMS at the latent rate, peak-normalised; CFG
  dropout 0.1; AdamW lr 1e-4.

Evaluation (:func:`evaluate_generation`): held-out clips (attribute combinations never seen in
training; :func:`avlab.synthetic.foley.heldout_combos`) are generated from their video alone, with the
ControlNet (envelope from the ground-truth sound, or predicted from the frames by the RMS mapper) and
without it (strength 0, same tokens, same noise); E-L1 (Video-Foley's envelope) and onset error
against the real sound, the autoencoder's own reconstruction as the floor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..common.training import IndexedBatches, TrainConfig, read_config_file, train
from ..synthetic import foley as synth
from .conditioning import GramTokenProjection, projection_parts
from .controlnet import EnvelopeControlNet
from .envelope import STABLE_AUDIO_RATE, rms_envelope, video_foley_envelope
from .metrics import e_l1, onset_error_ms, onset_times

logger = logging.getLogger(__name__)
NODE = "avlab train foley"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "foley"
#: The pack's trained tiny generator (``scripts/train_foley_generator.py``).
BUILTIN_AUDIO_AE = WEIGHTS / "oobleck_tiny.safetensors"
BUILTIN_BASE = WEIGHTS / "stable_audio_tiny.safetensors"
BUILTIN_CONTROLNET = WEIGHTS / "envelope_controlnet_tiny.safetensors"
BASE_META = "avlab_stable_audio"


# ---------------------------------------------------------------------------------------------- data
@dataclass
class FoleyAudioData:
    """Synthetic clips for the generator: 2 s, 16 fps, 44.1 kHz (Stable Audio Open's rate)."""

    frames: int = 32
    size: int = 64
    fps: float = 16.0
    sample_rate: int = 44100
    train_clips: int = 2048
    val_clips: int = 48
    test_clips: int = 48
    motions: tuple = ("bouncing",)    # the evaluated motions (impacts); training sees every motion

    def clip_config(self) -> synth.FoleyClipConfig:
        return synth.FoleyClipConfig(self.frames, self.size, self.fps, self.sample_rate)

    @property
    def samples(self) -> int:
        return int(round(self.frames / self.fps * self.sample_rate))


@dataclass
class FoleyClips:
    frames: torch.Tensor          # [N, T, H, W, 3] uint8
    audio: torch.Tensor           # [N, 2, S] float (mono duplicated to stereo)
    captions: list
    attributes: list

    def __len__(self) -> int:
        return self.audio.shape[0]


def render_clips(split: str, count: int, data: FoleyAudioData, motions: tuple | None = None, offset: int = 0) -> FoleyClips:
    """``count`` clips of ``split`` (train: seen attribute combinations; val: seen, other seeds; test:
    held-out combinations), optionally only those whose motion is in ``motions``."""
    frames, audio, captions, attributes, i = [], [], [], [], offset
    while len(audio) < count:
        chunk = synth.split_clips(split, min(256, max(8, count)), offset=i, config=data.clip_config())
        i += len(chunk)
        for c in chunk:                  # uint8 frames right away: float frames of 2048 clips are 3 GB
            if (motions is None or c.attributes["motion"] in motions) and len(audio) < count:
                frames.append((c.frames * 255).round().to(torch.uint8))
                audio.append(c.audio[: data.samples])
                captions.append(c.caption)
                attributes.append(dict(c.attributes))
    audio = torch.stack(audio)
    return FoleyClips(torch.stack(frames), audio[:, None].expand(-1, 2, -1).contiguous(), captions, attributes)


def latent_envelopes(audio: torch.Tensor, sample_rate: int, length: int) -> torch.Tensor:
    """``[N, C, S]`` sounds → ``[N, 1, length]`` causal RMS envelopes at the latent rate, peak 1."""
    rows = []
    for wave in audio:
        v = rms_envelope(wave, sample_rate, STABLE_AUDIO_RATE, length=length).values
        rows.append(v / v.max().clamp(min=1e-8))
    return torch.stack(rows)[:, None]


# ------------------------------------------------------------------------------- stage 1: the VAE
@dataclass
class AudioAEConfig:
    channels: int = 8
    latent_dim: int = 64
    c_mults: tuple = (1, 2, 4, 8, 16)
    strides: tuple = (2, 4, 4, 8, 8)
    use_snake: bool = False                 # ELU: trains several times faster on CPU (Oobleck's other option)
    crop_latents: int = 4                   # training crop in latent frames (4 · 2048 samples ≈ 0.19 s)
    log_floor: float = 0.1                  # MR-STFT log-magnitude floor (:func:`~avlab.foley.oobleck.multi_resolution_stft_loss`)
    # sum-and-difference MR-STFT (:func:`~avlab.foley.oobleck.stereo_image_loss`); 0 = the first shipped
    # recipe, whose decoder learnt R ≈ −L (mono downmix cancelled: E-L1 floor 0.30 instead of 0.09 per channel)
    stereo_weight: float = 1.0
    envelope_weight: float = 1.0            # loudness-envelope term (:func:`~avlab.foley.oobleck.loudness_envelope_loss`)
    # per-band log-mel term (:class:`~avlab.foley.oobleck.LogMelLoss`); off: 1200 steps of it on top of the
    # shipped autoencoder moved E-L1 of the reconstruction from 0.43 to 0.51 on val (measured, rejected)
    log_mel_weight: float = 0.0
    mean_l2: float = 1e-4                   # keeps the latent scale in check (the means are decoded, no sampling)
    input_gain: float = 20.0                # first encoder conv's magnitude × this at init (see AudioAETrainee)
    mel_bands: int = 16                     # latent channels 0..bands-1 learn the log-mel energy of their frame
    mel_weight: float = 1.0


class AudioAETrainee(nn.Module):
    """A deterministic autoencoder pass (the posterior mean is decoded): with Stable Audio's KL weight a
    tiny VAE trained for minutes cannot outgrow the posterior noise and settles on near-silence.

    Two measures make the tiny Oobleck learn in minutes (without them the decoder ignored the latent
    and played one constant loudness, measured): waveforms of amplitude ~0.1 keep ELU/Snake in their
    linear range, so an encoder at default init cannot tell loud from quiet — the first convolution
    starts ``input_gain`` × stronger; and the first ``mel_bands`` latent channels are asked for the
    normalised log-mel energies of their 2048-sample frame (an anchor the decoder can read from the
    start; the other channels stay free)."""

    def __init__(self, vae, audio: torch.Tensor, crop: int, acfg: AudioAEConfig, sample_rate: int = 44100):
        super().__init__()
        self.vae, self.audio, self.crop, self.acfg = vae, audio, crop, acfg
        import torchaudio

        hop = vae.cfg.hop
        self.bands = min(acfg.mel_bands, vae.cfg.latent_dim)
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=hop, hop_length=hop,
                                                        n_mels=max(1, self.bands), center=False)
        from .oobleck import LogMelLoss

        self.log_mel = LogMelLoss(sample_rate)

    def mel_target(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.mel(x.float().mean(1)) + 1e-5).log() + 5.0) / 4.0

    def forward(self, batch) -> tuple[torch.Tensor, dict]:
        from .oobleck import loudness_envelope_loss, reconstruction_loss, stereo_image_loss

        (index,) = batch
        total = self.audio.shape[-1]
        g = torch.Generator().manual_seed(int(index.sum()) * 7919 + int(index[0]))
        starts = torch.randint(0, max(1, total - self.crop), (index.shape[0],), generator=g)
        x = torch.stack([self.audio[int(i), :, int(s): int(s) + self.crop] for i, s in zip(index, starts)])
        x = F.pad(x, (0, self.crop - x.shape[-1])).to(next(self.vae.parameters()).device)
        mean, _ = self.vae.encode_dist(x)
        recon = self.vae.decode(mean)[..., : x.shape[-1]]
        rec = reconstruction_loss(recon, x, log_floor=self.acfg.log_floor)
        env = loudness_envelope_loss(recon, x)
        l2 = mean.pow(2).mean()
        loss = rec + self.acfg.envelope_weight * env + self.acfg.mean_l2 * l2
        metrics = {"recon": float(rec.detach()), "envelope": float(env.detach()), "latent_l2": float(l2.detach())}
        if self.acfg.stereo_weight and x.shape[1] == 2:
            stereo = stereo_image_loss(recon, x, log_floor=self.acfg.log_floor)
            loss = loss + self.acfg.stereo_weight * stereo
            metrics["stereo"] = float(stereo.detach())
        if self.acfg.log_mel_weight:
            log_mel = self.log_mel(recon, x)
            loss = loss + self.acfg.log_mel_weight * log_mel
            metrics["log_mel"] = float(log_mel.detach())
        if self.bands and self.acfg.mel_weight:
            target = self.mel_target(x)
            mel = (mean[:, : self.bands, : target.shape[-1]] - target).abs().mean()
            loss = loss + self.acfg.mel_weight * mel
            metrics["mel"] = float(mel.detach())
        return loss, metrics


def _weight_norm_convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")]


@torch.no_grad()
def fold_latent_scale(vae, scale: float) -> None:
    """Divide the latents by ``scale`` without changing what the VAE does: the mean half of the
    encoder's last convolution is divided by it, the decoder's first convolution multiplied (weight
    norm's per-channel magnitude ``g`` carries both). The sampled encode's noise std is not rescaled."""
    last = _weight_norm_convs(vae.encoder)[-1]
    first = _weight_norm_convs(vae.decoder)[0]
    latent = vae.cfg.latent_dim
    g_last = last.parametrizations.weight.original0
    g_last[:latent] /= scale
    if last.bias is not None:
        last.bias[:latent] /= scale
    first.parametrizations.weight.original0.mul_(scale)


@torch.no_grad()
def pin_posterior_std(vae, bias: float = -12.0) -> None:
    """Set the bias of the encoder's scale channels so ``std = softplus(scale) + 1e-4`` ≈ 1e-4: the
    autoencoder was trained on its means, and ComfyUI's audio VAE encode samples from the posterior."""
    last = _weight_norm_convs(vae.encoder)[-1]
    latent = vae.cfg.latent_dim
    last.parametrizations.weight.original0[latent:] = 0.0
    last.bias[latent:] = bias


def _train_config(defaults: dict, config: dict, out: Path, resume: bool, steps: int | None) -> TrainConfig:
    """A stage's :class:`TrainConfig`: its defaults, then the config file's ``"train"``, then ``--steps``."""
    tcfg = TrainConfig(**{**defaults, "out_dir": str(out / "checkpoints"), "resume": resume, **config.get("train", {})})
    return dataclasses.replace(tcfg, steps=steps) if steps else tcfg


def train_audio_ae(config: dict, out: str | Path, resume: bool = False, steps: int | None = None) -> dict:
    from .oobleck import OobleckConfig, OobleckVAE, save_oobleck

    out = Path(out)
    data = FoleyAudioData(**config.get("data", {}))
    acfg = AudioAEConfig(**config.get("model", {}))
    tcfg = _train_config({"steps": 2500, "lr": 1e-3, "betas": (0.8, 0.99), "warmup_steps": 100, "cosine": True,
                          "min_lr_ratio": 0.1}, config, out, resume, steps)
    t0 = time.time()
    clips = render_clips("train", data.train_clips, data)
    torch.manual_seed(tcfg.seed)
    vae = OobleckVAE(OobleckConfig(in_channels=2, channels=acfg.channels, latent_dim=acfg.latent_dim,
                                   c_mults=tuple(acfg.c_mults), strides=tuple(acfg.strides),
                                   use_snake=acfg.use_snake, sample_rate=data.sample_rate))
    if config.get("init"):                  # continue from an earlier autoencoder (same architecture)
        from .oobleck import load_oobleck

        vae.load_state_dict(load_oobleck(config["init"]).state_dict())
    else:
        with torch.no_grad():
            _weight_norm_convs(vae.encoder)[0].parametrizations.weight.original0.mul_(acfg.input_gain)
    hop = vae.cfg.hop
    trainee = AudioAETrainee(vae, clips.audio, acfg.crop_latents * hop, acfg, data.sample_rate)
    batches = IndexedBatches(torch.arange(len(clips)), batch_size=int(config.get("batch_size", 16)), seed=tcfg.seed)
    result = train(trainee, lambda net, batch: net(batch), batches, tcfg)
    vae = result.model.vae.float().eval()
    val = render_clips("val", data.val_clips, data)
    with torch.no_grad():
        mean, _ = vae.encode_dist(val.audio)
        scale = float(mean.std())
        fold_latent_scale(vae, scale)
        pin_posterior_std(vae)
        mean2, _ = vae.encode_dist(val.audio)
        recon = vae.decode(mean2)[..., : val.audio.shape[-1]]
    report = {"train_seconds": round(time.time() - t0, 1), "steps": result.step, "last_metrics": result.metrics,
              "latent_std_before_fold": scale, "latent_std": float(mean2.std()),
              "val_e_l1_reconstruction": _mean(e_l1(r, a, data.sample_rate) for r, a in zip(recon, val.audio)),
              "config": {"data": dataclasses.asdict(data), "model": dataclasses.asdict(acfg), "train": tcfg.to_json()}}
    out.mkdir(parents=True, exist_ok=True)
    save_oobleck(vae, out / "oobleck.safetensors", half=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def _mean(values) -> float:
    values = [float(v) for v in values]
    return float(sum(values) / max(1, len(values)))


# ------------------------------------------------------------------------ stage 2: the base model
@dataclass
class BaseModelConfig:
    embed_dim: int = 128
    depth: int = 10
    num_heads: int = 2
    project_cond_tokens: bool = True      # 768-d tokens → the DiT's width (needed below width 768)
    cfg_dropout: float = 0.1


class StableAudioBase(nn.Module):
    """The base generator: DiT + seconds conditioner + the text → token projection (its "T5")."""

    def __init__(self, dit, conditioner, text_projection: GramTokenProjection):
        super().__init__()
        self.dit, self.conditioner, self.text_projection = dit, conditioner, text_projection

    def condition(self, tokens: torch.Tensor, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
        b = tokens.shape[0]
        return self.conditioner(tokens, torch.zeros(b), torch.full((b,), float(seconds)))

    def v(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, seconds: float, control=None) -> torch.Tensor:
        context, global_embed = self.condition(tokens, seconds)
        return self.dit(x, t, context, global_embed, control=control)


def save_base(base: StableAudioBase, path: str | Path, extra: dict | None = None) -> None:
    """One file: the stable-audio-tools single-file layout (``model.diffusion_model.*``,
    ``conditioner.conditioners.seconds_*``) + ``gram_to_tokens.*`` (the text projection), fp16;
    metadata ``avlab_stable_audio`` = the DiT config."""
    from safetensors.torch import save_file

    from .stable_audio import checkpoint_state_dict

    tensors = {k: v.detach().half().contiguous() for k, v in checkpoint_state_dict(base.dit, base.conditioner).items()}
    proj, meta = projection_parts(base.text_projection)
    tensors.update({k: v.half() for k, v in proj.items()})
    meta[BASE_META] = json.dumps({"dit": base.dit.config.to_dict(), **(extra or {})})
    save_file(tensors, str(path), metadata=meta)


def load_base(path: str | Path) -> StableAudioBase:
    from safetensors import safe_open

    from .conditioning import META_KEY as PROJ_META, PREFIX
    from .stable_audio import (StableAudioConditioner, StableAudioDiT, StableAudioDiTConfig,
                               split_checkpoint_state_dict)

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if BASE_META not in meta:
            raise ValueError(f"{Path(path).name}: not an AVLab tiny Stable Audio file (no '{BASE_META}' metadata)")
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    cfg = StableAudioDiTConfig.from_dict(json.loads(meta[BASE_META])["dit"])
    dit_sd, cond_sd = split_checkpoint_state_dict({k: v for k, v in tensors.items() if not k.startswith(PREFIX)})
    dit, conditioner = StableAudioDiT(cfg), StableAudioConditioner()
    dit.load_state_dict(dit_sd)
    conditioner.load_state_dict(cond_sd)
    pm = json.loads(meta[PROJ_META])
    proj = GramTokenProjection(pm["dim"], pm["width"], tuple(pm["modalities"]))
    proj.gram_to_tokens.load_state_dict({"weight": tensors[f"{PREFIX}weight"], "bias": tensors[f"{PREFIX}bias"]})
    return StableAudioBase(dit, conditioner, proj).eval()


def _flow_loss(base: StableAudioBase, x0: torch.Tensor, tokens: torch.Tensor, seconds: float, dropout: float,
               control_fn=None) -> torch.Tensor:
    from .stable_audio import noisy, v_target

    b = x0.shape[0]
    t = torch.rand(b, device=x0.device)
    noise = torch.randn_like(x0)
    keep = (torch.rand(b, 1, 1, device=x0.device) >= dropout).to(tokens.dtype)
    control = control_fn() if control_fn is not None else None
    v = base.v(noisy(x0, noise, t), t, tokens * keep, seconds, control=control)
    return F.mse_loss(v, v_target(x0, noise, t))


class BaseTrainee(nn.Module):
    def __init__(self, base: StableAudioBase, seconds: float, dropout: float):
        super().__init__()
        self.base, self.seconds, self.dropout = base, seconds, dropout

    def forward(self, batch):
        latents, text_embeds = batch
        tokens = self.base.text_projection.gram_to_tokens(text_embeds)[:, None]
        return _flow_loss(self.base, latents, tokens, self.seconds, self.dropout)


def _gram():
    from .weights import BUILTIN_GRAM, load_gram

    return load_gram(BUILTIN_GRAM).float().eval()


@torch.no_grad()
def encode_latents(vae, audio: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([vae.encode_dist(audio[i: i + batch])[0] for i in range(0, audio.shape[0], batch)])


def _data_and_vae(config: dict):
    from .oobleck import load_oobleck

    data = FoleyAudioData(**config.get("data", {}))
    vae = load_oobleck(config.get("vae") or BUILTIN_AUDIO_AE)
    return data, vae


def train_base(config: dict, out: str | Path, resume: bool = False, steps: int | None = None) -> dict:
    from .stable_audio import StableAudioConditioner, StableAudioDiT, StableAudioDiTConfig

    out = Path(out)
    data, vae = _data_and_vae(config)
    mcfg = BaseModelConfig(**config.get("model", {}))
    tcfg = _train_config({"steps": 2500, "lr": 5e-4, "weight_decay": 0.01, "warmup_steps": 200, "cosine": True,
                          "min_lr_ratio": 0.05, "ema": 0.999, "ema_warmup": True}, config, out, resume, steps)
    t0 = time.time()
    clips = render_clips("train", data.train_clips, data)
    latents = encode_latents(vae, clips.audio)
    gram = _gram()
    text = torch.cat([gram.embed_text(clips.captions[i: i + 256]) for i in range(0, len(clips), 256)])
    torch.manual_seed(tcfg.seed)
    dit = StableAudioDiT(StableAudioDiTConfig(io_channels=latents.shape[1], embed_dim=mcfg.embed_dim, depth=mcfg.depth,
                                              num_heads=mcfg.num_heads, project_cond_tokens=mcfg.project_cond_tokens))
    base = StableAudioBase(dit, StableAudioConditioner(), GramTokenProjection(gram.dim, 768, ("text",)))
    seconds = data.frames / data.fps
    trainee = BaseTrainee(base, seconds, mcfg.cfg_dropout)
    batches = IndexedBatches(latents, text, batch_size=int(config.get("batch_size", 32)), seed=tcfg.seed)
    result = train(trainee, lambda net, batch: net(batch), batches, tcfg)
    base = (result.ema_model or result.model).base.float().eval()
    report = {"train_seconds": round(time.time() - t0, 1), "steps": result.step, "last_metrics": result.metrics,
              "latent_std": float(latents.std()),
              "config": {"data": dataclasses.asdict(data), "model": dataclasses.asdict(mcfg), "train": tcfg.to_json()}}
    out.mkdir(parents=True, exist_ok=True)
    save_base(base, out / "stable_audio.safetensors", extra={"seconds": seconds})
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------- stage 3: FoleyGRAM ControlNet
class ControlNetTrainee(nn.Module):
    """Base frozen; the ControlNet and the GRAM video → token projection train."""

    def __init__(self, base: StableAudioBase, net: EnvelopeControlNet, projection: GramTokenProjection,
                 seconds: float, dropout: float):
        super().__init__()
        self.base, self.net, self.projection = base, net, projection
        self.base.requires_grad_(False)
        self.seconds, self.dropout = seconds, dropout

    def forward(self, batch):
        latents, video_embeds, envelopes = batch
        tokens = self.projection.gram_to_tokens(video_embeds)[:, None]
        control_fn = lambda: (lambda h, run_block: self.net.residuals(h, envelopes, run_block))  # noqa: E731
        return _flow_loss(self.base, latents, tokens, self.seconds, self.dropout, control_fn)


@torch.no_grad()
def video_embeddings(gram, frames: torch.Tensor, fps: float) -> torch.Tensor:
    return torch.stack([gram.embed_video(f.float() / 255.0, fps) for f in frames])


def train_controlnet(config: dict, out: str | Path, resume: bool = False, steps: int | None = None) -> dict:
    out = Path(out)
    data, vae = _data_and_vae(config)
    base = load_base(config.get("base") or BUILTIN_BASE)
    tcfg = _train_config({"steps": 1500, "lr": 1e-4, "weight_decay": 0.01, "warmup_steps": 100},
                         config, out, resume, steps)
    t0 = time.time()
    clips = render_clips("train", data.train_clips, data)
    latents = encode_latents(vae, clips.audio)
    envelopes = latent_envelopes(clips.audio, data.sample_rate, latents.shape[-1])
    gram = _gram()
    video = video_embeddings(gram, clips.frames, data.fps)
    torch.manual_seed(tcfg.seed)
    net = EnvelopeControlNet.from_base(base.dit.transformer.layers, base.dit.transformer.dim)
    projection = GramTokenProjection(gram.dim, 768, ("video",))
    projection.load_state_dict(base.text_projection.state_dict())
    seconds = data.frames / data.fps
    trainee = ControlNetTrainee(base, net, projection, seconds, float(config.get("cfg_dropout", 0.1)))
    batches = IndexedBatches(latents, video, envelopes, batch_size=int(config.get("batch_size", 32)), seed=tcfg.seed)
    result = train(trainee, lambda m, batch: m(batch), batches, tcfg)
    trained = result.model
    report = {"train_seconds": round(time.time() - t0, 1), "steps": result.step, "last_metrics": result.metrics,
              "config": {"data": dataclasses.asdict(data), "train": tcfg.to_json()}}
    out.mkdir(parents=True, exist_ok=True)
    save_controlnet(trained.net, trained.projection, out / "envelope_controlnet.safetensors")
    if config.get("evaluate", True):
        report["evaluation"] = evaluate_generation(base, trained.net.eval(), trained.projection.eval(), vae, data,
                                                   split="val", count=int(config.get("eval_clips", 16)),
                                                   steps=int(config.get("eval_steps", 50)))
        report["evaluation"].pop("audio")
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def save_controlnet(net: EnvelopeControlNet, projection: GramTokenProjection, path: str | Path) -> None:
    """The ControlNet and the GRAM video projection in one fp16 file (README: ControlNet file format)."""
    tensors, meta = projection_parts(projection)
    net.save(path, extra_tensors=tensors, extra_meta=meta, dtype=torch.float16)


def load_controlnet(path: str | Path, base: StableAudioBase) -> tuple[EnvelopeControlNet, GramTokenProjection]:
    from .conditioning import load_projection
    from .controlnet import controlnet_for_base

    net = controlnet_for_base(path, base.dit.transformer.layers, base.dit.transformer.dim).float()
    return net, load_projection(path).float()


# -------------------------------------------------------------------------------- the evaluation
@torch.no_grad()
def generate(base: StableAudioBase, tokens: torch.Tensor, length: int, seconds: float, noise_seed: int,
             net: EnvelopeControlNet | None = None, envelope: torch.Tensor | None = None, strength: float = 1.0,
             steps: int = 50, cfg: float = 1.0) -> torch.Tensor:
    """Latents ``[B, C, length]`` for tokens ``[B, k, 768]`` (``cfg`` > 1: classifier-free guidance
    against zero tokens); the ControlNet with ``envelope`` ``[B, 1, length]`` when given."""
    from .stable_audio import sample

    b = tokens.shape[0]
    g = torch.Generator().manual_seed(noise_seed)
    noise = torch.randn(b, base.dit.config.io_channels, length, generator=g)
    control = None
    if net is not None and strength != 0:
        def control(h, run_block):
            env = envelope.repeat(2, 1, 1) if cfg != 1.0 else envelope
            return [strength * r for r in net.residuals(h, env, run_block)]

    def model_fn(x, t):
        if cfg == 1.0:
            return base.v(x, t, tokens, seconds, control=control)
        v = base.v(torch.cat([x, x]), torch.cat([t, t]), torch.cat([tokens, torch.zeros_like(tokens)]), seconds,
                   control=control)
        cond, uncond = v.chunk(2)
        return uncond + cfg * (cond - uncond)

    return sample(model_fn, noise, steps=steps)


def _scores(audio: torch.Tensor, reference: torch.Tensor, sr: int) -> dict:
    """E-L1 (Video-Foley's 16 kHz μ-law envelope, absolute level), the L1 of the peak-normalised causal
    RMS envelopes at the latent rate (Stable-V2A's envelope: timing and shape, any band, any level),
    and the onset error (onsets of the Video-Foley envelope, 8 ms frames)."""
    el1 = [e_l1(a, r, sr) for a, r in zip(audio, reference)]
    length = math.ceil(reference.shape[-1] / sr * STABLE_AUDIO_RATE)
    shape = (latent_envelopes(audio, sr, length) - latent_envelopes(reference, sr, length)).abs().mean((1, 2))
    onsets = [onset_error_ms(onset_times(video_foley_envelope(a, sr)), onset_times(video_foley_envelope(r, sr)))
              for a, r in zip(audio, reference)]
    finite = [o for o in onsets if math.isfinite(o)]
    return {"e_l1": round(_mean(el1), 4), "rms_envelope_l1": round(float(shape.mean()), 4),
            "onset_error_ms": round(_mean(finite), 1) if finite else math.inf,
            "clips_without_onsets": len(onsets) - len(finite)}


@torch.no_grad()
def evaluate_generation(base, net, projection, vae, data: FoleyAudioData, split: str = "test", count: int = 32,
                        steps: int = 50, cfg: float = 1.0, seed: int = 0, mapper=None, offset: int = 0) -> dict:
    """Generate ``count`` clips of ``split`` (motions ``data.motions``) from their video: without the
    ControlNet, with it on the real sound's envelope and (``mapper``) on the predicted envelope."""
    clips = render_clips(split, count, data, motions=tuple(data.motions), offset=offset)
    gram = _gram()
    tokens = projection.gram_to_tokens(video_embeddings(gram, clips.frames, data.fps))[:, None]
    latents = encode_latents(vae, clips.audio)
    length = latents.shape[-1]
    envelopes = latent_envelopes(clips.audio, data.sample_rate, length)
    seconds = data.frames / data.fps
    sr, n = data.sample_rate, clips.audio.shape[-1]
    decode = lambda z: torch.cat([vae.decode(z[i: i + 8]) for i in range(0, z.shape[0], 8)])[..., :n]  # noqa: E731
    runs = {"autoencoder reconstruction (floor)": decode(latents)}
    runs["without ControlNet"] = decode(generate(base, tokens, length, seconds, seed, steps=steps, cfg=cfg))
    runs["ControlNet, envelope of the real sound"] = decode(
        generate(base, tokens, length, seconds, seed, net, envelopes, steps=steps, cfg=cfg))
    if mapper is not None:
        from .envelope import Envelope

        pred = []
        for f in clips.frames:
            env = mapper.envelope(f.float() / 255.0, data.fps)
            pred.append(Envelope(env.values, env.rate).resample(STABLE_AUDIO_RATE, length).values)
        pred = torch.stack(pred)[:, None]
        pred = pred / pred.amax(-1, keepdim=True).clamp(min=1e-8)
        runs["ControlNet, envelope predicted from the video (RMS mapper)"] = decode(
            generate(base, tokens, length, seconds, seed, net, pred, steps=steps, cfg=cfg))
    report = {"split": split, "clips": len(clips), "motions": list(data.motions), "steps": steps, "cfg": cfg,
              "latent_frames": length, "latent_frame_ms": round(1000 / STABLE_AUDIO_RATE, 1)}
    report["results"] = {name: _scores(audio, clips.audio, sr) for name, audio in runs.items()}
    base_el1 = report["results"]["without ControlNet"]["e_l1"]
    with_cn = report["results"]["ControlNet, envelope of the real sound"]
    report["e_l1_ratio_with_vs_without"] = round(with_cn["e_l1"] / max(base_el1, 1e-9), 3)
    report["rms_envelope_l1_ratio_with_vs_without"] = round(
        with_cn["rms_envelope_l1"] / max(report["results"]["without ControlNet"]["rms_envelope_l1"], 1e-9), 3)
    report["audio"] = {name: audio for name, audio in runs.items()}
    return report


def cli_train(system: str, config_path: str | None, out: str, resume: bool = False, steps: int | None = None) -> dict:
    """Entry of ``python -m avlab train foley-audio-ae`` / ``foley-base`` / ``foley-controlnet``."""
    run = {"foley-audio-ae": train_audio_ae, "foley-base": train_base, "foley-controlnet": train_controlnet}[system]
    return run(read_config_file(config_path, NODE), out, resume=resume, steps=steps)
