"""Loudness envelopes for FoleyGRAM's timing control (papers.md §4, "Envelope ControlNet"; issue 10).

An :class:`Envelope` is a plain tensor of values with its own rate in Hz (never an assumed 25 fps):

* :func:`rms_envelope` — Stable-V2A's control signal: a *causal* moving RMS over ``window_s`` (≈ 0.23 s,
  i.e. 10 240 samples at 44.1 kHz) read at the target rate (default: Stable Audio's latent rate,
  44 100 / 2048 ≈ 21.53 Hz), then smoothed by a centred Hann moving average of ``smooth_frames``.
  Value at frame k = RMS of the ``window`` samples that *end* at the instant k / rate (zeros before the
  clip's start).
* :func:`video_foley_envelope` — Video-Foley's E-L1 variant: 16 kHz, frames of 512 with hop 128 (the
  frame starting at n·128), RMS, μ-law (μ = 255) of the RMS relative to full scale, quantised to 64
  levels and scaled to 0..1.
* :func:`motion_envelope` — a fallback that needs no weights: the mean absolute difference of
  consecutive frames (frame 0 = 0), normalised to peak 1, at the video's own fps.

:meth:`Envelope.resample` moves an envelope to another rate / length by linear interpolation on the
time axis (value k sits at k / rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STABLE_AUDIO_RATE = 44100 / 2048          # latent frames per second of Stable Audio Open
RMS_WINDOW_S = 0.23
VF_RATE, VF_FRAME, VF_HOP, VF_MU, VF_LEVELS = 16000, 512, 128, 255.0, 64


@dataclass
class Envelope:
    """``values`` ``[N]`` (or ``[B, N]``) at ``rate`` values per second; value k is the time k / rate."""

    values: torch.Tensor
    rate: float

    def __post_init__(self):
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"Envelope: rate must be > 0 values per second, got {self.rate}")

    @property
    def duration(self) -> float:
        return self.values.shape[-1] / self.rate

    def resample(self, rate: float, length: int | None = None) -> "Envelope":
        """Linear interpolation onto ``length`` (default: the same duration) values at ``rate``;
        held at the ends."""
        n = self.values.shape[-1]
        length = int(round(self.duration * rate)) if length is None else int(length)
        if length < 1:
            raise ValueError(f"Envelope.resample: length must be ≥ 1, got {length}")
        src = torch.arange(length, dtype=torch.float64) / rate * self.rate     # positions in source frames
        src = src.clamp(0, n - 1)
        lo = src.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        w = (src - lo).to(self.values.dtype)
        v = self.values
        return Envelope(v[..., lo] * (1 - w) + v[..., hi] * w, float(rate))


def _mono(waveform: torch.Tensor, what: str) -> torch.Tensor:
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise ValueError(f"{what}: audio must be [channels, samples], got shape {tuple(waveform.shape)}")
    if waveform.shape[-1] == 0:
        raise ValueError(f"{what}: audio has 0 samples")
    return waveform.double().mean(0)


def rms_envelope(waveform: torch.Tensor, sample_rate: int, rate: float = STABLE_AUDIO_RATE,
                 window_s: float = RMS_WINDOW_S, smooth_frames: int = 3, length: int | None = None) -> Envelope:
    """Causal moving RMS read at ``rate`` (module docstring); ``length`` values (default
    ``ceil(duration · rate)``). ``smooth_frames`` ≤ 1 turns the smoothing off."""
    x = _mono(waveform, "rms_envelope")
    window = max(1, int(round(window_s * sample_rate)))
    length = length or max(1, math.ceil(x.shape[0] / sample_rate * rate))
    power = F.pad(torch.cumsum(x * x, 0), (1, 0))                       # power[n] = Σ x[:n]²
    ends = (torch.arange(length, dtype=torch.float64) / rate * sample_rate).round().long() + 1
    ends = ends.clamp(1, x.shape[0])                                    # window ends after sample k·sr/rate
    starts = (ends - window).clamp(min=0)
    env = ((power[ends] - power[starts]).clamp(min=0) / window).sqrt()
    if smooth_frames > 1:
        kernel = torch.hann_window(smooth_frames + 2, periodic=False, dtype=torch.float64)[1:-1]
        kernel = kernel / kernel.sum()
        pad = smooth_frames // 2
        padded = F.pad(env[None, None], (pad, smooth_frames - 1 - pad), mode="replicate")
        env = F.conv1d(padded, kernel[None, None])[0, 0]
    return Envelope(env.float(), float(rate))


def video_foley_envelope(waveform: torch.Tensor, sample_rate: int) -> Envelope:
    """Video-Foley's envelope for E-L1 (module docstring): values in 0..1 at 16000 / 128 = 125 Hz."""
    x = _mono(waveform, "video_foley_envelope")
    if sample_rate != VF_RATE:
        import torchaudio

        x = torchaudio.functional.resample(x, int(sample_rate), VF_RATE)
    x = F.pad(x, (0, max(0, VF_FRAME - x.shape[0])))
    frames = x.unfold(0, VF_FRAME, VF_HOP)
    rms = frames.pow(2).mean(-1).sqrt().clamp(0, 1)
    mu = torch.log1p(VF_MU * rms) / math.log1p(VF_MU)
    return Envelope((torch.round(mu * (VF_LEVELS - 1)) / (VF_LEVELS - 1)).float(), VF_RATE / VF_HOP)


def motion_envelope(frames: torch.Tensor, fps: float) -> Envelope:
    """Weight-free envelope from a video ``[T, H, W, 3]``: mean |frame_t − frame_{t−1}|, peak 1."""
    if frames.dim() != 4 or frames.shape[0] == 0:
        raise ValueError(f"motion_envelope: frames must be [T, H, W, 3] with T ≥ 1, got {tuple(frames.shape)}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"motion_envelope: fps must be > 0, got {fps}")
    diff = (frames[1:].float() - frames[:-1].float()).abs().mean(dim=(1, 2, 3))
    env = torch.cat([torch.zeros(1), diff])
    top = float(env.max())
    return Envelope(env / top if top > 0 else env, float(fps))
