"""Host-side media helpers: ComfyUI's VIDEO (``VideoInput``) ⇄ AVLab's streamed core I/O.

Imported by the node modules of every system (never by core packages). File-backed videos are
streamed through :class:`avlab.common.media.VideoReader` on ``get_stream_source()`` — never
``get_components()``, which decodes every frame. In-memory videos (``VideoFromComponents``) are
sliced directly, with the same frame-selection rule (:func:`segment_frame_indices`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Any

import torch
from comfy_api.latest import Input, InputImpl, Types

from ..common import media
from ..common.errors import NodeInputError

logger = logging.getLogger(__name__)

VideoInput = Input.Video
VideoFromComponents = InputImpl.VideoFromComponents
VideoFromFile = InputImpl.VideoFromFile
VideoComponents = Types.VideoComponents

__all__ = [
    "check_video",
    "iter_video_input_frames",
    "read_video_input_audio",
    "video_duration",
    "video_fps",
    "video_from_file",
    "video_from_frames",
    "video_info",
    "video_source",
    "with_progress",
]


def check_video(video: Any, *, node: str, input_name: str = "video") -> VideoInput:
    """Raise :class:`NodeInputError` unless ``video`` is a ComfyUI ``VideoInput``."""
    if not isinstance(video, VideoInput):
        raise NodeInputError(node, input_name, "a VIDEO (e.g. from Load Video)", type(video).__name__)
    return video


def _components(video: VideoInput) -> VideoComponents | None:
    """The tensors of an in-memory video (cheap), or None for file-backed ones."""
    return video.get_components() if isinstance(video, VideoFromComponents) else None


def video_source(video: VideoInput, *, node: str, input_name: str = "video") -> Any:
    """A streamable source (path or BytesIO) for PyAV: ``video.get_stream_source()``."""
    check_video(video, node=node, input_name=input_name)
    return video.get_stream_source()


def video_info(video: VideoInput, *, node: str, input_name: str = "video") -> media.VideoInfo:
    """Size, exact fps, duration, frame count and audio format without decoding frames."""
    comps = _components(check_video(video, node=node, input_name=input_name))
    if comps is not None:
        images, rate = comps.images, Fraction(comps.frame_rate)
        audio = comps.audio
        return media.VideoInfo(
            width=int(images.shape[2]), height=int(images.shape[1]), fps=rate,
            duration=float(images.shape[0] / rate), num_frames=int(images.shape[0]),
            has_video=True, has_audio=audio is not None,
            sample_rate=int(audio["sample_rate"]) if audio is not None else None,
            audio_channels=int(audio["waveform"].shape[1]) if audio is not None else None,
        )
    return media.probe_video(video_source(video, node=node, input_name=input_name), node=node, input_name=input_name)


def video_fps(video: VideoInput, *, node: str, input_name: str = "video") -> Fraction:
    """The VIDEO's frame rate as an exact Fraction (``get_frame_rate()`` where the host has it)."""
    check_video(video, node=node, input_name=input_name)
    getter = getattr(video, "get_frame_rate", None)  # newer ComfyUI; 0.3.64 has none
    if callable(getter):
        return media.as_fps(getter(), node=node, input_name=input_name)
    fps = video_info(video, node=node, input_name=input_name).fps
    if fps is None:
        raise NodeInputError(node, input_name, "a video with a known frame rate", "none")
    return fps


def video_duration(video: VideoInput, *, node: str, input_name: str = "video") -> float:
    """Duration in seconds (container header; no decoding)."""
    return video_info(video, node=node, input_name=input_name).duration


def iter_video_input_frames(
    video: VideoInput,
    *,
    node: str,
    input_name: str = "video",
    start: float = 0.0,
    end: float | None = None,
    fps: media.FpsLike | None = None,
    max_side: int = 0,
    chunk_size: int = 16,
) -> Iterator[torch.Tensor]:
    """Yield ``[n,H,W,3]`` float chunks of ``[start, end)`` at ``fps`` (None/0 = native).

    Arguments as :meth:`avlab.common.media.VideoReader.iter_frames`.
    """
    comps = _components(check_video(video, node=node, input_name=input_name))
    if comps is None:
        source = video_source(video, node=node, input_name=input_name)
        with media.VideoReader(source, node=node, input_name=input_name) as reader:
            yield from reader.iter_frames(start=start, end=end, fps=fps, max_side=max_side, chunk_size=chunk_size)
        return
    images = media.image_to_frames(comps.images, node=node, input_name=input_name)
    idx = media.segment_frame_indices(images.shape[0], Fraction(comps.frame_rate), start, end, fps)
    w, h = media.output_size(images.shape[2], images.shape[1], max_side=max_side)
    for part in idx.split(chunk_size):
        yield media.resize_frames(images[part], w, h)


def read_video_input_audio(
    video: VideoInput, *, node: str, input_name: str = "video", start: float = 0.0, end: float | None = None
) -> tuple[torch.Tensor, int] | None:
    """``(waveform [C,S], sr)`` of ``[start, end)``, or None when the VIDEO has no audio."""
    comps = _components(check_video(video, node=node, input_name=input_name))
    if comps is None:
        return media.read_audio(video_source(video, node=node, input_name=input_name),
                                start=start, end=end, node=node, input_name=input_name)
    if comps.audio is None:
        return None
    wav, sr = media.audio_to_waveform(comps.audio, node=node, input_name=input_name)
    lo = round(start * sr)
    hi = wav.shape[1] if end is None else round(end * sr)
    return wav[:, lo:hi], sr


def video_from_frames(
    images: torch.Tensor, fps: media.FpsLike, audio: dict | None = None, *, node: str = "AVLab", input_name: str = "images"
) -> VideoInput:
    """An in-memory VIDEO (``VideoFromComponents``) from IMAGE frames, exact fps and AUDIO."""
    frames = media.frames_to_image(media.image_to_frames(images, node=node, input_name=input_name))
    if audio is not None:
        media.audio_to_waveform(audio, node=node, input_name="audio")  # validate only
    rate = media.as_fps(fps, node=node, input_name="fps")
    return VideoFromComponents(VideoComponents(images=frames, frame_rate=rate, audio=audio))


def video_from_file(path: str | os.PathLike[str]) -> VideoInput:
    """A file-backed VIDEO (``VideoFromFile``); streams when read by AVLab nodes."""
    return VideoFromFile(os.fspath(path))


def with_progress(chunks: Iterable[torch.Tensor], total: int | None) -> Iterator[torch.Tensor]:
    """Pass chunks through, advancing a ComfyUI progress bar by each chunk's frame count.

    Every chunk is a cancel point (``throw_exception_if_processing_interrupted``).
    """
    import comfy.model_management
    import comfy.utils

    bar = comfy.utils.ProgressBar(total) if total else None
    for chunk in chunks:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if bar is not None:
            bar.update(int(chunk.shape[0]))
        yield chunk


def output_path(node: str, filename_prefix: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str]:
    """``(folder, filename, counter, subfolder)`` for ``filename_prefix`` in ComfyUI's output folder, by
    ComfyUI's own ``get_save_image_path`` (which refuses prefixes that climb out of it: ``..``,
    absolute paths) — its refusal as an error naming ``node`` and ``filename_prefix``."""
    import folder_paths

    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - ComfyUI raises a bare Exception for paths outside output/
        reason = (str(exc).strip("* \n").splitlines() or [type(exc).__name__])[0]
        raise NodeInputError(node, "filename_prefix", "a prefix inside the ComfyUI output folder "
                             "(no '..' or absolute paths)", f"{filename_prefix!r} ({reason})") from exc
    return folder, filename, counter, subfolder
