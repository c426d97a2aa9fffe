"""Procedural multi-camera "concerts" with phrase-aligned cuts (ground truth for papers.md §3).

A stage with performers, filmed by one wide camera and ``num_cameras - 1`` close-up cameras, all
synchronised. The music is a sequence of phrases; each phrase has a lead performer (it plays the
melody, stands in a spotlight and moves most), a key and a tempo, and ends with a held note and a
short breath. The ground-truth editor cuts exactly at phrase boundaries and chooses the close-up
that shows the new lead (or the wide shot if it already shows it) — "when to cut" is audible, "how
to cut" is visible. Segment labels follow the paper's protocol: 4 s windows, 2 s hop, label 1 if a
cut falls inside. Plain numpy + torch, deterministic from :class:`ConcertConfig`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from . import audio as sound
from .scene import COLORS
from ..common.errors import check_fields

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
BREATH = 0.35          # s of near-silence at the end of every phrase


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

    def validate(self, node: str = "ConcertConfig") -> None:
        checks = (
            ("num_cameras", 2 <= self.num_cameras <= self.num_performers + 1,
             f"2..{self.num_performers + 1} cameras (one wide + one close-up per performer group)"),
            ("num_performers", 2 <= self.num_performers <= len(INSTRUMENTS), f"2..{len(INSTRUMENTS)}"),
            ("duration", math.isfinite(self.duration) and self.duration >= 4.0, "≥ 4 seconds"),
            ("fps", math.isfinite(self.fps) and self.fps > 0, "a frame rate > 0"),
            ("height", self.height >= 16, "≥ 16 pixels"),
            ("width", self.width >= 16, "≥ 16 pixels"),
            ("sample_rate", self.sample_rate >= 8000, "≥ 8000 Hz"),
            ("min_phrase", 1.0 <= self.min_phrase <= self.max_phrase, "1 s ≤ min_phrase ≤ max_phrase"),
        )
        check_fields(self, node, checks)


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

    def camera_per_frame(self) -> torch.Tensor:
        """[T] camera index of the ground-truth edit at each frame."""
        T = self.views.shape[1]
        times = (np.arange(T) + 0.5) / self.fps
        cams = np.zeros(T, np.int64)
        for start, end, cam in self.shots:
            cams[(times >= start) & (times < end)] = cam
        return torch.from_numpy(cams)

    def program(self) -> torch.Tensor:
        """[T,H,W,3] the ground-truth edit."""
        cams = self.camera_per_frame()
        return self.views[cams, torch.arange(len(cams))]

    def segment_labels(self, segment: float = 4.0, hop: float = 2.0) -> list[dict]:
        """Paper protocol (§3 data): windows of ``segment`` s every ``hop`` s; label 1 if a cut
        falls strictly inside. ``since_last_cut`` is the time from the last cut (or start) to the
        window start."""
        out, cuts, start = [], self.cut_times, 0.0
        while start + segment <= self.config.duration + 1e-9:
            end = start + segment
            previous = [c for c in cuts if c <= start]
            out.append({"start": round(start, 4), "end": round(end, 4),
                        "label": int(any(start < c < end for c in cuts)),
                        "since_last_cut": round(start - (previous[-1] if previous else 0.0), 4)})
            start += hop
        return out

    def labels(self) -> dict:
        return {"config": asdict(self.config), "cut_times": self.cut_times,
                "shots": [list(s) for s in self.shots], "phrases": self.phrases,
                "performers": self.performers, "cameras": self.cameras,
                "segments": self.segment_labels()}


def _phrases(cfg: ConcertConfig, rng: np.random.Generator) -> list[dict]:
    bounds = [0.0]
    while cfg.duration - bounds[-1] > cfg.max_phrase:
        bounds.append(bounds[-1] + rng.uniform(cfg.min_phrase, cfg.max_phrase))
    if cfg.duration - bounds[-1] < cfg.min_phrase and len(bounds) > 1:
        bounds.pop()
        if cfg.duration - bounds[-1] > cfg.max_phrase:            # split the long tail in two
            bounds.append((bounds[-1] + cfg.duration) / 2)
    bounds.append(cfg.duration)
    phrases, lead = [], -1
    for a, b in zip(bounds[:-1], bounds[1:]):
        lead = int(rng.choice([p for p in range(cfg.num_performers) if p != lead]))
        phrases.append({"start": round(a, 4), "end": round(b, 4), "lead": lead,
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


def _music(cfg: ConcertConfig, phrases, performers, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mono mix and per-performer signals ``[P,S]``."""
    sr = cfg.sample_rate
    S = int(round(cfg.duration * sr))
    parts = np.zeros((cfg.num_performers, S), np.float32)
    for phrase in phrases:
        a, b = int(phrase["start"] * sr), int((phrase["end"] - BREATH) * sr)
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
    """[P,T] RMS of each performer's part per video frame, 0..1."""
    sr = cfg.sample_rate
    out = np.zeros((parts.shape[0], frames), np.float32)
    for t in range(frames):
        a, b = int(t / cfg.fps * sr), int((t + 1) / cfg.fps * sr)
        out[:, t] = np.sqrt((parts[:, a:b] ** 2).mean(1)) if b > a else 0.0
    return out / max(1e-6, out.max())


def _render_stage(cfg: ConcertConfig, performers, phrases, activity, stage_h, stage_w) -> np.ndarray:
    T = activity.shape[1]
    ys, xs = np.mgrid[0:stage_h, 0:stage_w].astype(np.float32) + 0.5
    base = np.zeros((stage_h, stage_w, 3), np.float32)
    wall = ys < 0.62 * stage_h
    base[wall] = (0.10, 0.08, 0.14)
    base[~wall] = (0.30, 0.22, 0.14)
    base[~wall] *= (0.7 + 0.3 * (ys[~wall] / stage_h))[:, None]
    frames = np.repeat(base[None], T, axis=0)
    lead_at = np.zeros(T, np.int64)
    for phrase in phrases:
        lead_at[int(phrase["start"] * cfg.fps):int(math.ceil(phrase["end"] * cfg.fps))] = phrase["lead"]
    unit = stage_w / cfg.num_performers
    for t in range(T):
        frame = frames[t]
        for p, perf in enumerate(performers):
            cx = (p + 0.5) * unit
            act = float(activity[p, t])
            if lead_at[t] == p:                                   # spotlight on the lead
                light = np.exp(-(((xs - cx) / (0.45 * unit)) ** 2 + ((ys - 0.62 * stage_h) / (0.4 * stage_h)) ** 2))
                frame += 0.35 * light[..., None] * np.array([1.0, 0.95, 0.8], np.float32)
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
    return np.clip(frames, 0.0, 1.0)


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
    frames = max(1, int(round(cfg.duration * cfg.fps)))
    stage_h, stage_w = 2 * cfg.height, 2 * cfg.width
    cameras = _camera_windows(cfg, stage_w, stage_h)
    mix, parts = _music(cfg, phrases, performers, rng)
    activity = _activity(parts, cfg, frames)
    stage = torch.from_numpy(_render_stage(cfg, performers, phrases, activity, stage_h, stage_w))
    stage = stage.permute(0, 3, 1, 2)
    views = []
    for cam in cameras:
        x0, y0, x1, y1 = cam["window"]
        crop = stage[:, :, y0:y1, x0:x1]
        views.append(torch.nn.functional.interpolate(crop, size=(cfg.height, cfg.width), mode="bilinear",
                                                     antialias=True, align_corners=False))
    views_t = torch.stack(views).permute(0, 1, 3, 4, 2).clamp(0, 1).contiguous()
    return Concert(config=cfg, views=views_t, audio=torch.from_numpy(mix), phrases=phrases,
                   shots=_shots(phrases, cameras), performers=performers, cameras=cameras)
