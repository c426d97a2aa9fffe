"""Host tier: ``AVLab Mask To Boxes`` in a real ComfyUI, fed by the synthetic scene's target mask; its
JSON boxes are checked against the scene's ground-truth boxes, regenerated from the labels' config."""

from __future__ import annotations

import json

import pytest
import torch
from avlab.synthetic import SceneConfig, make_scene
from comfy_host import ExecutionFailed

SCENE = {"seed": 4, "frames": 24, "width": 96, "height": 64, "fps": 12.0, "num_objects": 3,
         "sample_rate": 16000, "target_object": 1}   # object 1 crosses: off-screen in the first and last frame


def _graph(**boxes_nodes) -> dict:
    graph = {"scene": {"class_type": "AVLabSyntheticScene", "inputs": {**SCENE}},
             "labels": {"class_type": "PreviewAny", "inputs": {"source": ["scene", 4]}}}
    for name, empty in boxes_nodes.items():
        graph[name] = {"class_type": "AVLabMaskToBoxes",
                       "inputs": {"mask": ["scene", 1], "threshold": 0.5, "empty": empty}}
        graph[f"{name}_json"] = {"class_type": "PreviewAny", "inputs": {"source": [name, 1]}}
        graph[f"{name}_preview"] = {"class_type": "PreviewImage", "inputs": {"images": [name, 2]}}
    return graph


def _truth(labels: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel boxes [T,4] x0,y0,x1,y1 (exclusive ends, zeros when not visible) and visibility of the
    target, from the scene regenerated with the labels' own config."""
    scene = make_scene(SceneConfig(**labels["config"]))
    k = SCENE["target_object"]
    return scene.boxes[k].double(), scene.visible[k]


def test_mask_to_boxes_matches_the_scene_ground_truth(comfy_host, comfy_client):
    history = comfy_client.run(_graph(zeros="zeros", hold="hold last"), timeout=300)
    outputs = history["outputs"]
    labels = json.loads(outputs["labels"]["text"][0])
    truth, visible = _truth(labels)
    W, H = SCENE["width"], SCENE["height"]
    scale = torch.tensor([W, H, W, H], dtype=torch.float64)
    assert labels["visible_frames"][SCENE["target_object"]] == int(visible.sum())
    assert not visible[0] and not visible[-1] and visible.any()      # the crosser gives empty frames

    zeros = json.loads(outputs["zeros_json"]["text"][0])
    assert zeros["format"] == "xyxy_normalised" and (zeros["width"], zeros["height"]) == (W, H)
    assert zeros["present"] == visible.tolist()
    got = torch.tensor(zeros["boxes"], dtype=torch.float64) * scale
    assert got.shape == (SCENE["frames"], 4)
    assert (got - truth).abs().max() <= 1.0, (got - truth).abs().max()

    hold = json.loads(outputs["hold_json"]["text"][0])
    assert hold["present"] == visible.tolist()
    idx = torch.nonzero(visible).flatten()
    first, last = int(idx[0]), int(idx[-1])
    expected = truth.clone()
    for t in range(SCENE["frames"]):
        if not visible[t]:
            before = idx[idx < t]
            expected[t] = truth[int(before[-1])] if len(before) else truth[first]
    assert expected[0].tolist() == truth[first].tolist() and expected[-1].tolist() == truth[last].tolist()
    got = torch.tensor(hold["boxes"], dtype=torch.float64) * scale
    assert (got - expected).abs().max() <= 1.0

    assert len(comfy_host.output_files(history, "zeros_preview")) == SCENE["frames"]
    assert len(comfy_host.output_files(history, "hold_preview")) == SCENE["frames"]


def test_mask_to_boxes_error_policy_names_the_empty_frame(comfy_client):
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(_graph(strict="error"), timeout=300)
    assert err.value.exception_type.endswith("NodeInputError")
    message = err.value.exception_message
    assert message.startswith("AVLab Mask To Boxes: input 'mask'") and "frame 0 empty" in message
