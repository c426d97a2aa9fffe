"""Procedural audio-visual scenes: coloured shapes that bounce, collide with surfaces and cross
the frame, with per-object masks/boxes, depth, stereo audio and referring sentences.

The built-in synthetic domain of design.md ("Model weights without the internet"): everything is
deterministic from :class:`SceneConfig` (``seed`` included) and known exactly, so each system has
ground truth — masks + sentences for FlowRVS (papers.md §2), impact times/materials for FoleyGRAM
(§4), x-position/depth of every source for StereoSync (§5). Plain numpy; returns torch tensors.

Geometry: an object at depth ``z`` (0 near .. 1 far) rests on the floor line
``y = H * (FLOOR_NEAR - FLOOR_SPAN * z)`` and appears ``(1 - 0.5 z)`` times its near size.

Time (the pack's rule, :mod:`avlab.common.media`): frame ``t`` shows the state at ``t / fps`` and
owns audio samples ``[round(t·sr/fps), round((t+1)·sr/fps))`` (:func:`~avlab.common.media.frame_sample_bounds`).
The physics integrates ``SUBSTEPS`` semi-implicit Euler steps per frame interval. A contact is
detected at the end of the substep in which the rendered outline (not a bounding circle) reaches a
surface — or at a frame time, when the outline is less than ``CONTACT_PX`` from a surface it is
approaching (a gap the renderer cannot show). That instant is the impact's ``time``; its sound
starts on the instant's sample (``sample``, the same rounding on the substep grid). The object then
stays on the surface until the next frame time and rebounds after it (a contact lasts less than one
frame), so the impact's ``frame`` — the first frame at or after the contact, ``ceil(time * fps)`` —
is the first frame that shows the object touching the surface (the frame before shows a gap of at
least ``CONTACT_PX``), and its sound starts at most one frame (``sr / fps`` samples) before it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import audio as sound
from ..common import media
from ..common.boxes import pixel_boxes
from ..common.errors import check_fields
from ..common.memory import check_memory, format_bytes

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15), "green": (0.15, 0.75, 0.25), "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15), "magenta": (0.85, 0.20, 0.80), "cyan": (0.15, 0.85, 0.90),
    "orange": (0.98, 0.55, 0.10), "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
MATERIAL_NAMES = tuple(sound.MATERIALS)
#: Scene class used by class-conditional toy models: the shape of object 0.
NUM_CLASSES = len(SHAPES)

FLOOR_NEAR = 0.97
FLOOR_SPAN = 0.32
HORIZON = FLOOR_NEAR - FLOOR_SPAN
SUBSTEPS = 8
#: A surface closer than this (pixels) at a frame time is touching (module docstring, "Time").
CONTACT_PX = 2.0
MAX_OBJECTS = len(COLORS)

#: Peak bytes of :func:`make_scene` per pixel of one frame (× frames): frames (12) + depth (4) + owner
#: map (2) + one boolean mask (1), and 4 per object mask; per stereo audio sample: the track (8) and the
#: float64 temporaries of one moving source (hum, gain, pan). Measured peaks (VmHWM and tracemalloc,
#: 64×256² with 1 / 8 objects; 80 s at 48 kHz) are 0.99–1.02× the per-pixel model and 48–52 B/sample;
#: ``_MEMORY_FACTOR`` is the headroom over them.
_PIXEL_BYTES = 19
_OBJECT_PIXEL_BYTES = 4
_SAMPLE_BYTES = 52
_MEMORY_FACTOR = 1.1


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class SceneConfig:
    """Everything a scene depends on. ``dataclasses.replace(cfg, seed=...)`` gives a new scene."""

    seed: int = 0
    frames: int = 48
    height: int = 128
    width: int = 128
    fps: float = 24.0
    sample_rate: int = 44100
    num_objects: int = 3

    def validate(self, node: str = "SceneConfig", extra_pixel_bytes: int = 0) -> None:
        """Raise :class:`NodeInputError` naming the bad field, or the field to lower when the scene
        (plus ``extra_pixel_bytes`` per frame pixel of the caller's outputs) would not fit in memory."""
        checks = (
            ("frames", self.frames >= 1, "an integer ≥ 1"),
            ("height", self.height >= 16, "an integer ≥ 16 pixels"),
            ("width", self.width >= 16, "an integer ≥ 16 pixels"),
            ("fps", math.isfinite(self.fps) and self.fps > 0, "a frame rate > 0"),
            ("sample_rate", _is_int(self.sample_rate) and self.sample_rate >= 8000,
             "an integer sample rate ≥ 8000 Hz"),
            ("num_objects", 1 <= self.num_objects <= MAX_OBJECTS, f"1..{MAX_OBJECTS} objects"),
        )
        check_fields(self, node, checks)
        self.check_memory(node, extra_pixel_bytes)

    def memory_bytes(self, extra_pixel_bytes: int = 0) -> tuple[int, int]:
        """Estimated peak of :func:`make_scene` as (video part, audio part) in bytes;
        ``extra_pixel_bytes`` per frame pixel adds a caller's own outputs (a node's depth image)."""
        pixels = self.frames * self.height * self.width
        per_pixel = _PIXEL_BYTES + _OBJECT_PIXEL_BYTES * self.num_objects + extra_pixel_bytes
        samples = media.num_audio_samples(self.frames, self.sample_rate, self.fps)
        return int(_MEMORY_FACTOR * pixels * per_pixel), int(_MEMORY_FACTOR * samples * _SAMPLE_BYTES)

    def check_memory(self, node: str = "SceneConfig", extra_pixel_bytes: int = 0) -> None:
        """Refuse (:func:`avlab.common.memory.check_memory`) a scene that would not fit in memory,
        naming ``frames`` (or ``sample_rate`` when the audio dominates)."""
        video, audio = self.memory_bytes(extra_pixel_bytes)
        seconds = self.frames / self.fps
        what = (f"{self.frames} frames of {self.width}×{self.height} with {self.num_objects} object masks and "
                f"depth ({format_bytes(video)}) + {seconds:.4g} s of {self.sample_rate} Hz stereo audio "
                f"({format_bytes(audio)}, frames / fps)")
        check_memory(node, "frames" if video >= audio else "sample_rate", video + audio, what)


@dataclass
class Scene:
    """A rendered scene. Tensors are CPU float32 unless noted; see module docstring for geometry."""

    config: SceneConfig
    frames: torch.Tensor          # [T,H,W,3] 0..1
    masks: torch.Tensor           # [N,T,H,W] 0/1, visible pixels (occlusion applied)
    boxes: torch.Tensor           # [N,T,4] x0,y0,x1,y1 pixels (zeros when not visible)
    visible: torch.Tensor         # [N,T] bool
    depth: torch.Tensor           # [T,H,W] 0 near .. 1 far
    audio: torch.Tensor           # [2,S] stereo
    objects: list[dict] = field(default_factory=list)
    impacts: list[dict] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def class_id(self) -> int:
        return SHAPES.index(self.objects[0]["shape"])

    def labels(self) -> dict:
        """JSON-able ground truth (no tensors)."""
        return {"config": asdict(self.config), "class_id": self.class_id, "objects": self.objects,
                "impacts": self.impacts, "sentences": self.sentences,
                "visible_frames": [int(v) for v in self.visible.sum(1)]}


# ----------------------------------------------------------------------------------- simulation

def _floor_y(z: float, height: int) -> float:
    return height * (FLOOR_NEAR - FLOOR_SPAN * z)


def _sample_objects(cfg: SceneConfig, rng: np.random.Generator) -> list[dict]:
    colors = rng.permutation(list(COLORS))[: cfg.num_objects]
    objects = []
    for i, color in enumerate(colors):
        # Object 0 always bounces (the scene has impacts); object 1 always crosses (a moving source).
        motion = "bounce" if i == 0 else "cross" if i == 1 else str(rng.choice(["bounce", "cross"]))
        objects.append({
            "index": i, "color": str(color), "shape": str(rng.choice(SHAPES)),
            "material": str(rng.choice(MATERIAL_NAMES)), "motion": motion,
            "size": float(rng.uniform(0.07, 0.13)), "depth": float(rng.uniform(0.1, 0.9)),
            "hum_hz": float(110.0 * 2 ** (rng.integers(0, 19) / 12.0)),
            "spin": float(rng.uniform(-3.0, 3.0)),
        })
    return objects


def _extent(shape: str, r: float, angle: float, dx: float, dy: float) -> float:
    """How far the rendered shape reaches from its centre along the unit direction ``(dx, dy)``
    (its support; rotation as in :func:`_render`)."""
    if shape == "circle":
        return r
    c, s = math.cos(angle), math.sin(angle)
    corners = ([(0.8, 0.8), (0.8, -0.8), (-0.8, 0.8), (-0.8, -0.8)] if shape == "square"
               else [(0.0, -1.0), (math.sqrt(0.75), 0.5), (-math.sqrt(0.75), 0.5)])
    return r * max((c * u - s * v) * dx + (s * u + c * v) * dy for u, v in corners)


def _simulate(cfg: SceneConfig, objects: list[dict], rng: np.random.Generator):
    """Per-frame centre (x, y) px, radius px and angle for each object (frame ``t`` = time ``t / fps``),
    plus impact events; contacts follow the module docstring's time convention."""
    H, W, T, fps = cfg.height, cfg.width, cfg.frames, cfg.fps
    centres = np.zeros((len(objects), T, 2))
    radii = np.zeros(len(objects))
    angles = np.zeros((len(objects), T))
    impacts = []
    for k, obj in enumerate(objects):
        z = obj["depth"]
        r = radii[k] = obj["size"] * min(H, W) * (1.0 - 0.5 * z)
        floor = _floor_y(z, H)
        if obj["motion"] == "bounce":
            x = rng.uniform(1.2 * r + CONTACT_PX, W - 1.2 * r - CONTACT_PX)   # clear of both walls
            y = rng.uniform(0.15 * H, max(0.16 * H, floor - r - 0.3 * H))
            vx = rng.choice([-1, 1]) * rng.uniform(0.2, 0.5) * W
            angle = rng.uniform(0, 2 * math.pi)
            _bounce(cfg, k, obj, r, floor, (x, y, vx, angle), centres[k], angles[k], impacts)
            continue
        # a crosser: off-screen in the first and the last frame, sliding along its floor line in between
        travel_time = max(T - 1, 1) / fps * rng.uniform(0.7, 0.95)
        speed = (W + 2.4 * r) / travel_time
        direction = rng.choice([-1, 1])
        x0 = -1.2 * r if direction > 0 else W + 1.2 * r
        angle = rng.uniform(0, 2 * math.pi)
        times = np.arange(T) / fps
        centres[k, :, 0] = x0 + direction * speed * times
        centres[k, :, 1] = floor - r
        angles[k] = angle + obj["spin"] * times
    impacts.sort(key=lambda e: (e["time"], e["object"]))
    return centres, radii, angles, impacts


def _bounce(cfg: SceneConfig, k: int, obj: dict, r: float, floor: float, start, centres, angles, impacts) -> None:
    """Integrate a bouncing object into ``centres [T,2]`` / ``angles [T]`` and append its impacts."""
    W, H, T, fps = cfg.width, cfg.height, cfg.frames, cfg.fps
    x, y, vx, angle = start
    vy, dt, gravity = 0.0, 1.0 / (fps * SUBSTEPS), 2.5 * H
    restitution = sound.MATERIALS[obj["material"]].restitution
    min_rebound = math.sqrt(2 * gravity * 0.3 * H)
    hold_vy = hold_vx = None            # rebound velocity while held on the floor / a wall until a frame time
    wall_side = 0

    def rest_y() -> float:              # centre y at which the outline touches the floor
        return floor - _extent(obj["shape"], r, angle, 0.0, 1.0)

    def wall_x(side: int) -> float:     # centre x at which the outline touches the left (-1) / right (+1) wall
        return (W if side > 0 else 0.0) - side * _extent(obj["shape"], r, angle, float(side), 0.0)

    def hit_floor(n: int) -> None:
        nonlocal vy, hold_vy
        strength = min(1.0, vy / math.sqrt(2 * gravity * 0.6 * H))
        impacts.append(_impact(k, obj, "floor", n, fps, x / W, strength))
        hold_vy, vy = -max(vy * restitution, min_rebound), 0.0

    def hit_wall(n: int, side: int) -> None:
        nonlocal vx, hold_vx, wall_side
        name = "left wall" if side < 0 else "right wall"
        impacts.append(_impact(k, obj, name, n, fps, wall_x(side) / W, min(1.0, abs(vx) / W)))
        hold_vx, vx, wall_side = -vx * restitution, 0.0, side

    for t in range(T):
        # contacts are resolved to the pixel: closer than CONTACT_PX to a surface it is approaching at a
        # frame time, the object touches it in this frame (the renderer could not show the gap)
        if hold_vy is None and vy > 0 and rest_y() - y < CONTACT_PX:
            hit_floor(t * SUBSTEPS)
            y = rest_y()
        for side in (-1, 1):
            if hold_vx is None and vx * side > 0 and (wall_x(side) - x) * side < CONTACT_PX:
                hit_wall(t * SUBSTEPS, side)
                x = wall_x(side)
        centres[t] = (x, y)
        angles[t] = angle
        if hold_vy is not None:         # leave the surface after the frame that shows the contact
            vy, hold_vy = hold_vy, None
        if hold_vx is not None:
            vx, hold_vx = hold_vx, None
        for n in range(t * SUBSTEPS + 1, (t + 1) * SUBSTEPS + 1) if t + 1 < T else ():
            angle += obj["spin"] * dt
            if hold_vy is None:
                vy += gravity * dt
                y += vy * dt
            if hold_vx is None:
                x += vx * dt
            if hold_vy is not None or y >= rest_y():
                if hold_vy is None and vy > 0:
                    hit_floor(n)
                y = rest_y()                    # on the floor (or pushed out of it by the spin)
            for side in (-1, 1):
                held = hold_vx is not None and side == wall_side
                if held or hold_vx is None and (x - wall_x(side)) * side >= 0:
                    if not held and vx * side > 0:
                        hit_wall(n, side)
                    x = wall_x(side)
                    break


def _impact(k: int, obj: dict, surface: str, substep: int, fps: float, x: float, strength: float) -> dict:
    """An impact at the end of substep ``substep`` (time ``substep / (SUBSTEPS * fps)``); it belongs to
    the first frame at or after it, ``ceil(substep / SUBSTEPS)``."""
    return {"object": k, "material": obj["material"], "surface": surface,
            "time": round(substep / (SUBSTEPS * fps), 5), "frame": -(-substep // SUBSTEPS),
            "substep": substep, "x": round(float(x), 4), "strength": round(float(strength), 4)}


# ------------------------------------------------------------------------------------ rendering

def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    return (v <= 0.5 * r) & (v >= -r + np.abs(u) * math.sqrt(3.0))       # triangle, apex up


def _background(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    rows = (np.arange(H) + 0.5) / H
    horizon = HORIZON
    image = np.zeros((H, W, 3), np.float32)
    depth = np.ones((H, W), np.float32)
    mix = (rows / horizon)[:, None]
    sky_top, sky_low = np.array([0.25, 0.30, 0.45]), np.array([0.55, 0.60, 0.70])
    floor_far, floor_near = np.array([0.35, 0.30, 0.25]), np.array([0.55, 0.45, 0.35])
    for i, row in enumerate(rows):
        if row < horizon:
            image[i] = sky_top + (sky_low - sky_top) * mix[i]
        else:
            z = np.clip((FLOOR_NEAR - row) / FLOOR_SPAN, 0.0, 1.0)
            image[i] = floor_near + (floor_far - floor_near) * z
            depth[i] = z
    # floor tiles: stripes that converge with depth give the depth map something to agree with
    xs = (np.arange(W) + 0.5) / W
    for i, row in enumerate(rows):
        if row >= horizon:
            z = np.clip((FLOOR_NEAR - row) / FLOOR_SPAN, 0.0, 1.0)
            scale = 1.0 - 0.5 * z
            stripe = (np.floor((xs - 0.5) / (0.1 * scale)) % 2 == 0)
            image[i, stripe] *= 0.92
    return image, depth


def _render(cfg: SceneConfig, objects, centres, radii, angles):
    H, W, T, N = cfg.height, cfg.width, cfg.frames, len(objects)
    bg, bg_depth = _background(H, W)
    frames = np.repeat(bg[None], T, axis=0)
    depth = np.repeat(bg_depth[None], T, axis=0)
    owner = np.full((T, H, W), -1, np.int16)
    order = sorted(range(N), key=lambda k: -objects[k]["depth"])          # far first (painter)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    for t in range(T):
        for k in order:
            cx, cy = centres[k, t]
            r = radii[k]
            x0, x1 = int(max(0, math.floor(cx - 1.2 * r))), int(min(W, math.ceil(cx + 1.2 * r) + 1))
            y0, y1 = int(max(0, math.floor(cy - 1.2 * r))), int(min(H, math.ceil(cy + 1.2 * r) + 1))
            if x0 >= x1 or y0 >= y1:
                continue
            du, dv = xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy
            c, s = math.cos(angles[k, t]), math.sin(angles[k, t])
            shape = objects[k]["shape"]
            u, v = (c * du + s * dv, -s * du + c * dv) if shape != "circle" else (du, dv)
            inside = _shape_mask(shape, u, v, r)
            if not inside.any():
                continue
            shade = 0.7 + 0.3 * np.clip(1.0 - np.sqrt(du ** 2 + (dv + 0.4 * r) ** 2) / (1.6 * r), 0, 1)
            colour = np.asarray(COLORS[objects[k]["color"]], np.float32)
            patch = frames[t, y0:y1, x0:x1]
            patch[inside] = colour * shade[inside, None]
            depth[t, y0:y1, x0:x1][inside] = objects[k]["depth"]
            owner[t, y0:y1, x0:x1][inside] = k
    masks = np.zeros((N, T, H, W), np.float32)
    for k in range(N):
        masks[k] = owner == k
    return frames, depth, masks


def _boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight pixel boxes ``[N,T,4]`` (zeros where not visible) and visibility ``[N,T]`` of the
    per-object masks (:func:`avlab.common.boxes.pixel_boxes`)."""
    N, T, H, W = masks.shape
    boxes, visible = pixel_boxes(torch.from_numpy(masks.reshape(N * T, H, W) > 0))
    return boxes.numpy().astype(np.float32).reshape(N, T, 4), visible.numpy().reshape(N, T)


# ---------------------------------------------------------------------------------------- audio

def _soundtrack(cfg: SceneConfig, objects, centres, impacts, rng: np.random.Generator) -> np.ndarray:
    """Stereo ``[2, S]``, ``S = round(frames·sr/fps)``: each impact starts on its ``sample``; moving
    sources are panned by their x, which is exact at each frame's first sample."""
    sr, fps, W = cfg.sample_rate, cfg.fps, cfg.width
    num_samples = media.num_audio_samples(cfg.frames, sr, fps)
    track = np.zeros((2, num_samples), np.float32)
    for event in impacts:
        obj = objects[event["object"]]
        mono = sound.impact(obj["material"], obj["size"], event["strength"], sr, rng)
        mono = mono * (1.0 - 0.6 * obj["depth"])                        # farther is quieter
        left, right = sound.pan_gains(np.array(event["x"]))
        sound.add_at(track, np.stack([mono * left, mono * right]), event["sample"])
    for k, obj in enumerate(objects):
        if obj["motion"] != "cross":
            continue
        x = centres[k, :, 0] / W
        outside = np.maximum(0.0, np.maximum(-x, x - 1.0))
        gain = 0.25 * (1.0 - 0.6 * obj["depth"]) * np.exp(-outside / 0.15)
        mono = sound.hum(obj["hum_hz"], num_samples, sr, rng) * sound.frames_to_samples(gain, fps, sr)
        left, right = sound.pan_gains(sound.frames_to_samples(x, fps, sr))
        track[0] += mono * left
        track[1] += mono * right
    return sound.normalise(track)


# ------------------------------------------------------------------------------------ sentences

def _sentence(obj: dict, xs: np.ndarray, visible: np.ndarray, width: int) -> str:
    name = f"the {obj['color']} {obj['shape']}"
    if obj["motion"] == "cross":
        direction = "left to right" if xs[-1] >= xs[0] else "right to left"
        return f"{name} moving from {direction}"
    seen = xs[visible] if visible.any() else xs
    where = seen.mean() / width
    side = "on the left" if where < 1 / 3 else "on the right" if where > 2 / 3 else "in the middle"
    return f"{name} bouncing {side}"


def make_scene(config: SceneConfig | None = None, **overrides) -> Scene:
    """Render one scene. ``make_scene(seed=3, frames=16)`` is a shorthand for a config."""
    from dataclasses import replace

    cfg = replace(config or SceneConfig(), **overrides)
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 0x5CE7E])
    objects = _sample_objects(cfg, rng)
    centres, radii, angles, impacts = _simulate(cfg, objects, rng)
    # onset sample of each impact: the pack's frame → sample rounding on the substep grid
    onsets = media.frame_sample_bounds(cfg.frames * SUBSTEPS, cfg.sample_rate, media.as_fps(cfg.fps) * SUBSTEPS)
    for event in impacts:
        event["sample"] = int(onsets[event.pop("substep")])
    frames, depth, masks = _render(cfg, objects, centres, radii, angles)
    boxes, visible = _boxes(masks)
    audio = _soundtrack(cfg, objects, centres, impacts, rng)
    sentences = [_sentence(o, centres[k, :, 0], visible[k], cfg.width) for k, o in enumerate(objects)]
    for k, obj in enumerate(objects):
        obj.pop("spin")
        if obj["motion"] != "cross":
            obj.pop("hum_hz")
        obj["radius_px"] = round(float(radii[k]), 3)
        obj["track_x"] = [round(float(v), 2) for v in centres[k, :, 0]]
        obj["track_y"] = [round(float(v), 2) for v in centres[k, :, 1]]
    return Scene(config=cfg, frames=torch.from_numpy(np.clip(frames, 0, 1, out=frames)),
                 masks=torch.from_numpy(masks), boxes=torch.from_numpy(boxes),
                 visible=torch.from_numpy(visible), depth=torch.from_numpy(depth),
                 audio=torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                 objects=objects, impacts=impacts, sentences=sentences)
