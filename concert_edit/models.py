"""The concert-cutting models (papers.md §3), their files, and the callables the edit decision uses.

``WhenToCut`` — is there a cut in this 4 s segment? (:class:`WhenToCutConfig` documents the sizes)::

    mel [B,128,400] ─ per frame: conv blocks ─► [B,400,d] + sinusoidal positions (400 frames)
        (1-D conv over frequency, GELU → Linear → LayerNorm → SwiGLU, residual)
    ─► average-pool ``time_pool`` frames ─► [B,400/time_pool,d]
    [CLS = learned + Linear(l) (+ Linear(LayerNorm(image)) in the multimodal variant)] ⊕ tokens
    ─► Transformer encoder (pre-norm) ─► LayerNorm(CLS) → Linear → logit

The paper publishes no sizes; the defaults are small enough to train on one CPU thread in minutes on
the synthetic domain (≈ 90 k parameters).

``HowToCut`` — which camera next? The current shot's image embedding and the candidate cameras'
embeddings (same concert, the frame at the cut) are projected to ``d`` (LayerNorm → Linear, + a
current/candidate type embedding), mixed by a small Transformer encoder (padding candidates masked
out of attention), then the current shot attends over the candidates: ``logit_i = q·k_i / √d`` with
``q`` from the current shot and ``k_i`` from candidate ``i``; padded candidates get ``−inf``.

Files (:func:`save_concert_model`): ``<name>.safetensors`` (fp16 weights) and ``<name>.json``
(``{"kind": "when"|"how", "config", "shot_stats", "image_encoder", "record"}``). A model folder
(:func:`load_concert_models`) holds ``when_audio``, ``how`` and optionally ``when_multimodal``.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..common import media
from ..common.errors import NodeInputError, check_fields
from . import features as F

WHEN_FILES = {"audio": "when_audio", "multimodal": "when_multimodal"}
HOW_FILE = "how"
NODE = "AVLab concert models"


def _from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise NodeInputError(cls.__name__, sorted(unknown)[0], f"one of the fields {sorted(names)}", "unknown field")
    return cls(**d)


@dataclass
class WhenToCutConfig:
    """Sizes of :class:`WhenToCut`.

    Args:
        n_mels, frames: the log-mel segment (128 × 400, :mod:`.features`).
        conv_channels, conv_kernel, conv_stride: the 1-D convolution over frequency of each conv
            block (one input channel; the first block sees the 128 mel bands, later ones the
            ``d_model`` features of the previous block).
        conv_blocks: number of conv blocks (each: conv over frequency → Linear to ``d_model`` →
            LayerNorm → SwiGLU with hidden ``swiglu_hidden``, residual).
        d_model, heads, layers, ff, dropout: the Transformer encoder (pre-norm, GELU feed-forward).
        time_pool: frames averaged into one token after the positions (400 / 4 = 100 tokens).
        image_dim: 0 = audio-only; ``D`` = multimodal (an image embedding of width ``D`` is a second
            input of the CLS token).
        mel_mean, mel_std: input normalisation of the log-mel (fitted on the training segments).
    """

    n_mels: int = F.N_MELS
    frames: int = F.SEGMENT_FRAMES
    conv_channels: int = 8
    conv_kernel: int = 7
    conv_stride: int = 4
    conv_blocks: int = 2
    d_model: int = 48
    swiglu_hidden: int = 96
    heads: int = 4
    layers: int = 2
    ff: int = 96
    dropout: float = 0.1
    time_pool: int = 4
    image_dim: int = 0
    mel_mean: float = 0.0
    mel_std: float = 1.0

    def validate(self) -> None:
        check_fields(self, "WhenToCutConfig", (
            ("conv_blocks", self.conv_blocks >= 1, "≥ 1"),
            ("d_model", self.d_model >= 8 and self.d_model % self.heads == 0, "≥ 8 and a multiple of heads"),
            ("time_pool", self.time_pool >= 1 and self.frames % self.time_pool == 0, "a divisor of frames"),
            ("image_dim", self.image_dim >= 0, "0 (audio-only) or the image embedding width"),
            ("mel_std", self.mel_std > 0, "> 0"),
        ))

    @property
    def multimodal(self) -> bool:
        return self.image_dim > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WhenToCutConfig":
        return _from_dict(cls, d)


@dataclass
class HowToCutConfig:
    """Sizes of :class:`HowToCut`: ``embed_dim`` (the image encoder's width), ``d_model``, ``heads``,
    ``layers`` (Transformer encoder over current + candidates), ``ff``, ``dropout``."""

    embed_dim: int = 147
    d_model: int = 64
    heads: int = 4
    layers: int = 1
    ff: int = 128
    dropout: float = 0.1

    def validate(self) -> None:
        check_fields(self, "HowToCutConfig", (
            ("embed_dim", self.embed_dim >= 1, "the image embedding width ≥ 1"),
            ("d_model", self.d_model >= 8 and self.d_model % self.heads == 0, "≥ 8 and a multiple of heads"),
        ))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HowToCutConfig":
        return _from_dict(cls, d)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed ``[length, dim]`` sinusoidal positions (Vaswani et al.): sin on even, cos on odd features."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, -1)
        return self.down(nn.functional.silu(gate) * up)


class ConvBlock(nn.Module):
    """Per time frame: 1-D conv over the ``bins`` feature axis (GELU) → Linear → LayerNorm → SwiGLU,
    the SwiGLU added to the Linear's output (residual)."""

    def __init__(self, bins: int, channels: int, kernel: int, stride: int, d_model: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel, stride=stride, padding=kernel // 2)
        out_bins = (bins + 2 * (kernel // 2) - kernel) // stride + 1
        self.proj = nn.Linear(channels * out_bins, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.mlp = SwiGLU(d_model, hidden)

    def forward(self, x):                               # [B,T,bins] → [B,T,d]
        b, t, bins = x.shape
        h = nn.functional.gelu(self.conv(x.reshape(b * t, 1, bins)))
        h = self.proj(h.flatten(1)).view(b, t, -1)
        return h + self.mlp(self.norm(h))


def _encoder(d_model: int, heads: int, ff: int, dropout: float, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class WhenToCut(nn.Module):
    """Probability that a cut falls in a segment (see the module docstring)."""

    def __init__(self, config: WhenToCutConfig | None = None):
        super().__init__()
        self.config = cfg = config or WhenToCutConfig()
        cfg.validate()
        blocks, bins = [], cfg.n_mels
        for _ in range(cfg.conv_blocks):
            blocks.append(ConvBlock(bins, cfg.conv_channels, cfg.conv_kernel, cfg.conv_stride, cfg.d_model,
                                    cfg.swiglu_hidden))
            bins = cfg.d_model
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("positions", sinusoidal_positions(cfg.frames, cfg.d_model), persistent=False)
        self.cls = nn.Parameter(torch.zeros(cfg.d_model))
        self.since = nn.Linear(1, cfg.d_model)
        self.image = (nn.Sequential(nn.LayerNorm(cfg.image_dim), nn.Linear(cfg.image_dim, cfg.d_model))
                      if cfg.multimodal else None)
        self.encoder = _encoder(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout, cfg.layers)
        self.head = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, 1))

    def forward(self, mel: torch.Tensor, since_cut: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """``mel [B,128,400]`` (log-mel), ``since_cut [B]`` (the normalised scalar ``l``), ``image [B,D]``
        (multimodal only) → logits ``[B]``."""
        cfg = self.config
        if mel.dim() != 3 or tuple(mel.shape[1:]) != (cfg.n_mels, cfg.frames):
            raise NodeInputError("WhenToCut", "mel", f"[B,{cfg.n_mels},{cfg.frames}] log-mel segments",
                                 tuple(mel.shape))
        if cfg.multimodal and (image is None or image.shape != (len(mel), cfg.image_dim)):
            raise NodeInputError("WhenToCut", "image", f"[B,{cfg.image_dim}] image embeddings (multimodal model)",
                                 None if image is None else tuple(image.shape))
        x = ((mel.float() - cfg.mel_mean) / cfg.mel_std).transpose(1, 2)        # [B,T,128]
        for block in self.blocks:
            x = block(x)
        x = x + self.positions
        if cfg.time_pool > 1:
            x = nn.functional.avg_pool1d(x.transpose(1, 2), cfg.time_pool).transpose(1, 2)
        cls = self.cls + self.since(since_cut.float().view(-1, 1))
        if self.image is not None:
            cls = cls + self.image(image.float())
        h = self.encoder(torch.cat([cls[:, None], x], 1))
        return self.head(h[:, 0]).squeeze(-1)

    @torch.no_grad()
    def predict(self, mel, since_cut, image=None, batch: int = 64) -> torch.Tensor:
        """Probabilities ``[B]`` in eval mode, in batches."""
        was = self.training
        self.eval()
        out = [torch.sigmoid(self(mel[i:i + batch], since_cut[i:i + batch],
                                  None if image is None else image[i:i + batch]))
               for i in range(0, len(mel), batch)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0)


class HowToCut(nn.Module):
    """A score per candidate camera for the next shot (see the module docstring)."""

    def __init__(self, config: HowToCutConfig | None = None):
        super().__init__()
        self.config = cfg = config or HowToCutConfig()
        cfg.validate()
        self.proj = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.d_model))
        self.kind = nn.Embedding(2, cfg.d_model)                     # 0 current shot, 1 candidate
        self.encoder = _encoder(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout, cfg.layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.key = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, current: torch.Tensor, candidates: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``current [B,D]``, ``candidates [B,N,D]``, ``mask [B,N]`` (True = a real candidate) → logits
        ``[B,N]``, ``−inf`` where ``mask`` is False. Every row needs at least one real candidate."""
        cfg = self.config
        b, n = candidates.shape[:2]
        if current.shape != (b, cfg.embed_dim) or candidates.shape[2:] != (cfg.embed_dim,):
            raise NodeInputError("HowToCut", "embeddings", f"current [B,{cfg.embed_dim}] and candidates "
                                 f"[B,N,{cfg.embed_dim}]", (tuple(current.shape), tuple(candidates.shape)))
        mask = torch.ones(b, n, dtype=torch.bool, device=candidates.device) if mask is None else mask.bool()
        if mask.shape != (b, n) or not bool(mask.any(1).all()):
            raise NodeInputError("HowToCut", "mask", "[B,N] with at least one real candidate per row",
                                 tuple(mask.shape))
        tokens = self.proj(torch.cat([current[:, None], candidates], 1).float())
        kinds = torch.ones(n + 1, dtype=torch.long, device=tokens.device)
        kinds[0] = 0
        tokens = tokens + self.kind(kinds)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], 1)
        h = self.norm(self.encoder(tokens, src_key_padding_mask=pad))
        q, k = self.query(h[:, 0]), self.key(h[:, 1:])
        logits = torch.einsum("bd,bnd->bn", q, k) / math.sqrt(cfg.d_model)
        return logits.masked_fill(~mask, float("-inf"))


# -- files ---------------------------------------------------------------------------------------------

def save_concert_model(directory: str | Path, name: str, model: WhenToCut | HowToCut, *,
                       shot_stats: F.ShotStats | None = None, image_encoder: dict | None = None,
                       record: dict | None = None) -> Path:
    """Write ``<name>.safetensors`` (fp16) and ``<name>.json`` (kind, config, shot stats, image encoder
    description, training record) into ``directory``; returns the weights path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind = "when" if isinstance(model, WhenToCut) else "how"
    if kind == "when" and shot_stats is None:
        raise NodeInputError("save_concert_model", "shot_stats",
                             "the training ShotStats (a when-to-cut model needs them)")
    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = directory / f"{name}.safetensors"
    save_file(sd, str(path), metadata={"format": f"avlab-concert-{kind}"})   # one key: byte-reproducible
    meta = {"kind": kind, "config": model.config.to_dict(),
            "shot_stats": shot_stats.to_dict() if shot_stats else None,
            "image_encoder": image_encoder, "record": record or {}}
    (directory / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_concert_model(directory: str | Path, name: str, dtype: torch.dtype = torch.float32):
    """``(model, meta)`` from ``<name>.safetensors`` + ``<name>.json`` in ``directory`` (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, meta_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    for path in (weights, meta_path):
        if not path.is_file():
            raise NodeInputError(NODE, "model folder", f"{path.name} in {directory} (made by "
                                 "scripts/train_concert_models.py or `python -m avlab train concert-when|concert-how`)",
                                 "missing" if directory.is_dir() else "no such folder")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") == "when":
        model: nn.Module = WhenToCut(WhenToCutConfig.from_dict(meta["config"]))
    elif meta.get("kind") == "how":
        model = HowToCut(HowToCutConfig.from_dict(meta["config"]))
    else:
        raise NodeInputError(NODE, name, "a JSON with kind 'when' or 'how'", meta.get("kind"))
    state = load_file(str(weights))
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise NodeInputError(NODE, name, f"weights matching {meta_path.name}'s config",
                             str(exc).splitlines()[0]) from None
    return model.to(dtype).eval(), meta


def _camera_frames(cameras, node: str) -> list:
    """A list of per-camera frame sequences (``cameras[k][t] → [H,W,3]``; a ``[K,T,H,W,3]`` tensor works)."""
    cams = list(cameras) if not isinstance(cameras, torch.Tensor) else [c for c in cameras]
    if not cams or any(len(c) == 0 for c in cams):
        raise NodeInputError(node, "cameras", "one or more cameras, each with frames [T,H,W,3]", len(cams))
    lengths = {len(c) for c in cams}
    if len(lengths) != 1:
        raise NodeInputError(node, "cameras", "cameras of the same length (synchronised)", sorted(lengths))
    return cams


@dataclass
class ConcertModels:
    """The models of one folder (:func:`load_concert_models`) and the factories of the callables that
    :mod:`avlab.concert_edit.decide` uses.

    * ``make_when_fn(waveform, sample_rate, cameras=None, fps=None, *, variant="audio", encoder=None,
      camera=0) -> when_fn(segment_index: int, since_cut_s: float) -> float``
    * ``make_how_fn(cameras, fps, *, encoder=None) -> how_fn(current_camera: int, cut_time_s: float,
      candidates: list[int]) -> list[float]``
    """

    directory: Path
    when: dict[str, WhenToCut]
    how: HowToCut | None
    shot_stats: F.ShotStats
    meta: dict[str, dict] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return sorted(self.when)

    def threshold(self, variant: str = "audio", default: float = 0.5) -> float:
        """The cut threshold tuned on the model's validation concerts (its record), else ``default``."""
        record = self.meta.get(WHEN_FILES.get(variant, ""), {}).get("record") or {}
        return float((record.get("eval") or {}).get("threshold", default))

    def _encoder(self, name: str, encoder: F.ImageEncoder | None, dim: int) -> F.ImageEncoder:
        enc = encoder if encoder is not None else F.encoder_from_dict(self.meta[name].get("image_encoder"))
        return F.check_encoder(enc, dim, NODE)

    def make_when_fn(self, waveform: torch.Tensor, sample_rate: int, cameras=None, fps=None, *,
                     variant: str = "audio", encoder: F.ImageEncoder | None = None, camera: int = 0,
                     device: str | torch.device = "cpu") -> Callable[[int, float], float]:
        """``when_fn(segment_index, since_cut_s) -> P(cut in segment)`` for one recording (log-mels are
        computed when a segment is first asked for; ``when_fn.num_segments`` and ``when_fn.segment_times``
        describe the segments).

        Args:
            waveform, sample_rate: the master audio (``[S]``, ``[C,S]`` or ``[1,C,S]``, any rate); its
                segments are :func:`avlab.concert_edit.features.segment_times` of its duration (the
                ``segment_index`` of ``when_fn``).
            cameras, fps: the camera frames (``cameras[k][t] → [H,W,3]``; a ``[K,T,H,W,3]`` tensor
                works) and their frame rate; needed by the multimodal variant only, which embeds the
                latest frame of each segment of camera ``camera`` (default 0, the wide shot).
            variant: ``"audio"`` or ``"multimodal"`` (:attr:`variants` lists the loaded ones).
            encoder: an :class:`~avlab.concert_edit.features.ImageEncoder` (default: the built-in one
                the model was trained with; another must have the same ``dim``).
        """
        node = "AVLab concert when_fn"
        if variant not in self.when:
            raise NodeInputError(node, "variant", f"one of {self.variants} (in {self.directory})", variant)
        model = self.when[variant].to(device)
        wave = F.prepare_audio(waveform, sample_rate, node=node)
        times = F.segment_times(wave.shape[-1] / F.SAMPLE_RATE)
        starts = [s for s, _ in times]

        @functools.lru_cache(maxsize=32)            # a segment's log-mel, computed when first asked for
        def mel(i: int) -> torch.Tensor:
            return F.log_mel_frames(wave, round(starts[i] * F.FRAMES_PER_S), F.SEGMENT_FRAMES)[None]

        images = None
        if model.config.multimodal:
            if cameras is None or fps is None:
                raise NodeInputError(node, "cameras", "camera frames and their fps (multimodal variant)", None)
            cams = _camera_frames(cameras, node)
            if not 0 <= camera < len(cams):
                raise NodeInputError(node, "camera", f"a camera index in 0..{len(cams) - 1}", camera)
            enc = self._encoder(WHEN_FILES[variant], encoder, model.config.image_dim)
            fps = media.as_fps(fps, node=node)
            last = F.segment_last_frames(len(cams[camera]), fps, starts)
            images = None                   # embedded 32 frames at a time: never a stack of every segment's frame
            if last:
                images = torch.cat([enc.embed(torch.stack([torch.as_tensor(cams[camera][i]) for i in last[j:j + 32]]))
                                    for j in range(0, len(last), 32)])
        stats = self.shot_stats

        @torch.no_grad()
        def when_fn(segment_index: int, since_cut_s: float) -> float:
            if not 0 <= segment_index < len(starts):
                raise NodeInputError(node, "segment_index", f"a segment in 0..{len(starts) - 1}", segment_index)
            since = torch.tensor([float(stats.normalise(float(since_cut_s)))], device=device)
            img = None if images is None else images[segment_index:segment_index + 1].to(device)
            return float(torch.sigmoid(model(mel(int(segment_index)).to(device), since, img)))

        when_fn.num_segments = len(starts)          # type: ignore[attr-defined]
        when_fn.segment_times = times               # type: ignore[attr-defined]
        return when_fn

    def make_how_fn(self, cameras, fps, *, encoder: F.ImageEncoder | None = None,
                    device: str | torch.device = "cpu") -> Callable[[int, float, list[int]], list[float]]:
        """``how_fn(current_camera, cut_time_s, candidates) -> scores`` (one logit per candidate, higher =
        better) for one set of synchronised cameras (``cameras[k][t] → [H,W,3]``, frame ``t`` at
        ``t / fps``). The current shot is embedded on its last frame before the cut, the candidates on
        the frame at the cut (:func:`avlab.concert_edit.features.frame_index`); embeddings are cached."""
        node = "AVLab concert how_fn"
        if self.how is None:
            raise NodeInputError(node, "model folder", f"{HOW_FILE}.safetensors in {self.directory}", "missing")
        model = self.how.to(device)
        cams = _camera_frames(cameras, node)
        enc = self._encoder(HOW_FILE, encoder, model.config.embed_dim)
        fps = media.as_fps(fps, node=node)
        T = len(cams[0])
        cache: dict[tuple[int, int], torch.Tensor] = {}

        def emb(k: int, t: int) -> torch.Tensor:
            if (k, t) not in cache:
                cache[(k, t)] = enc.embed(torch.as_tensor(cams[k][t])[None].float())[0]
            return cache[(k, t)]

        @torch.no_grad()
        def how_fn(current_camera: int, cut_time_s: float, candidates: Sequence[int]) -> list[float]:
            cand = [int(c) for c in candidates]
            if not cand:
                return []
            for k in [current_camera, *cand]:
                if not 0 <= int(k) < len(cams):
                    raise NodeInputError(node, "camera", f"a camera index in 0..{len(cams) - 1}", k)
            f = F.frame_index(cut_time_s, fps, T)
            cur = emb(int(current_camera), max(0, f - 1))[None].to(device)
            cs = torch.stack([emb(k, f) for k in cand])[None].to(device)
            return model(cur, cs).squeeze(0).tolist()

        return how_fn


def load_concert_models(directory: str | Path, dtype: torch.dtype = torch.float32) -> ConcertModels:
    """Load a model folder: ``when_audio`` (required), ``when_multimodal`` (optional) and ``how``
    (required), each ``.safetensors`` + ``.json``. A missing file is a :class:`NodeInputError` naming
    the folder and the file. Returns :class:`ConcertModels` (its ``make_when_fn`` / ``make_how_fn``
    build the ``when_fn`` / ``how_fn`` callables of :mod:`avlab.concert_edit` for one recording)."""
    directory = Path(directory)
    when, meta = {}, {}
    for variant, name in WHEN_FILES.items():
        if variant == "multimodal" and not (directory / f"{name}.safetensors").is_file():
            continue
        when[variant], meta[name] = load_concert_model(directory, name, dtype)
    how, meta[HOW_FILE] = load_concert_model(directory, HOW_FILE, dtype)
    stats = F.ShotStats.from_dict(meta[WHEN_FILES["audio"]]["shot_stats"])
    return ConcertModels(directory, when, how, stats, meta)
