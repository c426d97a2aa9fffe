"""Frame rates and frame ⇄ audio-sample pairing, in exact :class:`~fractions.Fraction` arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Union

import numpy as np
import torch

from ..errors import NodeInputError
from .convert import _check_sample_rate, _check_waveform, to_channels_first, to_channels_last

FpsLike = Union[Fraction, int, float, str]


def as_fps(fps: FpsLike, *, node: str = "AVLab", input_name: str = "fps") -> Fraction:
    """A frame rate as an exact :class:`Fraction`.

    Accepts Fractions, ints, floats and strings (``"30000/1001"``, ``"29.97"``). Floats written as
    the NTSC rates (29.97, 23.976 or 23.98, 59.94, 119.88 ...) become ``n*1000/1001``; other floats
    are read as their decimal text (12.5 → 25/2).
    """
    try:
        if isinstance(fps, Fraction):
            value = fps
        elif isinstance(fps, bool):
            raise TypeError
        elif isinstance(fps, (int, np.integer)):
            value = Fraction(int(fps))
        elif isinstance(fps, str):
            value = _float_fps(float(fps)) if "/" not in fps else Fraction(fps.strip())
        else:
            value = _float_fps(float(fps))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise NodeInputError(node, input_name, "a frame rate (number or 'num/den')", repr(fps)) from None
    if not value > 0:
        raise NodeInputError(node, input_name, "a frame rate > 0", repr(fps))
    return value


def _float_fps(x: float) -> Fraction:
    if not math.isfinite(x):
        raise ValueError(x)
    n = round(x * 1.001)
    if n >= 1 and abs(x - round(x)) > 1e-6 and abs(x * 1.001 - n) <= 2e-4 * n:
        return Fraction(n * 1000, 1001)
    return Fraction(repr(x))


def resolve_fps(
    fps: FpsLike | None, fallback: FpsLike | None, *, node: str = "AVLab", input_name: str = "fps"
) -> Fraction:
    """An explicit fps input (> 0) wins; 0 / None means "use ``fallback``" (e.g. the VIDEO's rate)."""
    if fps is not None and not (isinstance(fps, (int, float)) and fps == 0):
        return as_fps(fps, node=node, input_name=input_name)
    if fallback is None:
        raise NodeInputError(node, input_name, "a frame rate > 0 (no video frame rate to fall back on)", fps)
    return as_fps(fallback, node=node, input_name=input_name)


def audio_samples_per_frame(sample_rate: int, fps: FpsLike) -> Fraction:
    """Exact audio samples per video frame (48000 Hz at 30000/1001 fps → 8008/5 = 1601.6)."""
    return Fraction(_check_sample_rate(sample_rate, "AVLab", "sample_rate")) / as_fps(fps)


def _as_time(x: float | Fraction | int) -> Fraction:
    """Seconds as an exact Fraction; floats are read as their decimal text (0.4 → 2/5)."""
    if isinstance(x, (Fraction, int)) and not isinstance(x, bool):
        return Fraction(x)
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(x)
    return Fraction(repr(x))


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def num_audio_samples(num_frames: int, sample_rate: int, fps: FpsLike) -> int:
    """Samples covering ``num_frames`` frames: ``round(num_frames * sr / fps)``."""
    return _round_half_up(num_frames * audio_samples_per_frame(sample_rate, fps))


def frame_sample_bounds(num_frames: int, sample_rate: int, fps: FpsLike) -> torch.Tensor:
    """Int64 ``[T+1]`` sample boundaries; frame ``i`` owns samples ``[b[i], b[i+1])`` (no drift)."""
    spf = audio_samples_per_frame(sample_rate, fps)
    a, b = spf.numerator, spf.denominator
    i = torch.arange(num_frames + 1, dtype=torch.int64)
    return torch.div(2 * i * a + b, 2 * b, rounding_mode="floor")


def frame_times(num_frames: int, fps: FpsLike, start: float = 0.0) -> torch.Tensor:
    """Float64 ``[T]`` display times ``start + i / fps`` in seconds."""
    f = as_fps(fps)
    i = torch.arange(num_frames, dtype=torch.float64)
    return start + i * (f.denominator / f.numerator)


def align_audio_to_frames(
    waveform: torch.Tensor, sample_rate: int, num_frames: int, fps: FpsLike,
    *, node: str = "AVLab", input_name: str = "audio",
) -> torch.Tensor:
    """Trim or zero-pad ``[C,S]`` at the end to exactly ``round(num_frames * sr / fps)`` samples."""
    waveform = _check_waveform(waveform, node, input_name)
    if num_frames < 0:
        raise NodeInputError(node, "num_frames", "a frame count >= 0", num_frames)
    n = num_audio_samples(num_frames, sample_rate, fps)
    s = waveform.shape[1]
    if s >= n:
        return waveform[:, :n]
    return torch.nn.functional.pad(waveform, (0, n - s))


def check_audio_matches_frames(
    waveform: torch.Tensor, sample_rate: int, num_frames: int, fps: FpsLike,
    *, tolerance_frames: float = 1.0, node: str = "AVLab", input_name: str = "audio",
) -> torch.Tensor:
    """Raise unless ``[C,S]`` is non-empty and lasts ``num_frames / fps`` within ``tolerance_frames``
    (``sample_rate`` a positive int, ``fps`` > 0).

    For nodes that pair audio with frames (a mismatch means the inputs come from different clips or
    a wrong fps); savers that may trim or pad use :func:`align_audio_to_frames` instead.
    """
    waveform = _check_waveform(waveform, node, input_name)
    sample_rate = _check_sample_rate(sample_rate, node, "sample_rate")
    rate = as_fps(fps, node=node, input_name="fps")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 0:
        raise NodeInputError(node, "num_frames", "a frame count >= 0", num_frames)
    if waveform.shape[1] == 0:
        raise NodeInputError(node, input_name, "audio with at least one sample", "an empty waveform [C,0]")
    audio_s = waveform.shape[1] / sample_rate
    video_s = float(num_frames / rate)
    if abs(audio_s - video_s) > tolerance_frames / float(rate):
        raise NodeInputError(node, input_name, f"audio as long as the frames ({num_frames} frames at {float(rate):g} fps "
                             f"= {video_s:.3f} s, ±{tolerance_frames:g} frame)", f"{audio_s:.3f} s of audio")
    return waveform


def segment_frame_indices(
    num_frames: int,
    src_fps: FpsLike,
    start: float = 0.0,
    end: float | None = None,
    dst_fps: FpsLike | None = None,
) -> torch.Tensor:
    """Int64 indices of the frames of ``[start, end)`` seconds of a ``num_frames`` clip.

    The in-memory twin of :meth:`VideoReader.iter_frames` (same frames for a constant-rate file):

    * native (``dst_fps`` None / 0): frame ``i`` belongs to the segment when ``i / src`` rounds
      into ``[start, end)`` on the source grid, i.e. ``start*src - 1/2 < i < end*src - 1/2``;
    * resampled: output ``j`` at ``start + j / dst`` takes the nearest frame
      ``round((start + j / dst) * src)`` (ties → later), for every output time before ``end``
      and before the end of the last frame (``num_frames / src``).
    """
    src = as_fps(src_fps, input_name="src_fps")
    t0 = _as_time(start)
    limit = Fraction(num_frames) / src  # end of the last frame's display interval
    t1 = limit if end is None else min(_as_time(end), limit)
    if num_frames <= 0 or t1 <= t0:
        return torch.zeros(0, dtype=torch.int64)
    if dst_fps is None or dst_fps == 0:
        lo = math.floor(t0 * src - Fraction(1, 2)) + 1
        hi = num_frames if end is None else min(num_frames, math.ceil(_as_time(end) * src - Fraction(1, 2)))
        return torch.arange(max(lo, 0), max(hi, lo, 0), dtype=torch.int64)
    dst = as_fps(dst_fps, input_name="dst_fps")
    n_out = math.ceil((t1 - t0) * dst)
    # idx_j = floor((t0 + j/dst) * src + 1/2) = floor((2*j*a + c) / (2*b)) with integer a, b, c.
    ratio = src / dst
    base = t0 * src + Fraction(1, 2)
    den = ratio.denominator * base.denominator
    a = ratio.numerator * base.denominator
    c = base.numerator * ratio.denominator
    if max(abs(a) * n_out + abs(c), den) < 2**62:
        j = torch.arange(n_out, dtype=torch.int64)
        idx = torch.div(j * a + c, den, rounding_mode="floor")
    else:  # exotic start times: exact Python integers
        idx = torch.tensor([(k * a + c) // den for k in range(n_out)], dtype=torch.int64)
    return idx.clamp_(max=num_frames - 1)


def resample_frame_indices(num_frames: int, src_fps: FpsLike, dst_fps: FpsLike) -> torch.Tensor:
    """Int64 source-frame index for every output frame of a ``src_fps`` → ``dst_fps`` conversion.

    Output frame ``j`` (time ``j / dst``) takes the nearest source frame ``round(j * src / dst)``
    (ties → later frame); there are ``ceil(num_frames * dst / src)`` outputs, i.e. every output
    time before the end of the last source frame.
    """
    return segment_frame_indices(num_frames, src_fps, 0.0, None, dst_fps)


def resample_frames(frames: torch.Tensor, src_fps: FpsLike, dst_fps: FpsLike) -> torch.Tensor:
    """Nearest-frame fps conversion of ``[T, ...]`` along dim 0 (:func:`resample_frame_indices`)."""
    if as_fps(src_fps) == as_fps(dst_fps):
        return frames
    return frames[resample_frame_indices(frames.shape[0], src_fps, dst_fps)]


def output_size(width: int, height: int, *, max_side: int = 0, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Frame size after resizing: explicit ``size=(w, h)``, else downscale so the longer side is
    at most ``max_side`` (aspect kept; 0 = native). Never upscales through ``max_side``."""
    if size is not None:
        return int(size[0]), int(size[1])
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def resize_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize ``[T,H,W,3]`` frames (area filter when shrinking, bicubic when enlarging)."""
    t, h, w, _ = frames.shape
    if (w, h) == (width, height):
        return frames
    mode = "area" if width * height < w * h else "bicubic"
    x = torch.nn.functional.interpolate(to_channels_first(frames.float()), size=(height, width), mode=mode)
    return to_channels_last(x).clamp_(0.0, 1.0).contiguous()
