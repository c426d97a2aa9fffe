"""Mask nodes (category ``AVLab/Masks``): thin adapters over :mod:`avlab.common.boxes`."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..common.boxes import EMPTY_POLICIES, Boxes, draw_boxes, mask_to_boxes
from ..common.errors import NodeInputError
from ..common.overlay import overlay_mask

logger = logging.getLogger(__name__)

BOXES = io.Custom("AVLAB_BOXES")


class AVLabMaskToBoxes(io.ComfyNode):
    """Per-frame bounding boxes of a mask clip, normalised to the frame size."""

    NAME = "AVLab Mask To Boxes"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabMaskToBoxes",
            display_name=cls.NAME,
            category="AVLab/Masks",
            description="Turns a mask clip into one bounding box per frame, normalised [x0, y0, x1, y1] with "
            "exclusive right/bottom edges (a full-frame mask gives [0, 0, 1, 1]). Frames without any pixel above "
            "the threshold follow the empty policy; 'present' says which frames really had the object.",
            inputs=[
                io.Mask.Input("mask", tooltip="Mask clip [B,H,W], one mask per video frame."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="A pixel belongs to the object when its mask value is greater than this."),
                io.Combo.Input("empty", options=list(EMPTY_POLICIES), default=EMPTY_POLICIES[0],
                               tooltip="Frames with an empty mask: 'hold last' repeats the previous non-empty "
                               "frame's box (leading empty frames take the first non-empty one); 'zeros' gives "
                               "[0,0,0,0]; 'full frame' gives [0,0,1,1]; 'error' stops naming the frame."),
            ],
            outputs=[
                BOXES.Output(display_name="boxes", tooltip="Per-frame boxes [T,4] and present flags [T] "
                             "for the AVLab nodes."),
                io.String.Output(display_name="json", tooltip="JSON: {format, width, height, boxes: "
                                 "[[x0,y0,x1,y1], ...] normalised, present: [bool, ...]}."),
                io.Image.Output(display_name="preview", tooltip="The mask in grey with each box outlined: red "
                                "where the frame had the object, yellow where the empty policy filled it in."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, mask, threshold: float = 0.5, empty: str = EMPTY_POLICIES[0]) -> io.NodeOutput:
        boxes, present = mask_to_boxes(mask, threshold=threshold, empty=empty, node=cls.NAME)
        mask = mask if mask.ndim == 3 else mask.unsqueeze(0)
        T, H, W = mask.shape
        value = Boxes(boxes, present, width=W, height=H)
        logger.info("%s: %d frames %dx%d, %d with the object (empty policy %r)", cls.NAME, T, W, H,
                    int(present.sum()), empty)
        return io.NodeOutput(value, value.to_json(), draw_boxes(mask, boxes, present).cpu())


def _hex_colour(value: str, node: str) -> tuple[float, float, float]:
    text = str(value).strip().lstrip("#")
    if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise NodeInputError(node, "colour", "a hex colour such as #ff2020", value)
    return tuple(int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


class AVLabMaskOverlay(io.ComfyNode):
    """Frames with a mask tinted over them (a segmentation preview)."""

    NAME = "AVLab Mask Overlay"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabMaskOverlay",
            display_name=cls.NAME,
            category="AVLab/Masks",
            description="Tints the masked pixels of every frame (one mask per frame, or one mask for all frames).",
            inputs=[
                io.Image.Input("images", tooltip="Video frames [T,H,W,3]."),
                io.Mask.Input("mask", tooltip="Masks [T,H,W] of the same size (or a single mask)."),
                io.String.Input("colour", default="#ff2020", tooltip="Tint colour as #rrggbb."),
                io.Float.Input("alpha", default=0.55, min=0.0, max=1.0, step=0.01,
                               tooltip="Opacity of the tint where the mask is 1."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The frames with the mask tinted.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, images, mask, colour: str = "#ff2020", alpha: float = 0.55) -> io.NodeOutput:
        tint = _hex_colour(colour, cls.NAME)
        return io.NodeOutput(overlay_mask(images, mask, tint, alpha, node=cls.NAME))


NODES = [AVLabMaskToBoxes, AVLabMaskOverlay]
