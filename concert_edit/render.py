"""Streaming assembly of a multi-camera edit (papers.md §3, "Rendering"): camera files + master audio
+ an :class:`~avlab.concert_edit.edl.EditDecisionList` → one h264 + AAC mp4.

Bounded memory whatever the length: each shot decodes only its time range of its camera
(:meth:`avlab.common.media.VideoReader.iter_frames` seeks to it), frames flow to
:func:`avlab.common.media.write_video` one chunk at a time, and the master audio streams beside
them. Peak memory is a few chunks of frames plus the codecs' buffers, not the concert.

Rules (the choices this module makes):

* The cameras are synchronised recordings: source time = program time (t = 0 is the same instant
  in every file). Cameras at another frame rate are resampled to the program fps with the media
  layer's nearest-frame rule; cameras of another size are resized to the output size (the first
  camera's, unless ``size`` is given).
* The master audio is a separate file or one camera's audio track. The output lasts as long as the
  master audio (``ceil(samples · fps / sr)`` frames, the audio padded with silence by less than
  one frame): the last shot extends or trims to it.
* Refused with a :class:`~avlab.common.errors.NodeInputError` naming the input: a file that is not
  a video (no video stream, or not a media file), audio that is shorter than the edit or than the
  cameras by more than ``tolerance_s`` (unless ``allow_short_audio``: the edit is then trimmed to
  the audio), a camera that ends more than ``tolerance_s`` before the shots that use it (within the
  tolerance its last frame is held), audio at a rate AAC cannot store.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..common import media
from ..common.errors import NodeInputError
from .edl import EditDecisionList

logger = logging.getLogger(__name__)
_NODE = "render_edit"
#: Bytes of one float32 frame chunk the renderer aims at (the chunk size follows from the frame size).
CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render_edit` wrote."""

    path: str
    num_frames: int
    fps: Fraction
    width: int
    height: int
    sample_rate: int
    audio_samples: int
    duration_s: float
    shots: int


def _describe(src: media.Source) -> str:
    return repr(os.fspath(src)) if isinstance(src, (str, os.PathLike)) else f"a {type(src).__name__}"


def _edit_tag(edl: EditDecisionList, shots: list[tuple[int, int, int]]) -> dict:
    """A compact record of the edit for the mp4's tags: ``[start_frame, camera]`` per shot."""
    return {"format": "avlab.concert_edit.edl", "fps": f"{edl.fps.numerator}/{edl.fps.denominator}",
            "cameras": [os.path.basename(c) for c in edl.cameras], "shots": [[a, cam] for a, _, cam in shots]}


def probe_cameras(sources: Sequence[media.Source], *, min_cameras: int = 1, same_length_tolerance_s: float | None = None,
                  node: str = _NODE, input_name: str = "cameras") -> list[media.VideoInfo]:
    """Headers of every camera file, refusing what cannot be a camera.

    Args:
        sources: camera files.
        min_cameras: fewest cameras accepted (an edit between cameras needs 2).
        same_length_tolerance_s: when set, cameras whose durations differ by more than this are
            refused (synchronised recordings of one performance have one length).
    """
    if len(sources) < min_cameras:
        raise NodeInputError(node, input_name, f"at least {min_cameras} camera files"
                             + (" (one camera needs no edit)" if min_cameras == 2 else ""), f"{len(sources)}")
    infos = []
    for k, src in enumerate(sources):
        info = media.probe_video(src, node=node, input_name=input_name)
        if not info.has_video:
            raise NodeInputError(node, input_name, "video files (a video stream in every camera)",
                                 f"camera {k + 1} {_describe(src)} has no video stream")
        if info.fps is None or info.duration <= 0:
            raise NodeInputError(node, input_name, "video files with a known frame rate and duration",
                                 f"camera {k + 1} {_describe(src)}: fps {info.fps}, {info.duration:g} s")
        infos.append(info)
    if same_length_tolerance_s is not None and len(infos) > 1:
        longest = max(range(len(infos)), key=lambda k: infos[k].duration)
        shortest = min(range(len(infos)), key=lambda k: infos[k].duration)
        if infos[longest].duration - infos[shortest].duration > same_length_tolerance_s:
            raise NodeInputError(
                node, input_name, f"synchronised recordings of one length (within {same_length_tolerance_s:g} s; "
                "trim them to a common start and end)",
                f"camera {shortest + 1} {_describe(sources[shortest])} lasts {infos[shortest].duration:.3f} s, camera "
                f"{longest + 1} {_describe(sources[longest])} {infos[longest].duration:.3f} s")
    rates = {info.fps for info in infos}
    if len(rates) > 1:
        logger.info("cameras at %s fps: resampled to the program rate (nearest frame)",
                    ", ".join(f"{float(r):g}" for r in sorted(rates)))
    return infos


def check_audio_covers_cameras(duration: float, infos: Sequence[media.VideoInfo], audio: media.Source, *,
                               tolerance_s: float = 0.5, node: str = _NODE) -> None:
    """Refuse master audio that ends more than ``tolerance_s`` before the shortest camera (the edit
    would silently lose the end of the concert: a wrong or truncated audio file)."""
    shortest = min(range(len(infos)), key=lambda k: infos[k].duration)
    if duration < infos[shortest].duration - tolerance_s:
        raise NodeInputError(node, "audio", f"master audio as long as the cameras (the shortest, camera "
                             f"{shortest + 1}, lasts {infos[shortest].duration:.3f} s; trim the cameras, or allow "
                             "short audio to trim the edit to it)", f"{duration:.3f} s in {_describe(audio)}")


def count_audio_samples(source: media.Source, *, node: str = _NODE, input_name: str = "audio") -> tuple[int, int]:
    """``(samples, sample_rate)`` of a file's audio, counted by a streamed decode (exact, unlike headers)."""
    with media.VideoReader(source, node=node, input_name=input_name) as reader:
        if not reader.info.has_audio:
            raise NodeInputError(node, input_name, "a file with an audio stream (the master audio)",
                                 f"{_describe(source)} has no audio")
        return sum(chunk.shape[1] for chunk in reader.iter_audio(chunk_seconds=30.0)), int(reader.info.sample_rate)


def render_edit(
    edl: EditDecisionList,
    out: str | os.PathLike[str],
    *,
    cameras: Sequence[media.Source] | None = None,
    audio: media.Source | int | None = None,
    audio_samples: int | None = None,
    size: tuple[int, int] | None = None,
    chunk_size: int | None = None,
    tolerance_s: float = 0.5,
    allow_short_audio: bool = False,
    crf: int = 19,
    preset: str = "veryfast",
    callback: Callable[[int, int], None] | None = None,
    node: str = _NODE,
) -> RenderResult:
    """Render ``edl`` from the camera files and the master audio into the mp4 ``out`` (module docstring).

    Args:
        edl: the edit (its fps is the output fps; its cut frames are kept).
        out: output mp4 path.
        cameras: camera files in the order ``edl`` indexes them (default: ``edl.cameras`` as paths).
        audio: the master audio: a file, or the index of the camera whose audio track to use
            (default: ``edl.audio`` when set, else camera 0's track).
        audio_samples: the master audio's length in samples, when the caller counted it already
            (else a streamed decode counts it).
        size: output ``(width, height)`` (default: the first camera's).
        chunk_size: frames per chunk (default: as many as fit in :data:`CHUNK_BYTES`, at most 16).
        tolerance_s: how far a camera or the audio may fall short before it is an error.
        allow_short_audio: trim the edit to audio that is shorter than the edit or the cameras.
        crf, preset: libx264 quality and speed.
        callback: ``callback(frames_written, total_frames)`` after every chunk (progress, cancel by raising).
    """
    edl.validate(node)
    sources = list(edl.cameras if cameras is None else cameras)
    if len(sources) < len(edl.cameras):
        raise NodeInputError(node, "cameras", f"the {len(edl.cameras)} cameras the edit decision list names",
                             f"{len(sources)} files")
    infos = probe_cameras(sources, node=node)
    fps = edl.fps
    width, height = size if size is not None else (infos[0].width, infos[0].height)
    if width < 2 or height < 2:
        raise NodeInputError(node, "size", "an output size of at least 2x2 pixels", (width, height))
    if chunk_size is None:
        chunk_size = max(1, min(16, CHUNK_BYTES // (width * height * 3 * 4)))

    if audio is None:
        audio = edl.audio if edl.audio is not None else 0
    if isinstance(audio, int) and not isinstance(audio, bool):
        if not 0 <= audio < len(sources):
            raise NodeInputError(node, "audio", f"a camera index 0..{len(sources) - 1} or an audio file", audio)
        audio_src = sources[audio]
    else:
        audio_src = audio
    if audio_samples is None:
        audio_samples, sr = count_audio_samples(audio_src, node=node)
    else:
        sr = int(media.probe_video(audio_src, node=node, input_name="audio").sample_rate or 0)
    if sr not in media.AAC_SAMPLE_RATES:
        raise NodeInputError(node, "audio", f"audio at a sample rate AAC stores {media.AAC_SAMPLE_RATES} "
                             "(resample the master audio)", f"{sr} Hz")
    if audio_samples <= 0:
        raise NodeInputError(node, "audio", "audio with at least one sample", f"{_describe(audio_src)} is empty")
    duration = audio_samples / sr
    if not allow_short_audio:
        if duration < edl.duration - tolerance_s:
            raise NodeInputError(node, "audio", f"master audio as long as the edit ({edl.duration:.3f} s; or allow "
                                 "short audio to trim the edit)", f"{duration:.3f} s in {_describe(audio_src)}")
        check_audio_covers_cameras(duration, infos, audio_src, tolerance_s=tolerance_s, node=node)

    n_out = max(1, math.ceil(Fraction(audio_samples, sr) * fps))
    shots = [(a, min(b, n_out), cam) for a, b, cam in edl.shot_frames() if a < n_out]
    shots[-1] = (shots[-1][0], n_out, shots[-1][2])              # the last shot runs to the audio's end
    for i, (a, b, cam) in enumerate(shots):
        needed = float(Fraction(b) / fps)
        if infos[cam].duration < needed - tolerance_s:
            raise NodeInputError(node, "cameras", "cameras that cover the shots that use them",
                                 f"camera {cam + 1} {_describe(sources[cam])} ends at {infos[cam].duration:.3f} s, "
                                 f"shot {i + 1} needs it until {needed:.3f} s")

    readers: dict[int, media.VideoReader] = {}
    done = 0

    def frames() -> Iterator[torch.Tensor]:
        nonlocal done
        for i, (a, b, cam) in enumerate(shots):
            if cam not in readers:
                readers[cam] = media.VideoReader(sources[cam], node=node, input_name="cameras")
            got, last = 0, None
            for chunk in readers[cam].iter_frames(start=Fraction(a) / fps, end=Fraction(b) / fps, fps=fps,
                                                  size=(width, height), chunk_size=chunk_size):
                chunk = chunk[: b - a - got]
                got += chunk.shape[0]
                last = chunk[-1:]
                done += chunk.shape[0]
                yield chunk
                if callback is not None:
                    callback(done, n_out)
            missing = (b - a) - got
            if missing > 0:                            # a camera a little shorter: hold its last frame
                if last is None or missing > max(1, round(tolerance_s * float(fps))):
                    raise NodeInputError(node, "cameras", "cameras that cover the shots that use them",
                                         f"camera {cam + 1} {_describe(sources[cam])} gave {got} of {b - a} frames "
                                         f"for shot {i + 1}")
                for j in range(0, missing, chunk_size):
                    n = min(chunk_size, missing - j)
                    done += n
                    yield last.expand(n, -1, -1, -1)
                    if callback is not None:
                        callback(done, n_out)

    audio_reader = media.VideoReader(audio_src, node=node, input_name="audio")

    def audio_chunks() -> Iterator[torch.Tensor]:
        for chunk in audio_reader.iter_audio(end=float(Fraction(audio_samples, sr)), chunk_seconds=5.0):
            yield chunk if chunk.shape[0] <= 2 else media.to_stereo(chunk, node=node)

    try:
        written = media.write_video(out, frames(), fps, audio=audio_chunks(), sample_rate=sr, crf=crf, preset=preset,
                                    metadata={"avlab_edit": _edit_tag(edl, shots)}, node=node, input_name="cameras",
                                    dest_input="out")
    finally:
        for reader in readers.values():
            reader.close()
        audio_reader.close()
    return RenderResult(path=os.fspath(out), num_frames=written.num_frames, fps=fps, width=written.width,
                        height=written.height, sample_rate=sr, audio_samples=written.audio_samples,
                        duration_s=written.num_frames / float(fps), shots=len(shots))
