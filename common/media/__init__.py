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

Modules: :mod:`.convert` (ComfyUI values ⇄ core layouts), :mod:`.audio` (resampling, channels),
:mod:`.timing` (fps and frame ⇄ sample pairing), :mod:`.reader` (streamed decode), :mod:`.writer`
(streamed h264 + AAC encode). Everything public is re-exported here: ``media.write_video(...)``.
"""

from __future__ import annotations

from .convert import (  # noqa: F401
    audio_to_waveform,
    frames_to_image,
    image_to_frames,
    mask_to_masks,
    masks_to_mask,
    to_channels_first,
    to_channels_last,
    waveform_to_audio,
)
from .audio import (  # noqa: F401
    resample_audio,
    safe_clip,
    set_channels,
    to_mono,
    to_stereo,
)
from .timing import (  # noqa: F401
    FpsLike,
    align_audio_to_frames,
    as_fps,
    audio_samples_per_frame,
    check_audio_matches_frames,
    frame_sample_bounds,
    frame_times,
    num_audio_samples,
    output_size,
    resample_frame_indices,
    resample_frames,
    resize_frames,
    resolve_fps,
    segment_frame_indices,
)
from .reader import (  # noqa: F401
    Source,
    VideoInfo,
    VideoReader,
    iter_video_frames,
    probe_video,
    read_audio,
    read_video_frames,
)
from .writer import (  # noqa: F401
    AAC_SAMPLE_RATES,
    MAX_FPS_DENOMINATOR,
    MAX_FPS_NUMERATOR,
    VideoWriteResult,
    write_video,
)

__all__ = [
    "AAC_SAMPLE_RATES",
    "MAX_FPS_DENOMINATOR",
    "MAX_FPS_NUMERATOR",
    "VideoInfo",
    "VideoReader",
    "VideoWriteResult",
    "align_audio_to_frames",
    "as_fps",
    "audio_samples_per_frame",
    "audio_to_waveform",
    "check_audio_matches_frames",
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
