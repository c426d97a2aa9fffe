"""From the two models to an edit (papers.md §3, "Edit decision"): cut times + a camera per shot, with
minimum and maximum shot lengths, as an :class:`~avlab.concert_edit.edl.EditDecisionList`.

The paper scores 4 s segments (2 s hop) with *when to cut* and picks the next camera with *how to
cut*; how the scores become an edit is not published. The procedure here (:func:`decide_edit`):

* Cuts lie on the program's frame grid: a cut at frame ``c`` starts a shot at ``c / fps``. A segment
  ``[start, end)`` holds the frames of that span (:func:`avlab.common.media.segment_frame_indices`)
  and can place a cut between two of its frames (``lo < c < hi``) — the rule the training labels
  use (``synthetic.concert``, ``pseudolabels``), so "a cut falls inside" means the same everywhere.
* Segments are visited in time order, because the model's input *time since the last cut*
  (``since_cut_s`` = the segment's first frame minus the last cut at or before it, as in training)
  depends on the cuts already chosen. ``when_fn`` is asked only where a cut is allowed.
* Allowed cut frames keep every shot within ``[min_shot_s, max_shot_s]`` — strictly, the last shot
  (which ends at ``duration``, not on the grid) included: a cut is allowed only if the rest of the
  program can still be split into legal shots (exact reachability over whole frames), so the
  constraints can never paint the edit into a corner. A program shorter than ``min_shot_s`` is one
  shot (the only edit there is); lengths that no split can satisfy raise naming ``max_shot_s``.
* A segment with ``p >= threshold`` cuts at the best allowed frame inside it. A segment that already
  holds the cut placed in the previous, overlapping window is not asked again. When the current
  shot would otherwise exceed ``max_shot_s`` (no later segment can still cut in time), a cut is
  forced at the best allowed frame overall.
* "Best" cuts on the music: the frame ``c`` that minimises ``e[c-1] - e[c]`` of a per-frame audio
  energy curve ``e`` (RMS) — a quiet frame (the breath at a phrase end) followed by a loud one (the
  next phrase's attack). Without a curve (or on ties) the middle of the allowed range wins.
* The camera of each new shot is the argmax of ``how_fn`` over the cameras other than the one on
  air (ties → the lower index); the first shot uses ``first_camera`` (the wide shot, camera 0).

From files (:func:`plan_edit`, behind ``python -m avlab concert edit``): the trained models through
:func:`load_model_factories` (``concert_edit.models.load_concert_models(dir)``), or without a model folder the fallback: :func:`breath_when_fn` (audio: a quiet moment
followed by an onset inside the segment, more likely as the shot grows) and :func:`activity_how_fn`
(video: the camera with the most motion right after the cut) — heuristics on streamed measurements,
documented stand-ins for the learned models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..common import media
from ..common.errors import NodeInputError
from .edl import EditDecisionList, Shot
from .features import HOP_S, SEGMENT_S, segment_times

WhenFn = Callable[[int, float], float]
HowFn = Callable[[int, float, list], list]
_NODE = "decide_edit"
_EPS = 1e-9

def segment_windows(duration: float, segment_s: float = SEGMENT_S, hop_s: float = HOP_S) -> list[tuple[float, float]]:
    """The training labels' windows (:func:`avlab.concert_edit.features.segment_times`), or one
    ``[0, duration)`` window for a program shorter than a segment."""
    if duration < segment_s:
        return [(0.0, float(duration))]
    return segment_times(duration, segment_s, hop_s)


def _window_cut_range(start: float, end: float, fps: Fraction) -> tuple[int, int]:
    """Frames ``c`` with ``lo < c < hi`` where ``[lo, hi)`` are the frames of ``[start, end)``."""
    f = float(fps)
    lo = math.floor(start * f - 0.5 + _EPS) + 1
    hi = math.ceil(end * f - 0.5 - _EPS)
    return lo, hi


class _Lengths:
    """Which cut frames keep every remaining shot within ``[lo, hi]`` frames up to the real end ``E``."""

    def __init__(self, end: float, lo: float, hi: float):
        self.end, self.lo, self.hi = end, lo, hi
        self.lmin, self.lmax = max(1, math.ceil(lo - _EPS)), math.floor(hi + _EPS)
        m = max(0, math.floor(end + _EPS))
        diff = np.zeros(m + 2, np.int64)
        if self.lmin <= self.lmax:
            for k in range(1, m // self.lmin + 1):   # sums of k whole shots: [k·lmin, k·lmax]
                diff[k * self.lmin] += 1
                diff[min(k * self.lmax, m) + 1] -= 1
        reach = np.cumsum(diff)[: m + 1] > 0
        reach[0] = True                              # no whole shot before the last one
        self.m = m
        self.cum = np.concatenate([[0], np.cumsum(reach)])

    def feasible(self, c: np.ndarray) -> np.ndarray:
        """For cut frames ``c``: can ``[c, E]`` be split into shots of ``lo..hi`` frames (last one real)?"""
        rest = self.end - c.astype(np.float64)
        a = np.clip(np.ceil(rest - self.hi - _EPS), 0, None).astype(np.int64)
        b = np.clip(np.floor(rest - self.lo + _EPS), None, self.m).astype(np.int64)
        ok = b >= a
        a, b = np.minimum(a, self.m), np.clip(b, 0, None)
        return ok & (self.cum[b + 1] - self.cum[a] > 0)

    def allowed(self, c0: int) -> np.ndarray:
        """Cut frames allowed after a cut at ``c0``."""
        last = min(c0 + self.lmax, math.ceil(self.end - _EPS) - 1)
        cand = np.arange(c0 + self.lmin, last + 1, dtype=np.int64)
        return cand[self.feasible(cand)] if len(cand) else cand


def _frame_energy_on_grid(energy: Any, energy_rate: Fraction | None, fps: Fraction, n: int) -> np.ndarray | None:
    if energy is None:
        return None
    e = np.asarray(energy.detach().cpu() if isinstance(energy, torch.Tensor) else energy, dtype=np.float64).ravel()
    if e.size == 0 or not np.isfinite(e).all():
        raise NodeInputError(_NODE, "energy", "a non-empty curve of finite values", f"{e.size} values")
    if energy_rate is None or energy_rate == fps:
        out = e[:n]
        return np.pad(out, (0, n - len(out)), mode="edge") if len(out) < n else out
    r = float(energy_rate)
    centres = (np.arange(n) + 0.5) / float(fps)
    return np.interp(centres, (np.arange(e.size) + 0.5) / r, e)


def _later_window_can_cut(ranges: list[tuple[int, int]], i: int, allowed: np.ndarray) -> bool:
    """Does a segment after ``i`` hold an allowed cut frame (so the forced cut can wait)?"""
    for lo, hi in ranges[i + 1:]:
        if lo + 1 > allowed[-1]:
            return False
        if ((allowed > lo) & (allowed < hi)).any():
            return True
    return False


def _best(cands: np.ndarray, e: np.ndarray | None) -> int:
    """The cut frame among ``cands`` that cuts on the music (module docstring); middle on ties."""
    mid = (cands[0] + cands[-1]) / 2
    if e is None:
        return int(cands[np.argmin(np.abs(cands - mid))])
    cost = e[cands - 1] - e[np.minimum(cands, len(e) - 1)]
    scale = max(float(np.abs(e).max()), 1e-12)
    # lexicographic: cost first (rounded, so float noise does not decide), then distance to the middle
    order = np.lexsort((np.abs(cands - mid), np.round(cost / scale, 9)))
    return int(cands[order[0]])


def decide_edit(
    segments: int | Sequence[tuple[float, float]],
    duration: float,
    when_fn: WhenFn,
    how_fn: HowFn,
    *,
    cameras: int | Sequence[str],
    fps: media.FpsLike,
    min_shot_s: float = 2.0,
    max_shot_s: float = 20.0,
    threshold: float = 0.5,
    energy: Any = None,
    energy_rate: media.FpsLike | None = None,
    first_camera: int = 0,
    audio: str | None = None,
    node: str = _NODE,
) -> EditDecisionList:
    """Combine *when* and *how* into an edit decision list (module docstring for the procedure).

    Args:
        segments: the number of paper segments (4 s every 2 s from 0) or their ``(start, end)`` times.
        duration: program length in seconds (the master audio's).
        when_fn: ``when_fn(segment_index, since_cut_s) -> p`` (the probability of a cut in the segment).
        how_fn: ``how_fn(current_camera, cut_time_s, candidates) -> scores`` (one per candidate).
        cameras: the number of cameras, or their names/paths (kept in the list).
        fps: program frame rate; cuts lie on its frame grid.
        min_shot_s, max_shot_s: shot length limits, enforced for every shot.
        threshold: cut where ``p >= threshold``.
        energy: optional per-time audio energy (RMS) curve, sampled at ``energy_rate`` values per second
            (default: one per program frame), used to place each cut on the music.
        first_camera: camera of the first shot.
        audio: optional master audio name, recorded in the list.
    """
    rate = media.as_fps(fps, node=node, input_name="fps")
    names = [f"camera {k + 1}" for k in range(cameras)] if isinstance(cameras, int) else [str(c) for c in cameras]
    k_cams = len(names)
    if k_cams < 1:
        raise NodeInputError(node, "cameras", "at least one camera", k_cams)
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise NodeInputError(node, "duration", "a program length in seconds > 0", duration)
    for name, value in (("min_shot_s", min_shot_s), ("max_shot_s", max_shot_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise NodeInputError(node, name, "a shot length in seconds > 0", value)
    if max_shot_s < min_shot_s:
        raise NodeInputError(node, "max_shot_s", f"a maximum shot length >= min_shot_s ({min_shot_s:g} s)", max_shot_s)
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise NodeInputError(node, "threshold", "a probability threshold in 0..1", threshold)
    if isinstance(first_camera, bool) or not isinstance(first_camera, int) or not 0 <= first_camera < k_cams:
        raise NodeInputError(node, "first_camera", f"a camera index 0..{k_cams - 1}", first_camera)
    if isinstance(segments, int) and not isinstance(segments, bool):
        if segments < 0:
            raise NodeInputError(node, "segments", "a segment count >= 0 or (start, end) times", segments)
        windows = [(i * HOP_S, i * HOP_S + SEGMENT_S) for i in range(segments)]
    else:
        try:
            windows = [(float(a), float(b)) for a, b in segments]
        except (TypeError, ValueError):
            raise NodeInputError(node, "segments", "a segment count or (start, end) times in seconds",
                                 type(segments).__name__) from None
        if any(not b > a for a, b in windows) or any(w1[0] < w0[0] for w0, w1 in zip(windows, windows[1:])):
            raise NodeInputError(node, "segments", "(start, end) windows with end > start, in time order", windows[:3])

    f = float(rate)
    end = duration * f                                # program end in frames (real)
    n_frames = math.ceil(end - _EPS)
    lengths = _Lengths(end, max(1.0, min_shot_s * f), max_shot_s * f)
    e = _frame_energy_on_grid(energy, None if energy_rate is None else media.as_fps(energy_rate, node=node,
                              input_name="energy_rate"), rate, n_frames)
    if lengths.lmin > lengths.lmax:
        raise NodeInputError(node, "max_shot_s", f"a range min_shot_s..max_shot_s that holds a whole number of "
                             f"frames at {float(rate):g} fps", f"{min_shot_s:g}..{max_shot_s:g} s")
    single = end < lengths.lo - _EPS                   # shorter than one shot: the only edit there is
    if not single and not lengths.feasible(np.array([0]))[0]:
        raise NodeInputError(node, "max_shot_s", f"shot lengths {min_shot_s:g}..{max_shot_s:g} s that can split "
                             f"the {duration:g} s program (raise max_shot_s or lower min_shot_s)", max_shot_s)

    cuts: list[int] = []
    scores: list[float] = []
    forced: list[int] = []
    cams = [first_camera]

    def add_cut(c: int, p: float, is_forced: bool) -> None:
        t = float(Fraction(c) / rate)
        candidates = [k for k in range(k_cams) if k != cams[-1]]
        if candidates:
            got = list(how_fn(cams[-1], t, candidates))
            if len(got) != len(candidates) or not all(math.isfinite(float(s)) for s in got):
                raise NodeInputError(node, "how_fn", f"{len(candidates)} finite scores (one per candidate camera)",
                                     got)
            cams.append(candidates[int(np.argmax(np.asarray(got, dtype=np.float64)))])
        else:
            cams.append(cams[-1])
        if is_forced:
            forced.append(len(cuts))
        cuts.append(c)
        scores.append(float(p))

    if not single:
        ranges = [_window_cut_range(a, b, rate) for a, b in windows]
        for i, (lo, hi) in enumerate(ranges):
            c0 = cuts[-1] if cuts else 0
            allowed = lengths.allowed(c0)
            if not len(allowed):
                break                                  # the last shot runs to the end
            inside = allowed[(allowed > lo) & (allowed < hi)]
            p = 0.0
            # a cut placed in the previous (overlapping) window may already lie inside this one: the
            # segment holds its cut, so it is not asked again (it would cut twice at one boundary)
            if len(inside) and not (cuts and lo < cuts[-1] < hi):
                previous = [c for c in cuts if c <= lo]
                since = (lo - (previous[-1] if previous else 0)) / f
                p = float(when_fn(i, since))
                if not math.isfinite(p):
                    raise NodeInputError(node, "when_fn", "a finite probability", p)
                if p >= threshold:
                    add_cut(_best(inside, e), p, False)
                    continue
            if end - c0 > lengths.hi + _EPS and not _later_window_can_cut(ranges, i, allowed):
                add_cut(_best(allowed, e), p, True)       # the shot would exceed max_shot_s
        while end - (cuts[-1] if cuts else 0) > lengths.hi + _EPS:   # the tail after the last segment
            add_cut(_best(lengths.allowed(cuts[-1] if cuts else 0), e), 0.0, True)

    times = [0.0] + [float(Fraction(c) / rate) for c in cuts] + [float(duration)]
    shots = [Shot(a, b, k) for a, b, k in zip(times[:-1], times[1:], cams)]
    meta = {"min_shot_s": min_shot_s, "max_shot_s": max_shot_s, "threshold": threshold, "forced_cuts": forced,
            "cut_frames": cuts}
    return EditDecisionList(shots=shots, cameras=names, fps=rate, duration=float(duration),
                            cut_scores=scores, audio=audio, metadata=meta).validate(node)


# ------------------------------------------------------------------------------------------------
# Measured curves and the fallback models (no trained weights)
# ------------------------------------------------------------------------------------------------

def frame_energy(waveform: torch.Tensor, sample_rate: int, fps: media.FpsLike) -> np.ndarray:
    """Per-frame RMS of ``[C,S]`` audio (channel mean) over each frame's samples
    (:func:`avlab.common.media.frame_sample_bounds`); ``ceil(S · fps / sr)`` frames."""
    rate = media.as_fps(fps)
    mono = waveform.detach().float().mean(0).cpu().numpy().astype(np.float64)
    acc = _EnergyAccumulator(sample_rate, rate)
    acc.add(mono)
    return acc.result()


class _EnergyAccumulator:
    """Streams mono samples into per-frame sums of squares on the exact frame ⇄ sample grid
    (frame ``k`` owns samples ``[round(k·sr/fps), round((k+1)·sr/fps))``)."""

    def __init__(self, sample_rate: int, fps: Fraction):
        spf = Fraction(sample_rate) / fps
        self.a, self.b = spf.numerator, spf.denominator
        self.pos = 0
        self.sums = np.zeros(0)
        self.counts = np.zeros(0)

    def _bound(self, k: np.ndarray) -> np.ndarray:
        return (2 * k * self.a + self.b) // (2 * self.b)

    def add(self, mono: np.ndarray) -> None:
        if mono.size == 0:
            return
        n0, n1 = self.pos, self.pos + mono.size
        k_lo = max(0, (n0 * self.b) // self.a - 1)
        k_hi = -((-n1 * self.b) // self.a) + 1
        bounds = self._bound(np.arange(k_lo, k_hi + 1, dtype=np.int64))
        k = k_lo + np.searchsorted(bounds, np.arange(n0, n1, dtype=np.int64), side="right") - 1
        base = int(k[0])
        s = np.bincount(k - base, weights=mono * mono)
        c = np.bincount(k - base).astype(np.float64)
        need = base + len(s)
        if need > len(self.sums):
            grow = max(need, 2 * len(self.sums))
            self.sums = np.concatenate([self.sums, np.zeros(grow - len(self.sums))])
            self.counts = np.concatenate([self.counts, np.zeros(grow - len(self.counts))])
        self.sums[base:need] += s
        self.counts[base:need] += c
        self.pos = n1

    def result(self) -> np.ndarray:
        """RMS of every frame that holds at least one sample."""
        n = int(np.flatnonzero(self.counts).max()) + 1 if self.counts.any() else 0
        return np.sqrt(self.sums[:n] / np.maximum(self.counts[:n], 1)).astype(np.float32)


def audio_frame_energy(source: media.Source, fps: media.FpsLike, *, node: str = _NODE,
                       input_name: str = "audio") -> tuple[np.ndarray, int, int]:
    """Stream a file's audio into per-frame RMS at ``fps``: ``(energy [T], samples, sample_rate)``.

    Reads chunk by chunk (:meth:`avlab.common.media.VideoReader.iter_audio`), so an hour of audio
    costs a few MB. Raises naming ``input_name`` when the file has no audio stream.
    """
    rate = media.as_fps(fps, node=node, input_name="fps")
    with media.VideoReader(source, node=node, input_name=input_name) as reader:
        if not reader.info.has_audio:
            raise NodeInputError(node, input_name, "a file with an audio stream (the master audio)",
                                 f"{source!r} has no audio")
        sr = int(reader.info.sample_rate)
        acc = _EnergyAccumulator(sr, rate)
        for chunk in reader.iter_audio():
            acc.add(chunk.mean(0).numpy().astype(np.float64))
        samples = acc.pos
    if samples == 0:
        raise NodeInputError(node, input_name, "audio with at least one sample", f"{source!r} is empty")
    return acc.result(), samples, sr


def breath_when_fn(energy: np.ndarray, fps: media.FpsLike, segments: Sequence[tuple[float, float]], *,
                   typical_shot_s: float = 8.0, quiet_s: float = 0.3) -> WhenFn:
    """Fallback *when to cut* from the audio alone (a stand-in for the trained model).

    For each segment, ``breath`` = the largest ``rise · silence`` over the cut frames ``c`` inside
    it, with ``quiet`` the mean RMS of the ``quiet_s`` before ``c``, ``level`` the median RMS of the
    program, ``rise = clip((e[c] - quiet) / level)`` and ``silence = clip(1 - quiet / (level / 4))``:
    ≈ 1 where near-silence (a breath at a phrase end) is followed by sound, ≈ 0 inside sustained
    music. ``p = breath · min(1, since_cut / typical_shot_s)``: breaths cut, more readily
    as the shot grows (a hazard that rises with the time since the last cut; with the default
    threshold 0.5 a breath cuts once the shot is about ``typical_shot_s / 2`` old).
    """
    rate = media.as_fps(fps)
    e = np.asarray(energy, dtype=np.float64)
    q = max(1, round(quiet_s * float(rate)))
    csum = np.concatenate([[0.0], np.cumsum(e)])
    level = max(float(np.median(e)) if e.size else 0.0, 1e-8)     # the music's typical loudness
    breath = []
    for a, b in segments:
        lo, hi = _window_cut_range(a, b, rate)
        c = np.arange(max(lo + 1, 1), min(hi, len(e)))
        if not len(c):
            breath.append(0.0)
            continue
        start = np.maximum(c - q, 0)
        quiet = (csum[c] - csum[start]) / np.maximum(c - start, 1)
        rise = np.clip((e[c] - quiet) / level, 0.0, 1.0)          # the next phrase's attack
        silence = np.clip(1.0 - quiet / (0.25 * level), 0.0, 1.0)  # ... after near-silence
        breath.append(float((rise * silence).max()))

    def when_fn(segment_index: int, since_cut_s: float) -> float:
        return breath[segment_index] * min(1.0, max(0.0, since_cut_s) / typical_shot_s)

    return when_fn


def camera_activity(sources: Sequence[media.Source], *, rate: float = 5.0, max_side: int = 64,
                    node: str = _NODE, input_name: str = "cameras") -> np.ndarray:
    """Visual activity ``[K, M]`` per camera at ``rate`` samples per second: the mean absolute
    difference between consecutive low-resolution frames (streamed, one chunk at a time)."""
    curves = []
    for src in sources:
        prev, values = None, []
        with media.VideoReader(src, node=node, input_name=input_name) as reader:
            for chunk in reader.iter_frames(fps=rate, max_side=max_side, chunk_size=32):
                seq = chunk if prev is None else torch.cat([prev, chunk])
                diffs = (seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3))
                values.extend(([0.0] if prev is None else []) + diffs.tolist())
                prev = chunk[-1:]
        curves.append(np.asarray(values, np.float32))
    m = max((len(c) for c in curves), default=0)
    out = np.zeros((len(curves), m), np.float32)
    for k, c in enumerate(curves):
        out[k, : len(c)] = c
    return out


def activity_how_fn(activity: np.ndarray, rate: float, *, window_s: float = 2.0) -> HowFn:
    """Fallback *how to cut* from the pictures alone (a stand-in for the trained model): a candidate's
    score is its mean :func:`camera_activity` over the first ``window_s`` of the new shot — the camera
    where the most is happening (the active player moves most)."""
    act = np.asarray(activity, dtype=np.float64)

    def how_fn(current_camera: int, cut_time_s: float, candidates: list) -> list:
        a = int(cut_time_s * rate)
        b = max(a + 1, int(math.ceil((cut_time_s + window_s) * rate)))
        return [float(act[k, a:b].mean()) if a < act.shape[1] else 0.0 for k in candidates]

    return how_fn


# ------------------------------------------------------------------------------------------------
# From files to an edit: the models (or the fallback) on measured inputs
# ------------------------------------------------------------------------------------------------

class FileFrames:
    """One camera file as a lazy frame sequence ``frames[t] -> [H,W,3]`` at ``fps`` (``len`` = the
    program's frames), for models that index camera frames (``ConcertModels.make_how_fn``). Each
    access decodes one frame after a seek (a few recent frames are cached); past the file's end the
    last frame is held. Memory stays at a few frames whatever the length."""

    def __init__(self, source: media.Source, fps: media.FpsLike, num_frames: int, *, max_side: int = 0,
                 node: str = _NODE, cache: int = 8):
        self.reader = media.VideoReader(source, node=node, input_name="cameras")
        self.fps, self.n, self.max_side, self.size = media.as_fps(fps), int(num_frames), max_side, cache
        self._cache: dict[int, torch.Tensor] = {}
        self._last: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        """Close the decoder (also done when the sequence is garbage-collected)."""
        self.reader.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown / already closed
            pass

    def __getitem__(self, t: int) -> torch.Tensor:
        t = int(t)
        if not 0 <= t < self.n:
            raise IndexError(t)
        if t not in self._cache:
            got = next(self.reader.iter_frames(start=Fraction(t) / self.fps, end=Fraction(t + 1) / self.fps,
                                               fps=self.fps, max_side=self.max_side, chunk_size=1), None)
            if got is None:                                   # past the end of this camera: hold its last frame
                got = self._last if self._last is not None else self[max(0, t - 1)][None] if t else None
                if got is None:
                    raise NodeInputError(_NODE, "cameras", "camera files with frames", "no frame decoded")
            self._last = got[:1]
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[t] = got[0]
        return self._cache[t]


def audio_16k_mono(source: media.Source, *, node: str = _NODE, input_name: str = "audio") -> torch.Tensor:
    """A file's audio as mono 16 kHz ``[1, S]`` (the models' input), decoded and resampled chunk by chunk
    (30 s chunks: an hour costs the 230 MB of its 16 kHz samples, never the native-rate file)."""
    parts = []
    with media.VideoReader(source, node=node, input_name=input_name) as reader:
        if not reader.info.has_audio:
            raise NodeInputError(node, input_name, "a file with an audio stream (the master audio)", f"{source!r}")
        sr = int(reader.info.sample_rate)
        for chunk in reader.iter_audio(chunk_seconds=30.0):
            parts.append(media.resample_audio(media.to_mono(chunk), sr, 16000, node=node))
    return torch.cat(parts, dim=1) if parts else torch.zeros(1, 0)


def _factories_from_models(models: Any, *, variant: str = "audio") -> tuple[Callable, Callable]:
    """Factories of the package interface from a ``concert_edit.models.ConcertModels`` (``make_when_fn``
    on the master audio, ``make_how_fn`` on the camera files as :class:`FileFrames`)."""

    def when_factory(*, audio, fps, duration, cameras=None, **_: Any):
        frames = None
        if variant != "audio" and cameras is not None:
            n = math.ceil(duration * float(fps) - _EPS)
            frames = [FileFrames(c, fps, n) for c in cameras]
        return models.make_when_fn(audio_16k_mono(audio), 16000, cameras=frames, fps=fps, variant=variant)

    def how_factory(*, cameras, fps, duration, **_: Any):
        n = math.ceil(duration * float(fps) - _EPS)
        return models.make_how_fn([FileFrames(c, fps, n) for c in cameras], fps)

    return when_factory, how_factory


def load_model_factories(model_dir: str | os.PathLike[str] | None, *, node: str = _NODE
                         ) -> tuple[Callable | None, Callable | None, float | None]:
    """``(when_fn_factory, how_fn_factory, threshold)`` of the trained models in ``model_dir``
    (:func:`avlab.concert_edit.models.load_concert_models`; ``threshold`` = the when model's
    validation-tuned one), or ``(None, None, None)`` without a folder (the fallback is used).
    The factories are called with keywords and return the two callables of the package interface::

        when_fn = when_fn_factory(audio=path, fps=Fraction, duration=float, cameras=[path, ...])
        how_fn = how_fn_factory(cameras=[path, ...], fps=Fraction, duration=float)
    """
    if model_dir is None:
        return None, None, None
    if not os.path.isdir(model_dir):
        raise NodeInputError(node, "model_dir", "a folder with trained concert models (models/avlab/concert/...)",
                             os.fspath(model_dir))
    from .models import load_concert_models

    models = load_concert_models(model_dir)
    return (*_factories_from_models(models), models.threshold("audio"))


def plan_edit(
    cameras: Sequence[str],
    *,
    audio: str | None = None,
    fps: media.FpsLike | None = None,
    min_shot_s: float = 2.0,
    max_shot_s: float = 20.0,
    threshold: float | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    tolerance_s: float = 0.5,
    allow_short_audio: bool = False,
    activity_rate: float = 5.0,
    node: str = _NODE,
) -> tuple[EditDecisionList, int]:
    """Probe the cameras, measure the master audio, build *when* / *how* (trained models through
    :func:`load_model_factories`, else :func:`breath_when_fn` + :func:`activity_how_fn`) and decide
    the edit. Returns ``(edl, audio_samples)``; every file is streamed.

    Args:
        cameras: at least two synchronised camera files of one length (within ``tolerance_s``).
        audio: the master audio file (default: the first camera's audio track).
        fps: program frame rate (default: the first camera's).
        min_shot_s, max_shot_s, threshold: :func:`decide_edit`.
        model_dir: folder of trained concert models (None: the fallback).
        threshold: cut threshold (None: the models' validation-tuned one, 0.5 for the fallback).
        allow_short_audio: accept audio shorter than the cameras (the edit ends with the audio).
    """
    from .render import check_audio_covers_cameras, probe_cameras

    cameras = [os.fspath(c) for c in cameras]
    infos = probe_cameras(cameras, min_cameras=2, same_length_tolerance_s=tolerance_s, node=node)
    rate = media.as_fps(infos[0].fps if fps in (None, 0) else fps, node=node, input_name="fps")
    audio_src = cameras[0] if audio is None else os.fspath(audio)
    energy, samples, sr = audio_frame_energy(audio_src, rate, node=node, input_name="audio")
    duration = samples / sr
    if not allow_short_audio:
        check_audio_covers_cameras(duration, infos, audio_src, tolerance_s=tolerance_s, node=node)
    segments = segment_windows(duration)
    when_factory, how_factory, tuned = load_model_factories(model_dir, node=node)
    if threshold is None:
        threshold = tuned if tuned is not None else 0.5
    if when_factory is not None:
        when_fn = when_factory(audio=audio_src, segments=segments, fps=rate, duration=duration, cameras=cameras)
        segments = list(getattr(when_fn, "segment_times", segments))     # the model's own segment grid
    else:
        when_fn = breath_when_fn(energy, rate, segments, typical_shot_s=min(max_shot_s, max(2 * min_shot_s, 8.0)))
    if how_factory is not None:
        how_fn = how_factory(cameras=cameras, fps=rate, duration=duration)
    else:
        how_fn = activity_how_fn(camera_activity(cameras, rate=activity_rate, node=node), activity_rate)
    edl = decide_edit(segments, duration, when_fn, how_fn, cameras=cameras, fps=rate, min_shot_s=min_shot_s,
                      max_shot_s=max_shot_s, threshold=threshold, energy=energy, audio=audio_src, node=node)
    edl.metadata["models"] = {"when": "model" if when_factory is not None else "fallback: breath_when_fn",
                              "how": "model" if how_factory is not None else "fallback: activity_how_fn",
                              "model_dir": model_dir}
    return edl, samples
