"""Referring video clips for FlowRVS (papers.md §2; issues 8 and 13): several moving shapes, one
target named by a sentence that refers by **colour, shape and motion** ("the red circle moving left").

Built so that the sentence, not a shortcut, decides the target:

* every object moves in one of four directions (:data:`MOTIONS`) at a roughly constant speed;
* with probability ``twin_prob`` one distractor is the target's **twin** — same colour, same shape,
  another motion — so only temporal reasoning tells them apart; the other distractors share the
  colour or the shape with probability ``share_prob``;
* the target's index in the object list is random (no "object 0" shortcut), objects are drawn in a
  random depth order (occlusion happens; the masks are the visible pixels).

Held-out combinations: :func:`heldout_triples` picks a fixed set of (colour, shape, motion) triples
(each colour, shape and motion still occurs in others). **Train** clips never render an object with a
held-out triple; **val** and **test** clips always have a held-out target (distractors anything), so
the reported J&F is on combinations the model never saw. Splits use disjoint seed ranges
(:data:`SPLIT_SEEDS`). Plain numpy; deterministic from ``(split, index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..common.errors import NodeInputError, check
from .scene import COLORS, SHAPES, _background, _shape_mask

NODE = "referring clip"

MOTIONS = ("left", "right", "up", "down")
_DIRECTION = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
#: First seed of each split (clip ``i`` of a split uses seed ``SPLIT_SEEDS[split] + i``).
SPLIT_SEEDS = {"train": 0, "val": 500_000, "test": 900_000}
HELDOUT_SEED = 2025
HELDOUT_COUNT = 16


@dataclass(frozen=True)
class ReferringConfig:
    """Geometry of the clips. ``frames`` = 4k+1 keeps the Wan VAE's temporal grouping exact."""

    frames: int = 9
    height: int = 96
    width: int = 96
    num_objects: int = 3
    twin_prob: float = 0.6
    share_prob: float = 0.5
    min_speed: float = 0.025          # fraction of the frame side per frame
    max_speed: float = 0.04

    def validate(self) -> None:
        check(self.frames >= 1, NODE, "frames", "≥ 1", self.frames)
        check(self.height >= 16 and self.width >= 16, NODE, "size", "≥ 16 pixels", (self.height, self.width))
        check(2 <= self.num_objects <= 6, NODE, "num_objects", "2..6", self.num_objects)


@dataclass
class ReferringClip:
    frames: torch.Tensor        # [T,H,W,3] 0..1
    mask: torch.Tensor          # [T,H,W] 0/1, the target's visible pixels
    sentence: str
    target: int                 # index of the target in ``objects``
    objects: list[dict] = field(default_factory=list)
    split: str = "train"
    seed: int = 0
    object_masks: torch.Tensor | None = None   # [K,T,H,W] 0/1, every object's visible pixels

    def referable(self) -> list[int]:
        """Indices of the objects one sentence names uniquely in this clip (the target always is; a
        distractor is when no other object shares its colour, shape and motion) — the extra referring
        expressions of the same video, as MeViS gives several per video."""
        keys = [(o["color"], o["shape"], o["motion"]) for o in self.objects]
        return [k for k, key in enumerate(keys) if keys.count(key) == 1]

    def sentence_of(self, k: int) -> str:
        o = self.objects[k]
        return sentence_for(o["color"], o["shape"], o["motion"])


def sentence_for(color: str, shape: str, motion: str) -> str:
    return f"the {color} {shape} moving {motion}"


def all_triples() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]


def heldout_triples(count: int = HELDOUT_COUNT, seed: int = HELDOUT_SEED) -> frozenset:
    """A fixed set of ``count`` (colour, shape, motion) triples never seen in training; chosen so every
    colour, shape and motion keeps at least one training triple (so "unseen" means the combination)."""
    rng = np.random.default_rng(seed)
    triples = all_triples()
    chosen: list[tuple[str, str, str]] = []
    for i in rng.permutation(len(triples)):
        cand = triples[i]
        trial = set(chosen) | {cand}
        rest = [t for t in triples if t not in trial]
        if all(any(t[j] == v for t in rest) for j, values in enumerate((COLORS, SHAPES, MOTIONS)) for v in values):
            chosen.append(cand)
        if len(chosen) == count:
            break
    return frozenset(chosen)


def _draw_object(rng, held: frozenset, allow_held: bool, color=None, shape=None, not_motion=None,
                 motion=None) -> tuple[str, str, str]:
    for _ in range(1000):
        c = color or str(rng.choice(list(COLORS)))
        s = shape or str(rng.choice(SHAPES))
        options = [m for m in MOTIONS if m != not_motion] if motion is None else [motion]
        m = str(rng.choice(options))
        if allow_held or (c, s, m) not in held:
            return c, s, m
    raise RuntimeError("referring clip: no allowed object triple")  # unreachable with the default split


def _objects(cfg: ReferringConfig, split: str, rng) -> tuple[list[tuple[str, str, str]], int]:
    held = heldout_triples()
    train = split == "train"
    if train:
        target = _draw_object(rng, held, allow_held=False)
    else:
        ordered = sorted(held)
        target = ordered[int(rng.integers(len(ordered)))]
    objs = [target]
    for k in range(cfg.num_objects - 1):
        if k == 0 and rng.random() < cfg.twin_prob:
            objs.append(_draw_object(rng, held, not train, target[0], target[1], not_motion=target[2]))
            continue
        for _ in range(1000):
            color = target[0] if rng.random() < cfg.share_prob else None
            shape = target[1] if color is None and rng.random() < cfg.share_prob else None
            cand = _draw_object(rng, held, not train, color, shape)
            if cand != target:             # the sentence must name exactly one object
                break
        objs.append(cand)
    order = rng.permutation(len(objs))
    objs = [objs[i] for i in order]
    return objs, int(np.flatnonzero(order == 0)[0])


def make_referring_clip(split: str = "train", index: int = 0, config: ReferringConfig | None = None) -> ReferringClip:
    """Clip ``index`` of ``split`` ("train", "val", "test"); see the module docstring."""
    if split not in SPLIT_SEEDS:
        raise NodeInputError(NODE, "split", f"one of {sorted(SPLIT_SEEDS)}", split)
    cfg = config or ReferringConfig()
    cfg.validate()
    seed = SPLIT_SEEDS[split] + int(index)
    rng = np.random.default_rng([seed, 0xF10E])
    triples, target = _objects(cfg, split, rng)
    H, W, T = cfg.height, cfg.width, cfg.frames
    side = min(H, W)
    bg, _ = _background(H, W)
    frames = np.repeat(bg[None], T, axis=0)
    owner = np.full((T, H, W), -1, np.int16)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    objects = []
    for k, (color, shape, motion) in enumerate(triples):
        r = float(rng.uniform(0.09, 0.14)) * side
        speed = float(rng.uniform(cfg.min_speed, cfg.max_speed)) * side
        dx, dy = _DIRECTION[motion]
        travel = speed * max(T - 1, 0)
        # start so that the whole path stays inside the frame (margin r)
        lo_x = r + (travel if dx < 0 else 0.0)
        hi_x = W - r - (travel if dx > 0 else 0.0)
        lo_y = r + (travel if dy < 0 else 0.0)
        hi_y = H - r - (travel if dy > 0 else 0.0)
        x0, y0 = float(rng.uniform(lo_x, max(lo_x, hi_x))), float(rng.uniform(lo_y, max(lo_y, hi_y)))
        angle, spin = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(-0.15, 0.15))
        objects.append({"color": color, "shape": shape, "motion": motion, "radius_px": round(r, 2),
                        "start": (round(x0, 2), round(y0, 2)), "speed_px": round(speed, 3),
                        "angle": angle, "spin": spin})
    depth_order = rng.permutation(len(objects))        # first drawn = farthest
    for t in range(T):
        for k in depth_order:
            o = objects[k]
            dx, dy = _DIRECTION[o["motion"]]
            cx, cy = o["start"][0] + dx * o["speed_px"] * t, o["start"][1] + dy * o["speed_px"] * t
            r = o["radius_px"]
            a = o["angle"] + o["spin"] * t
            du, dv = xs - cx, ys - cy
            if o["shape"] != "circle":
                c, s = math.cos(a), math.sin(a)
                du, dv = c * du + s * dv, -s * du + c * dv
            inside = _shape_mask(o["shape"], du, dv, r)
            shade = 0.75 + 0.25 * np.clip(1.0 - np.sqrt((xs - cx) ** 2 + (ys - cy + 0.4 * r) ** 2) / (1.6 * r), 0, 1)
            frames[t][inside] = np.asarray(COLORS[o["color"]], np.float32) * shade[inside, None]
            owner[t][inside] = k
    for o in objects:
        o.pop("angle")
        o.pop("spin")
    masks = torch.from_numpy((owner[None] == np.arange(len(objects), dtype=np.int16)[:, None, None, None])
                             .astype(np.float32))
    return ReferringClip(frames=torch.from_numpy(np.clip(frames, 0, 1)), mask=masks[target],
                         sentence=sentence_for(*triples[target]), target=target, objects=objects, split=split,
                         seed=seed, object_masks=masks)


def vocabulary() -> list[str]:
    """Every word a referring sentence of this domain uses (the tiny text encoder's word list)."""
    return ["the", "moving", *COLORS, *SHAPES, *MOTIONS]
