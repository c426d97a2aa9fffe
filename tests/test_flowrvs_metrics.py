"""DAVIS J / F / J&F of FlowRVS (papers.md §2, issue 8) on hand-made masks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.flowrvs import (boundary_f, boundary_map, boundary_prf, dilate_disk, j_and_f, mean_j_and_f,
                           region_j)


def _square(h, w, y0, x0, size, t=1):
    m = np.zeros((t, h, w), dtype=bool)
    m[:, y0:y0 + size, x0:x0 + size] = True
    return m


def test_identical_masks_score_one():
    m = _square(32, 40, 5, 7, 10, t=3)
    r = j_and_f(m, m)
    assert r["J"] == 1.0 and r["F"] == 1.0 and r["J&F"] == 1.0
    assert r["J_per_frame"].shape == (3,) and r["F_per_frame"].shape == (3,)


def test_disjoint_far_squares_score_zero():
    a, b = _square(40, 40, 2, 2, 6), _square(40, 40, 30, 30, 6)
    assert region_j(a, b).tolist() == [0.0]
    assert boundary_f(a, b).tolist() == [0.0]  # tolerance ceil(0.008 * 56.6) = 1 px
    assert j_and_f(a, b)["J&F"] == 0.0


def test_one_pixel_shift_jaccard_exact():
    a, b = _square(10, 10, 2, 2, 4), _square(10, 10, 2, 3, 4)
    # intersection 4x3 = 12, union 16 + 16 - 12 = 20
    assert region_j(a, b).tolist() == [0.6]


def test_empty_conventions():
    empty = np.zeros((2, 8, 8), dtype=bool)
    full = _square(8, 8, 2, 2, 3, t=2)
    r = j_and_f(empty, empty)
    assert r["J"] == 1.0 and r["F"] == 1.0
    r = j_and_f(empty, full)
    assert r["J"] == 0.0 and r["F"] == 0.0
    assert boundary_prf(empty, full)[0].tolist() == [1.0, 1.0]  # P = 1, R = 0 (DAVIS)
    assert boundary_prf(empty, full)[1].tolist() == [0.0, 0.0]
    r = j_and_f(full, empty)
    assert r["J"] == 0.0 and r["F"] == 0.0
    # mixed frames: empty/empty frame scores 1, the other 0
    p = np.stack([empty[0], empty[0]])
    g = np.stack([empty[0], full[0]])
    assert region_j(p, g).tolist() == [1.0, 0.0]
    assert boundary_f(p, g).tolist() == [1.0, 0.0]
    assert j_and_f(p, g)["J&F"] == 0.5


def test_tolerance_matches_one_pixel_shift():
    a, b = _square(10, 10, 2, 2, 4), _square(10, 10, 2, 3, 4)
    p, r, f = boundary_prf(a, b, bound_th=1)
    assert p.tolist() == [1.0] and r.tolist() == [1.0] and f.tolist() == [1.0]
    # a 3 px shift on a large frame is not matched by the default ~1-2 px tolerance, but is by 3 px
    a, b = _square(100, 100, 20, 20, 30), _square(100, 100, 20, 23, 30)
    assert boundary_f(a, b)[0] < 1.0  # bound_pix = ceil(0.008 * 141.4) = 2
    assert boundary_f(a, b, bound_th=3)[0] == 1.0


def test_seg2bmap_rule():
    m = _square(10, 10, 2, 2, 4)[0]
    b = boundary_map(m)
    ring = np.zeros((10, 10), dtype=bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False  # pixels 1..5 on each side: outer-above/left and the square's own bottom/right
    assert np.array_equal(b, ring)
    # last column only looks down, last row only right, corner never
    full = np.ones((4, 4), dtype=bool)
    assert not boundary_map(full).any()
    edge = np.zeros((4, 4), dtype=bool)
    edge[:2, :] = True
    bm = boundary_map(edge)
    assert bm[1].tolist() == [True, True, True, True] and not bm[[0, 2, 3]].any()


def test_hand_computed_precision_recall_1d():
    # one row: only right neighbours count; the last column is never a boundary there
    gt = np.array([[[0, 0, 1, 1, 0, 0, 0, 0, 0, 0]]], dtype=bool)   # boundary at x = 1, 3
    pred = np.array([[[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]], dtype=bool)  # boundary at x = 3 only
    p, r, f = boundary_prf(pred, gt, bound_th=1)
    assert p.tolist() == [1.0]          # x=3 is within 1 px of the gt boundary
    assert r.tolist() == [0.5]          # gt x=3 matched, x=1 is 2 px from pred x=3
    assert f[0] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_hand_computed_precision_recall_2d_and_radius_in_pixels():
    gt = np.zeros((1, 5, 5), dtype=bool)
    gt[0, 2, 2] = True      # boundary {(1,1),(1,2),(2,1),(2,2)}
    pred = np.zeros((1, 5, 5), dtype=bool)
    pred[0, 3, 4] = True    # boundary {(2,3),(2,4),(3,3),(3,4)}
    p, r, f = boundary_prf(pred, gt, bound_th=1)     # radius 1: the 4-neighbourhood
    assert (p[0], r[0], f[0]) == (0.25, 0.25, 0.25)  # (2,3)~(2,2) and its mirror only
    p, r, f = boundary_prf(pred, gt, bound_th=1.5)   # radius 1.5 px adds diagonals
    assert (p[0], r[0], f[0]) == (0.5, 0.5, 0.5)     # + (3,3)~(2,2), (1,2)~(2,3)
    # bound_th < 1 is a fraction of the diagonal: ceil(0.2 * 7.07) = 2 px
    p2, r2, _ = boundary_prf(pred, gt, bound_th=0.2)
    p3, r3, _ = boundary_prf(pred, gt, bound_th=2)
    assert p2.tolist() == p3.tolist() and r2.tolist() == r3.tolist()
    # pred (3,4) and gt (1,1) are sqrt(5) px from every boundary pixel of the other mask
    assert p2[0] == 0.75 and r2[0] == 0.75


def _naive_dilate(b, radius):
    out = np.zeros_like(b)
    h, w = b.shape
    for y, x in zip(*np.nonzero(b)):
        for yy in range(h):
            for xx in range(w):
                if (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2:
                    out[yy, xx] = True
    return out


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 1.5, 2.7])
def test_disk_dilation_matches_reference(radius):
    rng = np.random.default_rng(int(radius * 10))
    b = rng.random((13, 17)) < 0.05
    b[0, 0] = b[12, 16] = True  # borders
    got = dilate_disk(b, radius)
    assert np.array_equal(got, _naive_dilate(b, radius))
    if float(radius).is_integer():
        morph = pytest.importorskip("skimage.morphology")
        ref = morph.dilation(b, morph.disk(int(radius)))
        assert np.array_equal(got, ref)


def test_matches_brute_force_definition_on_random_masks():
    rng = np.random.default_rng(0)
    pred = rng.random((4, 12, 15)) < 0.4
    gt = rng.random((4, 12, 15)) < 0.4
    gt[2] = False
    r = 2
    p, rc, f = boundary_prf(pred, gt, bound_th=r)
    for t in range(4):
        pb, gb = boundary_map(pred[t]), boundary_map(gt[t])
        if not gb.any():
            assert (p[t], rc[t], f[t]) == (0.0, 1.0, 0.0)
            continue
        ep = (pb & _naive_dilate(gb, r)).sum() / pb.sum()
        er = (gb & _naive_dilate(pb, r)).sum() / gb.sum()
        assert p[t] == pytest.approx(ep) and rc[t] == pytest.approx(er)
        assert f[t] == pytest.approx(2 * ep * er / (ep + er))
    inter = (pred & gt).sum(axis=(1, 2))
    union = (pred | gt).sum(axis=(1, 2))
    assert np.allclose(region_j(pred, gt), inter / union)


def test_float_and_torch_inputs_thresholded():
    a = _square(10, 10, 2, 2, 4).astype(np.float32) * 0.9
    b = torch.from_numpy(_square(10, 10, 2, 3, 4).astype(np.float32))
    b[0, 0, 0] = 0.5  # not > 0.5: background
    assert region_j(a, b).tolist() == [0.6]
    assert region_j(torch.from_numpy(a), b > 0.5).tolist() == [0.6]
    assert region_j(a > 0.5, np.asarray(b) >= 0.5).tolist() == [12 / 21]  # pixel (0,0) now foreground


def test_j_and_f_means_and_dataset_aggregation():
    a, b = _square(10, 10, 2, 2, 4, t=2), _square(10, 10, 2, 3, 4, t=2)
    b[1] = a[1]
    r = j_and_f(a, b, bound_th=1)
    assert r["J_per_frame"].tolist() == [0.6, 1.0]
    assert r["J"] == pytest.approx(0.8) and r["F"] == 1.0 and r["J&F"] == pytest.approx(0.9)
    zero = j_and_f(a, np.zeros_like(a))
    video1 = mean_j_and_f({"obj1": r, "obj2": zero})
    assert video1["n_objects"] == 2
    assert video1["J"] == pytest.approx(0.4) and video1["F"] == pytest.approx(0.5)
    assert video1["J&F"] == pytest.approx(0.45)
    video2 = mean_j_and_f([r])
    # dataset: mean over all objects (3), not over the two video means
    ds = mean_j_and_f([video1, video2])
    assert ds["n_objects"] == 3
    assert ds["J"] == pytest.approx((0.8 + 0 + 0.8) / 3)
    assert ds["F"] == pytest.approx(2 / 3)
    assert ds["J&F"] == pytest.approx((ds["J"] + ds["F"]) / 2)


def test_bad_inputs_raise_node_input_error():
    m = np.zeros((2, 8, 8), dtype=bool)
    with pytest.raises(NodeInputError) as e:
        region_j(m, np.zeros((2, 8, 9), dtype=bool))
    assert e.value.node == "FlowRVS J&F" and e.value.input_name == "pred"
    with pytest.raises(NodeInputError) as e:
        boundary_f(m[0], m[0])
    assert e.value.input_name == "pred" and "3-D" in e.value.expected
    with pytest.raises(NodeInputError) as e:
        j_and_f(m, np.zeros((1, 2, 8, 8)))
    assert e.value.input_name == "gt"
    with pytest.raises(NodeInputError):
        region_j(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)))
    for bad in (0, -1, math.nan, "1"):
        with pytest.raises(NodeInputError) as e:
            boundary_f(m, m, bound_th=bad)
        assert e.value.input_name == "bound_th"
    with pytest.raises(NodeInputError):
        mean_j_and_f([])
    with pytest.raises(NodeInputError):
        mean_j_and_f([{"x": 1}])
