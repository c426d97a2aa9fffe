"""FoleyGRAM's evaluation metrics (papers.md §4, "Metrics"; issue 10).

* :func:`e_l1` — mean |env_gen − env_ref| of Video-Foley envelopes
  (:func:`avlab.foley.envelope.video_foley_envelope`: 16 kHz, 512/128, μ-law, 64 levels), over the
  shorter of the two.
* :func:`frechet_distance` — ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½) of two embedding sets
  (fp64; the matrix square root by a symmetric eigendecomposition, so it stays real).
* :func:`fad` — the Fréchet distance over embeddings from any ``embedder(waveform, sample_rate) →
  [D]`` (pluggable: VGGish, CLAP audio, BEATs...).
* :func:`favd` — Fréchet audio-visual distance: the Fréchet distance of the joint
  ``[video_embedding ; audio_embedding]`` vectors of generated vs reference pairs.
* :func:`clap_score` — mean cosine between CLAP audio and text embeddings, with a user-provided
  transformers ``ClapModel`` folder (local files only).
* :func:`onset_times` / :func:`onset_error_ms` — onsets as upward threshold crossings of an envelope,
  and the mean distance from each reference onset to the nearest generated one.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .envelope import Envelope, video_foley_envelope


def e_l1(generated: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> float:
    a = video_foley_envelope(generated, sample_rate).values
    b = video_foley_envelope(reference, sample_rate).values
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).abs().mean())


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to ``a [N, D]`` and ``b [M, D]`` (N, M ≥ 2)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: need [N, D] and [M, D] embeddings, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet_distance: each set needs at least 2 embeddings for a covariance")
    a, b = a.double(), b.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(root1 @ s2 @ root1)
    value = float((mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * torch.trace(cross))
    return max(value, 0.0)


Embedder = Callable[[torch.Tensor, int], torch.Tensor]


def fad(generated: list[torch.Tensor], reference: list[torch.Tensor], sample_rate: int, embedder: Embedder) -> float:
    emb = lambda clips: torch.stack([embedder(c, sample_rate).reshape(-1) for c in clips])  # noqa: E731
    return frechet_distance(emb(generated), emb(reference))


def favd(video_embeddings: torch.Tensor, generated_audio: torch.Tensor, reference_audio: torch.Tensor) -> float:
    """``[N, Dv]`` video embeddings with ``[N, Da]`` generated / reference audio embeddings."""
    if not (video_embeddings.shape[0] == generated_audio.shape[0] == reference_audio.shape[0]):
        raise ValueError("favd: one video embedding per generated and per reference audio embedding")
    return frechet_distance(torch.cat([video_embeddings, generated_audio], 1),
                            torch.cat([video_embeddings, reference_audio], 1))


@torch.no_grad()
def clap_score(audio: list[torch.Tensor], texts: list[str], sample_rate: int, clap_folder: str) -> float:
    """Mean cosine of CLAP(audio_i) and CLAP(text_i); the model and processor come from ``clap_folder``
    (a local transformers ``ClapModel`` folder; nothing is downloaded). Audio is resampled to the
    processor's rate and averaged to mono."""
    import torchaudio
    from transformers import ClapModel, ClapProcessor

    if len(audio) != len(texts) or not audio:
        raise ValueError("clap_score: give one caption per audio clip (at least one)")
    model = ClapModel.from_pretrained(clap_folder, local_files_only=True).eval()
    processor = ClapProcessor.from_pretrained(clap_folder, local_files_only=True)
    rate = processor.feature_extractor.sampling_rate
    waves = []
    for clip in audio:
        mono = clip.float().reshape(-1, clip.shape[-1]).mean(0)
        waves.append((torchaudio.functional.resample(mono, sample_rate, rate) if sample_rate != rate else mono).numpy())
    feats = processor.feature_extractor(waves, sampling_rate=rate, return_tensors="pt")   # (transformers 4 and 5)
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    a = model.get_audio_features(input_features=feats["input_features"], is_longer=feats.get("is_longer"))
    t = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
    a, t = (x.pooler_output if hasattr(x, "pooler_output") else x for x in (a, t))
    return float(torch.nn.functional.cosine_similarity(a, t, dim=-1).mean())


def onset_times(envelope: Envelope, threshold: float = 0.5, min_gap_s: float = 0.1) -> list[float]:
    """Times (s) where the envelope, normalised to peak 1, crosses ``threshold`` upwards; crossings
    closer than ``min_gap_s`` to the previous onset are merged."""
    v = envelope.values.float().reshape(-1)
    top = float(v.max()) if v.numel() else 0.0
    if top <= 0:
        return []
    v = v / top
    onsets: list[float] = []
    above = bool(v[0] >= threshold)
    if above:
        onsets.append(0.0)
    for k in range(1, v.shape[0]):
        now = bool(v[k] >= threshold)
        if now and not above:
            t = k / envelope.rate
            if not onsets or t - onsets[-1] >= min_gap_s:
                onsets.append(t)
        above = now
    return onsets


def onset_error_ms(generated: list[float], reference: list[float]) -> float:
    """Mean |t_ref − nearest t_gen| in ms over the reference onsets (``inf`` when nothing was generated)."""
    if not reference:
        return 0.0
    if not generated:
        return math.inf
    g = torch.tensor(generated)
    return float(sum(float((g - t).abs().min()) for t in reference) / len(reference) * 1000.0)
