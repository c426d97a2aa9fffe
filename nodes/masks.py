"""Mask nodes (category ``AVLab/Masks``): thin adapters over :mod:`avlab.common.boxes`."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..common.boxes import EMPTY_POLICIES, Boxes, draw_boxes, mask_to_boxes

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


NODES = [AVLabMaskToBoxes]
