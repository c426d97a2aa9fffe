"""The edit decision list of a multi-camera concert edit (papers.md §3, "Edit decision"): which camera
is on air from when to when, as versioned JSON, and as files that editors open (OTIO, CMX 3600 EDL).

An :class:`EditDecisionList` is a list of :class:`Shot` ``(start_s, end_s, camera)`` that tiles
``[0, duration]`` without gaps or overlaps; ``camera`` indexes ``cameras`` (names or paths of
synchronised recordings: source time = program time). Times are seconds; the frame of a time is
``round(t · fps)`` (ties up) at the exact :class:`~fractions.Fraction` rate, so a cut at
``t = k / fps`` is frame ``k`` and 29.97 fps never drifts.

JSON (``to_json`` / ``from_json``), version 1::

    {"format": "avlab.concert_edit.edl", "version": 1,
     "fps": "30000/1001",                 # exact rate, "num/den"
     "duration_s": 600.0,                 # program length (= the master audio's)
     "cameras": ["cam1.mp4", "cam2.mp4"], # names or paths; shot "camera" indexes this list
     "audio": "master.wav",               # optional: the master audio
     "shots": [{"start_s": 0.0, "end_s": 4.2, "camera": 0,
                "start_frame": 0, "end_frame": 126,     # derived, written for readers, ignored on load
                "cut_score": null},                    # optional score of the cut that opens the shot
               ...],
     "metadata": {}}                      # free-form (e.g. the settings that made the edit)

Readers refuse a newer ``version``. Export: :meth:`EditDecisionList.write_otio` needs the optional
``opentimelineio`` package (imported lazily); :meth:`EditDecisionList.write_cmx_edl` uses OTIO's
``cmx_3600`` adapter (the ``otio-cmx3600-adapter`` package since OTIO 0.17) when it is installed,
else the pack's own writer (:func:`cmx_3600_text`): the format is a short text, one event per shot,
timecodes at the nominal rate of the real fps (drop-frame ``;`` for 29.97 / 59.94).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from ..common.errors import NodeInputError, import_optional
from ..common.media import as_fps

EDL_FORMAT = "avlab.concert_edit.edl"
EDL_VERSION = 1
_NODE = "EditDecisionList"
#: Tolerance for "contiguous" and "ends at duration" (seconds); JSON keeps floats exactly anyway.
_EPS = 1e-6


@dataclass(frozen=True)
class Shot:
    """Camera ``camera`` is on air over ``[start_s, end_s)`` (seconds of the program)."""

    start_s: float
    end_s: float
    camera: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def time_to_frame(t: float, fps: Fraction) -> int:
    """Frame of time ``t`` at ``fps``: ``round(t · fps)``, ties up (exact for ``t = k / fps`` floats)."""
    return math.floor(Fraction(repr(float(t))) * fps + Fraction(1, 2))


def _optional(package: str, module: str, what: str):
    """Import an optional dependency or raise an error that names the package to install."""
    return import_optional(package, module, _NODE, "format", what)


@dataclass
class EditDecisionList:
    """Shots tiling ``[0, duration]``, the cameras they index, the program frame rate.

    Args:
        shots: contiguous shots from 0 to ``duration``.
        cameras: names or paths of the cameras (``Shot.camera`` indexes this list).
        fps: program frame rate (anything :func:`avlab.common.media.as_fps` takes; kept as a Fraction).
        duration: program length in seconds.
        cut_scores: optional score per cut (``len(shots) - 1`` values: the model's probability, ...).
        audio: optional name/path of the master audio.
        metadata: free-form JSON-able settings.
    """

    shots: list[Shot]
    cameras: list[str]
    fps: Fraction
    duration: float
    cut_scores: list[float] | None = None
    audio: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fps = as_fps(self.fps, node=_NODE, input_name="fps")
        self.shots = [s if isinstance(s, Shot) else Shot(*s) for s in self.shots]
        self.cameras = [os.fspath(c) for c in self.cameras]
        self.audio = None if self.audio is None else os.fspath(self.audio)

    # -- derived
    @property
    def cut_times(self) -> list[float]:
        """Start time of every shot after the first."""
        return [s.start_s for s in self.shots[1:]]

    @property
    def num_frames(self) -> int:
        """Program frames: every frame time before ``duration`` (``ceil(duration · fps)``)."""
        return max(1, math.ceil(Fraction(repr(float(self.duration))) * self.fps - Fraction(1, 10**9)))

    def shot_frames(self) -> list[tuple[int, int, int]]:
        """``(start_frame, end_frame, camera)`` per shot; the last ends at :attr:`num_frames`."""
        bounds = [time_to_frame(s.start_s, self.fps) for s in self.shots] + [self.num_frames]
        return [(a, b, s.camera) for a, b, s in zip(bounds[:-1], bounds[1:], self.shots)]

    def camera_at(self, t: float) -> int:
        """Camera on air at time ``t`` (the last shot for ``t >= duration``)."""
        for shot in self.shots:
            if t < shot.end_s:
                return shot.camera
        return self.shots[-1].camera

    # -- validation
    def validate(self, node: str = _NODE) -> EditDecisionList:
        """Raise :class:`NodeInputError` unless the shots tile ``[0, duration]`` (contiguous, no
        overlap, each at least one frame long), cameras are in range and scores match the cuts."""
        if not self.cameras:
            raise NodeInputError(node, "cameras", "at least one camera name", "none")
        if not (isinstance(self.duration, (int, float)) and math.isfinite(self.duration) and self.duration > 0):
            raise NodeInputError(node, "duration", "a program length in seconds > 0", self.duration)
        if not self.shots:
            raise NodeInputError(node, "shots", "at least one shot", "none")
        if abs(self.shots[0].start_s) > _EPS:
            raise NodeInputError(node, "shots", "a first shot that starts at 0 s", self.shots[0])
        if abs(self.shots[-1].end_s - self.duration) > _EPS:
            raise NodeInputError(node, "shots", f"a last shot that ends at the duration ({self.duration:g} s)",
                                 self.shots[-1])
        for i, shot in enumerate(self.shots):
            if isinstance(shot.camera, bool) or not isinstance(shot.camera, int) or not 0 <= shot.camera < len(self.cameras):
                raise NodeInputError(node, "shots", f"camera indices 0..{len(self.cameras) - 1}",
                                     f"shot {i} with camera {shot.camera!r}")
            if not (math.isfinite(shot.start_s) and math.isfinite(shot.end_s) and shot.end_s > shot.start_s):
                raise NodeInputError(node, "shots", "shots with end_s > start_s", f"shot {i}: {shot}")
            if i and abs(shot.start_s - self.shots[i - 1].end_s) > _EPS:
                kind = "a gap" if shot.start_s > self.shots[i - 1].end_s else "an overlap"
                raise NodeInputError(node, "shots", "contiguous shots (each starts where the previous ends)",
                                     f"{kind} between shot {i - 1} ({self.shots[i - 1]}) and shot {i} ({shot})")
        for i, (a, b, _) in enumerate(self.shot_frames()):
            if b <= a:
                raise NodeInputError(node, "shots", f"shots of at least one frame at {self.fps} fps",
                                     f"shot {i} ({self.shots[i]}) covers no frame")
        if self.cut_scores is not None:
            if len(self.cut_scores) != len(self.shots) - 1:
                raise NodeInputError(node, "cut_scores", f"one score per cut ({len(self.shots) - 1})",
                                     f"{len(self.cut_scores)} scores")
            if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in self.cut_scores):
                raise NodeInputError(node, "cut_scores", "finite numbers", self.cut_scores)
        return self

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        frames = self.shot_frames()
        shots = []
        for i, (shot, (a, b, _)) in enumerate(zip(self.shots, frames)):
            score = None if i == 0 or self.cut_scores is None else float(self.cut_scores[i - 1])
            shots.append({"start_s": float(shot.start_s), "end_s": float(shot.end_s), "camera": int(shot.camera),
                          "start_frame": a, "end_frame": b, "cut_score": score})
        return {"format": EDL_FORMAT, "version": EDL_VERSION, "fps": f"{self.fps.numerator}/{self.fps.denominator}",
                "duration_s": float(self.duration), "cameras": list(self.cameras), "audio": self.audio,
                "shots": shots, "metadata": self.metadata}

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 1) -> str:
        """The JSON text (module docstring); written to ``path`` too when given."""
        self.validate()
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], node: str = _NODE) -> EditDecisionList:
        if not isinstance(data, dict) or data.get("format") != EDL_FORMAT:
            raise NodeInputError(node, "edl", f"an edit decision list JSON with \"format\": \"{EDL_FORMAT}\"",
                                 None if not isinstance(data, dict) else data.get("format"))
        version = data.get("version")
        if not isinstance(version, int) or not 1 <= version <= EDL_VERSION:
            raise NodeInputError(node, "edl", f"version 1..{EDL_VERSION} (a newer AVLab wrote this file?)", version)
        try:
            shots = [Shot(float(s["start_s"]), float(s["end_s"]), s["camera"]) for s in data["shots"]]
            scores = [s.get("cut_score") for s in data["shots"][1:]]
            cut_scores = None if all(x is None for x in scores) else [float("nan") if x is None else float(x)
                                                                      for x in scores]
            edl = cls(shots=shots, cameras=list(data["cameras"]), fps=as_fps(str(data["fps"]), node=node),
                      duration=float(data["duration_s"]), cut_scores=cut_scores, audio=data.get("audio"),
                      metadata=dict(data.get("metadata") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise NodeInputError(node, "edl", "the fields of an edit decision list (fps, duration_s, cameras, "
                                 "shots[start_s, end_s, camera])", f"{type(exc).__name__}: {exc}") from None
        return edl.validate(node)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str], node: str = _NODE) -> EditDecisionList:
        """Load from JSON text or a path to a JSON file."""
        text = os.fspath(source)
        if not text.lstrip().startswith("{"):
            if not os.path.isfile(text):
                raise NodeInputError(node, "edl", "an edit decision list JSON file or text", text)
            text = Path(text).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NodeInputError(node, "edl", "valid JSON", str(exc)) from None
        return cls.from_dict(data, node)

    # -- OTIO / CMX 3600
    def to_otio(self, *, name: str = "AVLab concert edit"):
        """An ``opentimelineio.schema.Timeline``: one video track with a clip per shot (source range =
        program range, the cameras are synchronised), and the master audio on an audio track."""
        otio = _optional("opentimelineio", "opentimelineio", "OTIO export")
        self.validate()
        rate = float(self.fps)
        rt, tr = otio.opentime.RationalTime, otio.opentime.TimeRange
        timeline = otio.schema.Timeline(name=name)
        timeline.metadata["avlab"] = {"format": EDL_FORMAT, "fps": f"{self.fps.numerator}/{self.fps.denominator}"}
        video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
        timeline.tracks.append(video)
        for i, (a, b, cam) in enumerate(self.shot_frames()):
            ref = otio.schema.ExternalReference(target_url=_url(self.cameras[cam]))
            clip = otio.schema.Clip(name=_clip_name(self.cameras[cam]), media_reference=ref,
                                    source_range=tr(rt(a, rate), rt(b - a, rate)))
            meta = {"camera": cam, "start_s": self.shots[i].start_s, "end_s": self.shots[i].end_s}
            if i and self.cut_scores is not None:
                meta["cut_score"] = float(self.cut_scores[i - 1])
            clip.metadata["avlab"] = meta
            clip.metadata["cmx_3600"] = {"reel": _reel(self.cameras[cam], cam, self.cameras)}   # 8 letters/digits, no spaces
            video.append(clip)
        if self.audio is not None:
            audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
            audio.append(otio.schema.Clip(
                name=_clip_name(self.audio), media_reference=otio.schema.ExternalReference(target_url=_url(self.audio)),
                source_range=tr(rt(0, rate), rt(self.num_frames, rate))))
            timeline.tracks.append(audio)
        return timeline

    def write_otio(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.otio`` file (needs ``opentimelineio``)."""
        otio = _optional("opentimelineio", "opentimelineio", "OTIO export")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        otio.adapters.write_to_file(self.to_otio(), str(path), adapter_name="otio_json")
        return path

    def write_cmx_edl(self, path: str | os.PathLike[str], *, title: str = "AVLab concert edit",
                      use_adapter: bool | None = None) -> Path:
        """Write a CMX 3600 ``.edl``: through OTIO's ``cmx_3600`` adapter when it is installed and
        OTIO has timecodes at this rate (or when ``use_adapter`` is True), else (or with
        ``use_adapter=False``) with the pack's :func:`cmx_3600_text` (any integer or NTSC rate)."""
        self.validate()
        if use_adapter is None:
            # OTIO's timecodes know the SMPTE rates only (24, 25, 29.97, 30, 48, 50, 59.94, 60, ...)
            use_adapter = cmx_adapter_available() and _otio_timecode_rate(self.fps)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if use_adapter:
            otio = _optional("otio-cmx3600-adapter", "opentimelineio", "CMX 3600 export through OTIO")
            if not cmx_adapter_available():
                raise NodeInputError(_NODE, "format", "the optional package 'otio-cmx3600-adapter' for CMX 3600 "
                                     "export through OTIO (pip install otio-cmx3600-adapter)", "not installed")
            _check_cmx_rate(self.fps)
            timeline = self.to_otio(name=title)
            for track in list(timeline.tracks):
                if track.kind != otio.schema.TrackKind.Video:
                    timeline.tracks.remove(track)  # an EDL is the picture edit; the audio is one file
            path.write_text(otio.adapters.write_to_string(timeline, "cmx_3600"))
        else:
            path.write_text(cmx_3600_text(self, title=title))
        return path


def cmx_adapter_available() -> bool:
    """True when ``opentimelineio`` and its ``cmx_3600`` adapter are installed."""
    try:
        import opentimelineio as otio

        return any(a.name == "cmx_3600" for a in otio.plugins.ActiveManifest().adapters)
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def _otio_timecode_rate(fps: Fraction) -> bool:
    """True when OTIO writes timecodes at ``fps`` (it refuses rates such as 5 or 12 fps)."""
    try:
        import opentimelineio as otio

        otio.opentime.to_timecode(otio.opentime.RationalTime(1, float(fps)), float(fps))
        return True
    except Exception:  # noqa: BLE001 - unsupported rate or no OTIO
        return False


def _url(path: str) -> str:
    return path if "://" in path else os.fspath(path)


def _clip_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


def _check_cmx_rate(fps: Fraction) -> tuple[int, bool]:
    """Nominal timecode rate and drop-frame flag of ``fps`` for CMX 3600, or an error."""
    if fps.denominator == 1:
        return fps.numerator, False
    if fps.denominator == 1001 and fps.numerator % 1000 == 0:
        nominal = fps.numerator // 1000
        return nominal, nominal in (30, 60)
    raise NodeInputError(_NODE, "fps", "an integer or NTSC (n·1000/1001) frame rate for CMX 3600 timecodes",
                         f"{fps} = {float(fps):.6g} fps")


def frames_to_timecode(frame: int, fps: Fraction) -> str:
    """SMPTE timecode of frame ``frame`` at ``fps``: ``HH:MM:SS:FF`` at the nominal rate, drop-frame
    (``HH:MM:SS;FF``, frame numbers 0 and 1 skipped each minute except every tenth) at 29.97 / 59.94."""
    nominal, drop = _check_cmx_rate(Fraction(fps))
    if drop:
        skip = 2 * nominal // 30                         # 2 at 29.97, 4 at 59.94
        per_10min = 10 * 60 * nominal - 9 * skip
        per_min = 60 * nominal - skip
        tens, rem = divmod(frame, per_10min)
        frame += 9 * skip * tens + (skip * ((rem - skip) // per_min) if rem >= skip else 0)
    ff = frame % nominal
    s = frame // nominal
    sep = ";" if drop else ":"
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}{sep}{ff:02d}"


def _reel(name: str, index: int | None = None, names: Sequence[str] = ()) -> str:
    """An 8-character CMX reel name from a camera name (letters and digits only). Editors relink by
    reel, so when two cameras of ``names`` would share one, each gets its camera number at the end."""
    def stem(n: str) -> str:
        return (re.sub(r"[^A-Za-z0-9]", "", os.path.splitext(_clip_name(n))[0]).upper() or "AX")[:8]

    reel = stem(name)
    if index is not None and sum(stem(n) == reel for n in names) > 1:
        tag = f"{index + 1:02d}"
        reel = reel[: 8 - len(tag)] + tag
    return reel


def cmx_3600_text(edl: EditDecisionList, *, title: str = "AVLab concert edit") -> str:
    """The pack's own CMX 3600 writer: one cut event per shot, source in/out = record in/out (the
    cameras are synchronised), the camera file named in ``* FROM CLIP NAME`` / ``* FROM CLIP`` (Avid style)."""
    edl.validate()
    _, drop = _check_cmx_rate(edl.fps)
    lines = [f"TITLE: {title}", f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}", ""]
    for i, (a, b, cam) in enumerate(edl.shot_frames(), start=1):
        tc_in, tc_out = frames_to_timecode(a, edl.fps), frames_to_timecode(b, edl.fps)
        lines.append(f"{i:03d}  {_reel(edl.cameras[cam], cam, edl.cameras):<8} V     C        {tc_in} {tc_out} {tc_in} {tc_out}")
        lines.append(f"* FROM CLIP NAME: {_clip_name(edl.cameras[cam])}")
        lines.append(f"* FROM CLIP: {edl.cameras[cam]}")
    return "\n".join(lines) + "\n"


def shots_from_cuts(cut_times: Sequence[float], cameras_per_shot: Sequence[int], duration: float) -> list[Shot]:
    """Shots from sorted cut times and one camera per shot (``len(cut_times) + 1`` cameras)."""
    if len(cameras_per_shot) != len(cut_times) + 1:
        raise NodeInputError(_NODE, "cameras_per_shot", f"{len(cut_times) + 1} cameras (one per shot)",
                             len(cameras_per_shot))
    bounds = [0.0, *map(float, cut_times), float(duration)]
    return [Shot(a, b, int(c)) for a, b, c in zip(bounds[:-1], bounds[1:], cameras_per_shot)]
