"""The built-in synthetic domain (design.md): procedural scenes and multi-camera concerts with
exact ground truth, deterministic from a seed. Host-free (numpy + torch)."""

from .scene import COLORS, MATERIAL_NAMES, NUM_CLASSES, SHAPES, Scene, SceneConfig, make_scene

__all__ = ["COLORS", "MATERIAL_NAMES", "NUM_CLASSES", "SHAPES", "Scene", "SceneConfig", "make_scene"]
from .concert import Concert, ConcertConfig, make_concert

__all__ += ["Concert", "ConcertConfig", "make_concert"]
from .dataset import SeededDataset, concert_dataset, scene_dataset, shard_indices

__all__ += ["SeededDataset", "concert_dataset", "scene_dataset", "shard_indices"]
from .referring import ReferringClip, ReferringConfig, heldout_triples, make_referring_clip

__all__ += ["ReferringClip", "ReferringConfig", "heldout_triples", "make_referring_clip"]
