"""Sound synthesis for the synthetic domain: material impacts, moving sources, panning.

Plain numpy, deterministic. Used by :mod:`avlab.synthetic.scene` (impacts at collision frames with a
material-dependent modal timbre; a source panned by its x-position — the ground truth that
FoleyGRAM/StereoSync, papers.md §4–5, must reproduce) and :mod:`avlab.synthetic.concert` (music).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common import media


@dataclass(frozen=True)
class Material:
    """Modal impact model: partials ``base_hz * ratios`` decaying with ``decays`` (s), plus a noise
    burst (contact noise) of gain ``noise_gain`` decaying with ``noise_decay`` (s)."""

    base_hz: float
    ratios: tuple[float, ...]
    gains: tuple[float, ...]
    decays: tuple[float, ...]
    noise_gain: float
    noise_decay: float
    restitution: float


#: Materials ordered by name; the timbre is what distinguishes them (ringing metal and glass,
#: short damped wood, dull rubber).
MATERIALS: dict[str, Material] = {
    "metal": Material(520.0, (1.0, 2.76, 5.40, 8.93), (1.0, 0.6, 0.4, 0.25), (0.60, 0.40, 0.25, 0.15),
                      0.05, 0.004, 0.80),
    "glass": Material(1400.0, (1.0, 2.32, 4.25, 6.63), (1.0, 0.5, 0.35, 0.2), (0.35, 0.25, 0.15, 0.10),
                      0.10, 0.003, 0.85),
    "wood": Material(220.0, (1.0, 2.50, 3.90), (1.0, 0.5, 0.3), (0.06, 0.04, 0.03), 0.40, 0.020, 0.60),
    "rubber": Material(90.0, (1.0, 1.50), (1.0, 0.4), (0.05, 0.03), 0.30, 0.015, 0.90),
}


def impact(material: str, size: float, strength: float, sample_rate: int,
           rng: np.random.Generator) -> np.ndarray:
    """One impact sound (mono). Bigger objects ring lower (pitch ∝ 1/sqrt(size))."""
    m = MATERIALS[material]
    duration = max(max(m.decays), m.noise_decay) * 5.0
    t = np.arange(int(duration * sample_rate)) / sample_rate
    f0 = m.base_hz * np.sqrt(0.08 / max(size, 1e-3))
    out = np.zeros_like(t)
    for ratio, gain, decay in zip(m.ratios, m.gains, m.decays):
        freq = f0 * ratio
        if freq >= sample_rate / 2:
            continue
        out += gain * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t / decay)
    out += m.noise_gain * rng.standard_normal(t.shape) * np.exp(-t / m.noise_decay)
    out *= 1.0 - np.exp(-t / 0.0008)                      # 1 ms attack, no click
    return (strength * out / max(1.0, np.abs(out).max())).astype(np.float32)


def hum(freq: float, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A continuous harmonic source (a moving "engine"): harmonics 1..5 at 1/h with slow tremolo."""
    t = np.arange(num_samples) / sample_rate
    out = np.zeros(num_samples)
    for h in range(1, 6):
        out += np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 2 * np.pi)) / h
    out *= 0.8 + 0.2 * np.sin(2 * np.pi * rng.uniform(2.0, 5.0) * t)
    return (out / np.abs(out).max()).astype(np.float32)


def pan_gains(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constant-power pan: ``x`` in 0 (left) .. 1 (right) → (left gain, right gain)."""
    theta = np.clip(x, 0.0, 1.0) * (np.pi / 2)
    return np.cos(theta), np.sin(theta)


def frames_to_samples(values: np.ndarray, fps: float, sample_rate: int) -> np.ndarray:
    """A per-frame curve at audio rate: frame ``t``'s value sits on the frame's first sample
    (:func:`avlab.common.media.frame_sample_bounds`), linear in between, held after the last frame;
    ``round(len(values)·sr/fps)`` samples."""
    bounds = media.frame_sample_bounds(len(values), sample_rate, fps).numpy()
    return np.interp(np.arange(bounds[-1]), bounds[:-1], values)


def add_at(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    """Mix ``sound`` into ``track[..., start:]`` in place, clipped to the track's end."""
    if start >= track.shape[-1]:
        return
    n = min(sound.shape[-1], track.shape[-1] - start)
    track[..., start:start + n] += sound[..., :n]


def normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale down (never up) so the absolute peak is at most ``peak``."""
    top = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * (peak / top) if top > peak else audio
