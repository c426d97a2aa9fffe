"""IMAGE / MASK / AUDIO values of ComfyUI ⇄ the core layouts (see :mod:`avlab.common.media`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import NodeInputError


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
    frames = frames.detach().to(device="cpu", dtype=torch.float32)
    if frames.numel() and (frames.min() < 0.0 or frames.max() > 1.0):   # copy only when out of range
        frames = frames.clamp(0.0, 1.0)
    return frames.contiguous()


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
