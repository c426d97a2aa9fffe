"""Synthetic (video, caption, sound) triples for GRAM retrieval (papers.md §4; issue 9's proof).

One object per clip, described by four attributes that are all *visible* and all *audible*:

* colour (8, :data:`~avlab.synthetic.scene.COLORS`) — the hue; sets the fundamental (one step of a
  just-intonation scale per colour over an octave: the domain's convention, not physics);
* shape (3) — the outline; sets extra inharmonic partials (a circle rings purely, a square and a
  triangle add their own modes);
* material (4, :data:`~avlab.synthetic.audio.MATERIALS`) — a surface pattern (metal: a specular
  band; glass: see-through with a bright rim; wood: grain stripes; rubber: matte with a dark rim)
  and the timbre (mode ratios, gains, decays and contact noise of :data:`avlab.synthetic.audio.MATERIALS`;
  the fundamental stays the colour's);
* motion (3) — ``bouncing`` (in the air, impacts at each floor contact), ``sliding`` (along the
  floor, continuous friction noise at the material's pitch), ``spinning`` (rotating in place
  above the floor, a whoosh modulated at the turn rate).

The caption names all four in one of several templates. Continuous nuisances (position, size,
bounce phase, speed, direction, template) vary per seed. :func:`heldout_combos` fixes a set of
(colour, shape, material, motion) combinations that training never sees, with every single value
still seen in training, so retrieval on them tests composition, not memory.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from . import audio as sound
from .scene import COLORS, SHAPES, _background, _shape_mask

MATERIALS = tuple(sound.MATERIALS)
MOTIONS = ("bouncing", "sliding", "spinning")
#: Fundamental of the lowest colour (Hz); each colour multiplies it by its ratio below.
FUNDAMENTAL_HZ = 330.0
#: Pitch ratio of each colour (just intonation, one octave over the 8 colours).
COLOR_PITCH = dict(zip(COLORS, (1.0, 9 / 8, 5 / 4, 4 / 3, 3 / 2, 5 / 3, 15 / 8, 2.0)))
#: Extra partials (ratio, gain) each shape adds to the material's modes.
SHAPE_PARTIALS = {"circle": (), "square": ((1.41, 0.6), (3.16, 0.3)), "triangle": ((1.73, 0.7), (4.47, 0.35))}
TEMPLATES = (
    "a {color} {material} {shape} {motion}",
    "the {color} {shape} made of {material} is {motion}",
    "{motion} {color} {shape} of {material}",
    "a {material} {shape}, {color}, {motion}",
)
#: Seeds of the data splits (train: seen combinations; val: seen combinations, other seeds — for
#: tuning; test: held-out combinations — for the report).
SPLIT_SEEDS = {"train": 0, "val": 700_000, "test": 900_000}


@dataclass(frozen=True)
class FoleyClipConfig:
    frames: int = 8
    size: int = 64
    fps: float = 8.0
    sample_rate: int = 16000


@dataclass
class FoleyClip:
    frames: torch.Tensor      # [T,H,W,3] 0..1
    audio: torch.Tensor       # [S] mono
    caption: str
    attributes: dict          # color, shape, material, motion
    fps: float
    sample_rate: int


def all_combos() -> list[tuple[str, str, str, str]]:
    return list(itertools.product(COLORS, SHAPES, MATERIALS, MOTIONS))


def heldout_combos(count: int = 32, seed: int = 2025) -> list[tuple[str, str, str, str]]:
    """``count`` (colour, shape, material, motion) combinations kept out of training (fixed by seed)."""
    rng = np.random.default_rng(seed)
    combos = all_combos()
    order = rng.permutation(len(combos))
    return sorted(combos[i] for i in order[:count])


def split_combos(split: str) -> list[tuple[str, str, str, str]]:
    held = set(heldout_combos())
    return sorted(held) if split == "test" else [c for c in all_combos() if c not in held]


def _material_pattern(material: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Per-pixel brightness factor of the material's surface (in object coordinates)."""
    if material == "metal":
        return 0.6 + 0.8 * np.exp(-((v + 0.2 * u + 0.1 * r) / (0.18 * r)) ** 2)     # specular band
    if material == "wood":
        return 0.75 + 0.25 * (np.sin(u / r * 9.0 + 0.6 * np.sin(v / r * 3.0)) > 0)   # grain
    if material == "rubber":
        return np.where(np.sqrt(u * u + v * v) > 0.62 * r, 0.25, 0.8)                # matte, dark rim
    return np.ones_like(u)                                                             # glass: see _render


def _render(cfg: FoleyClipConfig, attrs: dict, xs, ys, angles, r: float) -> np.ndarray:
    S, T = cfg.size, cfg.frames
    bg, _ = _background(S, S)
    frames = np.repeat(bg[None], T, axis=0)
    gy, gx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    colour = np.asarray(COLORS[attrs["color"]], np.float32)
    for t in range(T):
        du, dv = gx - xs[t], gy - ys[t]
        c, s = math.cos(angles[t]), math.sin(angles[t])
        u, v = c * du + s * dv, -s * du + c * dv
        inside = _shape_mask(attrs["shape"], u if attrs["shape"] != "circle" else du,
                             v if attrs["shape"] != "circle" else dv, r)
        if attrs["material"] == "glass":
            rim = inside & ~_shape_mask(attrs["shape"], u * 1.35, v * 1.35, r) if attrs["shape"] != "circle" \
                else inside & (du * du + dv * dv > (0.74 * r) ** 2)
            frames[t][inside] = 0.45 * frames[t][inside] + 0.55 * colour
            frames[t][rim] = np.minimum(1.0, colour * 0.5 + 0.6)
        else:
            pattern = _material_pattern(attrs["material"], u, v, r)
            frames[t][inside] = np.clip(colour * pattern[inside, None], 0, 1)
    return frames


def _tone(freq: np.ndarray | float, partials, num: int, sr: int, rng, decays=None) -> np.ndarray:
    t = np.arange(num) / sr
    out = np.zeros(num)
    for k, (ratio, gain) in enumerate(partials):
        f = freq * ratio
        if np.max(f) >= sr / 2:
            continue
        phase = 2 * np.pi * np.cumsum(np.broadcast_to(f, t.shape)) / sr + rng.uniform(0, 2 * np.pi)
        env = np.exp(-t / decays[k]) if decays is not None else 1.0
        out += gain * np.sin(phase) * env
    return out


def make_foley_clip(seed: int, attributes: dict | None = None, config: FoleyClipConfig | None = None) -> FoleyClip:
    """One clip; ``attributes`` (colour/shape/material/motion) default to a random combination."""
    cfg = config or FoleyClipConfig()
    rng = np.random.default_rng([seed, 0xF01E])
    if attributes is None:
        combo = all_combos()[rng.integers(len(all_combos()))]
        attributes = dict(zip(("color", "shape", "material", "motion"), combo))
    attrs = dict(attributes)
    S, T, fps, sr = cfg.size, cfg.frames, cfg.fps, cfg.sample_rate
    num = int(round(T / fps * sr))
    r = S * rng.uniform(0.15, 0.19)
    floor = S * 0.9
    times = np.arange(T) / fps
    angle0, spin = rng.uniform(0, 2 * np.pi), rng.choice([-1, 1]) * rng.uniform(4.0, 7.0)
    material = sound.MATERIALS[attrs["material"]]
    # the colour sets the fundamental, the material the timbre (its mode ratios, decays, contact noise)
    base = FUNDAMENTAL_HZ * COLOR_PITCH[attrs["color"]] * (0.17 * S / r) ** 0.2     # bigger rings a little lower
    partials = list(zip(material.ratios, material.gains)) + list(SHAPE_PARTIALS[attrs["shape"]])
    track = np.zeros(num)
    if attrs["motion"] == "bouncing":
        x = rng.uniform(1.5 * r, S - 1.5 * r) + np.zeros(T)
        period = rng.uniform(0.45, 0.7)                               # s between floor contacts
        phase = rng.uniform(0, period)
        height = rng.uniform(0.25, 0.4) * S
        frac = ((times + phase) % period) / period                    # 0 at a contact
        ys = floor - r - height * 4 * frac * (1 - frac)
        angles = angle0 + 0 * times
        decays = list(material.decays) + [material.decays[0] * 0.5] * len(SHAPE_PARTIALS[attrs["shape"]])
        contact = period - phase
        while contact < num / sr:
            n = int(contact * sr)
            length = min(num - n, int(0.8 * sr))
            hit = _tone(base, partials, length, sr, rng, decays)
            hit += material.noise_gain * 4 * rng.standard_normal(length) * np.exp(-np.arange(length) / sr / material.noise_decay)
            track[n:n + length] += hit * rng.uniform(0.7, 1.0)
            contact += period
    elif attrs["motion"] == "sliding":
        direction = rng.choice([-1, 1])
        speed = rng.uniform(0.5, 0.8) * S / (T / fps)
        x0 = rng.uniform(0.2, 0.35) * S if direction > 0 else rng.uniform(0.65, 0.8) * S
        x = x0 + direction * speed * times
        ys = floor - r + 0 * times
        angles = angle0 + 0 * times
        noise = rng.standard_normal(num)
        spec = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(num, 1 / sr)
        spec *= np.exp(-0.5 * ((np.log(freqs + 1) - np.log(base * 2)) / 0.25) ** 2)     # band at the pitch
        # friction noise plus the object's own modes: colour (fundamental), material and shape stay audible
        track = np.fft.irfft(spec, num) * 8 + 0.3 * _tone(base, partials, num, sr, rng)
    else:  # spinning
        x = rng.uniform(0.35, 0.65) * S + 0 * times
        ys = floor - r - rng.uniform(0.5, 0.6) * S + 0 * times
        angles = angle0 + spin * times
        mod = 0.5 + 0.5 * np.cos(2 * abs(spin) * np.arange(num) / sr * (2 if attrs["shape"] == "square" else 1.5))
        track = _tone(base, partials, num, sr, rng) * (0.3 + 0.7 * mod)
    frames = _render(cfg, attrs, x, ys, angles, r)
    track = track / max(1e-6, np.abs(track).max()) * rng.uniform(0.5, 0.9)
    caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(**attrs)
    return FoleyClip(frames=torch.from_numpy(np.clip(frames, 0, 1).astype(np.float32)),
                     audio=torch.from_numpy(track.astype(np.float32)), caption=caption,
                     attributes=attrs, fps=fps, sample_rate=sr)


def split_clips(split: str, count: int, offset: int = 0, config: FoleyClipConfig | None = None) -> list[FoleyClip]:
    """Clips ``offset .. offset+count`` of a split; each clip's combination cycles through the split's
    combinations in a seeded order (train/val: seen ones, test: held-out ones)."""
    combos = split_combos(split)
    rng = np.random.default_rng(SPLIT_SEEDS[split] + 17)
    order = rng.permutation(len(combos))
    out = []
    for i in range(offset, offset + count):
        combo = combos[order[i % len(combos)]]
        attrs = dict(zip(("color", "shape", "material", "motion"), combo))
        out.append(make_foley_clip(SPLIT_SEEDS[split] + i, attrs, config))
    return out
