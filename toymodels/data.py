"""Synthetic-domain clips for the toy video models (uses :mod:`avlab.synthetic`)."""

from __future__ import annotations

import torch

from ..synthetic import SceneConfig, make_scene

#: Frame rate of the toy clips: 8 frames cover one second of scene motion (a bounce, a crossing).
CLIP_FPS = 8.0


def synthetic_clips(n: int, frames: int = 16, size: int = 32, seed: int = 0, num_objects: int = 2):
    """``n`` synthetic scenes (seeds ``seed .. seed+n-1``) → (frames ``[n,T,H,W,3]`` 0..1, class ids ``[n]``).

    The class id is the scene class of :attr:`avlab.synthetic.Scene.class_id` (shape of object 0).
    Audio is not needed here, so it is rendered at the lowest rate the generator accepts.
    """
    clips, labels = [], []
    for i in range(n):
        scene = make_scene(SceneConfig(seed=seed + i, frames=frames, height=size, width=size, fps=CLIP_FPS,
                                       sample_rate=8000, num_objects=num_objects))
        clips.append(scene.frames)
        labels.append(scene.class_id)
    return torch.stack(clips), torch.tensor(labels, dtype=torch.long)
