"""Concert-cutting nodes (category ``AVLab/Concert``, papers.md §3): when to cut, which camera next,
and the finished multi-camera edit.

Thin adapters over :mod:`avlab.concert_edit`. A set of synchronised cameras travels as one
``AVLAB_CAMERAS`` value (``AVLab Camera Set`` builds it from IMAGE batches; ``AVLab Synthetic
Concert`` gives one), the models as ``AVLAB_CONCERT_MODELS``, the cut points as
``AVLAB_CONCERT_CUTS`` and the edit as ``AVLAB_EDIT_LIST`` (an
:class:`~avlab.concert_edit.edl.EditDecisionList`). Long recordings are better edited with
``python -m avlab concert edit`` (streams the camera files; these nodes hold frames in memory).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..common import media
from ..common.errors import NodeInputError
from . import paths

logger = logging.getLogger(__name__)

CAMERAS = io.Custom("AVLAB_CAMERAS")
MODELS = io.Custom("AVLAB_CONCERT_MODELS")
CUTS = io.Custom("AVLAB_CONCERT_CUTS")
EDIT_LIST = io.Custom("AVLAB_EDIT_LIST")

#: Choice of the concert model loader that means the pack's own models (trained on the synthetic domain).
BUILTIN = "built-in (synthetic domain)"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "weights" / "concert"
MAX_CAMERAS = 6
#: How much longer than the cameras the master audio may be (AAC tracks routinely run a few tens of
#: ms past the last frame): the last camera frame is held. The same rule as ``concert_edit.render``.
AUDIO_TOLERANCE_S = 0.5


@dataclass
class CameraSet:
    """Synchronised cameras: ``frames[k]`` is camera k's IMAGE batch ``[T,H,W,3]``; one frame rate."""

    frames: list[torch.Tensor]
    fps: Fraction
    names: list[str]

    @property
    def num_frames(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def duration(self) -> float:
        return float(Fraction(self.num_frames) / self.fps)


@dataclass
class ConcertCuts:
    """Cut points of ``AVLab Concert Cut Points``: times, the segment probabilities, the settings."""

    cut_times: list[float]
    duration: float
    fps: Fraction
    segment_probs: list[float | None]   # None: not asked (the segment already held a cut, or none was allowed)
    segments: list[tuple[float, float]]
    forced: list[int]
    min_shot_s: float
    max_shot_s: float
    scores: list[float]

    def to_dict(self) -> dict:
        return {"cut_times": self.cut_times, "duration": self.duration, "fps": str(self.fps),
                "segment_probabilities": self.segment_probs, "segments": self.segments,
                "forced_cuts": self.forced, "min_shot_s": self.min_shot_s, "max_shot_s": self.max_shot_s}


def make_camera_set(node: str, images: dict[str, torch.Tensor | None], fps: float) -> CameraSet:
    """Check and pack IMAGE batches (input name → batch) into a :class:`CameraSet`."""
    rate = media.as_fps(fps, node=node, input_name="fps")
    given = [(name, img) for name, img in images.items() if img is not None]
    if len(given) < 2:
        raise NodeInputError(node, "camera_2", "at least two cameras (an edit needs a camera to cut to)",
                             f"{len(given)} camera")
    frames, shapes = [], set()
    for name, img in given:
        frames.append(media.image_to_frames(img, node=node, input_name=name))
        shapes.add(tuple(frames[-1].shape[1:3]))
    lengths = {f.shape[0] for f in frames}
    if len(lengths) != 1:
        detail = ", ".join(f"{n}: {f.shape[0]}" for (n, _), f in zip(given, frames))
        raise NodeInputError(node, given[1][0], "cameras with the same number of frames (synchronised recordings "
                             "of one performance; trim them to a common range first)", detail)
    if len(shapes) != 1:
        detail = ", ".join(f"{n}: {f.shape[2]}x{f.shape[1]}" for (n, _), f in zip(given, frames))
        raise NodeInputError(node, given[1][0], "cameras of the same frame size (resize them first)", detail)
    return CameraSet(frames, rate, [name for name, _ in given])


class _ClipVisionEncoder:
    """ComfyUI's CLIP_VISION behind :class:`avlab.concert_edit.features.ImageEncoder` (image embeds)."""

    def __init__(self, clip_vision):
        self.clip_vision = clip_vision
        with torch.no_grad():
            probe = clip_vision.encode_image(torch.zeros(1, 224, 224, 3))
        self.dim = int(probe.image_embeds.shape[-1])

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        out = [self.clip_vision.encode_image(frames[i:i + 16]).image_embeds.float().cpu()
               for i in range(0, len(frames), 16)]
        return torch.cat(out)


def check_audio_fits_cameras(node: str, input_name: str, seconds: float, cameras: CameraSet) -> None:
    """Refuse audio (or cuts) longer than the cameras by more than :data:`AUDIO_TOLERANCE_S`."""
    if seconds > cameras.duration + AUDIO_TOLERANCE_S:
        raise NodeInputError(node, input_name, f"at most {AUDIO_TOLERANCE_S:g} s longer than the cameras "
                             f"({cameras.duration:.2f} s; trim the audio or extend the recordings)", f"{seconds:.2f} s")


def _encoder(node: str, clip_vision, dim: int):
    """The CLIP_VISION adapter, checked against the embedding width the model was trained on."""
    if clip_vision is None:
        return None
    encoder = _ClipVisionEncoder(clip_vision)
    if encoder.dim != dim:
        raise NodeInputError(node, "clip_vision", f"an image encoder with {dim}-d embeddings, as the model was trained "
                             "on (the built-in models use their own encoder: leave clip_vision empty)",
                             f"{encoder.dim}-d image embeds")
    return encoder


def _model_choices() -> list[str]:
    return [BUILTIN, *paths.model_subfolders(paths.CONCERT, "when_audio.safetensors")]


def _plot_cuts(cuts: ConcertCuts, threshold: float, width: int = 640, height: int = 160) -> torch.Tensor:
    """IMAGE ``[1,H,W,3]``: a bar per segment (P(cut), the paper's 4 s / 2 s windows, drawn over the
    middle 2 s of each; a grey tick where it was not asked), the threshold as a grey line, the chosen
    cuts as red lines (forced: orange)."""
    img = np.full((height, width, 3), 0.97, dtype=np.float32)
    sx = width / max(cuts.duration, 1e-9)
    for (a, b), p in zip(cuts.segments, cuts.segment_probs):
        x0, x1 = int((a + 1.0) * sx), max(int((a + 1.0) * sx) + 1, int((b - 1.0) * sx))
        if p is None:                                   # not asked: a thin grey tick at the bottom
            img[height - 3:, max(0, x0):min(width, x1)] = (0.75, 0.75, 0.75)
            continue
        y0 = int(round((1.0 - p) * (height - 1)))
        img[y0:, max(0, x0):min(width, x1)] = (0.35, 0.55, 0.85)
    ty = int(round((1.0 - threshold) * (height - 1)))
    img[ty, :] = (0.5, 0.5, 0.5)
    for i, t in enumerate(cuts.cut_times):
        x = min(width - 1, int(t * sx))
        img[:, max(0, x - 1):x + 1] = (0.95, 0.55, 0.1) if i in cuts.forced else (0.85, 0.1, 0.1)
    return torch.from_numpy(img)[None]


class AVLabCameraSet(io.ComfyNode):
    """Synchronised camera recordings (IMAGE batches of equal length and size) → one AVLAB_CAMERAS."""

    NAME = "AVLab Camera Set"

    @classmethod
    def define_schema(cls) -> io.Schema:
        cams = [io.Image.Input(f"camera_{k}", optional=k > 2,
                               tooltip=f"Camera {k}: frames of one synchronised recording"
                               + (" (camera 1 is the first shot of the edit, e.g. the wide shot)." if k == 1 else "."))
                for k in range(1, MAX_CAMERAS + 1)]
        return io.Schema(
            node_id="AVLabCameraSet", display_name=cls.NAME, category="AVLab/Concert",
            description="Collects 2 to 6 synchronised camera recordings of one performance (same frame count, "
            "size and frame rate) for the concert-cutting nodes.",
            inputs=[io.Float.Input("fps", default=5.0, min=0.1, max=240.0, step=0.001,
                                   tooltip="Frame rate of every camera (e.g. from Get Video Components)."),
                    *cams],
            outputs=[CAMERAS.Output(display_name="cameras")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, fps: float, **cameras) -> io.NodeOutput:
        images = {f"camera_{k}": cameras.get(f"camera_{k}") for k in range(1, MAX_CAMERAS + 1)}
        return io.NodeOutput(make_camera_set(cls.NAME, images, fps))


class AVLabConcertModelLoader(io.ComfyNode):
    """The when-to-cut and how-to-cut models of one folder (``models/avlab/concert/<name>/``)."""

    NAME = "AVLab Concert Model Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabConcertModelLoader", display_name=cls.NAME, category="AVLab/Concert",
            description="Loads the concert-cutting models (papers.md §3): when_audio (required), when_multimodal "
            "(optional) and how, each .safetensors + .json, from a folder in ComfyUI/models/avlab/concert/, or the "
            "pack's own models trained on its synthetic concerts.",
            inputs=[io.Combo.Input("model", options=_model_choices(), default=BUILTIN,
                                   tooltip="A folder in models/avlab/concert/ holding when_audio.safetensors, "
                                   "how.safetensors (+ .json each), or the built-in synthetic-domain models.")],
            outputs=[MODELS.Output(display_name="models")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model: str) -> io.NodeOutput:
        from ..concert_edit.models import load_concert_models

        directory = BUILTIN_DIR if model == BUILTIN else paths.model_subfolder(cls.NAME, paths.CONCERT, model)
        return io.NodeOutput(load_concert_models(directory))


class AVLabConcertCutPoints(io.ComfyNode):
    """When to cut (papers.md §3): the when-to-cut model over 4 s segments of the music → cut times."""

    NAME = "AVLab Concert Cut Points"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabConcertCutPoints", display_name=cls.NAME, category="AVLab/Concert",
            description="Scores every 4 s segment of the audio (2 s hop) with the when-to-cut model — log-mel "
            "audio, the time since the last cut and, for the multimodal variant, an embedding of the latest "
            "frame — and places cuts on the music (the quiet moment before an onset) inside the segments it "
            "picks, keeping every shot between min_shot_s and max_shot_s.",
            inputs=[
                MODELS.Input("models", tooltip="From AVLab Concert Model Loader."),
                io.Audio.Input("audio", tooltip="The master audio of the performance (any sample rate; resampled to 16 kHz)."),
                io.Combo.Input("variant", options=["audio", "multimodal"], default="audio",
                               tooltip="audio: music + time since the last cut (the paper's best recall/F1). "
                               "multimodal: also the latest frame of the first camera (best precision); needs cameras."),
                io.Float.Input("threshold", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Cut in a segment whose cut probability reaches this value. -1: the model's "
                               "own threshold, tuned for F1 on its validation concerts (0.37 for the built-in audio model)."),
                io.Float.Input("min_shot_s", default=2.0, min=0.2, max=600.0, step=0.1,
                               tooltip="No shot shorter than this (seconds)."),
                io.Float.Input("max_shot_s", default=20.0, min=0.5, max=3600.0, step=0.5,
                               tooltip="No shot longer than this (seconds): a cut is forced at the best place."),
                io.Float.Input("fps", default=5.0, min=0.1, max=240.0, step=0.001,
                               tooltip="Frame rate of the program: cuts fall on its frames. Ignored when cameras are given "
                               "(their frame rate is used)."),
                CAMERAS.Input("cameras", optional=True, tooltip="The cameras (multimodal variant; also sets the frame rate)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Image encoder for the multimodal variant; only for models trained on its "
                                    "embeddings (the built-in models use their own encoder: leave empty)."),
            ],
            outputs=[CUTS.Output(display_name="cuts"),
                     io.String.Output(display_name="cuts_json", tooltip="Cut times, segment probabilities, settings."),
                     io.Image.Output(display_name="plot", tooltip="P(cut) per segment, threshold, cuts (forced: orange).")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, models, audio, variant: str, threshold: float, min_shot_s: float, max_shot_s: float,
                fps: float, cameras: CameraSet | None = None, clip_vision=None) -> io.NodeOutput:
        from ..concert_edit.decide import decide_edit, frame_energy

        waveform, sample_rate = media.audio_to_waveform(audio, node=cls.NAME, input_name="audio")
        if waveform.shape[-1] == 0:
            raise NodeInputError(cls.NAME, "audio", "audio with samples", "an empty waveform")
        if variant == "multimodal" and cameras is None:
            raise NodeInputError(cls.NAME, "cameras", "cameras for the multimodal variant (or variant 'audio')", None)
        rate = cameras.fps if cameras is not None else media.as_fps(fps, node=cls.NAME, input_name="fps")
        duration = waveform.shape[-1] / sample_rate
        if cameras is not None:
            check_audio_fits_cameras(cls.NAME, "audio", duration, cameras)
        if variant not in models.variants:
            raise NodeInputError(cls.NAME, "variant", f"a variant the model folder holds: {models.variants}", variant)
        encoder = None
        if variant == "multimodal":
            encoder = _encoder(cls.NAME, clip_vision, models.when[variant].config.image_dim)
        when_fn = models.make_when_fn(waveform, sample_rate, cameras=None if cameras is None else cameras.frames,
                                      fps=rate, variant=variant, encoder=encoder)
        probs: dict[int, float] = {}

        def recorded(i: int, since: float) -> float:
            probs[i] = when_fn(i, since)
            return probs[i]

        if threshold < 0:
            threshold = models.threshold(variant)
        edl = decide_edit(when_fn.segment_times, duration, recorded, lambda cur, t, cands: [0.0] * len(cands),
                          cameras=1, fps=rate, min_shot_s=min_shot_s, max_shot_s=max_shot_s, threshold=threshold,
                          energy=frame_energy(waveform, sample_rate, rate), node=cls.NAME)
        segments = [tuple(map(float, s)) for s in when_fn.segment_times]
        cuts = ConcertCuts(edl.cut_times, duration, rate, [probs.get(i) for i in range(len(segments))],
                           segments, list(edl.metadata.get("forced_cuts", [])), min_shot_s, max_shot_s,
                           list(edl.cut_scores or []))
        logger.info("%s: %d cuts in %.1f s (%d forced by max_shot_s)", cls.NAME, len(cuts.cut_times), duration,
                    len(cuts.forced))
        return io.NodeOutput(cuts, json.dumps(cuts.to_dict()), _plot_cuts(cuts, threshold))


class AVLabCameraSelector(io.ComfyNode):
    """How to cut (papers.md §3): at every cut the how-to-cut model picks the next camera."""

    NAME = "AVLab Camera Selector"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabCameraSelector", display_name=cls.NAME, category="AVLab/Concert",
            description="At every cut, embeds the shot on air (its last frame) and every other camera (the frame at "
            "the cut) and lets the how-to-cut model's attention choose the next camera; gives the edit decision "
            "list (cut times + camera per shot).",
            inputs=[
                MODELS.Input("models", tooltip="From AVLab Concert Model Loader (uses its how model)."),
                CUTS.Input("cuts", tooltip="From AVLab Concert Cut Points."),
                CAMERAS.Input("cameras", tooltip="The synchronised cameras (AVLab Camera Set)."),
                io.Int.Input("first_camera", default=1, min=1, max=MAX_CAMERAS,
                             tooltip="Camera of the first shot (1 = camera_1, usually the wide shot)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Image encoder; only for how models trained on its embeddings (the "
                                    "built-in model uses its own: leave empty)."),
            ],
            outputs=[EDIT_LIST.Output(display_name="edit_list"),
                     io.String.Output(display_name="edit_json", tooltip="The edit decision list as JSON.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, models, cuts: ConcertCuts, cameras: CameraSet, first_camera: int,
                clip_vision=None) -> io.NodeOutput:
        from ..concert_edit.edl import EditDecisionList, shots_from_cuts

        k = len(cameras.frames)
        if cuts.fps != cameras.fps:
            raise NodeInputError(cls.NAME, "cuts", f"cut points made at the cameras' {cameras.fps} fps (connect the "
                                 "cameras to Concert Cut Points too)", f"{cuts.fps} fps")
        check_audio_fits_cameras(cls.NAME, "cuts", cuts.duration, cameras)
        if not 1 <= first_camera <= k:
            raise NodeInputError(cls.NAME, "first_camera", f"a camera number in 1..{k}", first_camera)
        if models.how is None:
            raise NodeInputError(cls.NAME, "models", "a model folder with how.safetensors", "no how model")
        how_fn = models.make_how_fn(cameras.frames, cameras.fps,
                                    encoder=_encoder(cls.NAME, clip_vision, models.how.config.embed_dim))
        on_air = [first_camera - 1]
        for t in cuts.cut_times:
            candidates = [c for c in range(k) if c != on_air[-1]]
            scores = how_fn(on_air[-1], t, candidates)
            on_air.append(candidates[int(np.argmax(scores))])
        edl = EditDecisionList(shots_from_cuts(cuts.cut_times, on_air, cuts.duration), cameras.names, cameras.fps,
                               cuts.duration, cut_scores=cuts.scores or None,
                               metadata={"min_shot_s": cuts.min_shot_s, "max_shot_s": cuts.max_shot_s,
                                         "forced_cuts": cuts.forced}).validate(cls.NAME)
        return io.NodeOutput(edl, edl.to_json())


class AVLabRenderEdit(io.ComfyNode):
    """The finished edit: the program frames (camera on air at every frame) with the master audio."""

    NAME = "AVLab Render Edit"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabRenderEdit", display_name=cls.NAME, category="AVLab/Concert",
            description="Assembles the program from the cameras by the edit decision list and keeps the master "
            "audio; the program lasts as long as the audio. Save it with the native Save Video node.",
            inputs=[
                EDIT_LIST.Input("edit_list", tooltip="From AVLab Camera Selector."),
                CAMERAS.Input("cameras", tooltip="The same cameras the edit list was made for."),
                io.Audio.Input("audio", tooltip="The master audio (its length is the program's)."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="Program frames + master audio at the cameras' fps."),
                     io.Image.Output(display_name="program", tooltip="The program frames."),
                     io.Audio.Output(display_name="audio", tooltip="The master audio.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, edit_list, cameras: CameraSet, audio) -> io.NodeOutput:
        from .media import video_from_frames

        edl = edit_list.validate(cls.NAME)
        if len(edl.cameras) != len(cameras.frames):
            raise NodeInputError(cls.NAME, "cameras", f"the {len(edl.cameras)} cameras the edit list was made for",
                                 f"{len(cameras.frames)} cameras")
        if edl.fps != cameras.fps:
            raise NodeInputError(cls.NAME, "cameras", f"cameras at the edit list's {edl.fps} fps", str(cameras.fps))
        waveform, sample_rate = media.audio_to_waveform(audio, node=cls.NAME, input_name="audio")
        seconds = waveform.shape[-1] / sample_rate
        if abs(seconds - edl.duration) > 1.0 / float(edl.fps):
            raise NodeInputError(cls.NAME, "audio", f"the audio the edit list was made for ({edl.duration:.2f} s)",
                                 f"{seconds:.2f} s")
        check_audio_fits_cameras(cls.NAME, "audio", seconds, cameras)
        n, have = edl.num_frames, cameras.num_frames
        program = torch.empty((n, *cameras.frames[0].shape[1:]), dtype=torch.float32)
        for start, end, cam in edl.shot_frames():
            src_end = min(end, have)
            if start < src_end:
                program[start:src_end] = cameras.frames[cam][start:src_end]
            if end > have:                              # audio a little past the last frame: hold it
                program[max(start, have):end] = cameras.frames[cam][have - 1]
        program.clamp_(0.0, 1.0)                        # one tensor for the VIDEO and the IMAGE output
        out_audio = media.waveform_to_audio(waveform, sample_rate)
        return io.NodeOutput(video_from_frames(program, cameras.fps, out_audio), program, out_audio)


class AVLabSaveEditList(io.ComfyNode):
    """Writes the edit decision list for editing software: JSON, OpenTimelineIO and CMX 3600 EDL."""

    NAME = "AVLab Save Edit List"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSaveEditList", display_name=cls.NAME, category="AVLab/Concert",
            description="Saves the edit decision list in ComfyUI's output folder as .json (AVLab's format), "
            ".otio (OpenTimelineIO; needs the opentimelineio package) and .edl (CMX 3600; integer or NTSC frame "
            "rates), for editors that relink the camera files. A format that cannot be written is logged and skipped.",
            inputs=[EDIT_LIST.Input("edit_list", tooltip="From AVLab Camera Selector."),
                    io.String.Input("filename_prefix", default="AVLab/concert_edit",
                                    tooltip="Path inside ComfyUI's output folder, without extension.")],
            outputs=[io.String.Output(display_name="files", tooltip="The written files, one per line.")],
            is_output_node=True, is_experimental=True,
        )

    @classmethod
    def execute(cls, edit_list, filename_prefix: str) -> io.NodeOutput:
        from .media import output_path

        folder, name, counter, _ = output_path(cls.NAME, filename_prefix)
        os.makedirs(folder, exist_ok=True)
        base = os.path.join(folder, f"{name}_{counter:05}")
        edit_list.validate(cls.NAME).to_json(base + ".json")
        written = [base + ".json"]
        for ext, write in ((".edl", edit_list.write_cmx_edl), (".otio", edit_list.write_otio)):
            try:        # CMX timecodes need an integer or NTSC rate; .otio needs opentimelineio
                written.append(str(write(base + ext)))
            except NodeInputError as exc:
                logger.warning("%s: no %s written (%s)", cls.NAME, ext, exc)
        return io.NodeOutput("\n".join(written), ui=ui.PreviewText("\n".join(written)))


NODES = [AVLabCameraSet, AVLabConcertModelLoader, AVLabConcertCutPoints, AVLabCameraSelector, AVLabRenderEdit,
         AVLabSaveEditList]
