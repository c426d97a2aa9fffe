"""Host tier: the concert-cutting graph (papers.md §3) through ``POST /prompt`` in a real ComfyUI —
synthetic concert → built-in models → cut points → camera selector → render → native Save Video,
plus the edit list files and the bad inputs a user meets first."""

from __future__ import annotations

import json

import av
import pytest

from comfy_host import ExecutionFailed

CONCERT = dict(seed=21, num_cameras=3, duration=24.0, fps=5.0, width=96, height=54, sample_rate=16000)


def _edit_graph(prefix: str, variant: str = "audio", **concert) -> dict:
    return {
        "concert": {"class_type": "AVLabSyntheticConcert", "inputs": {**CONCERT, **concert}},
        "models": {"class_type": "AVLabConcertModelLoader", "inputs": {"model": "built-in (synthetic domain)"}},
        "cuts": {"class_type": "AVLabConcertCutPoints", "inputs": {
            "models": ["models", 0], "audio": ["concert", 2], "variant": variant, "threshold": -1.0,
            "min_shot_s": 2.0, "max_shot_s": 12.0, "fps": 5.0, "cameras": ["concert", 5]}},
        "select": {"class_type": "AVLabCameraSelector", "inputs": {
            "models": ["models", 0], "cuts": ["cuts", 0], "cameras": ["concert", 5], "first_camera": 1}},
        "render": {"class_type": "AVLabRenderEdit", "inputs": {
            "edit_list": ["select", 0], "cameras": ["concert", 5], "audio": ["concert", 2]}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["render", 0], "filename_prefix": f"{prefix}/edit",
                                                        "format": "mp4", "codec": "h264"}},
        "save_list": {"class_type": "AVLabSaveEditList", "inputs": {"edit_list": ["select", 0],
                                                                    "filename_prefix": f"{prefix}/edit_list"}},
        "plot": {"class_type": "PreviewImage", "inputs": {"images": ["cuts", 2]}},
        "truth": {"class_type": "PreviewAny", "inputs": {"source": ["concert", 4]}},
        "json": {"class_type": "PreviewAny", "inputs": {"source": ["select", 1]}},
    }


@pytest.mark.parametrize("variant", ["audio", "multimodal"])
def test_concert_edit_graph_writes_the_edited_video_and_its_edit_list(comfy_host, comfy_client, variant):
    history = comfy_client.run(_edit_graph(f"concert/{variant}", variant), timeout=600)
    [video] = comfy_host.output_files(history, "save")
    with av.open(str(video)) as container:
        v = container.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (96, 54)
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(video)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].codec_context.sample_rate
    assert frames == 24 * 5                                      # the program lasts as long as the audio
    assert abs(samples / rate - 24.0) <= 1024 / rate + 1e-6      # AAC pads to whole 1024-sample frames
    edit = json.loads(history["outputs"]["json"]["text"][0])
    shots = edit["shots"]
    assert shots[0]["start_s"] == 0 and abs(shots[-1]["end_s"] - 24.0) < 1e-6
    assert len(shots) >= 2 and all(2.0 - 1e-6 <= s["end_s"] - s["start_s"] <= 12.0 + 1e-6 for s in shots)
    assert all(a["camera"] != b["camera"] for a, b in zip(shots, shots[1:]))   # every cut changes camera
    files = history["outputs"]["save_list"]["text"][0].splitlines()
    assert any(f.endswith(".json") for f in files) and any(f.endswith(".edl") for f in files)
    listed = comfy_host.output_dir / "concert" / variant
    assert sorted(p.suffix for p in listed.glob("edit_list_*")) >= [".edl", ".json"]


def test_camera_set_refuses_a_single_camera(comfy_client):
    graph = {
        "concert": {"class_type": "AVLabSyntheticConcert", "inputs": dict(CONCERT, duration=8.0)},
        "set": {"class_type": "AVLabCameraSet", "inputs": {"fps": 5.0, "camera_1": ["concert", 0]}},
        "preview": {"class_type": "PreviewAny", "inputs": {"source": ["set", 0]}},
    }
    with pytest.raises(Exception) as info:     # rejected at validation (required input) or at run time
        comfy_client.run(graph, timeout=300)
    assert "camera_2" in str(info.value)


def test_camera_set_refuses_cameras_of_different_lengths(comfy_client):
    graph = {
        "a": {"class_type": "AVLabSyntheticConcert", "inputs": dict(CONCERT, duration=8.0)},
        "b": {"class_type": "AVLabSyntheticConcert", "inputs": dict(CONCERT, duration=10.0)},
        "set": {"class_type": "AVLabCameraSet", "inputs": {"fps": 5.0, "camera_1": ["a", 0], "camera_2": ["b", 0]}},
        "preview": {"class_type": "PreviewAny", "inputs": {"source": ["set", 0]}},
    }
    with pytest.raises(ExecutionFailed) as info:
        comfy_client.run(graph, timeout=300)
    msg = str(info.value)
    assert "AVLab Camera Set" in msg and "camera_2" in msg and "same number of frames" in msg
    assert "camera_1: 40" in msg and "camera_2: 50" in msg


def test_render_refuses_audio_of_another_length(comfy_client):
    graph = _edit_graph("concert/bad_audio")
    graph["other"] = {"class_type": "AVLabSyntheticConcert", "inputs": dict(CONCERT, duration=30.0)}
    graph["render"]["inputs"]["audio"] = ["other", 2]
    with pytest.raises(ExecutionFailed) as info:
        comfy_client.run(graph, timeout=600)
    msg = str(info.value)
    assert "AVLab Render Edit" in msg and "'audio'" in msg and "24.00 s" in msg and "30.00 s" in msg


def test_render_holds_the_last_frame_for_audio_a_little_longer_than_the_cameras(comfy_inprocess):
    """Real recordings: the AAC track runs ~1024 samples past the last frame. The program lasts as
    long as the audio (last frame held); more than 0.5 s longer is refused, naming the input."""
    from fractions import Fraction

    import torch

    from avlab.concert_edit.edl import EditDecisionList, Shot
    from avlab.nodes import concert as nodes

    fps, sr, n = Fraction(30000, 1001), 48000, 300
    cams = nodes.CameraSet([torch.full((n, 8, 8, 3), v) for v in (0.2, 0.8)], fps, ["a", "b"])
    seconds = float(n / fps) + 1024 / sr
    audio = {"waveform": torch.zeros(1, 2, round(seconds * sr)), "sample_rate": sr}
    edl = EditDecisionList([Shot(0.0, 5.0, 0), Shot(5.0, seconds, 1)], ["a", "b"], fps, seconds)
    video, program, _ = nodes.AVLabRenderEdit.execute(edl, cams, audio).result
    assert program.shape[0] == edl.num_frames == n + 1
    assert float(program[-1].mean()) == pytest.approx(0.8) and float(program[0].mean()) == pytest.approx(0.2)
    too_long = {"waveform": torch.zeros(1, 2, round((float(n / fps) + 0.8) * sr)), "sample_rate": sr}
    edl_long = EditDecisionList([Shot(0.0, float(n / fps) + 0.8, 0)], ["a", "b"], fps, float(n / fps) + 0.8)
    with pytest.raises(nodes.NodeInputError, match="AVLab Render Edit: input 'audio' expected at most 0.5 s longer"):
        nodes.AVLabRenderEdit.execute(edl_long, cams, too_long)


def test_save_edit_list_skips_a_format_the_rate_cannot_hold(comfy_inprocess, tmp_path, monkeypatch):
    """12.5 fps has no CMX 3600 timecode: the .json (and .otio) are written, the .edl is skipped."""
    import folder_paths

    from avlab.concert_edit.edl import EditDecisionList, Shot
    from avlab.nodes import concert as nodes

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    edl = EditDecisionList([Shot(0.0, 4.0, 0), Shot(4.0, 8.0, 1)], ["a.mp4", "b.mp4"], "25/2", 8.0)
    files = nodes.AVLabSaveEditList.execute(edl, "concert/rate").result[0].splitlines()
    assert files[0].endswith(".json") and not any(f.endswith(".edl") for f in files)


def test_a_clip_vision_of_another_width_is_refused_naming_the_input(comfy_inprocess):
    """The built-in how model was trained on 147-d colour-layout embeddings; a 768-d CLIP_VISION
    (its ``encode_image(...).image_embeds`` interface, here a stand-in object) is refused clearly."""
    import types
    from fractions import Fraction

    import torch

    from avlab.concert_edit.models import load_concert_models
    from avlab.nodes import concert as nodes

    class WideClipVision:
        def encode_image(self, image):
            return types.SimpleNamespace(image_embeds=torch.zeros(image.shape[0], 768))

    cams = nodes.CameraSet([torch.rand(20, 16, 16, 3) for _ in range(2)], Fraction(5), ["a", "b"])
    cuts = nodes.ConcertCuts([2.0], 4.0, Fraction(5), [0.9], [(0.0, 4.0)], [], 1.0, 4.0, [0.9])
    models = load_concert_models(nodes.BUILTIN_DIR)
    with pytest.raises(nodes.NodeInputError,
                       match="AVLab Camera Selector: input 'clip_vision' expected an image encoder with 147-d"):
        nodes.AVLabCameraSelector.execute(models, cuts, cams, 1, clip_vision=WideClipVision())
