"""``common.boxes``: mask clip → normalised per-frame boxes, empty-frame policies, preview drawing."""

from __future__ import annotations

import json

import pytest
import torch
from avlab.common.boxes import (
    EMPTY_POLICIES,
    Boxes,
    boxes_json,
    draw_boxes,
    mask_to_boxes,
)
from avlab.common.errors import NodeInputError

H, W = 10, 20


def _clip(*rects, empty_at=()):
    """One frame per entry: ``rect`` = (row0, row1, col0, col1) inclusive-exclusive, or None = empty."""
    masks = torch.zeros(len(rects), H, W)
    for t, r in enumerate(rects):
        if r is not None:
            masks[t, r[0]:r[1], r[2]:r[3]] = 1.0
    return masks


def _norm(r):
    return [r[2] / W, r[0] / H, r[3] / W, r[1] / H]


def test_full_frame_and_single_pixel_have_exact_normalisation():
    masks = torch.zeros(3, H, W)
    masks[0] = 1.0
    masks[1, 3, 7] = 1.0
    masks[2, H - 1, W - 1] = 1.0
    boxes, present = mask_to_boxes(masks)
    assert boxes.dtype == torch.float32 and boxes.shape == (3, 4) and present.dtype == torch.bool
    assert boxes[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert boxes[1].tolist() == pytest.approx([7 / W, 3 / H, 8 / W, 4 / H], abs=1e-7)
    assert boxes[2].tolist() == pytest.approx([(W - 1) / W, (H - 1) / H, 1.0, 1.0], abs=1e-7)
    assert present.tolist() == [True, True, True]


def test_box_spans_every_part_of_a_disconnected_mask():
    masks = torch.zeros(1, H, W)
    masks[0, 1, 2] = 1.0
    masks[0, 6, 15] = 1.0
    boxes, _ = mask_to_boxes(masks)
    assert boxes[0].tolist() == pytest.approx([2 / W, 1 / H, 16 / W, 7 / H], abs=1e-7)


def test_threshold_is_strict_and_selects_pixels():
    masks = torch.zeros(1, H, W)
    masks[0, 2:4, 3:5] = 0.5            # exactly at the default threshold: not counted
    masks[0, 5:8, 10:12] = 0.9
    boxes, present = mask_to_boxes(masks)
    assert boxes[0].tolist() == pytest.approx(_norm((5, 8, 10, 12)), abs=1e-7) and present.all()
    boxes, _ = mask_to_boxes(masks, threshold=0.4)
    assert boxes[0].tolist() == pytest.approx(_norm((2, 8, 3, 12)), abs=1e-7)
    boxes, present = mask_to_boxes(masks, threshold=0.95, empty="zeros")
    assert boxes[0].tolist() == [0.0, 0.0, 0.0, 0.0] and not present.any()


def test_2d_and_bool_masks_are_accepted():
    m = torch.zeros(H, W, dtype=torch.bool)
    m[1:3, 4:6] = True
    boxes, _ = mask_to_boxes(m)
    assert boxes.shape == (1, 4) and boxes[0].tolist() == pytest.approx(_norm((1, 3, 4, 6)), abs=1e-7)


A, B = (1, 3, 2, 5), (4, 9, 10, 18)


@pytest.mark.parametrize("policy,expected", [
    ("hold last", [_norm(A), _norm(A), _norm(A), _norm(B), _norm(B), _norm(B)]),
    ("zeros", [[0] * 4, _norm(A), [0] * 4, _norm(B), [0] * 4, [0] * 4]),
    ("full frame", [[0, 0, 1, 1], _norm(A), [0, 0, 1, 1], _norm(B), [0, 0, 1, 1], [0, 0, 1, 1]]),
])
def test_empty_policies(policy, expected):
    masks = _clip(None, A, None, B, None, None)
    boxes, present = mask_to_boxes(masks, empty=policy)
    assert present.tolist() == [False, True, False, True, False, False]
    assert boxes.tolist() == [pytest.approx(e, abs=1e-7) for e in expected]


def test_hold_last_fills_leading_frames_with_the_first_non_empty_box():
    boxes, _ = mask_to_boxes(_clip(None, None, None, B, A), empty="hold last")
    assert boxes.tolist() == [pytest.approx(_norm(r), abs=1e-7) for r in (B, B, B, B, A)]


def test_error_policy_names_the_first_empty_frame():
    with pytest.raises(NodeInputError) as err:
        mask_to_boxes(_clip(A, A, None, B, None), empty="error", node="AVLab Mask To Boxes")
    message = str(err.value)
    assert err.value.input_name == "mask" and message.startswith("AVLab Mask To Boxes: input 'mask'")
    assert "frame 2 empty" in message and "1 more" in message
    _, present = mask_to_boxes(_clip(A, B), empty="error")            # nothing empty: no error
    assert present.all()


@pytest.mark.parametrize("policy", EMPTY_POLICIES)
def test_all_empty_clip(policy):
    masks = torch.zeros(4, H, W)
    if policy == "error":
        with pytest.raises(NodeInputError, match="frame 0 empty"):
            mask_to_boxes(masks, empty=policy)
        return
    boxes, present = mask_to_boxes(masks, empty=policy)
    assert not present.any() and boxes.shape == (4, 4)
    fill = [0.0, 0.0, 1.0, 1.0] if policy == "full frame" else [0.0] * 4    # nothing to hold: zeros
    assert boxes.tolist() == [fill] * 4


@pytest.mark.parametrize("kwargs,name", [({"empty": "hold"}, "empty"), ({"threshold": float("nan")}, "threshold"),
                                         ({"threshold": "0.5"}, "threshold")])
def test_bad_arguments_name_the_input(kwargs, name):
    with pytest.raises(NodeInputError) as err:
        mask_to_boxes(_clip(A), node="N", **kwargs)
    assert err.value.input_name == name and str(err.value).startswith(f"N: input '{name}'")


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 5), torch.zeros(0, 4, 4), [[1.0]]])
def test_bad_mask_is_refused(bad):
    with pytest.raises(NodeInputError, match="input 'mask'"):
        mask_to_boxes(bad, node="N")


def test_draw_boxes_outlines_each_box_on_the_mask():
    masks = _clip(B, None)
    boxes, present = mask_to_boxes(masks, empty="hold last")
    image = draw_boxes(masks, boxes, present)
    assert image.shape == (2, H, W, 3)
    r0, r1, c0, c1 = B
    red, yellow = torch.tensor([1.0, 0, 0]), torch.tensor([1.0, 1, 0])
    for t, colour in ((0, red), (1, yellow)):
        outline = torch.zeros(H, W, dtype=torch.bool)
        outline[r0:r1, c0:c1] = True
        outline[r0 + 1:r1 - 1, c0 + 1:c1 - 1] = False
        assert torch.equal(image[t][outline], colour.expand(int(outline.sum()), 3))
        grey = image[t][~outline]
        assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert image[0, 6, 12].tolist() == [1.0] * 3 and image[1, 6, 12].tolist() == [0.0] * 3   # interior: the mask
    zeros, _ = mask_to_boxes(torch.zeros(1, H, W), empty="zeros")
    assert torch.equal(draw_boxes(torch.zeros(1, H, W), zeros, torch.tensor([False])), torch.zeros(1, H, W, 3))


def test_boxes_value_and_json():
    boxes, present = mask_to_boxes(_clip(A, None), empty="zeros")
    value = Boxes(boxes, present, width=W, height=H)
    data = json.loads(value.to_json())
    assert len(value) == 2 and data == json.loads(boxes_json(boxes, present, W, H))
    assert data["present"] == [True, False] and data["width"] == W and data["height"] == H
    assert data["boxes"][0] == pytest.approx(_norm(A), abs=1e-7) and data["boxes"][1] == [0.0] * 4
