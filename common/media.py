"""Media boundary helpers shared by every AVLab system (host-free: torch, numpy, torchaudio, PyAV).

Not a paper method: this is the I/O layer under all five systems (design.md, "Layers" and
"The host"). It converts ComfyUI's native values to the core layouts below, pairs frames with
audio at exact frame rates, writes h264 + AAC mp4 files from streamed frames, and reads time
segments of long files chunk by chunk (demux + decode after a seek, never a whole-file decode).

Core layouts (every system uses these):

* frames   ``[T, H, W, 3]`` float32 in 0..1, channels-last. It is the memory order of ComfyUI's
  IMAGE and of PyAV's ``rgb24`` frames, so both boundaries are copy-free. Models that want
  ``[T, 3, H, W]`` call :func:`to_channels_first` (or pass ``layout="TCHW"``).
* masks    ``[T, H, W]`` float32 in 0..1.
* audio    waveform ``[C, S]`` float32 plus an ``int`` sample rate.
* fps      :class:`fractions.Fraction` (``"29.97"`` is ``30000/1001``); no 25 fps default anywhere.

Frame ``i`` is shown at ``i / fps`` seconds and owns audio samples
``[round(i * sr / fps), round((i + 1) * sr / fps))`` (:func:`frame_sample_bounds`), so long
videos never drift. Frame-rate conversion picks, for each output time, the nearest source frame
(ties go to the later frame), in memory (:func:`resample_frame_indices`) and while streaming
(:meth:`VideoReader.iter_frames`) alike.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Union

import av
import numpy as np
import torch

from .errors import NodeInputError

logger = logging.getLogger(__name__)

Source = Union[str, "os.PathLike[str]", io.IOBase, Any]
FpsLike = Union[Fraction, int, float, str]

#: Sample rates the AAC encoder accepts.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_LAYOUTS = {1: "mono", 2: "stereo"}

__all__ = [
    "AAC_SAMPLE_RATES",
    "VideoInfo",
    "VideoReader",
    "VideoWriteResult",
    "align_audio_to_frames",
    "as_fps",
    "audio_samples_per_frame",
    "audio_to_waveform",
    "frame_sample_bounds",
    "frame_times",
    "frames_to_image",
    "image_to_frames",
    "iter_video_frames",
    "mask_to_masks",
    "masks_to_mask",
    "num_audio_samples",
    "output_size",
    "probe_video",
    "read_audio",
    "read_video_frames",
    "resample_audio",
    "resample_frame_indices",
    "resample_frames",
    "resize_frames",
    "resolve_fps",
    "safe_clip",
    "segment_frame_indices",
    "set_channels",
    "to_channels_first",
    "to_channels_last",
    "to_mono",
    "to_stereo",
    "waveform_to_audio",
    "write_video",
]


# --------------------------------------------------------------------------------------------
# IMAGE / MASK / AUDIO  ⇄  core tensors
# --------------------------------------------------------------------------------------------

def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {list(x.shape)} ({str(x.dtype).replace('torch.', '')})"
    if isinstance(x, np.ndarray):
        return f"array of shape {list(x.shape)} ({x.dtype})"
    return type(x).__name__


def _check_layout(layout: str, node: str) -> str:
    up = layout.upper()
    if up not in ("THWC", "TCHW"):
        raise NodeInputError(node, "layout", "'THWC' or 'TCHW'", layout)
    return up


def _rgb_last(x: torch.Tensor, node: str, input_name: str) -> torch.Tensor:
    """``[..., C]`` with C in {1, 3, 4} → ``[..., 3]`` (gray is repeated, alpha dropped)."""
    c = x.shape[-1]
    if c == 3:
        return x
    if c == 4:
        return x[..., :3]
    if c == 1:
        return x.expand(*x.shape[:-1], 3).contiguous()
    raise NodeInputError(node, input_name, "1, 3 or 4 colour channels (last dim)", _describe(x))


def image_to_frames(
    image: torch.Tensor, *, node: str = "AVLab", input_name: str = "images", layout: str = "THWC"
) -> torch.Tensor:
    """ComfyUI IMAGE ``[B,H,W,C]`` → frames ``[T,H,W,3]`` (or ``[T,3,H,W]`` with ``layout="TCHW"``).

    The batch axis is time. Values are kept as given (float32, same device); 1-channel images are
    repeated to RGB and an alpha channel is dropped.
    """
    layout = _check_layout(layout, node)
    if not isinstance(image, torch.Tensor):
        raise NodeInputError(node, input_name, "an IMAGE tensor [B,H,W,C]", _describe(image))
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image.unsqueeze(0)  # a single [H,W,C] image
    if image.ndim != 4:
        raise NodeInputError(node, input_name, "an IMAGE tensor [B,H,W,C]", _describe(image))
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise NodeInputError(node, input_name, "at least one non-empty frame", _describe(image))
    if not (image.is_floating_point() or image.dtype == torch.uint8):
        raise NodeInputError(node, input_name, "a float IMAGE with values in 0..1", _describe(image))
    if image.dtype == torch.uint8:
        image = image.float().div_(255.0)
    frames = _rgb_last(image, node, input_name).to(torch.float32)
    return to_channels_first(frames) if layout == "TCHW" else frames


def frames_to_image(
    frames: torch.Tensor, *, node: str = "AVLab", input_name: str = "frames", layout: str = "THWC"
) -> torch.Tensor:
    """Frames ``[T,H,W,3]`` (or ``[T,3,H,W]`` with ``layout="TCHW"``) → IMAGE ``[B,H,W,3]``.

    The result is float32, clamped to 0..1, contiguous and on the CPU (what ComfyUI expects).
    """
    layout = _check_layout(layout, node)
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise NodeInputError(node, input_name, f"frames [{', '.join(layout)}]", _describe(frames))
    if layout == "TCHW":
        if frames.shape[1] not in (1, 3, 4):
            raise NodeInputError(node, input_name, "1, 3 or 4 channels on dim 1 (TCHW)", _describe(frames))
        frames = to_channels_last(frames)
    frames = _rgb_last(frames, node, input_name)
    if frames.dtype == torch.uint8:
        return frames.float().div_(255.0).cpu().contiguous()
    return frames.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).contiguous()


def to_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """``[T,H,W,C]`` → ``[T,C,H,W]`` (a view)."""
    return frames.permute(0, 3, 1, 2)


def to_channels_last(frames: torch.Tensor) -> torch.Tensor:
    """``[T,C,H,W]`` → ``[T,H,W,C]`` (a view)."""
    return frames.permute(0, 2, 3, 1)


def mask_to_masks(mask: torch.Tensor, *, node: str = "AVLab", input_name: str = "mask") -> torch.Tensor:
    """ComfyUI MASK ``[B,H,W]`` (or a single ``[H,W]``) → masks ``[T,H,W]`` float32."""
    if not isinstance(mask, torch.Tensor):
        raise NodeInputError(node, input_name, "a MASK tensor [B,H,W]", _describe(mask))
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]  # [B,1,H,W] from some custom nodes
    if mask.ndim != 3 or 0 in mask.shape:
        raise NodeInputError(node, input_name, "a non-empty MASK tensor [B,H,W]", _describe(mask))
    if not (mask.is_floating_point() or mask.dtype in (torch.bool, torch.uint8)):
        raise NodeInputError(node, input_name, "a float MASK with values in 0..1", _describe(mask))
    if mask.dtype == torch.uint8:
        return mask.float().div_(255.0)
    return mask.to(torch.float32)


def masks_to_mask(masks: torch.Tensor, *, node: str = "AVLab", input_name: str = "masks") -> torch.Tensor:
    """Masks ``[T,H,W]`` → ComfyUI MASK ``[B,H,W]`` (float32, 0..1, CPU)."""
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        raise NodeInputError(node, input_name, "masks [T,H,W]", _describe(masks))
    return masks.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).contiguous()


def audio_to_waveform(
    audio: Any, *, node: str = "AVLab", input_name: str = "audio", batch_index: int = 0
) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO ``{"waveform": [B,C,S], "sample_rate": int}`` → ``(waveform [C,S], sr)``.

    ``batch_index`` selects one clip of a batched AUDIO (ComfyUI's loaders give batch 1).
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise NodeInputError(node, input_name, "an AUDIO dict with 'waveform' and 'sample_rate'", _describe(audio))
    wav, sr = audio["waveform"], audio["sample_rate"]
    if not isinstance(wav, torch.Tensor) or wav.ndim != 3 or not wav.is_floating_point():
        raise NodeInputError(node, input_name, "an AUDIO waveform float tensor [B,C,S]", _describe(wav))
    if wav.shape[0] == 0 or wav.shape[1] == 0:
        raise NodeInputError(node, input_name, "an AUDIO waveform with at least one clip and one channel", _describe(wav))
    if not -wav.shape[0] <= batch_index < wav.shape[0]:
        raise NodeInputError(node, input_name, f"batch index {batch_index} within the AUDIO batch", _describe(wav))
    try:
        sr_int = int(sr)
    except (TypeError, ValueError):
        sr_int = 0
    if sr_int <= 0 or sr_int != sr:
        raise NodeInputError(node, input_name, "a positive integer sample_rate", repr(sr))
    return wav[batch_index].to(torch.float32), sr_int


def waveform_to_audio(
    waveform: torch.Tensor, sample_rate: int, *, node: str = "AVLab", input_name: str = "waveform"
) -> dict:
    """``(waveform [C,S], sr)`` → ComfyUI AUDIO ``{"waveform": [1,C,S], "sample_rate": sr}`` (CPU)."""
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2 or waveform.shape[0] == 0:
        raise NodeInputError(node, input_name, "a waveform tensor [C,S]", _describe(waveform))
    sr = _check_sample_rate(sample_rate, node, "sample_rate")
    wav = waveform.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return {"waveform": wav.unsqueeze(0), "sample_rate": sr}


def _check_sample_rate(sample_rate: Any, node: str, input_name: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise NodeInputError(node, input_name, "a positive integer sample rate", repr(sample_rate))
    return int(sample_rate)


def _check_waveform(waveform: Any, node: str, input_name: str) -> torch.Tensor:
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2 or not waveform.is_floating_point():
        raise NodeInputError(node, input_name, "a float waveform tensor [C,S]", _describe(waveform))
    if waveform.shape[0] == 0:
        raise NodeInputError(node, input_name, "a waveform with at least one channel", _describe(waveform))
    return waveform


# --------------------------------------------------------------------------------------------
# Audio: resampling, channels, clipping
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Frame rates and frame ⇄ audio pairing (exact Fraction arithmetic)
# --------------------------------------------------------------------------------------------

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
    """Raise unless ``[C,S]`` is non-empty and lasts ``num_frames / fps`` within ``tolerance_frames``.

    For nodes that pair audio with frames (a mismatch means the inputs come from different clips or
    a wrong fps); savers that may trim or pad use :func:`align_audio_to_frames` instead.
    """
    waveform = _check_waveform(waveform, node, input_name)
    rate = as_fps(fps, node=node, input_name="fps")
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


# --------------------------------------------------------------------------------------------
# Reading (streamed)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from the container headers (no decoding)."""

    width: int
    height: int
    fps: Fraction | None
    duration: float
    num_frames: int
    has_video: bool
    has_audio: bool
    sample_rate: int | None = None
    audio_channels: int | None = None


def _open_input(source: Source, node: str, input_name: str) -> av.container.InputContainer:
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise NodeInputError(node, input_name, "an existing media file", os.fspath(source))
    else:
        raise NodeInputError(node, input_name, "a file path or a binary file object", _describe(source))
    try:
        return av.open(source, mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise NodeInputError(node, input_name, "a media file PyAV can open", f"{source!r} ({exc})") from None


class _ChunkBuilder:
    """Collects uint8 RGB frames into ``[n,H,W,3]`` float chunks of at most ``size`` frames."""

    def __init__(self, size: int):
        self.size = size
        self.buf: np.ndarray | None = None
        self.n = 0

    def add(self, img: np.ndarray) -> torch.Tensor | None:
        if self.buf is None:
            self.buf = np.empty((self.size, *img.shape), dtype=np.uint8)
        self.buf[self.n] = img
        self.n += 1
        return self.flush() if self.n == self.size else None

    def flush(self) -> torch.Tensor | None:
        if self.buf is None or self.n == 0:
            return None
        out = torch.from_numpy(self.buf[: self.n]).to(torch.float32).div_(255.0)
        self.buf, self.n = None, 0  # the next chunk gets a fresh buffer; the yielded one is the caller's
        return out


def _audio_array(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame → float32 ``[C, n]`` (planar or packed, int or float samples)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T  # [1, n*C] interleaved → [C, n]
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    elif arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    return np.ascontiguousarray(arr, dtype=np.float32)


class VideoReader:
    """Streaming reader for a video (or audio) file: chunked frames and audio of a time segment.

    Opens the container once; :meth:`iter_frames` and :meth:`iter_audio` seek near the segment
    start and decode forward only as far as needed, so memory holds one chunk, never the file.
    Times are seconds from the container start. One iteration at a time per reader.

    Args:
        source: a file path or a seekable binary file object (e.g. ``io.BytesIO``).
        node, input_name: used in error messages.
    """

    def __init__(self, source: Source, *, node: str = "AVLab", input_name: str = "video"):
        self.node, self.input_name = node, input_name
        self._container = _open_input(source, node, input_name)
        self._fresh = True  # nothing demuxed yet: reading from 0 needs no seek
        c = self._container
        self._vs = c.streams.video[0] if c.streams.video else None
        self._as = c.streams.audio[0] if c.streams.audio else None
        if self._vs is None and self._as is None:
            self.close()
            raise NodeInputError(node, input_name, "a file with a video or audio stream", source)
        self._origin = Fraction(c.start_time, av.time_base) if c.start_time is not None else Fraction(0)
        if self._vs is not None:
            self._vs.thread_type = "AUTO"
        self.info = self._probe()

    # -- lifecycle
    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- probing
    def _probe(self) -> VideoInfo:
        c, vs, ast = self._container, self._vs, self._as
        duration = 0.0
        if c.duration is not None:
            duration = c.duration / av.time_base
        elif vs is not None and vs.duration is not None:
            duration = float(vs.duration * vs.time_base)
        elif ast is not None and ast.duration is not None:
            duration = float(ast.duration * ast.time_base)
        fps, width, height, frames = None, 0, 0, 0
        if vs is not None:
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            fps = Fraction(rate) if rate else None
            width, height = vs.codec_context.width, vs.codec_context.height
            frames = vs.frames or (round(duration * fps) if fps else 0)
        return VideoInfo(
            width=width, height=height, fps=fps, duration=duration, num_frames=int(frames),
            has_video=vs is not None, has_audio=ast is not None,
            sample_rate=ast.codec_context.sample_rate if ast is not None else None,
            audio_channels=ast.codec_context.channels if ast is not None else None,
        )

    def _seek(self, stream: av.stream.Stream, t: Fraction) -> None:
        """Position the demuxer at the last keyframe at or before time ``t`` (seconds)."""
        if t <= 0 and self._fresh:
            return
        self._fresh = False
        tb = stream.time_base
        target = math.floor((max(t, Fraction(0)) + self._origin) / tb)
        self._container.seek(target, stream=stream, backward=True, any_frame=False)

    def _check_window(self, start: float, end: float | None) -> tuple[Fraction, Fraction | None]:
        try:
            t0 = _as_time(start)
        except (TypeError, ValueError, OverflowError):
            raise NodeInputError(self.node, "start", "a start time in seconds >= 0", start) from None
        if t0 < 0:
            raise NodeInputError(self.node, "start", "a start time in seconds >= 0", start)
        if end is None:
            return t0, None
        try:
            t1 = _as_time(end)
        except (TypeError, ValueError, OverflowError):
            raise NodeInputError(self.node, "end", "an end time in seconds (or None)", end) from None
        if t1 <= t0:
            raise NodeInputError(self.node, "end", f"an end time after start ({float(t0):g} s)", end)
        return t0, t1

    # -- frames
    def iter_frames(
        self,
        *,
        start: float = 0.0,
        end: float | None = None,
        fps: FpsLike | None = None,
        max_side: int = 0,
        size: tuple[int, int] | None = None,
        chunk_size: int = 16,
    ) -> Iterator[torch.Tensor]:
        """Yield frames of ``[start, end)`` as float32 ``[n,H,W,3]`` chunks, ``n <= chunk_size``.

        Args:
            start, end: segment in seconds (``end=None``: to the end of the stream).
            fps: target frame rate (None / 0 = native). Output frame ``j`` is the source frame
                nearest to ``start + j / fps``, for every such time before ``end`` and before
                the end of the last frame.
            max_side: downscale so the longer side is at most this (0 = native size).
            size: explicit output ``(width, height)``; overrides ``max_side``.
            chunk_size: frames per yielded tensor.

        In native mode a frame belongs to the segment when its time rounds into ``[start, end)``
        on its own frame grid, so native and ``fps = native`` give the same frames.
        """
        if self._vs is None:
            raise NodeInputError(self.node, self.input_name, "a file with a video stream", "audio only")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise NodeInputError(self.node, "chunk_size", "an integer >= 1", chunk_size)
        if max_side < 0:
            raise NodeInputError(self.node, "max_side", "0 (native) or a positive pixel count", max_side)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise NodeInputError(self.node, "size", "(width, height) >= 1", size)
        t0, t1 = self._check_window(start, end)
        src_fps = self.info.fps
        if src_fps is None:
            raise NodeInputError(self.node, self.input_name, "a video stream with a known frame rate", "none")
        dst_fps = None if fps is None or fps == 0 else as_fps(fps, node=self.node, input_name="fps")
        period = 1 / src_fps
        w, h = output_size(self.info.width, self.info.height, max_side=max_side, size=size)
        convert = {"format": "rgb24"}
        if (w, h) != (self.info.width, self.info.height):
            shrink = w * h < self.info.width * self.info.height
            convert.update(width=w, height=h, interpolation="AREA" if shrink else "BICUBIC")

        # One frame earlier than start: it may be the nearest frame to the first output time.
        self._seek(self._vs, t0 - period)
        decoded = self._decoded_frames(period)
        chunk = _ChunkBuilder(chunk_size)

        def emit(frame: av.VideoFrame) -> torch.Tensor | None:
            return chunk.add(frame.to_ndarray(**convert))

        if dst_fps is None:
            lo = t0 - period / 2
            hi = None if t1 is None else t1 - period / 2
            for t, frame in decoded:
                if hi is not None and t >= hi:
                    break
                if t > lo and (out := emit(frame)) is not None:
                    yield out
        else:
            step = 1 / dst_fps
            j, t_out = 0, t0
            prev: tuple[Fraction, av.VideoFrame] | None = None
            done = False
            for t, frame in decoded:
                while t_out <= t:
                    if t1 is not None and t_out >= t1:
                        done = True
                        break
                    # Nearest frame to t_out; a tie goes to the later frame (round half up).
                    pick = frame if prev is None or (t - t_out) <= (t_out - prev[0]) else prev[1]
                    if (out := emit(pick)) is not None:
                        yield out
                    j += 1
                    t_out = t0 + j * step
                if done:
                    break
                prev = (t, frame)
            if not done and prev is not None:
                # After the last frame: output times inside its display interval repeat it.
                end_t = prev[0] + period if t1 is None else min(prev[0] + period, t1)
                while t_out < end_t:
                    if (out := emit(prev[1])) is not None:
                        yield out
                    j += 1
                    t_out = t0 + j * step
        if (out := chunk.flush()) is not None:
            yield out

    def _decoded_frames(self, period: Fraction) -> Iterator[tuple[Fraction, av.VideoFrame]]:
        """Decoded video frames with their exact time (s) from the container start."""
        vs = self._vs
        self._fresh = False
        tb = vs.time_base
        last_t: Fraction | None = None
        for packet in self._container.demux(vs):
            for frame in packet.decode():
                if frame.pts is not None:
                    t = frame.pts * tb - self._origin
                else:
                    t = Fraction(0) if last_t is None else last_t + period
                last_t = t
                yield t, frame

    # -- audio
    def iter_audio(self, *, start: float = 0.0, end: float | None = None, chunk_seconds: float = 10.0) -> Iterator[torch.Tensor]:
        """Yield the audio of ``[start, end)`` as float32 ``[C, n]`` chunks (native sample rate).

        Sample ``k`` of the output is at ``start + k / sr``; gaps in the stream (e.g. audio that
        starts after the video) are filled with silence so audio stays aligned with the frames.
        Yields nothing when the file has no audio stream.
        """
        ast = self._as
        if ast is None:
            return
        t0, t1 = self._check_window(start, end)
        sr = ast.codec_context.sample_rate
        tb = ast.time_base
        s_start = _round_half_up(t0 * sr)
        s_end = None if t1 is None else _round_half_up(t1 * sr)
        if ast.duration is not None:
            stream_end = _round_half_up(((ast.start_time or 0) + ast.duration) * tb * sr - self._origin * sr)
            s_end = stream_end if s_end is None else min(s_end, stream_end)
        chunk_n = max(1, int(chunk_seconds * sr))
        # Seek a little early: codecs with overlapping windows (AAC) need a frame of pre-roll.
        self._seek(ast, t0 - Fraction(1, 5))
        self._fresh = False
        pos = s_start  # next absolute sample index to output
        parts: list[np.ndarray] = []
        pending = 0
        channels = ast.codec_context.channels or 1
        started = False
        for packet in self._container.demux(ast):
            for frame in packet.decode():
                arr = _audio_array(frame)
                channels = arr.shape[0]
                s0 = pos if frame.pts is None else _round_half_up((frame.pts * tb - self._origin) * sr)
                if started and abs(s0 - pos) <= 2:
                    s0 = pos  # timestamp rounding (e.g. 1/90000 time bases), not a real gap
                s1 = s0 + arr.shape[1]
                if s_end is not None and s0 >= s_end:
                    break
                if s1 <= pos:
                    continue
                if s0 > pos:  # gap in the stream: keep sync with silence
                    gap_end = s0 if s_end is None else min(s0, s_end)
                    parts.append(np.zeros((channels, gap_end - pos), np.float32))
                    pending += gap_end - pos
                    pos = gap_end
                hi = s1 if s_end is None else min(s1, s_end)
                if hi > pos:
                    parts.append(arr[:, pos - s0 : hi - s0])
                    pending += hi - pos
                    pos = hi
                    started = True
                while pending >= chunk_n:
                    block = np.concatenate(parts, axis=1)
                    yield torch.from_numpy(np.ascontiguousarray(block[:, :chunk_n]))
                    rest = block[:, chunk_n:]
                    parts, pending = ([rest] if rest.shape[1] else []), rest.shape[1]
            else:
                continue
            break
        if pending:
            yield torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=1)))

    def read_audio(self, *, start: float = 0.0, end: float | None = None) -> tuple[torch.Tensor, int] | None:
        """The audio of ``[start, end)`` as ``(waveform [C,S], sr)``, or None without an audio stream."""
        if self._as is None:
            return None
        sr = self._as.codec_context.sample_rate
        chunks = list(self.iter_audio(start=start, end=end))
        if not chunks:
            return torch.zeros(self._as.codec_context.channels or 1, 0), sr
        return torch.cat(chunks, dim=1), sr


def probe_video(source: Source, *, node: str = "AVLab", input_name: str = "video") -> VideoInfo:
    """Size, fps (Fraction), duration, frame count and audio format from the headers."""
    with VideoReader(source, node=node, input_name=input_name) as reader:
        return reader.info


def iter_video_frames(source: Source, *, node: str = "AVLab", input_name: str = "video", **kwargs: Any) -> Iterator[torch.Tensor]:
    """Open ``source`` and yield frame chunks (:meth:`VideoReader.iter_frames` arguments)."""
    with VideoReader(source, node=node, input_name=input_name) as reader:
        yield from reader.iter_frames(**kwargs)


def read_video_frames(source: Source, *, node: str = "AVLab", input_name: str = "video", **kwargs: Any) -> torch.Tensor:
    """All frames of a segment as one ``[T,H,W,3]`` tensor (for short segments)."""
    chunks = list(iter_video_frames(source, node=node, input_name=input_name, **kwargs))
    if not chunks:
        return torch.zeros(0, 0, 0, 3)
    return torch.cat(chunks, dim=0)


def read_audio(
    source: Source, *, start: float = 0.0, end: float | None = None, node: str = "AVLab", input_name: str = "video"
) -> tuple[torch.Tensor, int] | None:
    """Decode the audio of ``[start, end)`` of a file: ``(waveform [C,S], sr)`` or None."""
    with VideoReader(source, node=node, input_name=input_name) as reader:
        return reader.read_audio(start=start, end=end)


# --------------------------------------------------------------------------------------------
# Writing (streamed)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoWriteResult:
    """What :func:`write_video` wrote."""

    num_frames: int
    width: int
    height: int
    fps: Fraction
    sample_rate: int | None
    audio_samples: int


def _frames_uint8(item: Any, node: str, input_name: str) -> np.ndarray:
    """One frame ``[H,W,C]`` or a chunk ``[n,H,W,C]`` (float 0..1 or uint8) → uint8 ``[n,H,W,3]``."""
    x = torch.as_tensor(item) if not isinstance(item, torch.Tensor) else item
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or 0 in x.shape:
        raise NodeInputError(node, input_name, "frames [H,W,3] or chunks [n,H,W,3]", _describe(item))
    x = _rgb_last(x.detach(), node, input_name)
    if x.dtype != torch.uint8:
        x = x.to(device="cpu", dtype=torch.float32).mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x.cpu().contiguous().numpy()


class _AudioFeeder:
    """Pulls ``[C, n]`` float32 blocks of any requested length from a chunk iterator."""

    def __init__(self, chunks: Iterator[torch.Tensor], channels: int, node: str):
        self.chunks, self.channels, self.node = chunks, channels, node
        self.buf = np.zeros((channels, 0), np.float32)
        self.exhausted = False

    def take(self, n: int) -> np.ndarray:
        while self.buf.shape[1] < n and not self.exhausted:
            nxt = next(self.chunks, None)
            if nxt is None:
                self.exhausted = True
                break
            nxt = _check_waveform(nxt, self.node, "audio")
            if nxt.shape[0] != self.channels:
                raise NodeInputError(self.node, "audio", f"{self.channels} channels in every chunk", _describe(nxt))
            arr = torch.nan_to_num(nxt.detach().cpu().float()).numpy()
            self.buf = np.concatenate([self.buf, arr], axis=1)
        out, self.buf = self.buf[:, :n], self.buf[:, n:]
        return np.ascontiguousarray(out)


def write_video(
    dest: str | os.PathLike[str] | io.IOBase,
    frames: Iterable[Any],
    fps: FpsLike,
    *,
    audio: torch.Tensor | Iterable[torch.Tensor] | None = None,
    sample_rate: int | None = None,
    crf: int = 19,
    preset: str = "medium",
    keyframe_interval_s: float = 2.0,
    even: str = "pad",
    pad_audio: bool = True,
    metadata: dict[str, Any] | None = None,
    node: str = "AVLab",
    input_name: str = "images",
) -> VideoWriteResult:
    """Write an mp4 (h264 yuv420p + AAC) from streamed frames.

    Args:
        dest: output path or a seekable binary file object.
        frames: iterable of frames ``[H,W,3]`` and/or chunks ``[n,H,W,3]`` (float 0..1 or uint8);
            a ``[T,H,W,3]`` tensor works too. Consumed lazily: only one chunk is held at a time.
        fps: frame rate (kept exact: 30000/1001 stays 30000/1001).
        audio: waveform ``[C,S]`` (C = 1 or 2) or an iterable of ``[C,n]`` chunks; None = no track.
            Audio past the last frame is dropped; with ``pad_audio`` a short track is padded
            with silence to the video length. A tensor at a rate AAC cannot take is resampled
            to the next AAC rate; chunked audio must already be at an AAC rate.
        sample_rate: the audio's sample rate (required with ``audio``).
        crf, preset: libx264 quality (lower crf = better) and speed preset.
        keyframe_interval_s: keyframe spacing; short spacing makes segment reads seek closer.
        even: ``"pad"`` (repeat the last row/column) or ``"crop"`` odd width/height (yuv420p
            needs even sizes).
        metadata: container tags (non-string values are JSON-encoded).
    """
    import json

    rate = as_fps(fps, node=node, input_name="fps")
    if even not in ("pad", "crop"):
        raise NodeInputError(node, "even", "'pad' or 'crop'", even)
    frame_iter = iter([frames] if isinstance(frames, torch.Tensor) and frames.ndim == 3 else frames)
    first = next(frame_iter, None)
    if first is None:
        raise NodeInputError(node, input_name, "at least one frame", "no frames")
    first = _frames_uint8(first, node, input_name)
    in_h, in_w = first.shape[1:3]
    out_w, out_h = (in_w + in_w % 2, in_h + in_h % 2) if even == "pad" else (in_w - in_w % 2, in_h - in_h % 2)
    if out_w < 2 or out_h < 2:
        raise NodeInputError(node, input_name, "frames at least 2x2 pixels", f"{in_w}x{in_h}")

    feeder: _AudioFeeder | None = None
    sr: int | None = None
    if audio is not None:
        if sample_rate is None:
            raise NodeInputError(node, "sample_rate", "the audio's sample rate", None)
        sr = _check_sample_rate(sample_rate, node, "sample_rate")
        if isinstance(audio, torch.Tensor):
            wav = _check_waveform(audio, node, "audio")
            if sr not in AAC_SAMPLE_RATES:
                new_sr = next((r for r in AAC_SAMPLE_RATES if r >= sr), AAC_SAMPLE_RATES[-1])
                logger.info("AVLab: resampling audio %d -> %d Hz for AAC", sr, new_sr)
                wav, sr = resample_audio(wav, sr, new_sr, node=node), new_sr
            channels = wav.shape[0]
            block = 1 << 16
            chunk_iter: Iterator[torch.Tensor] = (wav[:, i : i + block] for i in range(0, wav.shape[1], block))
        else:
            if sr not in AAC_SAMPLE_RATES:
                raise NodeInputError(node, "sample_rate", f"an AAC sample rate {AAC_SAMPLE_RATES} for chunked audio", sr)
            chunk_iter = iter(audio)
            head = next(chunk_iter, None)
            if head is None:
                raise NodeInputError(node, "audio", "at least one audio chunk", "none")
            channels = _check_waveform(head, node, "audio").shape[0]
            chunk_iter = _chain_one(head, chunk_iter)
        if channels not in _LAYOUTS:
            raise NodeInputError(node, "audio", "1 or 2 audio channels (use to_stereo / to_mono)", channels)
        feeder = _AudioFeeder(chunk_iter, channels, node)

    is_path = isinstance(dest, (str, os.PathLike))
    container = av.open(dest, mode="w", format="mp4", options={"movflags": "use_metadata_tags"})
    ok = False
    try:
        for key, value in (metadata or {}).items():
            container.metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = out_w, out_h, "yuv420p"
        vs.codec_context.gop_size = max(1, round(keyframe_interval_s * float(rate)))
        vs.options = {"crf": str(int(crf)), "preset": preset}
        ast = None
        if feeder is not None:
            ast = container.add_stream("aac", rate=sr)
            ast.layout = _LAYOUTS[feeder.channels]
        n_frames, a_pos = 0, 0

        def put_audio(upto: int) -> None:
            nonlocal a_pos
            while a_pos < upto:
                block = feeder.take(upto - a_pos)
                if block.shape[1] == 0:
                    if not pad_audio:
                        return
                    block = np.zeros((feeder.channels, upto - a_pos), np.float32)
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout=_LAYOUTS[feeder.channels])
                af.sample_rate, af.pts, af.time_base = sr, a_pos, Fraction(1, sr)
                for packet in ast.encode(af):
                    container.mux(packet)
                a_pos += block.shape[1]

        chunk = first
        while chunk is not None:
            if chunk.shape[1:3] != (in_h, in_w):
                raise NodeInputError(node, input_name, f"every frame {in_w}x{in_h}", f"{chunk.shape[2]}x{chunk.shape[1]}")
            if (out_w, out_h) != (in_w, in_h):
                if even == "pad":
                    chunk = np.pad(chunk, ((0, 0), (0, out_h - in_h), (0, out_w - in_w), (0, 0)), mode="edge")
                else:
                    chunk = chunk[:, :out_h, :out_w]
            for img in chunk:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf.pts = n_frames
                for packet in vs.encode(vf):
                    container.mux(packet)
                n_frames += 1
                if feeder is not None:  # interleave: audio up to the end of this frame
                    put_audio(num_audio_samples(n_frames, sr, rate))
            nxt = next(frame_iter, None)
            chunk = None if nxt is None else _frames_uint8(nxt, node, input_name)
        for packet in vs.encode(None):
            container.mux(packet)
        if ast is not None:
            for packet in ast.encode(None):
                container.mux(packet)
        ok = True
    finally:
        container.close()
        if not ok and is_path and os.path.exists(dest):
            os.remove(dest)  # no half-written files in the output folder
    return VideoWriteResult(n_frames, out_w, out_h, rate, sr, a_pos)


def _chain_one(head: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield head
    yield from rest
