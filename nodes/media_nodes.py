"""Media nodes (category ``AVLab/Media``): stream a segment out of a long VIDEO, save an mp4 with audio.

Thin adapters over :mod:`avlab.common.media` (core I/O) and :mod:`.media` (VIDEO helpers). Not a
paper method: the I/O every AVLab workflow starts and ends with (design.md, "The host").
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable

import torch
from comfy_api.latest import io, ui

from ..common import media
from ..common.errors import NodeInputError
from ..common.memory import check_memory
from .media import (
    iter_video_input_frames,
    output_path,
    read_video_input_audio,
    video_from_file,
    video_info,
    with_progress,
)

logger = logging.getLogger(__name__)

#: Choices of AVLabSaveVideoWithAudio.audio_fit.
AUDIO_FIT = ("pad or trim", "error if lengths differ")
#: Sample rate of the silent track returned for videos without audio.
SILENT_SAMPLE_RATE = 44100


def _gather(chunks: Iterable[torch.Tensor], expected: int) -> torch.Tensor | None:
    """Concatenate frame chunks into one tensor without holding them twice (preallocates)."""
    buf: torch.Tensor | None = None
    extra: list[torch.Tensor] = []
    n = 0
    for chunk in chunks:
        if buf is None:
            buf = torch.empty((max(expected, chunk.shape[0]), *chunk.shape[1:]), dtype=chunk.dtype)
        if not extra and n + chunk.shape[0] <= buf.shape[0]:
            buf[n : n + chunk.shape[0]] = chunk
            n += chunk.shape[0]
        else:  # the header's frame count was low (variable frame rate): append the rest
            extra.append(chunk)
    if buf is None:
        return None
    if extra:
        return torch.cat([buf[:n], *extra])
    return buf if n == buf.shape[0] else buf[:n].clone()


def _check_segment_memory(node: str, info: media.VideoInfo, frames: int, fps, max_side: int) -> None:
    """Refuse before decoding when the segment's frames (float32 RGB after resizing) and audio
    would not fit in memory (:func:`~avlab.common.memory.check_memory`)."""
    w, h = media.output_size(info.width, info.height, max_side=max_side)
    seconds = float(frames / fps)
    sr, channels = (info.sample_rate, info.audio_channels or 1) if info.has_audio else (SILENT_SAMPLE_RATE, 1)
    needed = frames * h * w * 3 * 4 + math.ceil(seconds * sr) * channels * 4
    check_memory(node, "duration_s", needed,
                 f"the segment ({frames} frames of {w}x{h} RGB float32 = {seconds:.1f} s at {float(fps):g} fps, "
                 f"plus {channels}-channel audio; a lower 'max_side' or 'fps' shrinks it too)")


class AVLabLoadVideoSegment(io.ComfyNode):
    """Decode only ``[start, start + duration)`` of a VIDEO: frames, matching audio and the fps."""

    NAME = "AVLab Load Video Segment"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabLoadVideoSegment",
            display_name=cls.NAME,
            category="AVLab/Media",
            description="Streams one time segment of a (long) video into IMAGE frames and its AUDIO. "
            "Only the segment is decoded: the reader seeks to the nearest keyframe and stops at the end.",
            inputs=[
                io.Video.Input("video", tooltip="The video to read (e.g. from Load Video). Long files are streamed, never decoded whole."),
                io.Float.Input("start_s", default=0.0, min=0.0, max=1e6, step=0.01,
                               tooltip="Segment start in seconds from the beginning of the video."),
                io.Float.Input("duration_s", default=5.0, min=0.0, max=1e6, step=0.01,
                               tooltip="Segment length in seconds; 0 reads to the end of the video."),
                io.Float.Input("fps", default=0.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Output frame rate; 0 keeps the video's own rate. Frames are picked by "
                               "nearest timestamp (29.97 is read as 30000/1001)."),
                io.Int.Input("max_side", default=0, min=0, max=16384, step=8,
                             tooltip="Downscale so the longer side is at most this many pixels; 0 keeps the native size."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames of the segment [T,H,W,3]."),
                io.Audio.Output(display_name="audio", tooltip="Audio of the segment, exactly as long as the frames "
                                "(silence if the video has no audio track)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the output frames."),
            ],
        )

    @classmethod
    def execute(cls, video, start_s: float, duration_s: float, fps: float, max_side: int) -> io.NodeOutput:
        node = cls.NAME
        info = video_info(video, node=node)
        if info.fps is None:
            raise NodeInputError(node, "video", "a video with a known frame rate", "none")
        if start_s < 0:
            raise NodeInputError(node, "start_s", "a start time >= 0 s", start_s)
        if duration_s < 0:
            raise NodeInputError(node, "duration_s", "a duration >= 0 s (0 = to the end)", duration_s)
        target = None if fps == 0 else media.as_fps(fps, node=node, input_name="fps")
        out_fps = target or info.fps
        end = start_s + duration_s if duration_s > 0 else None
        expected = len(media.segment_frame_indices(info.num_frames, info.fps, start_s, end, target))
        _check_segment_memory(node, info, expected, out_fps, max_side)
        chunks = iter_video_input_frames(video, node=node, start=start_s, end=end, fps=target, max_side=max_side)
        images = _gather(with_progress(chunks, expected), expected)
        if images is None:
            raise NodeInputError(node, "start_s", f"a start time inside the video (0 .. {info.duration:.3f} s)", start_s)
        n = images.shape[0]
        found = read_video_input_audio(video, node=node, start=start_s, end=start_s + float(n / out_fps))
        if found is None:
            logger.info("%s: the video has no audio track; returning silence", node)
            wav, sr = torch.zeros(1, 0), SILENT_SAMPLE_RATE
        else:
            wav, sr = found
        wav = media.align_audio_to_frames(wav, sr, n, out_fps, node=node, input_name="video")
        logger.debug("%s: %d frames at %s fps from %.3f s", node, n, out_fps, start_s)
        return io.NodeOutput(images, media.waveform_to_audio(wav, sr), float(out_fps))


class AVLabSaveVideoWithAudio(io.ComfyNode):
    """Encode IMAGE frames (+ AUDIO) to an h264/AAC mp4 in the output folder, streamed frame by frame."""

    NAME = "AVLab Save Video With Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSaveVideoWithAudio",
            display_name=cls.NAME,
            category="AVLab/Media",
            description="Saves frames and an optional audio track as an mp4 (h264 yuv420p + AAC) in the "
            "ComfyUI output folder. The audio is trimmed or padded with silence to the video length.",
            inputs=[
                io.Image.Input("images", tooltip="Frames to encode, in order."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the frames (29.97 / 23.976 / 59.94 are written as exact NTSC rates)."),
                io.String.Input("filename_prefix", default="AVLab/video",
                                tooltip="Output file prefix inside the ComfyUI output folder; may contain subfolders "
                                "and %date:...% style variables."),
                io.Int.Input("crf", default=19, min=0, max=51, step=1,
                             tooltip="h264 quality: lower is better and larger (0 = lossless, 19 ≈ visually lossless, 28 = small)."),
                io.Combo.Input("audio_fit", options=list(AUDIO_FIT), default=AUDIO_FIT[0],
                               tooltip="When the audio is not as long as the frames: 'pad or trim' cuts it or adds "
                               "silence at the end; 'error if lengths differ' stops with an error when they differ by "
                               "more than one frame (catches a wrong fps or audio from another clip)."),
                io.Audio.Input("audio", optional=True, tooltip="Optional soundtrack; loud clips are scaled (not clipped) "
                               "to a peak of 1.0. An empty AUDIO (no samples) is an error."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The saved file as a VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps: float, filename_prefix: str, crf: int, audio_fit: str = "pad or trim",
                audio=None) -> io.NodeOutput:
        from comfy.cli_args import args

        node = cls.NAME
        frames = media.image_to_frames(images, node=node, input_name="images")
        rate = media.as_fps(fps, node=node, input_name="fps")
        n, h, w = frames.shape[:3]
        wav, sr = None, None
        if audio is not None:
            wav, sr = media.audio_to_waveform(audio, node=node, input_name="audio")
            if wav.shape[0] > 2:
                wav = media.to_stereo(wav, node=node, input_name="audio")
            if audio_fit not in AUDIO_FIT:
                raise NodeInputError(node, "audio_fit", f"one of {list(AUDIO_FIT)}", audio_fit)
            if wav.shape[1] == 0 or audio_fit == AUDIO_FIT[1]:
                media.check_audio_matches_frames(wav, sr, n, rate, node=node, input_name="audio")
            wav = media.align_audio_to_frames(media.safe_clip(wav), sr, n, rate, node=node, input_name="audio")

        metadata = None
        if not args.disable_metadata:
            metadata = {}
            if cls.hidden.extra_pnginfo is not None:
                metadata.update(cls.hidden.extra_pnginfo)
            if cls.hidden.prompt is not None:
                metadata["prompt"] = cls.hidden.prompt
        folder, filename, counter, subfolder = output_path(node, filename_prefix, w, h)
        file = f"{filename}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        chunks = with_progress(frames.split(16), n)  # views: the encoder converts one chunk at a time
        result = media.write_video(path, chunks, rate, audio=wav, sample_rate=sr, crf=crf,
                                   metadata=metadata or None, node=node, input_name="images",
                                   dest_input="filename_prefix")
        logger.info("%s: wrote %s (%d frames, %dx%d, %s fps)", node, path, result.num_frames, result.width, result.height, rate)
        preview = ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)])
        return io.NodeOutput(video_from_file(path), ui=preview)


NODES = [AVLabLoadVideoSegment, AVLabSaveVideoWithAudio]
