"""Streamed reading of video/audio files: seek to a segment, demux and decode chunk by chunk."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Union

import av
import numpy as np
import torch

from ..errors import NodeInputError
from .convert import _describe
from .timing import FpsLike, _as_time, _round_half_up, as_fps, output_size

Source = Union[str, "os.PathLike[str]", io.IOBase, Any]


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
    Times are seconds from the container start. One iteration at a time per reader. Damaged data
    raises :class:`NodeInputError` with the file, the time and the byte offset of the damage.

    Args:
        source: a file path or a seekable binary file object (e.g. ``io.BytesIO``).
        node, input_name: used in error messages.
    """

    def __init__(self, source: Source, *, node: str = "AVLab", input_name: str = "video"):
        self.node, self.input_name = node, input_name
        self._name = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__}"
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
        tb = self._vs.time_base
        last_t: Fraction | None = None
        for frame in self._decode(self._vs):
            if frame.pts is not None:
                t = frame.pts * tb - self._origin
            else:
                t = Fraction(0) if last_t is None else last_t + period
            last_t = t
            yield t, frame

    def _decode(self, stream: av.stream.Stream) -> Iterator[Any]:
        """Demux and decode ``stream`` from the current position.

        A damaged packet raises :class:`NodeInputError` naming the file, the time and the byte
        offset. Damaged packets are not skipped: that would shift frames against the audio.
        """
        self._fresh = False
        packets = self._container.demux(stream)
        t: Fraction | None = None
        pos: int | None = None
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    return
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    t = ts * stream.time_base - self._origin
                if packet.pos is not None and packet.pos >= 0:
                    pos = packet.pos
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                where = "at an unknown time" if t is None else f"at {float(t):.3f} s"
                if pos is not None:
                    where += f" (byte {pos})"
                raise NodeInputError(
                    self.node, self.input_name, "a media file that decodes without errors (replace or re-encode it; "
                    "segments that avoid the damage still read)",
                    f"damaged {stream.type} data in {self._name} {where}: {getattr(exc, 'strerror', None) or exc}",
                ) from exc
            yield from frames

    # -- audio
    def iter_audio(self, *, start: float = 0.0, end: float | None = None, chunk_seconds: float = 10.0) -> Iterator[torch.Tensor]:
        """Yield the audio of ``[start, end)`` as float32 ``[C, n]`` chunks (native sample rate).

        Sample ``k`` of the output is at ``start + k / sr``; gaps in the stream (e.g. audio that
        starts after the video) are filled with silence so audio stays aligned with the frames.
        Yields nothing when the file has no audio stream.
        """
        if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float)) or not (
                math.isfinite(chunk_seconds) and chunk_seconds > 0):
            raise NodeInputError(self.node, "chunk_seconds", "a chunk length in seconds > 0", chunk_seconds)
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
        pos = s_start  # next absolute sample index to output
        parts: list[np.ndarray] = []
        pending = 0
        channels = ast.codec_context.channels or 1
        started = False
        for frame in self._decode(ast):
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
