"""Training and evaluation of the concert-cutting models on the synthetic domain (papers.md §3).

``python -m avlab train concert-when --config when.json --out DIR`` and ``... concert-how ...`` run
:func:`train_from_config` on the pack's shared loop (:func:`avlab.common.training.train`: AdamW,
warm-up + cosine, grad clip, EMA, exact resume from ``DIR/checkpoint``, DDP under ``torchrun``).
The config JSON holds up to four objects, every key optional (defaults below)::

    {"data":  {ConcertDataConfig fields},     "model": {WhenToCutConfig | HowToCutConfig fields},
     "train": {TrainConfig fields},           "variant": "audio" | "multimodal"   (concert-when)}

or, for concert-when on real edited videos (below), ``"data": {"manifest": "labels.json",
"val_fraction": 0.2, "test_manifest": null, "encoder_rows": 6, "encoder_cols": 8, "frame_side": 256,
"chunk_size": 32}`` (:class:`ManifestDataConfig`; a ``data`` object with a ``manifest`` key is one).

Data (:class:`ConcertDataConfig`): three disjoint seed ranges of synthetic concerts — train, val
(thresholds and choices are tuned there only) and test (reported, never tuned on). Every concert is
reduced to what the models see (:class:`ConcertFeatures`): the whole-concert log-mel, the built-in
image embeddings of every camera frame, the cut frames and the ground-truth cameras.

* **When** examples: training windows start on every video frame (4 s, label 1 when a cut falls
  strictly between the window's first and last frame, as :meth:`avlab.synthetic.Concert.segment_labels`);
  evaluation uses the protocol's segments (4 s every 2 s) with the ground-truth time since the last
  cut. Metrics: precision, recall, F1 at the threshold that maximises F1 on val, ROC-AUC — for the
  model, the Poisson and exponential baselines (:mod:`.baselines`), chance (always cut: the best F1
  a predictor without information reaches; AUC 0.5) and a breath (silence) detector (diagnostic:
  how far silence alone goes on the hardened concerts).
* **Real edited videos** (``concert-when`` only): ``"data": {"manifest": "labels.json", ...}``
  (:class:`ManifestDataConfig`) trains and evaluates on a pseudo-label manifest written by
  ``python -m avlab concert label VIDEOS --out labels.json`` (:mod:`.pseudolabels`) instead of the
  synthetic concerts. Per video: its audio (mono 16 kHz, :func:`.features.prepare_audio`) → whole-file
  log-mel; the manifest's cut frames → training windows and shot lengths; for the multimodal variant
  the built-in encoder's embeddings of the program frames (decoded and embedded chunk by chunk,
  ``frame_side`` pixels at most). Windows holding an ambiguous candidate and no cut (manifest label
  ``null``) are masked out of training and evaluation (``window_table(...)["mask"]``; counts in the
  record). Split rule (deterministic, independent of the manifest's order): the videos are sorted by
  the SHA-1 of their manifest ``path`` and the first ``max(1, round(val_fraction · N))`` are val (the
  threshold is tuned there), the rest train (N ≥ 2). ``"test_manifest"`` (optional) is a second
  manifest reported as held-out test; without it the evaluation has val only. Relative video paths
  are resolved against the manifest's folder, then the working directory. ``concert-how`` refuses a
  manifest: a program video shows one camera at a time and carries no camera identities.
* **How** examples: every cut; the current shot's embedding is its last frame before the cut, the
  candidates are all the other cameras of the same concert at the cut frame. Metrics: Recall@1/@3
  against chance (``k / candidates``) and the brightest candidate (diagnostic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..common import media
from ..common.errors import NodeInputError
from ..common.training import IndexedBatches, TrainConfig, rank_info, read_config_file, train
from ..synthetic.concert import Concert, ConcertConfig, make_concert
from . import features as F
from .baselines import ExponentialShotModel, PoissonShotModel
from .models import (HOW_FILE, WHEN_FILES, HowToCut, HowToCutConfig, WhenToCut, WhenToCutConfig,
                     save_concert_model)

logger = logging.getLogger(__name__)
NODE = "avlab train concert"


# -- data -----------------------------------------------------------------------------------------------

@dataclass
class ConcertDataConfig:
    """Synthetic concerts of the proof: seeds ``train_seed + i`` (i < train_concerts), likewise val/test.

    The concerts are harder than the generator's defaults where a shortcut would otherwise work:
    phrases of 3–14 s (time since the last cut alone is a weak predictor), inner breaths and
    exposure/spotlight jitter (:mod:`avlab.synthetic.concert`); one wide + one close-up per performer.
    """

    train_seed: int = 10_000
    train_concerts: int = 96
    val_seed: int = 20_000
    val_concerts: int = 16
    test_seed: int = 30_000
    test_concerts: int = 16
    duration: float = 60.0
    fps: float = 5.0
    height: int = 36
    width: int = 64
    num_cameras: int = 5
    num_performers: int = 4
    min_phrase: float = 3.0
    max_phrase: float = 14.0
    inner_breaths: float = 0.6
    lighting: float = 0.3
    encoder_rows: int = 6
    encoder_cols: int = 8

    def concert_config(self, seed: int) -> ConcertConfig:
        return ConcertConfig(seed=seed, num_cameras=self.num_cameras, duration=self.duration, fps=self.fps,
                             height=self.height, width=self.width, sample_rate=F.SAMPLE_RATE,
                             num_performers=self.num_performers, min_phrase=self.min_phrase,
                             max_phrase=self.max_phrase, inner_breaths=self.inner_breaths, lighting=self.lighting)

    def seeds(self, split: str) -> list[int]:
        if split not in ("train", "val", "test"):
            raise NodeInputError(NODE, "split", "train, val or test", split)
        base, n = getattr(self, f"{split}_seed"), getattr(self, f"{split}_concerts")
        return list(range(base, base + n))

    def encoder(self) -> F.ColourLayoutEncoder:
        return F.ColourLayoutEncoder(self.encoder_rows, self.encoder_cols)

    def validate(self) -> None:
        ranges = {s: set(self.seeds(s)) for s in ("train", "val", "test")}
        if ranges["train"] & ranges["val"] or ranges["train"] & ranges["test"] or ranges["val"] & ranges["test"]:
            raise NodeInputError(NODE, "data seeds", "disjoint train/val/test seed ranges",
                                 {s: (min(r), max(r)) for s, r in ranges.items() if r})
        for s in ("train", "val"):
            if getattr(self, f"{s}_concerts") < 1:
                raise NodeInputError(NODE, f"{s}_concerts", "≥ 1", getattr(self, f"{s}_concerts"))
        self.concert_config(0).validate(NODE)


@dataclass
class ConcertFeatures:
    """One concert as the models see it."""

    seed: int
    fps: float
    mel: torch.Tensor              # [128, F] fp16, whole concert (features.log_mel)
    images: torch.Tensor           # [K, T, D] built-in embeddings of every camera frame
    cut_frames: list[int]
    shot_cameras: list[int]        # camera of every shot (ground truth)
    shot_lengths: list[float]      # seconds, every complete shot (not the one cut by the end)
    ambiguous_frames: list[int] = field(default_factory=list)   # windows with one and no cut are masked
    name: str = ""                 # the video's path (manifest data)

    @property
    def num_frames(self) -> int:
        return self.images.shape[1]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def concert_features(concert: Concert, encoder: F.ImageEncoder) -> ConcertFeatures:
    wave = F.prepare_audio(concert.audio, concert.sample_rate)
    K, T, H, W, _ = concert.views.shape
    images = encoder.embed(concert.views.reshape(K * T, H, W, 3)).view(K, T, -1)
    shots = concert.shots
    return ConcertFeatures(concert.config.seed, concert.fps, F.log_mel(wave).half(), images,
                           list(concert.cut_frames), [c for _, _, c in shots],
                           [round(b - a, 4) for a, b, _ in shots[:-1]])


def load_split(data: ConcertDataConfig, split: str) -> list[ConcertFeatures]:
    enc = data.encoder()
    t0 = time.perf_counter()
    out = [concert_features(make_concert(data.concert_config(s)), enc) for s in data.seeds(split)]
    logger.info("concert data: %d %s concerts (seeds %s..%s) in %.0f s", len(out), split,
                data.seeds(split)[0] if out else "-", data.seeds(split)[-1] if out else "-",
                time.perf_counter() - t0)
    return out


def window_table(concerts: Sequence[ConcertFeatures], starts: str = "frames") -> dict[str, torch.Tensor]:
    """Every window of every concert: ``concert``, ``mel_start`` (mel frame), ``last_frame`` (latest video
    frame), ``since`` (s since the last cut), ``label``, ``mask`` (False: an ambiguous candidate and no
    cut in the window, label unknown — keep it out, :func:`valid_windows`). ``starts="frames"``: a window
    on every video frame (training); ``"protocol"``: the 2 s-hop segments
    (:func:`avlab.concert_edit.features.segment_times`)."""
    rows = []
    for ci, c in enumerate(concerts):
        if starts == "protocol":
            times = [s for s, _ in F.segment_times(c.duration)]
        else:
            n = int(round((c.duration - F.SEGMENT_S) * c.fps + 1e-9)) + 1
            times = [f / c.fps for f in range(max(0, n))]
        spans = F.segment_frame_spans(c.num_frames, c.fps, times)
        cuts = [f / c.fps for f in c.cut_frames]
        for s, (first, lf) in zip(times, spans):
            label = int(any(first < cf <= lf for cf in c.cut_frames))
            keep = int(label or not any(first < a <= lf for a in c.ambiguous_frames))
            rows.append((ci, round(s * F.FRAMES_PER_S), lf, F.since_last_cut(s, cuts), label, keep))
    t = torch.tensor(rows, dtype=torch.float64).view(-1, 6)
    return {"concert": t[:, 0].long(), "mel_start": t[:, 1].long(), "last_frame": t[:, 2].long(),
            "since": t[:, 3].float(), "label": t[:, 4].float(), "mask": t[:, 5].bool()}


def valid_windows(table: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rows of a :func:`window_table` whose label is known (``mask`` True)."""
    keep = table["mask"]
    return {k: v[keep] for k, v in table.items()}


@dataclass
class ManifestDataConfig:
    """Real edited concert videos from a pseudo-label manifest (module docstring): ``manifest`` (the
    train + val videos), ``val_fraction`` of them for val (SHA-1 order of their paths), an optional
    ``test_manifest`` (held out), the built-in encoder grid, the longer side frames are decoded at
    for the embeddings (``frame_side``, 0 = native) and the frames per decoded chunk."""

    manifest: str = ""
    val_fraction: float = 0.2
    test_manifest: str | None = None
    encoder_rows: int = 6
    encoder_cols: int = 8
    frame_side: int = 256
    chunk_size: int = 32

    def encoder(self) -> F.ColourLayoutEncoder:
        return F.ColourLayoutEncoder(self.encoder_rows, self.encoder_cols)

    def validate(self) -> None:
        if not isinstance(self.manifest, str) or not self.manifest:
            raise NodeInputError(NODE, "data.manifest", "the path of a manifest JSON (`avlab concert label`)",
                                 self.manifest or "empty")
        v = self.val_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise NodeInputError(NODE, "data.val_fraction", "a fraction strictly between 0 and 1", v)
        if self.test_manifest is not None and (not isinstance(self.test_manifest, str) or not self.test_manifest):
            raise NodeInputError(NODE, "data.test_manifest", "the path of a manifest JSON, or null", self.test_manifest)
        for name in ("frame_side", "chunk_size"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, int) or x < (0 if name == "frame_side" else 1):
                raise NodeInputError(NODE, f"data.{name}", "an integer ≥ 0" if name == "frame_side" else "an integer ≥ 1", x)
        self.encoder()


def read_manifest(path: str | Path, key: str = "data.manifest") -> tuple[list[dict], Path]:
    """The video entries of a pseudo-label manifest (checked), and the manifest's folder."""
    from .pseudolabels import MANIFEST_FORMAT, MANIFEST_VERSION

    path = Path(path)
    expected = f"a pseudo-label manifest JSON ({MANIFEST_FORMAT} v{MANIFEST_VERSION}, `avlab concert label`)"
    if not path.is_file():
        raise NodeInputError(NODE, key, expected, f"no file {path}")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NodeInputError(NODE, key, expected, f"{path}: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise NodeInputError(NODE, key, expected, f"{path}: format {m.get('format') if isinstance(m, dict) else type(m).__name__!r}")
    if not isinstance(m.get("version"), int) or m["version"] > MANIFEST_VERSION:
        raise NodeInputError(NODE, key, expected, f"{path}: version {m.get('version')!r}")
    settings = m.get("settings") or {}
    if (settings.get("segment_s", F.SEGMENT_S), settings.get("hop_s", F.HOP_S)) != (F.SEGMENT_S, F.HOP_S):
        raise NodeInputError(NODE, key, f"segments of {F.SEGMENT_S:g} s every {F.HOP_S:g} s (the models' protocol)",
                             f"{path}: {settings.get('segment_s')} s every {settings.get('hop_s')} s")
    videos = m.get("videos")
    if not isinstance(videos, list) or not videos:
        raise NodeInputError(NODE, key, expected + " with at least one video", f"{path}: no videos")
    for i, v in enumerate(videos):
        ok = (isinstance(v, dict) and isinstance(v.get("path"), str) and isinstance(v.get("cuts"), list)
              and isinstance(v.get("num_frames"), int) and v["num_frames"] > 0 and isinstance(v.get("fps"), str)
              and all(isinstance(c, dict) and isinstance(c.get("frame"), int) for c in v["cuts"] + v.get("ambiguous", [])))
        if not ok:
            raise NodeInputError(NODE, key, expected + ": every video with path, fps, num_frames, cuts [{frame}]",
                                 f"{path}: video {i} malformed")
    return videos, path.parent


def _resolve_video(entry: dict, folder: Path, key: str) -> Path:
    p = Path(entry["path"])
    for cand in ([p] if p.is_absolute() else [folder / p, p]):
        if cand.is_file():
            return cand
    raise NodeInputError(NODE, key, "manifest videos that exist (relative paths: from the manifest's folder "
                         "or the working directory)", f"missing {entry['path']}")


def _check_labels(feat: ConcertFeatures, entry: dict, key: str) -> None:
    """The manifest's segment labels must be what its cuts and ambiguous candidates give here."""
    segs = entry.get("segments")
    if segs is None:
        return
    t = window_table([feat], "protocol")
    mine = [None if not m else int(lab) for lab, m in zip(t["label"].tolist(), t["mask"].tolist())]
    theirs = [s.get("label") if isinstance(s, dict) else "?" for s in segs]
    if mine != theirs:
        raise NodeInputError(NODE, key, "segment labels that follow the video's cuts and ambiguous candidates",
                             f"{entry['path']}: {sum(a != b for a, b in zip(mine, theirs)) + abs(len(mine) - len(theirs))}"
                             f" of {len(theirs)} segments differ")


def video_features(entry: dict, folder: Path, data: ManifestDataConfig, images: bool,
                   key: str = "data.manifest", index: int = 0) -> ConcertFeatures:
    """One manifest video as the when model sees it (module docstring). ``images=False`` (audio variant)
    skips decoding the frames: ``images`` is then ``[1, T, 0]``."""
    path = _resolve_video(entry, folder, key)
    try:
        fps = media.as_fps(entry["fps"], node=NODE, input_name=key)
    except (NodeInputError, ValueError, ZeroDivisionError):
        raise NodeInputError(NODE, key, "a frame rate like '25/1' for every video", entry["fps"]) from None
    T = int(entry["num_frames"])
    cuts = sorted({int(c["frame"]) for c in entry["cuts"] if 0 < int(c["frame"]) < T})
    amb = sorted({int(c["frame"]) for c in entry.get("ambiguous", []) if 0 < int(c["frame"]) < T})
    with media.VideoReader(path, node=NODE, input_name=key) as reader:
        pieces = [media.to_mono(a, node=NODE) for a in reader.iter_audio(chunk_seconds=60.0)]
        if not pieces:
            raise NodeInputError(NODE, key, "videos with an audio track (the when model listens)", f"{path}: no audio")
        sr = reader.info.sample_rate
        wave = F.prepare_audio(torch.cat(pieces, 1), sr, node=NODE)
        del pieces
        need = round(T / float(fps) * F.SAMPLE_RATE)             # as long as the video: zeros past the audio's end
        wave = torch.nn.functional.pad(wave[:need], (0, max(0, need - wave.shape[0])))
        if images:
            enc, embs, n = data.encoder(), [], 0
            for chunk in reader.iter_frames(max_side=data.frame_side, chunk_size=data.chunk_size):
                embs.append(enc.embed(chunk[:T - n]).float())
                n += len(chunk)
                if n >= T:
                    break
            emb = torch.cat(embs) if embs else torch.zeros(0, enc.dim)
            if len(emb) < T:
                raise NodeInputError(NODE, key, "videos with as many frames as the manifest says",
                                     f"{path}: {len(emb)} decoded, manifest {T}")
            emb = emb[None]
        else:
            emb = torch.zeros(1, T, 0)
    bounds = [0, *cuts]
    feat = ConcertFeatures(index, float(fps), F.log_mel(wave).half(), emb, cuts, [],
                           [round((b - a) / float(fps), 4) for a, b in zip(bounds, bounds[1:])], amb,
                           name=str(entry["path"]))
    _check_labels(feat, entry, key)
    return feat


def split_manifest(videos: Sequence[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """Train and val videos: sorted by the SHA-1 of their ``path``, the first ``max(1, round(f·N))`` are val."""
    if len(videos) < 2:
        raise NodeInputError(NODE, "data.manifest", "at least 2 videos (train and val)", f"{len(videos)} video")
    order = sorted(videos, key=lambda v: (hashlib.sha1(v["path"].encode()).hexdigest(), v["path"]))
    n_val = min(len(order) - 1, max(1, round(val_fraction * len(order))))
    return order[n_val:], order[:n_val]


def load_manifest_splits(data: ManifestDataConfig, images: bool) -> tuple[list, list, list | None]:
    """``(train, val, test | None)`` features of the manifest videos (:func:`split_manifest`)."""
    t0 = time.perf_counter()
    videos, folder = read_manifest(data.manifest)
    train_v, val_v = split_manifest(videos, data.val_fraction)
    train_set = [video_features(v, folder, data, images, index=i) for i, v in enumerate(train_v)]
    val = [video_features(v, folder, data, images, index=i) for i, v in enumerate(val_v)]
    test = None
    if data.test_manifest:
        tv, tfolder = read_manifest(data.test_manifest, "data.test_manifest")
        test = [video_features(v, tfolder, data, images, "data.test_manifest", i) for i, v in enumerate(tv)]
    if not any(c.shot_lengths for c in train_set):
        raise NodeInputError(NODE, "data.manifest", "training videos with at least one cut", "no cut in the train split")
    logger.info("manifest data: %d train, %d val, %d test videos in %.0f s", len(train_set), len(val),
                len(test or []), time.perf_counter() - t0)
    return train_set, val, test


def manifest_counts(splits: dict[str, Sequence[ConcertFeatures] | None]) -> dict:
    """Per split: videos, training windows (every frame) and protocol segments, used and excluded (``null``)."""
    out = {}
    for split, feats in splits.items():
        if not feats:
            continue
        fr, pr = window_table(feats), window_table(feats, "protocol")
        out[split] = {"videos": [c.name for c in feats], "windows": int(fr["mask"].sum()),
                      "windows_excluded": int((~fr["mask"]).sum()), "segments": int(pr["mask"].sum()),
                      "segments_excluded": int((~pr["mask"]).sum()), "positive_segments": int(pr["label"][pr["mask"]].sum())}
    return out


def gather_mels(concerts: Sequence[ConcertFeatures], concert_idx: torch.Tensor,
                mel_start: torch.Tensor) -> torch.Tensor:
    return torch.stack([concerts[int(c)].mel[:, int(m):int(m) + F.SEGMENT_FRAMES].float()
                        for c, m in zip(concert_idx, mel_start)])


def gather_images(concerts: Sequence[ConcertFeatures], concert_idx: torch.Tensor, frame: torch.Tensor,
                  camera: int = 0) -> torch.Tensor:
    return torch.stack([concerts[int(c)].images[camera, int(f)] for c, f in zip(concert_idx, frame)])


class WindowBatches:
    """Seekable when-to-cut batches (:class:`avlab.common.training.SeekableData`): batch ``s`` of rank
    ``r`` draws its windows from a generator seeded by ``(seed, r, s)`` and a random gain of
    ``±gain_db`` per window (log-mel offset). Yields ``(mel, since_l, image | None, label)``."""

    def __init__(self, concerts: Sequence[ConcertFeatures], table: dict, stats: F.ShotStats, batch_size: int,
                 seed: int = 0, multimodal: bool = False, gain_db: float = 6.0, rank: int | None = None):
        self.concerts, self.table, self.stats = concerts, table, stats
        self.batch_size, self.seed, self.multimodal, self.gain_db = batch_size, seed, multimodal, gain_db
        self.rank = rank_info().rank if rank is None else rank

    def batch(self, step: int):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_033 + step)
        idx = torch.randint(len(self.table["label"]), (self.batch_size,), generator=g)
        t = {k: v[idx] for k, v in self.table.items()}
        mel = gather_mels(self.concerts, t["concert"], t["mel_start"])
        gain = (torch.rand(self.batch_size, generator=g) * 2 - 1) * self.gain_db * math.log(10) / 10
        mel = mel + gain.view(-1, 1, 1)
        image = gather_images(self.concerts, t["concert"], t["last_frame"]) if self.multimodal else None
        return mel, self.stats.normalise(t["since"]), image, t["label"]

    def iter_from(self, step: int) -> Iterator:
        while True:
            yield self.batch(step)
            step += 1


def how_examples(concerts: Sequence[ConcertFeatures]) -> dict[str, torch.Tensor]:
    """Every cut: ``current [N,D]`` (last frame of the current shot), ``candidates [N,K-1,D]`` (the other
    cameras at the cut frame, in camera order), ``cand_cams [N,K-1]``, ``target [N]`` (index into
    the candidates of the ground-truth camera), ``mask`` (all True: every concert has K cameras)."""
    cur, cands, cams, target = [], [], [], []
    for c in concerts:
        K = c.images.shape[0]
        for i, f in enumerate(c.cut_frames):
            before, after = c.shot_cameras[i], c.shot_cameras[i + 1]
            others = [k for k in range(K) if k != before]
            cur.append(c.images[before, max(0, f - 1)])
            cands.append(c.images[others, f])
            cams.append(torch.tensor(others))
            target.append(others.index(after))
    return {"current": torch.stack(cur), "candidates": torch.stack(cands), "cand_cams": torch.stack(cams),
            "target": torch.tensor(target), "mask": torch.ones(len(cur), cands[0].shape[0], dtype=torch.bool)}


def shot_stats(concerts: Sequence[ConcertFeatures]) -> F.ShotStats:
    return F.ShotStats.fit([x for c in concerts for x in c.shot_lengths])


def mel_norm(concerts: Sequence[ConcertFeatures]) -> tuple[float, float]:
    m = torch.cat([c.mel.float().flatten() for c in concerts])
    return round(float(m.mean()), 4), round(float(m.std()), 4)


# -- metrics --------------------------------------------------------------------------------------------

def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties counted half); NaN without both classes."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels).bool()
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    sorted_s = s[order]
    i = 0
    while i < len(s):                                   # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def binary_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, float]:
    """Precision, recall, F1 of ``score ≥ threshold``, and ROC-AUC of the scores."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pred = s >= threshold
    tp = int((pred & y).sum())
    p = tp / max(1, int(pred.sum()))
    r = tp / max(1, int(y.sum()))
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "roc_auc": roc_auc(s, y), "threshold": float(threshold)}


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold (one of the scores) that maximises F1 on these scores (tune on val only)."""
    s = np.asarray(scores, float)
    best, best_t = -1.0, float(s.min()) if len(s) else 0.5
    for t in np.unique(s):
        f1 = binary_metrics(s, labels, t)["f1"]
        if f1 > best + 1e-12:
            best, best_t = f1, float(t)
    return best_t


def recall_at_k(logits: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Share of rows whose target is among the ``k`` highest logits (ties broken against the target)."""
    t = logits.gather(1, target[:, None])
    rank = (logits > t).sum(1) + ((logits == t).sum(1) - 1)       # ties count as beating the target
    return float((rank < k).float().mean())


def breath_score(mel: torch.Tensor, floor: float = math.log(1e-3)) -> torch.Tensor:
    """Diagnostic: the longest run (in frames) of near-silent frames in each segment ``[B,128,400]``."""
    energy = torch.logsumexp(mel.float(), 1)                    # log total power per frame
    silent = (energy < floor).int()
    best = torch.zeros(len(mel))
    run = torch.zeros(len(mel))
    for j in range(silent.shape[1]):
        run = (run + 1) * silent[:, j]
        best = torch.maximum(best, run)
    return best


# -- training -------------------------------------------------------------------------------------------

def default_train_config(kind: str, **overrides) -> TrainConfig:
    """The committed recipes (CPU, one thread): when — 800 steps of 32 windows, lr 2e-3; how — 400 steps
    of 64 cuts, lr 2e-3; AdamW (wd 0.01), 5 % warm-up, cosine to 5 %, clip 1.0, EMA 0.99 with warm-up."""
    base = {"when": dict(steps=800, lr=2e-3, warmup_steps=40), "how": dict(steps=400, lr=2e-3, warmup_steps=20)}[kind]
    cfg = dict(weight_decay=0.01, betas=(0.9, 0.99), grad_clip=1.0, ema=0.99, ema_warmup=True, cosine=True,
               min_lr_ratio=0.05, log_every=50, device="cpu", progress=False, seed=1, **base)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def train_when(train_set: Sequence[ConcertFeatures], config: WhenToCutConfig, tcfg: TrainConfig,
               batch_size: int = 32, callback: Callable | None = None) -> tuple[WhenToCut, dict]:
    """Train a :class:`WhenToCut` (``config.image_dim > 0``: multimodal) on training windows.
    ``config.mel_mean/std`` are fitted on ``train_set`` here. Returns the EMA model and a record."""
    stats = shot_stats(train_set)
    mean, std = mel_norm(train_set)
    config = replace(config, mel_mean=mean, mel_std=std)
    torch.manual_seed(tcfg.seed)
    model = WhenToCut(config)
    data = WindowBatches(train_set, valid_windows(window_table(train_set)), stats, batch_size, seed=tcfg.seed + 7,
                         multimodal=config.multimodal)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_fn(net, batch):
        mel, since, image, label = batch
        logits = net(mel, since, image)
        with torch.no_grad():
            acc = ((logits > 0).float() == label).float().mean()
        return bce(logits, label), {"acc": float(acc)}

    t0 = time.perf_counter()
    result = train(model, loss_fn, data, tcfg, callback=callback)
    best = result.ema_model if result.ema_model is not None else result.model
    record = {"steps": result.step, "batch_size": batch_size, "train_seconds": round(time.perf_counter() - t0, 1),
              "loss_curve": [{"step": h["step"], "loss": round(h["loss"], 4)} for h in result.history],
              "parameters": sum(p.numel() for p in best.parameters()), "trainer": "avlab.common.training"}
    best.config = config
    return best.eval(), {"record": record, "shot_stats": stats}


def train_how(train_set: Sequence[ConcertFeatures], config: HowToCutConfig, tcfg: TrainConfig,
              batch_size: int = 64, gain: float = 0.3, callback: Callable | None = None) -> tuple[HowToCut, dict]:
    """Train a :class:`HowToCut` on every training cut (candidate embeddings scaled by a random exposure
    gain ``1 ± gain`` each, as a camera's exposure would). Returns the EMA model and a record."""
    ex = how_examples(train_set)
    config = replace(config, embed_dim=ex["current"].shape[1])
    torch.manual_seed(tcfg.seed)
    model = HowToCut(config)
    data = IndexedBatches(ex["current"], ex["candidates"], ex["mask"], ex["target"],
                          batch_size=min(batch_size, len(ex["target"])), seed=tcfg.seed + 7)

    def loss_fn(net, batch):
        cur, cands, mask, target = batch
        g_cur = 1 + gain * (2 * torch.rand(len(cur), 1) - 1)
        g_c = 1 + gain * (2 * torch.rand(*cands.shape[:2], 1) - 1)
        logits = net(cur * g_cur, cands * g_c, mask)
        return torch.nn.functional.cross_entropy(logits, target), {"r1": recall_at_k(logits.detach(), target, 1)}

    t0 = time.perf_counter()
    result = train(model, loss_fn, data, tcfg, callback=callback)
    best = result.ema_model if result.ema_model is not None else result.model
    record = {"steps": result.step, "batch_size": batch_size, "train_examples": len(ex["target"]),
              "train_seconds": round(time.perf_counter() - t0, 1),
              "loss_curve": [{"step": h["step"], "loss": round(h["loss"], 4)} for h in result.history],
              "parameters": sum(p.numel() for p in best.parameters()), "trainer": "avlab.common.training"}
    best.config = config
    return best.eval(), {"record": record}


# -- evaluation -----------------------------------------------------------------------------------------

@torch.no_grad()
def when_scores(split: Sequence[ConcertFeatures], model: WhenToCut | None, stats: F.ShotStats,
                train_shots: Sequence[float]) -> dict[str, np.ndarray]:
    """Protocol segments of ``split``: labels and the scores of the model (if any), the baselines
    (fitted on ``train_shots``), chance and the breath detector. Segments of unknown label are left out."""
    t = valid_windows(window_table(split, "protocol"))
    mel = gather_mels(split, t["concert"], t["mel_start"])
    out = {"label": t["label"].numpy().astype(int)}
    if model is not None:
        image = gather_images(split, t["concert"], t["last_frame"]) if model.config.multimodal else None
        out["model"] = model.predict(mel, stats.normalise(t["since"]), image).numpy()
    pois, expo = PoissonShotModel.fit(train_shots), ExponentialShotModel.fit(train_shots)
    out["poisson"] = np.array([pois.prob_cut(float(s)) for s in t["since"]])
    out["exponential"] = np.array([expo.prob_cut(float(s)) for s in t["since"]])
    out["chance"] = np.ones(len(t["label"]))
    out["breath"] = breath_score(mel).numpy()
    return out


def evaluate_when(val: dict, test: dict | None, names: Sequence[str]) -> dict[str, dict]:
    """Thresholds tuned for F1 on ``val``; metrics on val (tuned) and test (held-out, when given) per score name."""
    res = {}
    for name in names:
        th = best_threshold(val[name], val["label"]) if name != "chance" else 1.0
        res[name] = {"val": binary_metrics(val[name], val["label"], th), "threshold": th}
        if test is not None:
            res[name]["test"] = binary_metrics(test[name], test["label"], th)
        if name == "chance":
            for split in ("val", "test"):
                if split in res[name]:
                    res[name][split]["roc_auc"] = 0.5
    return res


@torch.no_grad()
def evaluate_how(split: Sequence[ConcertFeatures], model: HowToCut | None) -> dict[str, dict]:
    ex = how_examples(split)
    n = ex["candidates"].shape[1]
    out = {"chance": {"r1": 1 / n, "r3": min(1.0, 3 / n)}, "candidates": n, "cuts": len(ex["target"])}
    bright = ex["candidates"][..., -3:].mean(-1)               # the encoder's mean colour (last 3 dims)
    out["brightest"] = {"r1": recall_at_k(bright, ex["target"], 1), "r3": recall_at_k(bright, ex["target"], 3)}
    if model is not None:
        logits = model(ex["current"], ex["candidates"], ex["mask"])
        out["model"] = {"r1": recall_at_k(logits, ex["target"], 1), "r3": recall_at_k(logits, ex["target"], 3)}
    return out


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def when_table(results: dict[str, dict[str, dict]], split: str) -> list[str]:
    """Markdown rows ``| predictor | P | R | F1 | AUC |`` of ``results[predictor][split]``."""
    lines = ["| predictor | precision | recall | F1 | ROC-AUC |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        m = r[split]
        lines.append(f"| {name} | {_pct(m['precision'])} | {_pct(m['recall'])} | {_pct(m['f1'])} | "
                     f"{'–' if math.isnan(m['roc_auc']) else format(m['roc_auc'], '.3f')} |")
    return lines


def how_table(results: dict[str, dict]) -> list[str]:
    """Markdown rows ``| predictor | val R@1 | val R@3 | test R@1 | test R@3 |``."""
    lines = ["| predictor | val R@1 | val R@3 | test R@1 | test R@3 |", "|---|---:|---:|---:|---:|"]
    labels = {"model": "how-to-cut model", "chance": "chance", "brightest": "brightest candidate (diagnostic)"}
    for name in ("model", "chance", "brightest"):
        if name in results["val"]:
            v, t = results["val"][name], results["test"][name]
            lines.append(f"| {labels[name]} | {_pct(v['r1'])} | {_pct(v['r3'])} | {_pct(t['r1'])} | {_pct(t['r3'])} |")
    return lines


# -- the `python -m avlab train concert-*` commands ---------------------------------------------------------

def _dataclass_from(cls, d: dict | None, what: str):
    d = dict(d or {})
    names = {f.name for f in fields(cls)}
    for key in d:
        if key not in names:
            raise NodeInputError(NODE, f"{what}.{key}", f"a field of {cls.__name__} ({', '.join(sorted(names))})",
                                 "unknown")
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    return d


def train_from_config(system: str, config: dict, out: str | Path, resume: bool = False,
                      steps: int | None = None) -> dict:
    """``python -m avlab train concert-when|concert-how``: build the data, train on the shared loop
    (checkpoints in ``out/checkpoint``, ``resume`` continues there), evaluate on val/test and write the
    model files (:func:`avlab.concert_edit.models.save_concert_model`) and ``<name>_eval.md`` into
    ``out`` (rank 0 only). Returns the evaluation."""
    kind = {"concert-when": "when", "concert-how": "how"}.get(system)
    if kind is None:
        raise NodeInputError(NODE, "system", "concert-when or concert-how", system)
    unknown = set(config) - {"data", "model", "train", "variant"}
    if unknown:
        raise NodeInputError(NODE, "config", "keys data, model, train, variant", sorted(unknown))
    raw_data = config.get("data")
    if raw_data is not None and not isinstance(raw_data, dict):
        raise NodeInputError(NODE, "data", "an object of ConcertDataConfig or ManifestDataConfig fields", raw_data)
    from_manifest = bool(raw_data) and "manifest" in raw_data
    if from_manifest:
        if kind == "how":
            raise NodeInputError(NODE, "data.manifest", "synthetic concerts for concert-how (a program video shows one "
                                 "camera at a time and has no camera identities; train concert-when on manifests)",
                                 raw_data["manifest"])
        data = ManifestDataConfig(**_dataclass_from(ManifestDataConfig, raw_data, "data"))
    else:
        data = ConcertDataConfig(**_dataclass_from(ConcertDataConfig, raw_data, "data"))
    data.validate()
    out = Path(out)
    tdict = _dataclass_from(TrainConfig, config.get("train"), "train")
    tdict.setdefault("out_dir", str(out / "checkpoint"))
    tdict["resume"] = resume or tdict.get("resume", False)
    if steps is not None:
        tdict["steps"] = steps
    tcfg = default_train_config(kind, **tdict)
    if kind == "when":                      # every config error before the data is made
        variant = config.get("variant", "audio")
        if variant not in WHEN_FILES:
            raise NodeInputError(NODE, "variant", f"one of {sorted(WHEN_FILES)}", variant)
        mcfg = WhenToCutConfig(**_dataclass_from(WhenToCutConfig, config.get("model"), "model"))
        if variant == "multimodal":
            mcfg = replace(mcfg, image_dim=data.encoder().dim)
        elif mcfg.image_dim:
            raise NodeInputError(NODE, "model.image_dim", "0 for the audio variant (or variant: multimodal)",
                                 mcfg.image_dim)
        mcfg.validate()
    else:
        mcfg = HowToCutConfig(**_dataclass_from(HowToCutConfig, config.get("model"), "model"))
        mcfg.validate()
    if from_manifest:
        train_set, val, test = load_manifest_splits(data, images=variant == "multimodal")
    else:
        train_set, val, test = (load_split(data, s) for s in ("train", "val", "test"))
    ri = rank_info()
    if kind == "when":
        model, info = train_when(train_set, mcfg, tcfg)
        shots = [x for c in train_set for x in c.shot_lengths]
        v = when_scores(val, model, info["shot_stats"], shots)
        t = when_scores(test, model, info["shot_stats"], shots) if test else None
        result = {"when": evaluate_when(v, t, ["model", "poisson", "exponential", "chance", "breath"])}
        name = WHEN_FILES[variant]
        lines = [f"# {name}", "", "## val (thresholds tuned here)", "", *when_table(result["when"], "val"), ""]
        if t is not None:
            lines += ["## test (held out)", "", *when_table(result["when"], "test"), ""]
        if from_manifest:
            result["manifest"] = manifest_counts({"train": train_set, "val": val, "test": test})
            lines += ["## manifest data", "", "| split | videos | windows (excluded) | segments (excluded) |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {k} | {len(c['videos'])} | {c['windows']} ({c['windows_excluded']}) | "
                      f"{c['segments']} ({c['segments_excluded']}) |" for k, c in result["manifest"].items()]
            lines.append("")
        extra = {"shot_stats": info["shot_stats"]}
    else:
        model, info = train_how(train_set, mcfg, tcfg)
        result = {"how": {"val": evaluate_how(val, model), "test": evaluate_how(test, model)}}
        name = HOW_FILE
        lines = [f"# {name}", "", *how_table(result["how"]), ""]
        extra = {}
    if ri.is_main:
        record = {**info["record"], "data": {**asdict(data), "source": "manifest" if from_manifest else "synthetic"},
                  "train": tcfg.to_json(), "eval": result}
        save_concert_model(out, name, model, image_encoder=data.encoder().to_dict(), record=record, **extra)
        (out / f"{name}_eval.md").write_text("\n".join(lines))
        logger.info("wrote %s and %s", out / f"{name}.safetensors", out / f"{name}_eval.md")
    return result


def cli_train(system: str, config_path: str | None, out: str, resume: bool = False, steps: int | None = None) -> dict:
    """Entry of ``python -m avlab train concert-*`` (a missing config file means all defaults)."""
    config = read_config_file(config_path, NODE)
    return train_from_config(system, config, out, resume=resume, steps=steps)
