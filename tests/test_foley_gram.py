"""GRAM volume, loss and retrieval (papers.md §4): closed forms against the det definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avlab.foley.gram import GramLoss, cosine_scores, gram_volume, gram_volume_det
from avlab.foley.retrieval import ranks, recall_at_k, retrieval_report


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_volume_equals_det_definition_random(k):
    t = unit(7, 16, seed=1)
    items = [unit(5, 16, seed=2 + i) for i in range(k - 1)]
    ours = gram_volume(t, *items)
    ref = gram_volume_det(t, *items)
    assert ours.shape == (7, 5)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # a single pair by hand: rows stacked, det of the 2×2 / 3×3 Gram matrix
    A = torch.stack([t[3]] + [m[2] for m in items])
    assert math.isclose(float(ours[3, 2]), float(torch.det(A @ A.T).abs().sqrt()), rel_tol=1e-9)


def test_volume_fp32_inputs_accumulate_in_fp32_and_match():
    t, v, a = (unit(4, 512, seed=s).float() for s in (1, 2, 3))
    ours = gram_volume(t.half(), v.half(), a.half())
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, gram_volume_det(t, v, a).float(), atol=2e-3, rtol=0)


def test_two_vector_volume_is_sine_of_angle():
    thetas = torch.linspace(0, math.pi, 9, dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    v = torch.stack([thetas.cos(), thetas.sin(), torch.zeros_like(thetas)], dim=1)
    torch.testing.assert_close(gram_volume(t, v)[0], thetas.sin().abs(), atol=1e-7, rtol=0)


def test_degenerate_cases():
    t = unit(3, 8, seed=4)
    # identical vectors → zero volume (k = 2 and 3); orthonormal → volume 1
    assert torch.allclose(gram_volume(t, t).diagonal(), torch.zeros(3, dtype=t.dtype), atol=1e-7)
    assert torch.allclose(gram_volume(t, t, t).diagonal(), torch.zeros(3, dtype=t.dtype), atol=1e-7)
    e = torch.eye(8, dtype=torch.float64)
    assert math.isclose(float(gram_volume(e[:1], e[1:2], e[2:3])), 1.0, rel_tol=1e-12)
    # coplanar triple (a in span(t, v)) has zero 3-volume but non-zero pairwise volumes
    a = F.normalize(e[0] + e[1], dim=0)[None]
    assert float(gram_volume(e[:1], e[1:2], a)) < 1e-7
    assert float(gram_volume(e[:1], a)) > 0.5
    torch.testing.assert_close(gram_volume(e[:1], e[1:2], a), gram_volume_det(e[:1], e[1:2], a), atol=1e-7, rtol=0)


def test_gradients_finite_at_zero_volume():
    base = unit(4, 16, seed=5).float()
    for k in (2, 3):
        t = base.clone().requires_grad_(True)
        items = [base.clone().requires_grad_(True) for _ in range(k - 1)]
        vol = gram_volume(t, *items)
        assert float(vol.detach().diagonal().abs().max()) < 1e-3
        vol.sum().backward()
        for x in (t, *items):
            assert torch.isfinite(x.grad).all()
        # the plain definition gives non-finite gradients here (why the safe sqrt exists)
        t2 = base.clone().double().requires_grad_(True)
        torch.det(torch.stack([t2[0], t2[0].detach()]) @ torch.stack([t2[0], t2[0].detach()]).T).abs().sqrt().backward()
        assert not torch.isfinite(t2.grad).all()
    loss = GramLoss(dim=16, matching_weight=0.1)
    t = base.clone().requires_grad_(True)
    value, _ = loss(t, base.clone().requires_grad_(True), base.clone().requires_grad_(True))
    value.backward()
    assert torch.isfinite(t.grad).all() and torch.isfinite(loss.log_tau.grad)


def test_loss_formula_and_tau():
    t, v, a = (unit(6, 32, seed=s).float() for s in (1, 2, 3))
    loss = GramLoss(dim=32, matching_weight=0.0)
    assert math.isclose(float(loss.tau), 0.07, rel_tol=1e-6) and loss.log_tau.requires_grad
    value, metrics = loss(t, v, a)
    logits = -gram_volume_det(t.double(), v.double(), a.double()).float() / 0.07
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target, label_smoothing=0.1) + F.cross_entropy(logits.T, target, label_smoothing=0.1))
    assert math.isclose(float(value), float(expected), rel_tol=1e-4)
    assert "matching" not in metrics


def test_matching_loss_draws_hard_negatives_and_trains():
    torch.manual_seed(0)
    t, v, a = (unit(8, 16, seed=s).float() for s in (1, 2, 3))
    loss = GramLoss(dim=16, matching_weight=0.1)
    value, metrics = loss(t, v, a, generator=torch.Generator().manual_seed(0))
    assert "matching" in metrics and math.isclose(float(value), metrics["contrastive"] + 0.1 * metrics["matching"], rel_tol=1e-5)
    value.backward()
    assert loss.matching.net[0].weight.grad.abs().sum() > 0
    # a batch of one has no negatives: contrastive only, no crash
    single, m1 = loss(t[:1], v[:1], a[:1])
    assert "matching" not in m1 and torch.isfinite(single)


def test_cosine_baseline_scores():
    t, v, a = (unit(5, 16, seed=s) for s in (1, 2, 3))
    s = cosine_scores(t, v, a)
    assert math.isclose(float(s[1, 2]), float(t[1] @ v[2] + t[1] @ a[2] + v[2] @ a[2]), rel_tol=1e-9)
    loss = GramLoss(dim=16, similarity="cosine", matching_weight=0)
    value, _ = loss(t.float(), v.float(), a.float())
    target = torch.arange(5)

    def sym(x, y):
        logits = (x @ y.T).float() / 0.07
        return 0.5 * (F.cross_entropy(logits, target, label_smoothing=0.1) + F.cross_entropy(logits.T, target, label_smoothing=0.1))

    assert math.isclose(float(value), float(sym(t, v) + sym(t, a) + sym(v, a)) / 3, rel_tol=1e-4)


def test_bad_inputs_are_named():
    t = unit(3, 16)
    with pytest.raises(ValueError, match="anchor's dimension"):
        gram_volume(t, unit(3, 8))
    with pytest.raises(ValueError, match="at least one item"):
        gram_volume(t)
    with pytest.raises(ValueError, match="same count"):
        gram_volume(t, unit(3, 16), unit(4, 16))


def test_recall_at_k_known_answers():
    score = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.1]])
    assert ranks(score).tolist() == [0, 1, 2]
    assert recall_at_k(score, ks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}
    # ties count against the target
    assert recall_at_k(torch.zeros(4, 4), ks=(1,)) == {1: 0.0}
    e = unit(10, 32, seed=9).float()
    report = retrieval_report({"text": e, "video": e, "audio": unit(10, 32, seed=10).float()})
    # text_i = video_i: the pair volume is 0 only on the diagonal, and so is the 3-volume
    assert report["text→video"][1] == 1.0 and report["text→(video,audio)"][1] == 1.0
    assert set(report) == {"text→video", "video→audio", "text→audio", "text→(video,audio)"}
