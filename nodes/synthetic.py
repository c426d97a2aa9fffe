"""Synthetic-domain nodes (category ``AVLab/Synthetic``): scenes and multi-camera concerts.

Thin adapters over :mod:`avlab.synthetic` so that every workflow and the demo run without user
media (design.md, "Model weights without the internet").
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields

import torch
from comfy_api.latest import io

from ..common import media
from ..common.errors import NodeInputError
from ..synthetic import ConcertConfig, SceneConfig, make_concert, make_scene
from ..synthetic.referring import SPLIT_SEEDS, ReferringConfig, make_referring_clip

logger = logging.getLogger(__name__)

_SEED = dict(default=0, min=0, max=2**31 - 1, control_after_generate=True,
             tooltip="Seed of the procedural generator: the same seed and settings always give the same result.")


def _config(cls, node: str, extra_pixel_bytes: int = 0, **values):
    """Build and validate a synthetic config, naming the node in errors; ``extra_pixel_bytes`` per
    frame pixel are the node's own outputs, counted in the memory check."""
    known = {f.name for f in fields(cls)}
    config = cls(**{k: v for k, v in values.items() if k in known})
    config.validate(node, extra_pixel_bytes)
    return config


def _grid_shape(cameras: int) -> tuple[int, int]:
    """(rows, cols) of the camera grid."""
    cols = min(cameras, 2) if cameras <= 4 else 3
    return (cameras + cols - 1) // cols, cols


def _grid(views: torch.Tensor) -> torch.Tensor:
    """[K,T,H,W,3] → [T, rows*H, cols*W, 3], cameras tiled row-major (black padding)."""
    K, T, H, W, C = views.shape
    rows, cols = _grid_shape(K)
    out = torch.zeros(T, rows * H, cols * W, C)
    for k in range(K):
        r, c = divmod(k, cols)
        out[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = views[k]
    return out


class AVLabSyntheticScene(io.ComfyNode):
    """A procedural scene: moving shapes, masks, depth, stereo impact/motion audio, sentences."""

    NAME = "AVLab Synthetic Scene"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSyntheticScene",
            display_name=cls.NAME,
            category="AVLab/Synthetic",
            description="Renders a deterministic synthetic scene: coloured shapes bounce on the floor, hit the walls "
            "and cross the frame; every impact makes a material-dependent sound, moving objects hum and are "
            "panned by their x-position. Gives frames, the mask and referring sentence of one object, depth and "
            "all ground truth as JSON — test any AVLab workflow without your own media.",
            inputs=[
                io.Int.Input("seed", **_SEED),
                io.Int.Input("frames", default=48, min=1, max=2400, tooltip="Number of video frames."),
                io.Int.Input("width", default=256, min=16, max=2048, step=8, tooltip="Frame width in pixels."),
                io.Int.Input("height", default=256, min=16, max=2048, step=8, tooltip="Frame height in pixels."),
                io.Float.Input("fps", default=24.0, min=0.001, max=240.0, step=0.001,
                               tooltip="Frame rate; the audio is exactly frames / fps seconds long."),
                io.Int.Input("num_objects", default=3, min=1, max=8,
                             tooltip="Objects in the scene: object 0 bounces (impact sounds), object 1 crosses the "
                             "frame (a panned moving source), the others do either."),
                io.Int.Input("sample_rate", default=44100, min=8000, max=192000,
                             tooltip="Audio sample rate in Hz (Stable Audio uses 44100)."),
                io.Int.Input("target_object", default=0, min=0, max=7,
                             tooltip="Which object the target_mask and sentence outputs refer to (< num_objects)."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="Video frames [T,H,W,3]."),
                io.Mask.Output(display_name="target_mask", tooltip="Visible pixels of the target object per frame."),
                io.Audio.Output(display_name="audio", tooltip="Stereo soundtrack, frames / fps seconds long."),
                io.Float.Output(display_name="fps", tooltip="The frame rate (wire it to Create Video / savers)."),
                io.String.Output(display_name="labels", tooltip="All ground truth as JSON: objects and tracks, impacts "
                                 "(time, first frame showing the contact, onset sample, material, surface, x), "
                                 "sentences. Frame t is the scene at t / fps."),
                io.Image.Output(display_name="depth", tooltip="Depth maps as grey images, 0 (black) near .. 1 far."),
                io.String.Output(display_name="sentence", tooltip="Referring expression of the target object."),
            ],
            is_experimental=True,
        )

    @classmethod
    def validate_inputs(cls, fps: float = 24.0, num_objects: int = 3, target_object: int = 0, **_) -> bool | str:
        if not fps > 0:
            return f"{cls.NAME}: input 'fps' expected a frame rate > 0, got {fps}"
        if not 0 <= target_object < num_objects:
            return f"{cls.NAME}: input 'target_object' expected 0..{num_objects - 1} (< num_objects), got {target_object}"
        return True

    @classmethod
    def execute(cls, seed: int, frames: int, width: int, height: int, fps: float, num_objects: int,
                sample_rate: int, target_object: int) -> io.NodeOutput:
        config = _config(SceneConfig, cls.NAME, extra_pixel_bytes=12,       # + the depth as float32 RGB
                         seed=seed, frames=frames, width=width, height=height, fps=fps,
                         num_objects=num_objects, sample_rate=sample_rate)
        if not 0 <= target_object < num_objects:
            raise NodeInputError(cls.NAME, "target_object", f"0..{num_objects - 1} (< num_objects)", target_object)
        scene = make_scene(config)
        depth = scene.depth.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
        logger.info("%s: seed %d, %d frames %dx%d at %g fps, %d impacts", cls.NAME, seed, frames, width, height,
                    fps, len(scene.impacts))
        return io.NodeOutput(scene.frames, scene.masks[target_object], media.waveform_to_audio(scene.audio, sample_rate),
                             float(fps), json.dumps(scene.labels()), depth, scene.sentences[target_object])


class AVLabSyntheticConcert(io.ComfyNode):
    """A procedural multi-camera concert with the ground-truth edit (phrase-aligned cuts)."""

    NAME = "AVLab Synthetic Concert"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSyntheticConcert",
            display_name=cls.NAME,
            category="AVLab/Synthetic",
            description="Renders a deterministic synthetic concert filmed by one wide and several close-up cameras. "
            "The music is a sequence of phrases, each led by one performer; the ground-truth editor cuts at phrase "
            "boundaries to the camera that shows the new lead. Gives the edited program, all cameras tiled, the "
            "music and the cut list as JSON.",
            inputs=[
                io.Int.Input("seed", **_SEED),
                io.Int.Input("num_cameras", default=3, min=2, max=5, tooltip="Cameras: 1 wide + close-ups of performer groups."),
                io.Float.Input("duration", default=24.0, min=4.0, max=600.0, step=0.5, tooltip="Length in seconds."),
                io.Float.Input("fps", default=5.0, min=0.5, max=60.0, step=0.5,
                               tooltip="Frame rate (the concert-cutting paper samples frames at 5 fps)."),
                io.Int.Input("width", default=256, min=16, max=2048, step=8, tooltip="Frame width of every camera."),
                io.Int.Input("height", default=144, min=16, max=2048, step=8, tooltip="Frame height of every camera."),
                io.Int.Input("sample_rate", default=16000, min=8000, max=192000,
                             tooltip="Audio sample rate in Hz (the paper resamples to 16 kHz)."),
            ],
            outputs=[
                io.Image.Output(display_name="program", tooltip="The ground-truth edit: frames from the camera on air."),
                io.Image.Output(display_name="views_grid", tooltip="All cameras tiled in one frame (camera 0 = wide, top left)."),
                io.Audio.Output(display_name="audio", tooltip="The music (mono)."),
                io.Float.Output(display_name="fps", tooltip="The frame rate."),
                io.String.Output(display_name="labels", tooltip="JSON: cut times and frames, shots (start, end, camera), "
                                 "phrases, cameras and 4 s / 2 s-hop segment labels."),
                io.Custom("AVLAB_CAMERAS").Output(display_name="cameras",
                                                  tooltip="Every camera, for the AVLab/Concert nodes (camera_1 = wide)."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, seed: int, num_cameras: int, duration: float, fps: float, width: int, height: int,
                sample_rate: int) -> io.NodeOutput:
        rows, cols = _grid_shape(num_cameras)             # + the program and the grid, float32 RGB
        config = _config(ConcertConfig, cls.NAME, extra_pixel_bytes=12 * (1 + rows * cols), seed=seed,
                         num_cameras=num_cameras, duration=duration, fps=fps,
                         width=width, height=height, sample_rate=sample_rate)
        concert = make_concert(config)
        logger.info("%s: seed %d, %d cameras, %.1f s, cuts at %s", cls.NAME, seed, num_cameras, duration,
                    concert.cut_times)
        from .concert import CameraSet

        cameras = CameraSet(list(concert.views), media.as_fps(fps), [f"camera_{k + 1}" for k in range(num_cameras)])
        return io.NodeOutput(concert.program(), _grid(concert.views),
                             media.waveform_to_audio(concert.audio, sample_rate), float(fps),
                             json.dumps(concert.labels()), cameras)


class AVLabSyntheticReferringClip(io.ComfyNode):
    """A referring-segmentation clip of the synthetic domain (FlowRVS, papers.md §2)."""

    NAME = "AVLab Synthetic Referring Clip"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSyntheticReferringClip",
            display_name=cls.NAME,
            category="AVLab/Synthetic",
            description="Renders a deterministic referring clip: shapes moving left/right/up/down, one of them named by "
            "a sentence such as 'the red circle moving left' (often next to a same-colour, same-shape twin moving "
            "another way). Gives frames, the target's mask and the sentence. The 'test' split uses colour/shape/"
            "motion combinations the built-in FlowRVS model never saw in training.",
            inputs=[
                io.Combo.Input("split", options=list(SPLIT_SEEDS), default="test",
                               tooltip="train: what the built-in model was trained on; val/test: held-out targets."),
                io.Int.Input("index", default=0, min=0, max=99_999, tooltip="Clip number within the split."),
                io.Int.Input("frames", default=9, min=1, max=257, tooltip="Number of frames."),
                io.Int.Input("size", default=96, min=32, max=1024, step=16, tooltip="Frame width and height in pixels."),
                io.Int.Input("num_objects", default=3, min=2, max=6, tooltip="Objects in the clip (the target included)."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="Video frames [T,H,W,3]."),
                io.Mask.Output(display_name="target_mask", tooltip="Visible pixels of the target per frame."),
                io.String.Output(display_name="sentence", tooltip="The referring sentence."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, split: str, index: int, frames: int, size: int, num_objects: int) -> io.NodeOutput:
        if split not in SPLIT_SEEDS:
            raise NodeInputError(cls.NAME, "split", f"one of {list(SPLIT_SEEDS)}", split)
        clip = make_referring_clip(split, index, ReferringConfig(frames=frames, height=size, width=size,
                                                                 num_objects=num_objects))
        logger.info("%s: %s #%d: %r", cls.NAME, split, index, clip.sentence)
        return io.NodeOutput(clip.frames, clip.mask, clip.sentence)


RETRIEVAL_PRESET = "GRAM retrieval: 8 frames at 8 fps, 16 kHz (1 s)"
#: Clip formats of the Foley clip node: the built-in GRAM's training clips and the built-in tiny Stable
#: Audio generator's (:class:`avlab.foley.generator_train.FoleyAudioData`).
FOLEY_PRESETS = {RETRIEVAL_PRESET: dict(frames=8, size=64, fps=8.0, sample_rate=16000),
                 "Foley generator: 32 frames at 16 fps, 44.1 kHz (2 s)": dict(frames=32, size=64, fps=16.0,
                                                                             sample_rate=44100)}


class AVLabSyntheticFoleyClip(io.ComfyNode):
    """A (video, caption, sound) triple of the synthetic domain (FoleyGRAM's GRAM, papers.md §4)."""

    NAME = "AVLab Synthetic Foley Clip"

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..synthetic import foley

        return io.Schema(
            node_id="AVLabSyntheticFoleyClip",
            display_name=cls.NAME,
            category="AVLab/Synthetic",
            description="Renders a deterministic Foley triple: one object whose colour, shape, material (surface "
            "pattern) and motion (bouncing / sliding / spinning) are all visible and all audible, with a caption "
            "naming them. The 'test' split uses combinations the built-in GRAM never saw in training.",
            inputs=[
                io.Combo.Input("split", options=list(foley.SPLIT_SEEDS), default="test",
                               tooltip="train: what the built-in GRAM was trained on; val: seen combinations, new "
                               "clips; test: held-out combinations."),
                io.Int.Input("index", default=0, min=0, max=99_999, tooltip="Clip number within the split."),
                io.Combo.Input("preset", options=list(FOLEY_PRESETS), default=RETRIEVAL_PRESET, optional=True,
                               tooltip="The clip format: the built-in GRAM's (1 s) or the built-in Stable Audio "
                               "generator's (2 s at 44.1 kHz, Stable Audio Open's rate)."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="Video frames [T,64,64,3] (T = 8 or 32 by preset)."),
                io.Audio.Output(display_name="audio", tooltip="The sound (mono), as long as the video."),
                io.Float.Output(display_name="fps", tooltip="The frame rate (8 or 16 by preset)."),
                io.String.Output(display_name="caption", tooltip="The caption."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, split: str, index: int, preset: str = None) -> io.NodeOutput:
        from ..synthetic import foley

        if split not in foley.SPLIT_SEEDS:
            raise NodeInputError(cls.NAME, "split", f"one of {list(foley.SPLIT_SEEDS)}", split)
        preset = preset or RETRIEVAL_PRESET
        if preset not in FOLEY_PRESETS:
            raise NodeInputError(cls.NAME, "preset", f"one of {list(FOLEY_PRESETS)}", preset)
        (clip,) = foley.split_clips(split, 1, offset=index, config=foley.FoleyClipConfig(**FOLEY_PRESETS[preset]))
        logger.info("%s: %s #%d: %r", cls.NAME, split, index, clip.caption)
        return io.NodeOutput(clip.frames, media.waveform_to_audio(clip.audio[None], clip.sample_rate),
                             float(clip.fps), clip.caption)


NODES = [AVLabSyntheticScene, AVLabSyntheticConcert, AVLabSyntheticReferringClip, AVLabSyntheticFoleyClip]
