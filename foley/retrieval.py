"""Retrieval by GRAM volume and Recall@K (papers.md §4; GRAM arXiv 2412.11959 §4).

A query ranks candidates by ascending volume: text→video (``gram_volume(text, video)``),
video→audio (``gram_volume(video, audio)``), text→(video, audio) (the 3-way volume). The baseline
ranks by descending pairwise-cosine score (:func:`avlab.foley.gram.cosine_scores`).
"""

from __future__ import annotations

import torch

from .gram import cosine_scores, gram_volume

#: Retrieval tasks: name → (query modality, candidate modalities).
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text→video": ("text", ("video",)),
    "video→audio": ("video", ("audio",)),
    "text→audio": ("text", ("audio",)),
    "text→(video,audio)": ("text", ("video", "audio")),
}


def scores(query: torch.Tensor, *candidates: torch.Tensor, method: str = "volume") -> torch.Tensor:
    """``[Q, N]`` scores, larger = better: ``−volume`` (GRAM) or the sum of pairwise cosines."""
    if method == "volume":
        return -gram_volume(query, *candidates)
    if method == "cosine":
        return cosine_scores(query, *candidates)
    raise ValueError(f"retrieval: method must be 'volume' or 'cosine', got {method!r}")


def ranks(score: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each query's target (default: the diagonal) among its candidates; ties count
    against the target (a constant score ranks it last, never first)."""
    if targets is None:
        targets = torch.arange(score.shape[0], device=score.device)
    target_score = score.gather(1, targets[:, None])
    return (score >= target_score).sum(1) - 1


def recall_at_k(score: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10), targets: torch.Tensor | None = None) -> dict[int, float]:
    """Recall@K of ``[Q, N]`` scores (larger = better) with the target of query i at ``targets[i]``
    (default i)."""
    r = ranks(score, targets)
    return {k: float((r < k).double().mean()) for k in ks}


def retrieval_report(embeds: dict[str, torch.Tensor], method: str = "volume",
                     ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, dict[int, float]]:
    """Recall@K for every task of :data:`TASKS` whose modalities are in ``embeds`` (row i of each
    modality = the same triple)."""
    out = {}
    for name, (query, cands) in TASKS.items():
        if query in embeds and all(c in embeds for c in cands):
            out[name] = recall_at_k(scores(embeds[query], *(embeds[c] for c in cands), method=method), ks)
    return out
