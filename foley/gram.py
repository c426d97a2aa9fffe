"""GRAM: the Gramian volume of k modality embeddings and the volume-contrastive loss (papers.md §4,
GRAM arXiv 2412.11959 §3).

For k vectors stacked as the rows of ``A`` (k × D), ``Vol = sqrt(|det(A Aᵀ)|)``: the k-dimensional
volume of the parallelotope they span. With unit vectors it is 0 when they all coincide and 1 when
they are orthogonal, so *small volume = aligned*.

Batched as GRAM defines it: for anchor ``i`` (text) and item ``j`` (a video and/or an audio clip), the
Gram matrix holds ``⟨t_i, t_i⟩``, ``⟨t_i, m_j⟩`` for each item modality ``m`` and the inner products
among item ``j``'s own modalities — never another item's. :func:`gram_volume` returns the
``[A, B]`` matrix of those volumes.

Speed: the k = 2 and k = 3 determinants are written in closed form over the matrix of inner
products (two or three matmuls, then elementwise arithmetic) instead of building ``A·B`` Gram
matrices and calling ``torch.det`` on each; :func:`gram_volume_det` is that straightforward
definition, kept for the tests and the benchmark (``benchmarks/gram_volume.py``).

Numerics: inner products are accumulated in fp32 (fp64 inputs stay fp64); the square root has a
floored derivative (:class:`_SafeSqrtAbs`), so gradients stay finite where the volume is exactly 0
(identical embeddings), where ``sqrt`` alone gives ``inf·0 = nan``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Floor of ``sqrt``'s derivative denominator (:class:`_SafeSqrtAbs`).
SQRT_EPS = 1e-6


class _SafeSqrtAbs(torch.autograd.Function):
    """``sqrt(|x|)`` whose backward divides by ``max(sqrt|x|, eps)`` (finite at ``x = 0``).

    At a degenerate configuration the determinant's own gradient is 0 (it is quadratic in the
    component that leaves the span), so the product stays 0 instead of ``nan``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        y = x.abs().sqrt()
        ctx.save_for_backward(x, y)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, y = ctx.saved_tensors
        return grad * torch.sign(x) * 0.5 / y.clamp_min(ctx.eps), None


def safe_sqrt_abs(x: torch.Tensor, eps: float = SQRT_EPS) -> torch.Tensor:
    """``sqrt(|x|)`` with a finite gradient everywhere (module docstring, "Numerics")."""
    return _SafeSqrtAbs.apply(x, eps)


def _accum(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _check(anchor: torch.Tensor, items: tuple[torch.Tensor, ...]) -> None:
    if not items:
        raise ValueError("gram_volume: give at least one item modality besides the anchor")
    if anchor.dim() != 2:
        raise ValueError(f"gram_volume: anchor must be [A, D] embeddings, got shape {tuple(anchor.shape)}")
    for k, m in enumerate(items):
        if m.dim() != 2 or m.shape[1] != anchor.shape[1]:
            raise ValueError(f"gram_volume: item modality {k} must be [B, {anchor.shape[1]}] (the anchor's "
                             f"dimension), got shape {tuple(m.shape)}")
        if m.shape[0] != items[0].shape[0]:
            raise ValueError(f"gram_volume: all item modalities need the same count B, got "
                             f"{items[0].shape[0]} and {m.shape[0]}")


def gram_determinant(anchor: torch.Tensor, *items: torch.Tensor) -> torch.Tensor:
    """``det(A Aᵀ)`` for every (anchor i, item j) pair, ``[A, B]`` (closed form for k = 2, 3)."""
    _check(anchor, items)
    t = _accum(anchor)
    ms = [_accum(m) for m in items]
    tt = (t * t).sum(-1)[:, None]                                    # [A,1]
    if len(ms) == 1:
        (m,) = ms
        return tt * (m * m).sum(-1)[None, :] - (t @ m.T) ** 2
    if len(ms) == 2:
        v, a = ms
        d, e = t @ v.T, t @ a.T                                      # ⟨t_i,v_j⟩, ⟨t_i,a_j⟩  [A,B]
        b, c, f = ((v * v).sum(-1), (a * a).sum(-1), (v * a).sum(-1))  # item j's own products [B]
        return tt * b * c + 2 * d * e * f - tt * f ** 2 - b * e ** 2 - c * d ** 2
    # k ≥ 4: assemble the Gram matrices (still sharing the item-internal products) and use det
    k = len(ms) + 1
    g = t.new_empty(t.shape[0], ms[0].shape[0], k, k)
    g[..., 0, 0] = tt
    for p, m in enumerate(ms, start=1):
        g[..., 0, p] = g[..., p, 0] = t @ m.T
        for q in range(p, k):
            g[..., p, q] = g[..., q, p] = (m * ms[q - 1]).sum(-1)
    return torch.linalg.det(g)


def gram_volume(anchor: torch.Tensor, *items: torch.Tensor, eps: float = SQRT_EPS) -> torch.Tensor:
    """GRAM volume matrix ``[A, B]``: row i = anchor i (text), column j = item j (its modalities
    given as separate ``[B, D]`` tensors, e.g. ``gram_volume(text, video, audio)``). Smaller = better
    aligned. Inputs are used as given (normalise them first, as GRAM does)."""
    return safe_sqrt_abs(gram_determinant(anchor, *items), eps)


def gram_volume_det(anchor: torch.Tensor, *items: torch.Tensor) -> torch.Tensor:
    """Reference: the definition ``sqrt(|det(A Aᵀ)|)`` with an explicit ``[A, B, k, D]`` stack and a
    batched ``torch.det`` (for tests and the benchmark; not differentiable at 0)."""
    _check(anchor, items)
    A, B = anchor.shape[0], items[0].shape[0]
    rows = [anchor[:, None, :].expand(A, B, -1)] + [m[None, :, :].expand(A, B, -1) for m in items]
    stack = _accum(torch.stack(rows, dim=2))                         # [A,B,k,D]
    return torch.det(stack @ stack.transpose(-1, -2)).abs().sqrt()


def cosine_scores(anchor: torch.Tensor, *items: torch.Tensor) -> torch.Tensor:
    """Pairwise-cosine (CLIP-style) score ``[A, B]`` of the same (anchor, item) pairs: the sum of the
    cosines of every pair of modalities in the tuple. Larger = better aligned (baseline to GRAM)."""
    _check(anchor, items)
    t = F.normalize(_accum(anchor), dim=-1)
    ms = [F.normalize(_accum(m), dim=-1) for m in items]
    score = sum(t @ m.T for m in ms)
    for p in range(len(ms)):
        for q in range(p + 1, len(ms)):
            score = score + (ms[p] * ms[q]).sum(-1)[None, :]
    return score


class MatchingHead(nn.Module):
    """Binary matching classifier on a (text, item) tuple: GRAM's matching loss (§3) scores whether
    a tuple belongs together. Features: the k vectors and their pairwise elementwise products."""

    def __init__(self, dim: int, modalities: int = 3, hidden: int = 256):
        super().__init__()
        self.modalities = modalities
        pairs = modalities * (modalities - 1) // 2
        self.net = nn.Sequential(nn.Linear(dim * (modalities + pairs), hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, *vectors: torch.Tensor) -> torch.Tensor:
        if len(vectors) != self.modalities:
            raise ValueError(f"MatchingHead: built for {self.modalities} modalities, got {len(vectors)}")
        prods = [vectors[p] * vectors[q] for p in range(len(vectors)) for q in range(p + 1, len(vectors))]
        return self.net(torch.cat([*vectors, *prods], dim=-1)).squeeze(-1)


class GramLoss(nn.Module):
    """Volume contrastive loss ``½[CE(−Vol/τ, diag) + CE(−Volᵀ/τ, diag)]`` with label smoothing and a
    learnable temperature (log-parametrised, clamped to [0.01, 1]), plus the optional matching loss:
    each anchor's hard negative item and each item's hard negative anchor are drawn from
    ``softmax(−Vol/τ)`` over the off-diagonal entries (the same logits as the contrastive term), and
    :class:`MatchingHead` is trained with BCE on the positives and these negatives (GRAM §3).

    ``pairs`` adds 2-way volume terms (GRAM with k = 2) between modalities given by index into
    ``(anchor, *items)``, weighted by ``pair_weight``: a small text-anchored 3-volume means the three
    vectors are nearly *coplanar*, not that video and audio are close, so video→audio retrieval by
    volume needs its own term (the synthetic proof measured R@1 0.02 without it).

    ``similarity="cosine"`` gives the pairwise-cosine (CLIP-style) baseline with the same temperature,
    smoothing and matching machinery: the mean of one symmetric InfoNCE per pair of modalities on
    ``cos/τ``; its 3-way retrieval score (and hard-negative logits) is the sum of the pairwise cosines.
    """

    def __init__(self, dim: int = 512, modalities: int = 3, tau: float = 0.07, learn_tau: bool = True,
                 label_smoothing: float = 0.1, matching_weight: float = 0.1, similarity: str = "volume",
                 pairs: tuple[tuple[int, int], ...] = (), pair_weight: float = 1.0):
        super().__init__()
        self.pairs, self.pair_weight = tuple(tuple(p) for p in pairs), pair_weight
        if similarity not in ("volume", "cosine"):
            raise ValueError(f"GramLoss: similarity must be 'volume' or 'cosine', got {similarity!r}")
        self.similarity = similarity
        self.label_smoothing = label_smoothing
        self.matching_weight = matching_weight
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)), requires_grad=learn_tau)
        self.matching = MatchingHead(dim, modalities) if matching_weight > 0 else None

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(0.01, 1.0)

    def logits(self, anchor: torch.Tensor, *items: torch.Tensor, similarity: str | None = None) -> torch.Tensor:
        """``[A, B]`` logits: ``−Vol/τ`` (GRAM) or ``cosines/τ`` (baseline)."""
        if (similarity or self.similarity) == "volume":
            return -gram_volume(anchor, *items) / self.tau
        return cosine_scores(anchor, *items) / self.tau

    def forward(self, anchor: torch.Tensor, *items: torch.Tensor, generator: torch.Generator | None = None,
                similarity: str | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss and metrics; ``similarity`` overrides the configured one for this call (the alignment
        warm-up of :mod:`avlab.foley.train`)."""
        similarity = similarity or self.similarity
        logits = self.logits(anchor, *items, similarity=similarity)
        if similarity == "volume":
            contrastive = self._symmetric_ce(logits)
            vectors = (anchor, *items)
            for p, q in self.pairs:   # 2-way volume terms (k = 2 GRAM) between chosen modalities
                contrastive = contrastive + self.pair_weight * self._symmetric_ce(
                    -gram_volume(vectors[p], vectors[q]) / self.tau)
        else:   # CLIP-style: one symmetric InfoNCE per pair of modalities, averaged
            vectors = [F.normalize(_accum(x), dim=-1) for x in (anchor, *items)]
            pairs = [(p, q) for p in range(len(vectors)) for q in range(p + 1, len(vectors))]
            contrastive = sum(self._symmetric_ce(vectors[p] @ vectors[q].T / self.tau) for p, q in pairs) / len(pairs)
        metrics = {"contrastive": float(contrastive.detach()), "tau": float(self.tau.detach())}
        loss = contrastive
        if self.matching is not None and logits.shape[0] > 1:
            match = self._matching_loss(logits.detach(), anchor, items, generator)
            metrics["matching"] = float(match.detach())
            loss = loss + self.matching_weight * match
        return loss, metrics

    def _symmetric_ce(self, logits: torch.Tensor) -> torch.Tensor:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
                      + F.cross_entropy(logits.T, target, label_smoothing=self.label_smoothing))

    def _matching_loss(self, logits, anchor, items, generator) -> torch.Tensor:
        n = logits.shape[0]
        off = logits.float().masked_fill(torch.eye(n, dtype=torch.bool, device=logits.device), float("-inf"))
        neg_item = torch.multinomial(off.softmax(-1), 1, generator=generator).squeeze(-1)     # per anchor
        neg_anchor = torch.multinomial(off.T.softmax(-1), 1, generator=generator).squeeze(-1)  # per item
        idx = torch.arange(n, device=logits.device)
        anchors = torch.cat([anchor, anchor, anchor[neg_anchor]])
        rows = torch.cat([idx, neg_item, idx])
        scores = self.matching(anchors, *(m[rows] for m in items))
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).to(scores)
        return F.binary_cross_entropy_with_logits(scores, labels)
