"""Per-frame bounding boxes of a mask clip (host-free; the ``AVLab Mask To Boxes`` node wraps it).

Box format: normalised ``[x0, y0, x1, y1]`` with exclusive right/bottom edges, i.e. pixel column
``c`` covers ``[c / W, (c + 1) / W)``. A mask filling the whole frame gives ``[0, 0, 1, 1]``; a single
pixel at (row ``r``, column ``c``) gives ``[c/W, r/H, (c+1)/W, (r+1)/H]``. A pixel belongs to the
object when its value is strictly greater than ``threshold``.

Empty frames (no pixel above the threshold) follow one of :data:`EMPTY_POLICIES`:

``"hold last"``  the box of the previous non-empty frame; frames before the first non-empty frame
                 take the first non-empty frame's box. A clip with no non-empty frame at all gives
                 zeros (``present`` tells the consumer).
``"zeros"``      ``[0, 0, 0, 0]``.
``"full frame"`` ``[0, 0, 1, 1]``.
``"error"``      :class:`~avlab.common.errors.NodeInputError` naming the first empty frame.

``present[t]`` is ``True`` exactly when frame ``t`` itself was non-empty, whatever the policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from .errors import NodeInputError

EMPTY_POLICIES = ("hold last", "zeros", "full frame", "error")


@dataclass
class Boxes:
    """The pack's ``AVLAB_BOXES`` value: ``boxes`` float32 ``[T,4]`` normalised ``x0,y0,x1,y1``
    (see module docstring), ``present`` bool ``[T]``; ``width``/``height`` of the source frames."""

    boxes: torch.Tensor
    present: torch.Tensor
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_json(self) -> str:
        return boxes_json(self.boxes, self.present, self.width, self.height)


def boxes_json(boxes: torch.Tensor, present: torch.Tensor, width: int = 0, height: int = 0) -> str:
    """``{"format", "width", "height", "boxes": [[x0,y0,x1,y1], ...], "present": [bool, ...]}``."""
    return json.dumps({"format": "xyxy_normalised", "width": int(width), "height": int(height),
                       "boxes": [[float(v) for v in row] for row in boxes.tolist()],
                       "present": [bool(p) for p in present.tolist()]})


def _as_masks(masks, node: str) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise NodeInputError(node, "mask", "a MASK tensor [B,H,W]", type(masks).__name__)
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.ndim != 3 or min(masks.shape) < 1:
        raise NodeInputError(node, "mask", "a non-empty MASK tensor [B,H,W]", tuple(masks.shape))
    if masks.is_complex():
        raise NodeInputError(node, "mask", "a real-valued MASK", masks.dtype)
    return masks


def pixel_boxes(on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight pixel boxes of boolean masks ``[T,H,W]``: ``(int64 [T,4] x0,y0,x1,y1 with exclusive
    x1/y1, zeros where a frame is empty; present bool [T])``. Vectorised, no per-frame loop."""
    _, H, W = on.shape
    rows = on.any(2)                               # [T,H] bool
    present = rows.any(1)                          # [T] bool
    rows = rows.to(torch.uint8)
    cols = on.any(1).to(torch.uint8)              # [T,W]
    # argmax returns the first maximal index: first set row/col; on the flipped axis, the last one.
    y0 = rows.argmax(1)
    y1 = H - rows.flip(1).argmax(1)
    x0 = cols.argmax(1)
    x1 = W - cols.flip(1).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1)
    return torch.where(present.unsqueeze(1), boxes, torch.zeros_like(boxes)), present


def mask_to_boxes(masks: torch.Tensor, threshold: float = 0.5, empty: str = "hold last",
                  node: str = "mask_to_boxes") -> tuple[torch.Tensor, torch.Tensor]:
    """``masks`` ``[T,H,W]`` (or ``[H,W]``) → ``(boxes float32 [T,4], present bool [T])`` on the
    masks' device. See the module docstring for the box format and the ``empty`` policies."""
    masks = _as_masks(masks, node)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise NodeInputError(node, "threshold", "a finite number", threshold)
    if empty not in EMPTY_POLICIES:
        raise NodeInputError(node, "empty", f"one of {list(EMPTY_POLICIES)}", repr(empty))
    T, H, W = masks.shape
    on = (masks if masks.is_floating_point() else masks.float()) > threshold   # bool/int: True = 1
    pixels, present = pixel_boxes(on)
    scale = torch.tensor([W, H, W, H], dtype=torch.float64, device=masks.device)
    boxes = (pixels.to(torch.float64) / scale).to(torch.float32)

    if bool(present.all()):
        return boxes, present
    if empty == "error":
        missing = torch.nonzero(~present).flatten().tolist()
        more = f" (and {len(missing) - 1} more empty frames)" if len(missing) > 1 else ""
        raise NodeInputError(node, "mask", f"a non-empty mask in every frame (no pixel > {threshold:g}; "
                             "empty policy 'error')", f"frame {missing[0]} empty{more}")
    if empty == "full frame":
        full = torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device)
        boxes = torch.where(present.unsqueeze(1), boxes, full)
    elif empty == "hold last" and bool(present.any()):
        idx = torch.arange(T, device=masks.device)
        last = torch.where(present, idx, torch.full_like(idx, -1)).cummax(0).values
        following = torch.where(present, idx, torch.full_like(idx, T)).flip(0).cummin(0).values.flip(0)
        source = torch.where(last >= 0, last, following)
        boxes = boxes[source]
    return boxes, present


def draw_boxes(masks: torch.Tensor, boxes: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Preview ``[T,H,W,3]``: the mask in grey with each box's one-pixel outline drawn on top — red
    where the frame was non-empty, yellow where the box was filled in by the empty policy (boxes
    of zero area are not drawn)."""
    masks = _as_masks(masks, "draw_boxes").float()
    T, H, W = masks.shape
    if present is None:
        present = torch.ones(T, dtype=torch.bool, device=masks.device)
    image = masks.clamp(0, 1).unsqueeze(-1).expand(T, H, W, 3).clone()
    scale = torch.tensor([W, H, W, H], dtype=torch.float64, device=masks.device)
    px = (boxes.to(device=masks.device, dtype=torch.float64) * scale).round().long()
    x0, y0, x1, y1 = (px[:, i].view(T, 1, 1) for i in range(4))
    x1, y1 = x1 - 1, y1 - 1                          # last covered column / row
    ys = torch.arange(H, device=masks.device).view(1, H, 1)
    xs = torch.arange(W, device=masks.device).view(1, 1, W)
    in_x = (xs >= x0) & (xs <= x1)
    in_y = (ys >= y0) & (ys <= y1)
    outline = in_x & in_y & ((xs == x0) | (xs == x1) | (ys == y0) | (ys == y1))
    red = torch.tensor([1.0, 0.0, 0.0], device=masks.device)
    yellow = torch.tensor([1.0, 1.0, 0.0], device=masks.device)
    colour = torch.where(present.to(masks.device).view(T, 1, 1, 1), red, yellow).expand(T, H, W, 3)
    return torch.where(outline.unsqueeze(-1), colour, image)
