"""DAVIS region (J) and boundary (F) measures and J&F (papers.md §2, "Metric").

Definitions follow the DAVIS 2017 evaluation (re-implemented here with numpy only; no OpenCV,
scikit-image or SciPy at runtime):

* **J** (region similarity): per-frame IoU of the binary masks; a frame where both masks are empty
  (empty union) scores 1.
* **F** (boundary accuracy): per-frame F-measure of the mask boundaries. A pixel is a boundary pixel
  if it differs from its right, bottom or bottom-right neighbour (the ``seg2bmap`` rule, on the
  original resolution; in the last row only the right neighbour counts, in the last column only the
  bottom one, the bottom-right corner pixel is never a boundary). The match tolerance is
  ``bound_pix = bound_th`` pixels if ``bound_th >= 1``, else ``ceil(bound_th * image diagonal)``.
  Each boundary is dilated by a disk of that radius (``dx² + dy² <= r²``); precision is the
  fraction of predicted boundary pixels inside the dilated ground-truth boundary, recall the fraction
  of ground-truth boundary pixels inside the dilated predicted one. Both boundaries empty: P = R = 1
  (F = 1); only the prediction empty: P = 1, R = 0; only the ground truth empty: P = 0, R = 1
  (F = 0 in both cases). ``F = 2PR / (P + R)``, 0 when ``P + R = 0``.
* **J&F** of one object (or referring expression): ``(mean_t J + mean_t F) / 2`` over all frames.
  Of a video or a dataset: the mean of the per-object J means and F means (every object counts
  once, whichever video it is in), then their average.

Masks are ``[T,H,W]`` arrays or tensors (numpy, torch, anything ``np.asarray`` understands); bool
masks are used as they are, numeric ones are thresholded ``> 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from ..common.errors import NodeInputError

NODE = "FlowRVS J&F"


def _as_mask(x, input_name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise NodeInputError(NODE, input_name, "a [T,H,W] mask array", type(x).__name__) from exc
    if arr.ndim != 3:
        raise NodeInputError(NODE, input_name, "a 3-D mask [T,H,W]", f"shape {tuple(arr.shape)}")
    if min(arr.shape) < 1:
        raise NodeInputError(NODE, input_name, "a non-empty mask [T,H,W] (T, H, W >= 1)",
                             f"shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise NodeInputError(NODE, input_name, "a bool or numeric mask", f"dtype {arr.dtype}")
    return arr > 0.5


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise NodeInputError(NODE, "pred", f"the same shape as gt {tuple(g.shape)}", f"shape {tuple(p.shape)}")
    return p, g


def _bound_pix(bound_th: float, h: int, w: int) -> int | float:
    if isinstance(bound_th, bool) or not isinstance(bound_th, (int, float)) or not math.isfinite(bound_th) \
            or bound_th <= 0:
        raise NodeInputError(NODE, "bound_th", "a positive finite number (fraction of the diagonal "
                             "if < 1, pixels if >= 1)", bound_th)
    if bound_th >= 1:
        return bound_th
    return math.ceil(bound_th * math.hypot(h, w))


def region_j(pred, gt) -> np.ndarray:
    """Per-frame Jaccard index (IoU) of binary masks ``[T,H,W]`` → float64 ``[T]``; empty union = 1."""
    p, g = _pair(pred, gt)
    inter = np.logical_and(p, g).sum(axis=(1, 2), dtype=np.int64)
    union = np.logical_or(p, g).sum(axis=(1, 2), dtype=np.int64)
    j = np.ones(p.shape[0], dtype=np.float64)
    nz = union > 0
    j[nz] = inter[nz] / union[nz]
    return j


def boundary_map(mask) -> np.ndarray:
    """Boundary pixels of binary masks ``[T,H,W]`` (or one ``[H,W]``) by the DAVIS ``seg2bmap`` rule."""
    m = np.asarray(mask).astype(bool)
    squeeze = m.ndim == 2
    if squeeze:
        m = m[None]
    b = np.zeros_like(m)
    # Interior: differs from the right, bottom or bottom-right neighbour.
    b[:, :-1, :-1] = (m[:, :-1, :-1] != m[:, :-1, 1:]) | (m[:, :-1, :-1] != m[:, 1:, :-1]) \
        | (m[:, :-1, :-1] != m[:, 1:, 1:])
    # Last row: only the right neighbour exists; last column: only the bottom one; corner: never.
    b[:, -1, :-1] = m[:, -1, :-1] != m[:, -1, 1:]
    b[:, :-1, -1] = m[:, :-1, -1] != m[:, 1:, -1]
    b[:, -1, -1] = False
    return b[0] if squeeze else b


def _dilate_rows(b: np.ndarray, w: int) -> np.ndarray:
    """Dilate along the last axis by the segment ``[-w, w]`` (sliding-window OR via a cumulative sum)."""
    if w == 0:
        return b.copy()
    n = b.shape[-1]
    c = np.zeros(b.shape[:-1] + (n + 1,), dtype=np.int64)
    np.cumsum(b, axis=-1, out=c[..., 1:])
    lo = np.clip(np.arange(n) - w, 0, n)
    hi = np.clip(np.arange(n) + w + 1, 0, n)
    return (c[..., hi] - c[..., lo]) > 0


def dilate_disk(b, radius: float) -> np.ndarray:
    """Binary dilation of ``[T,H,W]`` (or ``[H,W]``) by the disk ``{(dy, dx): dy² + dx² <= radius²}``
    (integer offsets; outside the image counts as background). For an integer radius this is the
    structuring element ``skimage.morphology.disk(radius)``."""
    m = np.asarray(b).astype(bool)
    squeeze = m.ndim == 2
    if squeeze:
        m = m[None]
    r2 = float(radius) ** 2
    rmax = math.floor(radius)
    h = m.shape[1]
    out = np.zeros_like(m)
    rows: dict[int, np.ndarray] = {}
    for dy in range(-rmax, rmax + 1):
        rem = r2 - dy * dy
        if rem < 0:
            continue
        w = math.floor(math.sqrt(rem) + 1e-9)
        if w not in rows:
            rows[w] = _dilate_rows(m, w)
        d = rows[w]
        # out[y] |= d[y + dy]  (source pixel at y + dy reaches y, and vice versa by symmetry)
        if dy >= 0:
            if dy < h:
                out[:, : h - dy] |= d[:, dy:]
        elif -dy < h:
            out[:, -dy:] |= d[:, : h + dy]
    return out[0] if squeeze else out


def boundary_prf(pred, gt, bound_th: float = 0.008) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame boundary precision, recall and F-measure (float64 ``[T]`` each), DAVIS definition."""
    p, g = _pair(pred, gt)
    r = _bound_pix(bound_th, p.shape[1], p.shape[2])
    pb, gb = boundary_map(p), boundary_map(g)
    pb_dil, gb_dil = dilate_disk(pb, r), dilate_disk(gb, r)
    n_p = pb.sum(axis=(1, 2), dtype=np.int64)
    n_g = gb.sum(axis=(1, 2), dtype=np.int64)
    m_p = np.logical_and(pb, gb_dil).sum(axis=(1, 2), dtype=np.int64)  # matched predicted boundary
    m_g = np.logical_and(gb, pb_dil).sum(axis=(1, 2), dtype=np.int64)  # matched ground-truth boundary
    both_empty, pred_empty, gt_empty = (n_p == 0) & (n_g == 0), (n_p == 0) & (n_g > 0), (n_p > 0) & (n_g == 0)
    prec = m_p / np.maximum(n_p, 1)
    rec = m_g / np.maximum(n_g, 1)
    # Both boundaries empty: P = R = 1. One side empty: the empty side's score is 1, the other's 0
    # (so F = 0).
    prec[both_empty | pred_empty], rec[both_empty | gt_empty] = 1.0, 1.0
    prec[gt_empty], rec[pred_empty] = 0.0, 0.0
    s = prec + rec
    f = np.where(s > 0, 2.0 * prec * rec / np.where(s > 0, s, 1.0), 0.0)
    return prec.astype(np.float64), rec.astype(np.float64), f.astype(np.float64)


def boundary_f(pred, gt, bound_th: float = 0.008) -> np.ndarray:
    """Per-frame DAVIS boundary F-measure of binary masks ``[T,H,W]`` → float64 ``[T]``."""
    return boundary_prf(pred, gt, bound_th)[2]


def j_and_f(pred, gt, bound_th: float = 0.008) -> dict:
    """J, F and J&F of one object / referring expression over all its frames.

    Returns ``{"J": mean J, "F": mean F, "J&F": (J + F) / 2, "J_per_frame": [T], "F_per_frame": [T]}``
    (means as Python floats, per-frame values as float64 numpy arrays).
    """
    j = region_j(pred, gt)
    f = boundary_f(pred, gt, bound_th)
    jm, fm = float(j.mean()), float(f.mean())
    return {"J": jm, "F": fm, "J&F": (jm + fm) / 2.0, "J_per_frame": j, "F_per_frame": f}


def mean_j_and_f(results: Iterable[Mapping] | Mapping[str, Mapping]) -> dict:
    """Aggregate per-object :func:`j_and_f` results the DAVIS way (a video's objects, or a dataset).

    ``results``: an iterable (or a name → result mapping) of :func:`j_and_f` dicts, or of earlier
    :func:`mean_j_and_f` dicts (e.g. per-video summaries), whose objects are then counted one by one —
    so a dataset's score is the mean over all objects, not over video means. Returns
    ``{"J": mean of per-object J means, "F": likewise, "J&F": (J + F) / 2, "n_objects": N,
    "objects": [(J, F), ...]}``.
    """
    items = results.values() if isinstance(results, Mapping) and not _is_result(results) else \
        ([results] if isinstance(results, Mapping) else results)
    objects: list[tuple[float, float]] = []
    for r in items:
        if not isinstance(r, Mapping) or not _is_result(r):
            raise NodeInputError(NODE, "results", "j_and_f / mean_j_and_f result dicts", type(r).__name__)
        if "objects" in r:
            objects.extend((float(j), float(f)) for j, f in r["objects"])
        else:
            objects.append((float(r["J"]), float(r["F"])))
    if not objects:
        raise NodeInputError(NODE, "results", "at least one object result", "none")
    jm = sum(o[0] for o in objects) / len(objects)
    fm = sum(o[1] for o in objects) / len(objects)
    return {"J": jm, "F": fm, "J&F": (jm + fm) / 2.0, "n_objects": len(objects), "objects": objects}


def _is_result(r: Mapping) -> bool:
    return "J" in r and "F" in r
