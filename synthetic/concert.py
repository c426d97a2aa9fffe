"""Procedural multi-camera "concerts" with phrase-aligned cuts (ground truth for papers.md §3).

A stage with performers, filmed by one wide camera and ``num_cameras - 1`` close-up cameras, all
synchronised. The music is a sequence of phrases; each phrase has a lead performer (it plays the
melody, stands in a spotlight and moves most), a key and a tempo, and ends with a held note and a
short breath. The ground-truth editor cuts exactly at phrase boundaries and chooses the close-up
that shows the new lead (or the wide shot if it already shows it) — "when to cut" is audible, "how
to cut" is visible. Segment labels follow the paper's protocol: 4 s windows, 2 s hop, label 1 if a
cut falls inside (:func:`segment_starts`). Plain numpy + torch, deterministic from :class:`ConcertConfig`.

No shortcuts (the cutting models must hear the phrase change and see the lead):

* ``inner_breaths``: a phrase may be played as two or three *sentences*, each ending in the same
  breath (same silence, same accompaniment swell, same accented restart, on the frame grid) as a
  phrase end, with no cut: silence alone does not mark a cut, the change of lead instrument,
  key, tempo and accompaniment after it does.
* ``lighting``: every camera auto-exposes (each frame is scaled to a target mean brightness: the
  camera's mean over the concert times a slow drift ``1 ± lighting``, periods of 6–15 s, independent
  of the phrases), the spotlight's strength varies per phrase (``(1 − lighting)..1`` of full) and a
  dimmer wash light (30–65 % of the spotlight) falls on another performer, moving every 2–6 s
  independently of the phrases: the lit close-up is not the brightest picture, nor the only one
  with a glow; the strongest glow among the cameras tells the lead. The brightest wall patch of
  the wide view stays on the lead on every frame.
* Phrase lengths are drawn uniformly in ``min_phrase..max_phrase``; a wide range (the cutting
  proof uses 3–14 s) keeps the time since the last cut a weak predictor.

``inner_breaths=0, lighting=0`` renders the concerts of earlier versions exactly.

Time (the pack's rule, :mod:`avlab.common.media`): frame ``t`` shows time ``t / fps`` and owns audio
samples ``[round(t·sr/fps), round((t+1)·sr/fps))``. Phrase boundaries lie on the frame grid, so a
phrase that starts on frame ``f`` starts its music on that frame's first sample, and the program cut,
the spotlight change and the lead's movement all happen exactly on frame ``f`` (``cut_frames``). A
segment holds the frames of its time window (:func:`~avlab.common.media.segment_frame_indices`) and
is labelled 1 when a cut falls between two of its frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from . import audio as sound
from .scene import COLORS, _is_int
from ..common import media
from ..common.errors import check_fields
from ..common.memory import check_memory, format_bytes

#: Instrument timbres: harmonic amplitudes and octave shift (relative to the phrase key).
INSTRUMENTS: dict[str, tuple[tuple[float, ...], int]] = {
    "violin": ((1.0, 0.6, 0.5, 0.4, 0.3, 0.2), 1),
    "cello": ((1.0, 0.8, 0.5, 0.3, 0.2), -1),
    "flute": ((1.0, 0.2, 0.05), 1),
    "horn": ((1.0, 0.7, 0.3, 0.1), 0),
    "clarinet": ((1.0, 0.05, 0.5, 0.05, 0.3), 0),
    "piano": ((1.0, 0.4, 0.25, 0.15, 0.1, 0.05), 0),
}
PENTATONIC = (0, 2, 4, 7, 9, 12, 14)
BREATH = 0.35          # s of near-silence at the end of every phrase (and of every sentence inside one)
MIN_SENTENCE = 1.5     # s: shortest sentence of a phrase split by inner breaths

#: Peak bytes of :func:`make_concert` per pixel of one camera frame (× frames): the stage, rendered at
#: twice the camera size (48), the camera being resized (12) and its temporaries (8), plus 12 per
#: camera view; per audio sample: the mix and its temporaries (10) plus 4 per performer part. Measured
#: peaks (VmHWM: 80 frames of 160×90 with 3 / 5 cameras; 60 s at 48 kHz with 4 / 6 performers) are
#: 68 + 12·cameras B/pixel and 10 + 4·performers B/sample, up to 7 % more with two torch threads;
#: ``_MEMORY_FACTOR`` is the headroom over them.
_STAGE_PIXEL_BYTES = 68
_CAMERA_PIXEL_BYTES = 12
_SAMPLE_BYTES = 10
_PERFORMER_SAMPLE_BYTES = 4
_MEMORY_FACTOR = 1.2


@dataclass(frozen=True)
class ConcertConfig:
    seed: int = 0
    num_cameras: int = 3
    duration: float = 24.0
    fps: float = 5.0
    height: int = 144
    width: int = 256
    sample_rate: int = 16000
    num_performers: int = 4
    min_phrase: float = 3.0
    max_phrase: float = 8.0
    inner_breaths: float = 0.6      # probability that a phrase holds a breath without a cut (a 2nd: p²)
    lighting: float = 0.3           # auto-exposure drift, spotlight jitter, wash light (0 = none)

    def validate(self, node: str = "ConcertConfig", extra_pixel_bytes: int = 0) -> None:
        """Raise :class:`NodeInputError` naming the bad field, or the field to lower when the concert
        (plus ``extra_pixel_bytes`` per camera-frame pixel of the caller's outputs) would not fit in memory."""
        checks = (
            ("num_cameras", 2 <= self.num_cameras <= self.num_performers + 1,
             f"2..{self.num_performers + 1} cameras (one wide + one close-up per performer group)"),
            ("num_performers", 2 <= self.num_performers <= len(INSTRUMENTS), f"2..{len(INSTRUMENTS)}"),
            ("duration", math.isfinite(self.duration) and self.duration >= 4.0, "≥ 4 seconds"),
            ("fps", math.isfinite(self.fps) and self.fps > 0, "a frame rate > 0"),
            ("height", self.height >= 16, "≥ 16 pixels"),
            ("width", self.width >= 16, "≥ 16 pixels"),
            ("sample_rate", _is_int(self.sample_rate) and self.sample_rate >= 8000, "an integer ≥ 8000 Hz"),
            ("min_phrase", 1.0 <= self.min_phrase <= self.max_phrase, "1 s ≤ min_phrase ≤ max_phrase"),
            ("inner_breaths", 0.0 <= self.inner_breaths <= 1.0, "a probability in 0..1"),
            ("lighting", 0.0 <= self.lighting <= 0.5, "0..0.5 (exposure drift ±, spotlight jitter; 0 = off)"),
        )
        check_fields(self, node, checks)
        lo, hi = self.phrase_frames
        check_fields(self, node, (("fps", lo <= hi, "a frame rate at which a phrase of min_phrase..max_phrase "
                                   "seconds can last a whole number of frames"),))
        self.check_memory(node, extra_pixel_bytes)

    @property
    def num_frames(self) -> int:
        """Frames of the concert: ``duration · fps`` rounded (ties up); the audio lasts exactly
        ``num_frames / fps``."""
        return max(1, math.floor(self.duration * self.fps + 0.5))

    @property
    def phrase_frames(self) -> tuple[int, int]:
        """Shortest and longest phrase in frames: ``ceil(min_phrase·fps)``, ``floor(max_phrase·fps)``."""
        return math.ceil(self.min_phrase * self.fps - 1e-9), math.floor(self.max_phrase * self.fps + 1e-9)

    def memory_bytes(self, extra_pixel_bytes: int = 0) -> tuple[int, int]:
        """Estimated peak of :func:`make_concert` as (video part, audio part) in bytes;
        ``extra_pixel_bytes`` per camera-frame pixel adds a caller's own outputs (a node's program/grid)."""
        pixels = self.num_frames * self.height * self.width
        per_pixel = _STAGE_PIXEL_BYTES + _CAMERA_PIXEL_BYTES * self.num_cameras + extra_pixel_bytes
        samples = media.num_audio_samples(self.num_frames, self.sample_rate, self.fps)
        per_sample = _SAMPLE_BYTES + _PERFORMER_SAMPLE_BYTES * self.num_performers
        return int(_MEMORY_FACTOR * pixels * per_pixel), int(_MEMORY_FACTOR * samples * per_sample)

    def check_memory(self, node: str = "ConcertConfig", extra_pixel_bytes: int = 0) -> None:
        """Refuse (:func:`avlab.common.memory.check_memory`) a concert that would not fit in memory,
        naming ``duration`` (or ``sample_rate`` when the audio dominates)."""
        video, audio = self.memory_bytes(extra_pixel_bytes)
        what = (f"{self.num_frames} frames ({self.duration:g} s at {self.fps:g} fps) of {self.num_cameras} "
                f"cameras at {self.width}×{self.height} ({format_bytes(video)}) + {self.sample_rate} Hz audio "
                f"({format_bytes(audio)})")
        check_memory(node, "duration" if video >= audio else "sample_rate", video + audio, what)


@dataclass
class Concert:
    config: ConcertConfig
    views: torch.Tensor            # [K,T,H,W,3] 0..1, camera 0 = wide
    audio: torch.Tensor            # [1,S] mono
    phrases: list[dict]            # start, end, lead, instrument, root_hz, bpm
    shots: list[tuple[float, float, int]]    # (start s, end s, camera)
    performers: list[dict]
    cameras: list[dict]            # crop window on the stage + performers in view

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def cut_times(self) -> list[float]:
        return [start for start, _, _ in self.shots[1:]]

    @property
    def cut_frames(self) -> list[int]:
        """First frame of every shot after the first (the program and the spotlight switch there)."""
        return [phrase["start_frame"] for phrase in self.phrases[1:]]

    def camera_per_frame(self) -> torch.Tensor:
        """[T] camera index of the ground-truth edit at each frame."""
        cams = torch.zeros(self.views.shape[1], dtype=torch.int64)
        for phrase, (_, _, cam) in zip(self.phrases, self.shots):
            cams[phrase["start_frame"]:phrase["end_frame"]] = cam
        return cams

    def program(self) -> torch.Tensor:
        """[T,H,W,3] the ground-truth edit."""
        cams = self.camera_per_frame()
        return self.views[cams, torch.arange(len(cams))]

    def segment_labels(self, segment: float = 4.0, hop: float = 2.0) -> list[dict]:
        """Paper protocol (§3 data): windows of ``segment`` s every ``hop`` s (:func:`segment_starts`),
        each holding the frames ``[start_frame, end_frame)`` of its time span
        (:func:`avlab.common.media.segment_frame_indices`); label 1 if a cut falls between two of them.
        ``since_last_cut`` is the time from the last cut (or the start) to the window's first frame."""
        T, out, cuts = self.views.shape[1], [], self.cut_frames
        for start in segment_starts(T / self.fps, segment, hop):
            frames = media.segment_frame_indices(T, self.fps, start, start + segment)
            lo, hi = int(frames[0]), int(frames[-1]) + 1
            previous = [c for c in cuts if c <= lo]
            out.append({"start": round(start, 4), "end": round(start + segment, 4), "start_frame": lo,
                        "end_frame": hi, "label": int(any(lo < c < hi for c in cuts)),
                        "since_last_cut": round((lo - (previous[-1] if previous else 0)) / self.fps, 4)})
        return out

    def labels(self) -> dict:
        return {"config": asdict(self.config), "cut_times": self.cut_times, "cut_frames": self.cut_frames,
                "shots": [list(s) for s in self.shots], "phrases": self.phrases,
                "performers": self.performers, "cameras": self.cameras,
                "segments": self.segment_labels()}


def segment_starts(duration: float, segment: float = 4.0, hop: float = 2.0) -> list[float]:
    """Start times (s) of the paper's windows (§3 data): ``segment`` s long every ``hop`` s, each wholly
    inside ``[0, duration]`` (the protocol of :meth:`Concert.segment_labels` and of the cutting models'
    features, :func:`avlab.concert_edit.features.segment_times`)."""
    out, i = [], 0
    while i * hop + segment <= duration + 1e-9:
        out.append(i * hop)
        i += 1
    return out


def _phrases(cfg: ConcertConfig, rng: np.random.Generator) -> list[dict]:
    """Phrases of ``phrase_frames`` frames (whole frames: boundaries on the frame grid)."""
    T, (lo, hi) = cfg.num_frames, cfg.phrase_frames
    bounds = [0]
    while T - bounds[-1] > hi:
        bounds.append(bounds[-1] + int(rng.integers(lo, hi + 1)))
    if T - bounds[-1] < lo and len(bounds) > 1:
        bounds.pop()
        if T - bounds[-1] > hi:                                     # split the long tail in two
            bounds.append((bounds[-1] + T) // 2)
    bounds.append(T)
    phrases, lead = [], -1
    for a, b in zip(bounds[:-1], bounds[1:]):
        lead = int(rng.choice([p for p in range(cfg.num_performers) if p != lead]))
        phrases.append({"start": round(a / cfg.fps, 4), "end": round(b / cfg.fps, 4), "start_frame": a,
                        "end_frame": b, "lead": lead,
                        "root_hz": float(196.0 * 2 ** (rng.integers(0, 12) / 12)),
                        "bpm": float(rng.uniform(90, 140))})
    return phrases


def _camera_windows(cfg: ConcertConfig, stage_w: int, stage_h: int) -> list[dict]:
    """Camera 0 sees the whole stage; the others split the performers into contiguous groups."""
    cams = [{"camera": 0, "kind": "wide", "performers": list(range(cfg.num_performers)),
             "window": [0, 0, stage_w, stage_h]}]
    groups = np.array_split(np.arange(cfg.num_performers), cfg.num_cameras - 1)
    aspect = stage_h / stage_w
    for i, group in enumerate(groups, start=1):
        left = group[0] / cfg.num_performers * stage_w
        right = (group[-1] + 1) / cfg.num_performers * stage_w
        w = right - left
        h = w * aspect
        top = min(stage_h - h, max(0.0, 0.55 * stage_h - h / 2))
        cams.append({"camera": i, "kind": "close-up", "performers": [int(p) for p in group],
                     "window": [int(left), int(top), int(round(left + w)), int(round(top + h))]})
    return cams


def _shots(phrases: list[dict], cameras: list[dict]) -> list[tuple[float, float, int]]:
    """The editor: wide shot first, then at each phrase the close-up of the new lead (or wide if
    that close-up is already on air)."""
    shots, current = [], 0
    for i, phrase in enumerate(phrases):
        if i > 0:
            closeup = next(c["camera"] for c in cameras[1:] if phrase["lead"] in c["performers"])
            current = closeup if closeup != current else 0
        shots.append((phrase["start"], phrase["end"], current))
    return shots


def _note(freq: float, harmonics, n: int, sr: int, vibrato: float) -> np.ndarray:
    t = np.arange(n) / sr
    phase = 2 * np.pi * freq * (t + vibrato * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))
    out = sum(a * np.sin((h + 1) * phase) for h, a in enumerate(harmonics) if freq * (h + 1) < sr / 2)
    attack = np.minimum(1.0, t / 0.02)
    release = np.minimum(1.0, (n - np.arange(n)) / (0.04 * sr))
    return np.asarray(out) * attack * release


def _sentences(cfg: ConcertConfig, phrases: list[dict], rng: np.random.Generator) -> list[tuple[int, int, dict]]:
    """``(start_frame, end_frame, phrase)`` of every sentence: a phrase holds one inner breath with
    probability ``inner_breaths`` (a second one with its square) where sentences of at least
    ``MIN_SENTENCE`` fit; splits lie on the frame grid like the phrase boundaries."""
    shortest = math.ceil(MIN_SENTENCE * cfg.fps - 1e-9)
    out = []
    for phrase in phrases:
        a, b = phrase["start_frame"], phrase["end_frame"]
        splits: list[int] = []
        if cfg.inner_breaths > 0:
            want = int(rng.random() < cfg.inner_breaths)
            want += int(want and rng.random() < cfg.inner_breaths)
            for _ in range(want):
                edges = [a, *splits, b]
                room = [(lo + shortest, hi - shortest) for lo, hi in zip(edges[:-1], edges[1:])
                        if hi - lo >= 2 * shortest]
                if not room:
                    break
                lo, hi = room[int(rng.integers(0, len(room)))]
                splits = sorted([*splits, int(rng.integers(lo, hi + 1))])
        edges = [a, *splits, b]
        out += [(s, e, phrase) for s, e in zip(edges[:-1], edges[1:])]
    return out


def _music(cfg: ConcertConfig, phrases, performers, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mono mix and per-performer signals ``[P,S]``; a phrase (and every sentence inside it) starts on
    its first frame's first sample and ends with a breath."""
    sr = cfg.sample_rate
    bounds = media.frame_sample_bounds(cfg.num_frames, sr, cfg.fps).tolist()
    parts = np.zeros((cfg.num_performers, bounds[-1]), np.float32)
    sentence_rng = np.random.default_rng([cfg.seed, 0xB4EA])     # its own stream: phrases/leads unchanged
    for start_frame, end_frame, phrase in _sentences(cfg, phrases, sentence_rng):
        a, b = bounds[start_frame], bounds[end_frame] - int(BREATH * sr)
        beat = 60.0 / phrase["bpm"]
        root = phrase["root_hz"]
        # accompaniment: a chord held by everyone but the lead, swelling in and out
        for p, perf in enumerate(performers):
            if p == phrase["lead"]:
                continue
            harmonics, octave = INSTRUMENTS[perf["instrument"]]
            freq = root * 2 ** octave * 2 ** ((0, 4, 7, 12)[p % 4] / 12)
            tone = _note(freq, harmonics, b - a, sr, 0.0)
            env = np.minimum(1.0, np.minimum(np.arange(b - a) / (0.4 * sr), (b - a - np.arange(b - a)) / (0.6 * sr)))
            parts[p, a:b] += 0.12 * tone * env
        # melody: eighths and quarters on the pentatonic scale, last note held
        lead = performers[phrase["lead"]]
        harmonics, octave = INSTRUMENTS[lead["instrument"]]
        t = a
        while t < b:
            length = int(beat * sr * rng.choice([0.5, 1.0, 1.0, 1.5]))
            if b - (t + length) < beat * sr:                 # final, held note
                length = b - t
            degree = PENTATONIC[rng.integers(0, len(PENTATONIC))]
            if rng.random() < 0.1:                          # a short rest inside the phrase
                t += length // 2
                continue
            freq = root * 2 ** octave * 2 ** (degree / 12)
            accent = 1.0 if t == a else 0.7
            note = _note(freq, harmonics, length, sr, 0.004)
            if length == b - t:
                note = note * np.linspace(1.0, 0.2, length)
            parts[phrase["lead"], t:t + length] += 0.35 * accent * note
            t += length
    mix = sound.normalise(parts.sum(0, keepdims=True))
    return mix.astype(np.float32), parts


def _activity(parts: np.ndarray, cfg: ConcertConfig, frames: int) -> np.ndarray:
    """[P,T] RMS of each performer's part over each video frame's samples, 0..1."""
    bounds = media.frame_sample_bounds(frames, cfg.sample_rate, cfg.fps).tolist()
    out = np.zeros((parts.shape[0], frames), np.float32)
    for t in range(frames):
        a, b = bounds[t], bounds[t + 1]
        out[:, t] = np.sqrt((parts[:, a:b] ** 2).mean(1)) if b > a else 0.0
    return out / max(1e-6, out.max())


def _lighting(cfg: ConcertConfig, phrases: list[dict], num_cameras: int, frames: int) -> dict:
    """From their own random stream (independent of the phrases): the spotlight strength per phrase
    ``spot [len(phrases)]`` (``0.35·(1 − lighting·u)``); the wash light's performer ``wash_at [T]``
    (−1: none) and its share of the spotlight ``wash_share [T]`` (0.30..0.65, a new performer every
    2–6 s); every camera's exposure drift per frame ``gains [K,T]`` (``1 + lighting·sin(2πt/P + φ)``,
    P in 6..15 s)."""
    rng = np.random.default_rng([cfg.seed, 0x11A7])
    spot = 0.35 * (1.0 - cfg.lighting * rng.random(len(phrases)))
    periods, phases = rng.uniform(6.0, 15.0, num_cameras), rng.uniform(0, 2 * np.pi, num_cameras)
    t = np.arange(frames) / cfg.fps
    gains = 1.0 + cfg.lighting * np.sin(2 * np.pi * t[None] / periods[:, None] + phases[:, None])
    wash_at, wash_share = np.full(frames, -1, np.int64), np.zeros(frames, np.float32)
    f = 0
    while cfg.lighting and f < frames:
        n = max(1, round(rng.uniform(2.0, 6.0) * cfg.fps))
        wash_at[f:f + n] = rng.integers(0, cfg.num_performers)
        wash_share[f:f + n] = rng.uniform(0.30, 0.65)
        f += n
    return {"spot": spot.astype(np.float32), "gains": gains.astype(np.float32), "wash_at": wash_at,
            "wash_share": wash_share}


def _render_stage(cfg: ConcertConfig, performers, phrases, activity, stage_h, stage_w,
                  lights: dict | None = None) -> np.ndarray:
    T = activity.shape[1]
    ys, xs = np.mgrid[0:stage_h, 0:stage_w].astype(np.float32) + 0.5
    base = np.zeros((stage_h, stage_w, 3), np.float32)
    wall = ys < 0.62 * stage_h
    base[wall] = (0.10, 0.08, 0.14)
    base[~wall] = (0.30, 0.22, 0.14)
    base[~wall] *= (0.7 + 0.3 * (ys[~wall] / stage_h))[:, None]
    frames = np.repeat(base[None], T, axis=0)
    lead_at = np.zeros(T, np.int64)
    strength = np.full(T, 0.35, np.float32)
    for i, phrase in enumerate(phrases):    # the same frames as Concert.camera_per_frame
        lead_at[phrase["start_frame"]:phrase["end_frame"]] = phrase["lead"]
        if lights is not None:
            strength[phrase["start_frame"]:phrase["end_frame"]] = lights["spot"][i]
    wash_at = lights["wash_at"] if lights is not None else np.full(T, -1)
    unit = stage_w / cfg.num_performers
    for t in range(T):
        frame = frames[t]
        for p, perf in enumerate(performers):
            cx = (p + 0.5) * unit
            act = float(activity[p, t])
            lit = lead_at[t] == p
            if lit or wash_at[t] == p:                            # spotlight on the lead / the wash
                light = np.exp(-(((xs - cx) / (0.45 * unit)) ** 2 + ((ys - 0.62 * stage_h) / (0.4 * stage_h)) ** 2))
                level = strength[t] * (1.0 if lit else lights["wash_share"][t])
                frame += level * light[..., None] * np.array([1.0, 0.95, 0.8], np.float32)
            sway = 0.04 * unit * act * math.sin(2 * math.pi * 1.3 * t / cfg.fps + p)
            colour = np.asarray(COLORS[perf["color"]], np.float32)
            body = (np.abs(xs - cx - sway) < 0.13 * unit) & (ys > 0.45 * stage_h) & (ys < 0.80 * stage_h)
            frame[body] = 0.35 * colour + 0.1
            head = (xs - cx - sway) ** 2 + (ys - 0.39 * stage_h) ** 2 < (0.07 * unit) ** 2
            frame[head] = (0.85, 0.70, 0.55)
            icx, icy = cx + 0.16 * unit + sway, 0.62 * stage_h
            angle = 0.6 + 0.5 * act * math.sin(2 * math.pi * 2.0 * t / cfg.fps + 2 * p)
            u = (xs - icx) * math.cos(angle) + (ys - icy) * math.sin(angle)
            v = -(xs - icx) * math.sin(angle) + (ys - icy) * math.cos(angle)
            instrument = (u / (0.16 * unit)) ** 2 + (v / (0.06 * unit)) ** 2 < 1.0
            frame[instrument] = colour * (0.6 + 0.4 * act)
    return np.clip(frames, 0.0, 1.0, out=frames)


def make_concert(config: ConcertConfig | None = None, **overrides) -> Concert:
    """Render one concert (all cameras, the music and the ground-truth edit)."""
    cfg = replace(config or ConcertConfig(), **overrides)
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 0xC0C3])
    names = rng.permutation(list(INSTRUMENTS))[: cfg.num_performers]
    colors = rng.permutation(list(COLORS))[: cfg.num_performers]
    performers = [{"index": p, "instrument": str(n), "color": str(c)} for p, (n, c) in enumerate(zip(names, colors))]
    phrases = _phrases(cfg, rng)
    for ph in phrases:
        ph["instrument"] = performers[ph["lead"]]["instrument"]
    frames = cfg.num_frames
    stage_h, stage_w = 2 * cfg.height, 2 * cfg.width
    cameras = _camera_windows(cfg, stage_w, stage_h)
    mix, parts = _music(cfg, phrases, performers, rng)
    activity = _activity(parts, cfg, frames)
    lights = _lighting(cfg, phrases, len(cameras), frames)
    gains = lights["gains"]
    stage = torch.from_numpy(_render_stage(cfg, performers, phrases, activity, stage_h, stage_w, lights))
    stage = stage.permute(0, 3, 1, 2)
    views = torch.empty(len(cameras), frames, cfg.height, cfg.width, 3)
    for k, cam in enumerate(cameras):
        x0, y0, x1, y1 = cam["window"]
        views[k] = torch.nn.functional.interpolate(stage[:, :, y0:y1, x0:x1], size=(cfg.height, cfg.width),
                                                   mode="bilinear", antialias=True,
                                                   align_corners=False).permute(0, 2, 3, 1)
        if cfg.lighting:                    # auto-exposure to a drifting target brightness
            mean = views[k].mean((1, 2, 3)).clamp_min(1e-4)
            views[k] *= (mean.mean() * torch.from_numpy(gains[k]) / mean).view(-1, 1, 1, 1)
    return Concert(config=cfg, views=views.clamp_(0, 1), audio=torch.from_numpy(mix), phrases=phrases,
                   shots=_shots(phrases, cameras), performers=performers, cameras=cameras)
