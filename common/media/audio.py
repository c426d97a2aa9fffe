"""Audio helpers: resampling, channel layout, clipping."""

from __future__ import annotations

import torch

from ..errors import NodeInputError
from .convert import _check_sample_rate, _check_waveform


def resample_audio(
    waveform: torch.Tensor, orig_sr: int, new_sr: int, *, node: str = "AVLab", input_name: str = "audio"
) -> torch.Tensor:
    """Band-limited resampling of ``[C,S]`` (torchaudio). Output length is ``ceil(S * new / orig)``."""
    import torchaudio.functional as AF

    waveform = _check_waveform(waveform, node, input_name)
    orig = _check_sample_rate(orig_sr, node, "sample_rate")
    new = _check_sample_rate(new_sr, node, "target sample_rate")
    if orig == new:
        return waveform
    return AF.resample(waveform, orig, new)


def set_channels(waveform: torch.Tensor, channels: int, *, node: str = "AVLab", input_name: str = "audio") -> torch.Tensor:
    """Convert ``[C,S]`` to ``channels`` (1 or 2).

    To mono: the mean of all channels. To stereo: mono is duplicated, stereo is kept, more
    channels keep the first two (front left/right in the standard layouts).
    """
    waveform = _check_waveform(waveform, node, input_name)
    c = waveform.shape[0]
    if channels == c:
        return waveform
    if channels == 1:
        return waveform.mean(dim=0, keepdim=True)
    if channels == 2:
        return waveform.expand(2, -1).contiguous() if c == 1 else waveform[:2]
    raise NodeInputError(node, "channels", "1 (mono) or 2 (stereo)", channels)


def to_mono(waveform: torch.Tensor, **kw: str) -> torch.Tensor:
    """``[C,S]`` → ``[1,S]`` (channel mean)."""
    return set_channels(waveform, 1, **kw)


def to_stereo(waveform: torch.Tensor, **kw: str) -> torch.Tensor:
    """``[C,S]`` → ``[2,S]`` (mono duplicated, extra channels dropped)."""
    return set_channels(waveform, 2, **kw)


def safe_clip(waveform: torch.Tensor, ceiling: float = 1.0) -> torch.Tensor:
    """Keep the peak at or below ``ceiling`` by scaling the whole clip, not by hard clipping.

    Scaling keeps the waveform's shape (no clipping distortion) and the relative loudness of its
    parts; clips already below the ceiling are returned unchanged. NaN/inf samples become 0.
    """
    if not ceiling > 0:
        raise NodeInputError("AVLab", "ceiling", "a positive peak ceiling", ceiling)
    wav = torch.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
    if wav.numel() == 0:
        return wav
    peak = float(wav.abs().max())
    if peak <= ceiling:
        return wav
    return wav * (ceiling / peak)
