"""Features of the concert-cutting models (papers.md §3): log-mel segments, time since the last cut,
image embeddings.

Audio (the paper's front end, every parameter fixed here and in :data:`MEL`):

* mono (channel mean) at 16 kHz (other rates resampled with torchaudio,
  :func:`avlab.common.media.resample_audio`);
* ``torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
  f_min=0, f_max=8000, n_mels=128, window_fn=torch.hann_window, power=2.0, center=True,
  pad_mode="constant", norm=None, mel_scale="slaney")``: a 25 ms Hann window zero-padded to a 512-point
  FFT (no empty mel band: 400 points would leave low bands without an FFT bin), 10 ms hop, power
  spectrum on 128 Slaney-scale bands, then ``log(mel + 1e-6)``;
* frame ``j`` is centred on sample ``160·j`` of the whole recording (zeros beyond its ends), so a
  segment starting at ``s`` seconds holds frames ``100·s … 100·s + 399``: **128 × 400 per 4 s
  segment**, identical whether computed for the whole file or for the segment alone
  (:func:`log_mel_frames`).

Segments follow the synthetic ground truth's protocol (:func:`segment_times`, 4 s windows every 2 s,
:func:`avlab.synthetic.concert.segment_starts`). The time-since-last-cut scalar is
``l = ((α_seg − α_shot) − mean) / std`` with the shot-length statistics of the training shots
(:class:`ShotStats`, saved with the models).

Images: any encoder behind :class:`ImageEncoder` (``dim`` and ``embed(frames [N,H,W,3] 0..1) → [N,D]``).
The built-in :class:`ColourLayoutEncoder` (a fixed colour-layout descriptor, no weights) is a stand-in
for CLIP on the synthetic domain; the ComfyUI nodes adapt CLIP_VISION through the same interface.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence, runtime_checkable

import torch

from ..common import media
from ..common.errors import NodeInputError
from ..synthetic.concert import segment_starts

SAMPLE_RATE = 16000
N_MELS = 128
HOP = 160                       # 10 ms
WIN = 400                       # 25 ms
N_FFT = 512
SEGMENT_S = 4.0
HOP_S = 2.0
FRAMES_PER_S = SAMPLE_RATE // HOP                  # 100
SEGMENT_FRAMES = int(SEGMENT_S * FRAMES_PER_S)     # 400
LOG_FLOOR = 1e-6

#: The exact MelSpectrogram arguments (torchaudio) of the front end.
MEL = dict(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP, f_min=0.0,
           f_max=SAMPLE_RATE / 2, n_mels=N_MELS, power=2.0, center=True, pad_mode="constant",
           norm=None, mel_scale="slaney")

_MEL_CACHE: dict = {}


def mel_spectrogram(center: bool = True):
    """The front end's ``torchaudio.transforms.MelSpectrogram`` (:data:`MEL`, Hann window); ``center=False``
    is the same transform on frames that start at sample 0 (used on pre-padded slices)."""
    import torchaudio

    key = center
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = torchaudio.transforms.MelSpectrogram(**{**MEL, "center": center},
                                                               window_fn=torch.hann_window)
    return _MEL_CACHE[key]


def prepare_audio(waveform: torch.Tensor, sample_rate: int, *, node: str = "AVLab concert features") -> torch.Tensor:
    """``[S]``, ``[C,S]`` or ComfyUI's ``[1,C,S]`` at any rate → mono 16 kHz ``[S]`` float32."""
    wav = torch.as_tensor(waveform)
    if wav.dim() == 3:
        if wav.shape[0] != 1:
            raise NodeInputError(node, "audio", "one waveform ([1,C,S] batch of one)", tuple(wav.shape))
        wav = wav[0]
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise NodeInputError(node, "audio", "a waveform [S], [C,S] or [1,C,S] with samples", tuple(wav.shape))
    wav = media.to_mono(wav.float(), node=node)
    return media.resample_audio(wav, sample_rate, SAMPLE_RATE, node=node)[0]


def log_mel_frames(wave16k: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Log-mel frames ``first … first+count-1`` ``[128, count]`` of a mono 16 kHz recording ``[S]``.

    Frame ``j`` is the window centred on sample ``160·j`` (zeros outside the recording): exactly what
    ``mel_spectrogram()`` (``center=True``, zero padding) gives for the whole recording, computed
    from the samples the frames need only.
    """
    lo, hi = first * HOP - N_FFT // 2, (first + count - 1) * HOP + N_FFT // 2
    n = wave16k.shape[-1]
    piece = wave16k[max(lo, 0):min(hi, n)].float()
    piece = torch.nn.functional.pad(piece, (max(0, -lo), max(0, hi - n)))
    mel = mel_spectrogram(center=False)(piece)
    return torch.log(mel + LOG_FLOOR)


def log_mel(wave16k: torch.Tensor) -> torch.Tensor:
    """Log-mel of a whole mono 16 kHz recording: ``[128, S // 160 + 1]`` (as torchaudio's centred transform)."""
    return log_mel_frames(wave16k, 0, wave16k.shape[-1] // HOP + 1)


def segment_times(duration: float, segment: float = SEGMENT_S, hop: float = HOP_S) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the segments of a ``duration``-second recording: 4 s windows every 2 s,
    each wholly inside it (the synthetic ground truth's protocol, :func:`avlab.synthetic.concert.segment_starts`)."""
    return [(s, s + segment) for s in segment_starts(duration, segment, hop)]


def segment_log_mels(wave16k: torch.Tensor, starts: Sequence[float] | None = None) -> torch.Tensor:
    """``[N, 128, 400]`` log-mels of the segments starting at ``starts`` seconds (default: every segment
    of :func:`segment_times`) of a mono 16 kHz recording."""
    if starts is None:
        starts = [s for s, _ in segment_times(wave16k.shape[-1] / SAMPLE_RATE)]
    if not len(starts):
        return torch.zeros(0, N_MELS, SEGMENT_FRAMES)
    return torch.stack([log_mel_frames(wave16k, round(s * FRAMES_PER_S), SEGMENT_FRAMES) for s in starts])


def segment_frame_spans(num_frames: int, fps, starts: Sequence[float],
                        segment: float = SEGMENT_S) -> list[tuple[int, int]]:
    """``(first, last)`` video frame of each segment (:func:`avlab.common.media.segment_frame_indices`):
    a segment holds a cut when a shot starts on one of its frames after the first (the synthetic
    ground truth's rule)."""
    out = []
    for s in starts:
        idx = media.segment_frame_indices(num_frames, fps, s, s + segment)
        if len(idx):
            out.append((int(idx[0]), int(idx[-1])))
        else:
            f = frame_index(s, fps, num_frames)
            out.append((f, f))
    return out


def segment_last_frames(num_frames: int, fps, starts: Sequence[float], segment: float = SEGMENT_S) -> list[int]:
    """Index of the latest video frame of each segment, the frame whose embedding the multimodal
    when-to-cut model sees."""
    return [last for _, last in segment_frame_spans(num_frames, fps, starts, segment)]


@dataclass(frozen=True)
class ShotStats:
    """Shot-duration statistics of the training shots (seconds), for the time-since-cut scalar."""

    mean: float
    std: float
    count: int = 0

    @classmethod
    def fit(cls, shot_lengths: Sequence[float]) -> "ShotStats":
        """Mean and (population) standard deviation of ``shot_lengths``."""
        x = torch.as_tensor(list(shot_lengths), dtype=torch.float64)
        if len(x) == 0 or not bool(torch.isfinite(x).all()) or bool((x <= 0).any()):
            raise NodeInputError("ShotStats.fit", "shot_lengths", "at least one finite length > 0 s",
                                 f"{len(x)} lengths")
        std = float(x.std(unbiased=False)) if len(x) > 1 else 0.0
        return cls(float(x.mean()), std if std > 0 else 1.0, len(x))

    def normalise(self, since_cut_s):
        """``(since_cut_s − mean) / std`` (float or tensor)."""
        return (since_cut_s - self.mean) / self.std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShotStats":
        return cls(float(d["mean"]), float(d["std"]), int(d.get("count", 0)))


def since_cut_scalar(segment_start_s: float, shot_start_s: float, stats: ShotStats) -> float:
    """The paper's ``l = ((α_seg − α_shot) − mean_shot) / std_shot``."""
    return float(stats.normalise(segment_start_s - shot_start_s))


def since_last_cut(segment_start_s: float, cut_times: Sequence[float]) -> float:
    """Seconds from the last cut at or before ``segment_start_s`` (or from 0) to the segment start."""
    previous = [c for c in cut_times if c <= segment_start_s + 1e-9]
    return segment_start_s - (previous[-1] if previous else 0.0)


@runtime_checkable
class ImageEncoder(Protocol):
    """What the models need from an image encoder: its width ``dim`` and ``embed``."""

    dim: int

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N,H,W,3]`` float 0..1 → ``[N, dim]`` float32."""
        ...


class ColourLayoutEncoder:
    """Built-in stand-in for CLIP on the synthetic domain: the frame's mean colour on a ``rows × cols``
    grid (area average, any frame size), flattened row-major as ``[r, c, rgb]``, plus the mean colour:
    ``D = 3·(rows·cols + 1)``. Fixed (no weights, no randomness): the models learn on top of it."""

    name = "colour_layout"

    def __init__(self, rows: int = 6, cols: int = 8):
        if rows < 1 or cols < 1:
            raise NodeInputError("ColourLayoutEncoder", "rows/cols", "a grid of at least 1×1", (rows, cols))
        self.rows, self.cols = int(rows), int(cols)
        self.dim = 3 * (self.rows * self.cols + 1)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        if frames.dim() == 3:
            frames = frames[None]
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise NodeInputError("ColourLayoutEncoder", "frames", "[N,H,W,3] images", tuple(frames.shape))
        x = frames.float().permute(0, 3, 1, 2)
        grid = torch.nn.functional.adaptive_avg_pool2d(x, (self.rows, self.cols))
        layout = grid.permute(0, 2, 3, 1).reshape(len(x), -1)
        return torch.cat([layout, x.mean((2, 3))], 1)

    def to_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows, "cols": self.cols, "dim": self.dim}


def encoder_from_dict(d: dict | None) -> ImageEncoder | None:
    """The built-in encoder described in a model's JSON (``None`` when the model takes no image)."""
    if not d:
        return None
    if d.get("name") == ColourLayoutEncoder.name:
        return ColourLayoutEncoder(d["rows"], d["cols"])
    raise NodeInputError("AVLab concert models", "image_encoder", f"the built-in '{ColourLayoutEncoder.name}' "
                         "(pass your own encoder to the factory for others)", d.get("name"))


def check_encoder(encoder: ImageEncoder, dim: int, node: str) -> ImageEncoder:
    """Refuse an encoder whose width is not the one the model was trained on."""
    if not isinstance(encoder, ImageEncoder) or int(encoder.dim) != int(dim):
        raise NodeInputError(node, "image_encoder", f"an ImageEncoder with dim {dim} (the trained width)",
                             getattr(encoder, "dim", type(encoder).__name__))
    return encoder


def frame_index(time_s: float, fps, num_frames: int) -> int:
    """The frame shown at ``time_s`` (frame ``t`` at ``t / fps``; nearest, clamped to the clip)."""
    return min(num_frames - 1, max(0, math.floor(time_s * float(fps) + 0.5 + 1e-9)))
