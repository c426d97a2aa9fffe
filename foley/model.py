"""The GRAM model: three towers, bias-free projection heads, one interface (papers.md §4).

``embed_video(frames, fps)`` / ``embed_text(sentences)`` / ``embed_audio(waveform, sample_rate)`` →
pooled tower output → ``contra_head_{v,t,a}`` (Linear, no bias) → L2-normalised ``dim``-d vector.

* video: EVA-CLIP ViT (:mod:`avlab.foley.eva_vit`), CLS token of each sampled frame, mean over frames;
  frames are sampled by *time* from the video's real fps (:func:`sample_frame_indices`);
* text: BERT-family tower (:mod:`avlab.foley.text`), CLS token;
* audio: BEATs (:mod:`avlab.foley.beats`) at 16 kHz (any input rate is resampled; stereo is
  averaged to mono), mean over tokens.

Parameter names follow a GRAM checkpoint (``vision_encoder.visual.*``, ``multimodal_encoder.bert.*``,
``audio_encoder.*``, ``contra_head_{t,v,a}.linear.weight``), so the pack's own safetensors files and
the official ``.pt`` share one loader (:mod:`avlab.foley.weights`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from .beats import BEATs, beats_fbank, min_num_samples
from .eva_vit import EVAVisionTransformer, preprocess
from .text import TextTower

AUDIO_RATE = 16_000
MODALITIES = ("video", "text", "audio")


class ContraHead(nn.Module):
    """GRAM's ``contra_head_*``: a bias-free Linear to the shared space (key ``.linear.weight``)."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(width, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _Holder(nn.Module):
    """Holds one sub-module under a fixed attribute name (``vision_encoder.visual``)."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def sample_frame_indices(num_frames: int, fps: float, count: int = 8, rate: float | None = None) -> torch.Tensor:
    """Indices of the frames GRAM's video tower sees, chosen by time from the real ``fps``.

    The clip's duration ``num_frames / fps`` is cut into ``count`` equal segments (or, with
    ``rate``, into ``ceil(duration · rate)`` segments, at most ``count``) and the frame showing the
    middle instant of each segment is taken (GRAM samples segment middles at evaluation). Short
    clips repeat frames rather than fail."""
    if num_frames < 1:
        raise ValueError("video has 0 frames; give at least one frame")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a frame rate > 0, got {fps}")
    duration = num_frames / fps
    segments = count if rate is None else max(1, min(count, math.ceil(duration * rate - 1e-9)))
    mids = (torch.arange(segments, dtype=torch.float64) + 0.5) * duration / segments
    return (mids * fps).floor().clamp(0, num_frames - 1).long()


class GramModel(nn.Module):
    """Towers + heads (module docstring). Any tower may be ``None`` (an embeds-only subset)."""

    def __init__(self, vision: EVAVisionTransformer | None, text: TextTower | None, audio: BEATs | None,
                 dim: int = 512, frames: int = 8, frame_rate: float | None = None, crop: str = "center_crop"):
        super().__init__()
        self.dim, self.frames, self.frame_rate, self.crop = dim, frames, frame_rate, crop
        if vision is not None:
            self.vision_encoder = _Holder(visual=vision)
            self.contra_head_v = ContraHead(vision.cfg.width, dim)
        if text is not None:
            self.multimodal_encoder = text
            self.contra_head_t = ContraHead(text.width, dim)
        if audio is not None:
            self.audio_encoder = audio
            self.contra_head_a = ContraHead(audio.cfg.encoder_embed_dim, dim)

    # ------------------------------------------------------------------ towers present
    def has(self, modality: str) -> bool:
        return hasattr(self, {"video": "contra_head_v", "text": "contra_head_t", "audio": "contra_head_a"}[modality])

    def _need(self, modality: str) -> None:
        if not self.has(modality):
            raise ValueError(f"this GRAM model has no {modality} tower (loaded without it)")

    def _param_device(self) -> torch.device:
        """Where the weights are (ComfyUI's ModelPatcher also sets a plain ``device`` attribute)."""
        return next(self.parameters()).device

    # ------------------------------------------------------------------ batched features (training)
    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed frames ``[B, T, 3, S, S]`` → normalised ``[B, dim]``."""
        self._need("video")
        return F.normalize(self.contra_head_v(self.vision_encoder.visual.encode_video(pixels)), dim=-1)

    def text_features(self, sentences: list[str]) -> torch.Tensor:
        self._need("text")
        return F.normalize(self.contra_head_t(self.multimodal_encoder(sentences)), dim=-1)

    def audio_features(self, wave16k: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """16 kHz mono ``[B, S]`` → normalised ``[B, dim]``."""
        self._need("audio")
        return F.normalize(self.contra_head_a(self.audio_encoder.pooled(wave16k, padding_mask)), dim=-1)

    # ------------------------------------------------------------------ user-facing embedding
    def prepare_video(self, frames: torch.Tensor, fps: float | Fraction) -> torch.Tensor:
        """ComfyUI IMAGE ``[T, H, W, 3]`` 0..1 + fps → ``[T', 3, S, S]`` of the sampled frames."""
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {tuple(frames.shape)}")
        idx = sample_frame_indices(frames.shape[0], float(fps), self.frames, self.frame_rate)
        size = self.vision_encoder.visual.cfg.image_size
        return preprocess(frames[idx].float().cpu(), size, mode=self.crop)

    @torch.no_grad()
    def embed_video(self, frames: torch.Tensor, fps: float | Fraction) -> torch.Tensor:
        """One video (``[T, H, W, 3]``) → ``[dim]``."""
        self._need("video")
        pixels = self.prepare_video(frames, fps).to(self._param_device(), self._dtype())
        return self.video_features(pixels[None])[0].float()

    @torch.no_grad()
    def embed_text(self, sentences: list[str] | str) -> torch.Tensor:
        """Sentences → ``[B, dim]``."""
        return self.text_features([sentences] if isinstance(sentences, str) else list(sentences)).float()

    @staticmethod
    def prepare_audio(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[S]`` / ``[C, S]`` at any rate → 16 kHz mono ``[S']``."""
        if waveform.dim() == 1:
            waveform = waveform[None]
        if waveform.dim() != 2:
            raise ValueError(f"audio must be [channels, samples], got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] == 0:
            raise ValueError("audio has 0 samples; give a clip with sound in it")
        if not (isinstance(sample_rate, (int, float)) and sample_rate > 0):
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        mono = waveform.float().mean(0)
        if int(sample_rate) != AUDIO_RATE:
            import torchaudio

            mono = torchaudio.functional.resample(mono, int(sample_rate), AUDIO_RATE)
        return mono

    @torch.no_grad()
    def embed_audio(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One clip → ``[dim]`` (shorter than one BEATs patch: zero-padded and masked)."""
        self._need("audio")
        mono = self.prepare_audio(waveform, sample_rate)
        need = min_num_samples(self.audio_encoder.cfg)
        mask = None
        if mono.shape[0] < need:
            mask = torch.zeros(1, need, dtype=torch.bool)
            mask[:, mono.shape[0]:] = True
            mono = F.pad(mono, (0, need - mono.shape[0]))
        return self.audio_features(mono[None].to(self._param_device(), self._dtype()),
                                   None if mask is None else mask.to(self._param_device()))[0].float()

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


__all__ = ["AUDIO_RATE", "ContraHead", "GramModel", "MODALITIES", "beats_fbank", "sample_frame_indices"]
