"""Streamed writing of h264 + AAC mp4 files from frame chunks and a waveform."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from ..errors import NodeInputError
from .audio import resample_audio
from .convert import _check_sample_rate, _check_waveform, _describe, _rgb_last
from .timing import FpsLike, as_fps, num_audio_samples

logger = logging.getLogger(__name__)

#: Sample rates the AAC encoder accepts.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_LAYOUTS = {1: "mono", 2: "stereo"}
#: Frame rates h264 in mp4 can store, as an exact ``num/den``: both are 32-bit ints, and FFmpeg's mp4
#: muxer times a frame in ticks of ``num`` doubled up to >= 10000 per second, which must fit an int32
#: per frame. ``den <= 131071`` always fits (1/131071 fps writes, 1/131072 fails with EINVAL).
MAX_FPS_NUMERATOR = 2**31 - 1
MAX_FPS_DENOMINATOR = 131071
_AUDIO_BLOCK = 1 << 16


@dataclass(frozen=True)
class VideoWriteResult:
    """What :func:`write_video` wrote."""

    num_frames: int
    width: int
    height: int
    fps: Fraction
    sample_rate: int | None
    audio_samples: int


def _frames_uint8(item: Any, node: str, input_name: str, first_index: int) -> np.ndarray:
    """One frame ``[H,W,C]`` or a chunk ``[n,H,W,C]`` (float 0..1 or uint8) → uint8 ``[n,H,W,3]``.

    ``first_index`` is the chunk's first frame number, for the error on NaN / inf pixels.
    """
    x = torch.as_tensor(item) if not isinstance(item, torch.Tensor) else item
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or 0 in x.shape:
        raise NodeInputError(node, input_name, "frames [H,W,3] or chunks [n,H,W,3]", _describe(item))
    x = _rgb_last(x.detach(), node, input_name)
    if x.is_floating_point():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero()
        if len(bad):
            raise NodeInputError(node, input_name, "finite pixel values (no NaN or inf)",
                                 f"NaN/inf pixels in frame {first_index + int(bad[0])}")
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
    dest_input: str = "dest",
) -> VideoWriteResult:
    """Write an mp4 (h264 yuv420p + AAC) from streamed frames.

    Args:
        dest: output path (missing folders are created, as ComfyUI's savers do) or a seekable
            binary file object.
        frames: iterable of frames ``[H,W,3]`` and/or chunks ``[n,H,W,3]`` (float 0..1 or uint8);
            a ``[T,H,W,3]`` tensor works too. Consumed lazily: only one chunk is held at a time.
        fps: frame rate (kept exact: 30000/1001 stays 30000/1001); ``num/den`` with
            ``num <= MAX_FPS_NUMERATOR`` and ``den <= MAX_FPS_DENOMINATOR`` (1/131071 .. 2**31-1 fps).
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
        node, input_name, dest_input: used in error messages (``dest_input`` names the path's input).

    Frames with NaN / inf pixels are refused (checked per chunk); a failed write leaves no file.
    """
    import json

    rate = as_fps(fps, node=node, input_name="fps")
    if rate.numerator > MAX_FPS_NUMERATOR or rate.denominator > MAX_FPS_DENOMINATOR:
        raise NodeInputError(
            node, "fps", f"a frame rate h264/mp4 can store: num/den with num <= {MAX_FPS_NUMERATOR} and den <= "
            f"{MAX_FPS_DENOMINATOR} (1/{MAX_FPS_DENOMINATOR} .. {MAX_FPS_NUMERATOR} fps)", f"{rate} = {float(rate):.6g} fps")
    if even not in ("pad", "crop"):
        raise NodeInputError(node, "even", "'pad' or 'crop'", even)
    frame_iter = iter([frames] if isinstance(frames, torch.Tensor) and frames.ndim == 3 else frames)
    first = next(frame_iter, None)
    if first is None:
        raise NodeInputError(node, input_name, "at least one frame", "no frames")
    first = _frames_uint8(first, node, input_name, 0)
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
            chunk_iter: Iterator[torch.Tensor] = (wav[:, i : i + _AUDIO_BLOCK] for i in range(0, wav.shape[1], _AUDIO_BLOCK))
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
    try:
        if is_path:
            dest = os.fspath(dest)
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            open(dest, "ab").close()  # PyAV opens the file only at the first packet: fail here, with the path
        container = av.open(dest, mode="w", format="mp4", options={"movflags": "use_metadata_tags"})
    except (OSError, av.error.FFmpegError) as exc:
        raise NodeInputError(node, dest_input, "a writable output file path", f"{dest!r} ({exc})") from exc
    ok = False
    try:
        for key, value in (metadata or {}).items():
            container.metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = out_w, out_h, "yuv420p"
        vs.codec_context.gop_size = min(2**31 - 1, max(1, round(keyframe_interval_s * float(rate))))
        vs.options = {"crf": str(int(crf)), "preset": preset}
        ast = None
        if feeder is not None:
            ast = container.add_stream("aac", rate=sr)
            ast.layout = _LAYOUTS[feeder.channels]
        n_frames, a_pos = 0, 0

        def put_audio(upto: int) -> None:
            nonlocal a_pos
            while a_pos < upto:  # in blocks: one frame at a low fps may own hours of audio
                block = feeder.take(min(upto - a_pos, _AUDIO_BLOCK))
                if block.shape[1] == 0:
                    if not pad_audio:
                        return
                    block = np.zeros((feeder.channels, min(upto - a_pos, _AUDIO_BLOCK)), np.float32)
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
            chunk = None if nxt is None else _frames_uint8(nxt, node, input_name, n_frames)
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
