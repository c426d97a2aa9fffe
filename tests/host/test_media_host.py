"""Host tier: the media nodes inside a real ComfyUI — native LoadVideo → AVLab Load Video Segment →
AVLab Save Video With Audio — and their bad-input errors (the server survives every one)."""

from __future__ import annotations

import uuid

import av
import numpy as np
import pytest
import torch

from avlab.common import media
from avlab.synthetic import SceneConfig, make_scene
from comfy_host import ExecutionFailed, PromptRejected

CLIP = "avlab_media_clip.mp4"


@pytest.fixture(scope="module")
def clip(comfy_host):
    """A 3 s, 24 fps synthetic clip with stereo audio in ComfyUI's input folder."""
    scene = make_scene(SceneConfig(seed=9, frames=72, height=64, width=96, fps=24.0, sample_rate=44100))
    media.write_video(comfy_host.input_dir / CLIP, scene.frames, 24.0, audio=scene.audio, sample_rate=44100)
    return CLIP


def _segment_graph(prefix: str, start: float = 1.0, duration: float = 1.5, fps: float = 12.0,
                   audio_fit: str = "error if lengths differ") -> dict:
    return {
        "load": {"class_type": "LoadVideo", "inputs": {"file": CLIP}},
        "segment": {"class_type": "AVLabLoadVideoSegment",
                    "inputs": {"video": ["load", 0], "start_s": start, "duration_s": duration, "fps": fps, "max_side": 0}},
        "save": {"class_type": "AVLabSaveVideoWithAudio",
                 "inputs": {"images": ["segment", 0], "fps": ["segment", 2], "audio": ["segment", 1],
                            "filename_prefix": prefix, "crf": 23, "audio_fit": audio_fit}},
    }


def _probe(path) -> tuple[int, int, float]:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        channels, sr = stream.codec_context.channels, stream.codec_context.sample_rate
        samples = sum(f.samples for f in container.decode(audio=0))
    return frames, channels, samples / sr


def test_segment_of_a_native_video_is_saved_with_its_audio(comfy_host, comfy_client, clip):
    history = comfy_client.run(_segment_graph("media/segment"), timeout=300)
    [path] = comfy_host.output_files(history, "save")
    frames, channels, seconds = _probe(path)
    assert frames == 18 and channels == 2
    assert abs(seconds - 1.5) <= 1024 / 44100 + 1e-6


def test_segment_start_past_the_end_is_a_named_error(comfy_client, clip):
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(_segment_graph("media/bad_start", start=10.0), timeout=300)
    assert "AVLab Load Video Segment" in err.value.exception_message and "start_s" in err.value.exception_message


@pytest.mark.parametrize("fps", [0.0, -1.0])
def test_save_rejects_non_positive_fps(comfy_client, clip, fps):
    graph = _segment_graph("media/bad_fps")
    graph["save"]["inputs"]["fps"] = fps
    with pytest.raises(PromptRejected, match="fps"):
        comfy_client.queue_prompt(graph)


def test_save_with_strict_fit_names_mismatched_audio(comfy_host, comfy_client):
    graph = {
        "scene": {"class_type": "AVLabSyntheticScene",
                  "inputs": dict(seed=1, frames=24, width=64, height=64, fps=12.0, num_objects=2, sample_rate=16000,
                                 target_object=0)},
        "save": {"class_type": "AVLabSaveVideoWithAudio",
                 "inputs": {"images": ["scene", 0], "fps": 24.0, "audio": ["scene", 2], "filename_prefix": "media/mismatch",
                            "crf": 23, "audio_fit": "error if lengths differ"}},
    }
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(graph, timeout=300)
    message = err.value.exception_message
    assert "AVLab Save Video With Audio" in message and "audio" in message and "24 frames" in message
    graph["save"]["inputs"]["audio_fit"] = "pad or trim"           # the lenient mode trims instead
    [path] = comfy_host.output_files(comfy_client.run(graph, timeout=300), "save")
    frames, channels, seconds = _probe(path)
    assert frames == 24 and abs(seconds - 1.0) <= 1024 / 16000 + 1e-6


def test_missing_input_file_is_rejected_by_the_loader_and_the_server_lives_on(comfy_host, comfy_client, clip):
    graph = _segment_graph("media/missing")
    graph["load"]["inputs"]["file"] = "no_such_clip.mp4"
    with pytest.raises(PromptRejected, match="file"):
        comfy_client.queue_prompt(graph)
    history = comfy_client.run(_segment_graph("media/after_errors", start=0.0, duration=1.0), timeout=300)
    assert comfy_host.output_files(history, "save")


def _save_graph(prefix: str) -> dict:
    return {
        "image": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 4, "color": 0x336699}},
        "save": {"class_type": "AVLabSaveVideoWithAudio",
                 "inputs": {"images": ["image", 0], "fps": 24.0, "filename_prefix": prefix, "crf": 23,
                            "audio_fit": "pad or trim"}},
    }


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_save_refuses_prefixes_outside_the_output_folder(comfy_host, comfy_client, tmp_path_factory, kind):
    name = f"avlab_escape_{uuid.uuid4().hex[:8]}"
    if kind == "dotdot":
        prefix = f"../../{name}/clip"
        target = (comfy_host.output_dir / "../.." / name).resolve()
    else:
        target = tmp_path_factory.mktemp("outside") / name
        prefix = f"{target}/clip"
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(_save_graph(prefix), timeout=300)
    message = err.value.exception_message
    assert message.startswith("AVLab Save Video With Audio: input 'filename_prefix' expected a prefix inside the "
                              "ComfyUI output folder (no '..' or absolute paths)")
    assert repr(prefix) in message and "outside the output folder is not allowed" in message
    assert not target.exists()                                   # ComfyUI refused before creating anything
    outside = [p for p in comfy_host.base_dir.parent.rglob(f"{name}*") if comfy_host.output_dir not in p.parents]
    assert outside == []
    [path] = comfy_host.output_files(comfy_client.run(_save_graph("media/inside"), timeout=300), "save")
    assert comfy_host.output_dir in path.parents                 # a prefix inside still saves


def test_damaged_file_is_a_named_error_with_the_time(comfy_host, comfy_client, clip):
    data = bytearray((comfy_host.input_dir / CLIP).read_bytes())
    lo, hi = int(0.4 * len(data)), int(0.6 * len(data))
    data[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    (comfy_host.input_dir / "avlab_damaged.mp4").write_bytes(bytes(data))
    graph = _segment_graph("media/damaged", start=0.0, duration=0.0, fps=0.0)
    graph["load"]["inputs"]["file"] = "avlab_damaged.mp4"
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(graph, timeout=300)
    message = err.value.exception_message
    assert err.value.node_type == "AVLabLoadVideoSegment"
    assert message.startswith("AVLab Load Video Segment: input 'video' expected a media file that decodes without "
                              "errors")
    assert "damaged video data in" in message and "avlab_damaged.mp4" in message and " s (byte " in message


def test_whole_file_segment_is_refused_before_decoding_when_it_does_not_fit(comfy_inprocess, tmp_path, monkeypatch):
    """``duration_s = 0`` on a file too big for the (overridden) memory limit: refused from the probe alone."""
    from avlab.nodes import media_nodes
    from avlab.nodes.media import video_from_file

    path = tmp_path / "clip.mp4"                    # 72 frames of 96x64 + 3 s stereo 44.1 kHz ≈ 6.1 MiB as floats
    media.write_video(path, torch.rand(72, 64, 96, 3), 24, audio=torch.zeros(2, 3 * 44100), sample_rate=44100,
                      preset="ultrafast")
    monkeypatch.setenv("AVLAB_MEMORY_LIMIT_GB", str(10 / 1024))  # 10 MiB available → 5 MiB for one node
    node = media_nodes.AVLabLoadVideoSegment
    decoded = []
    real_iter = media_nodes.iter_video_input_frames
    monkeypatch.setattr(media_nodes, "iter_video_input_frames", lambda *a, **k: decoded.append(1) or real_iter(*a, **k))
    with pytest.raises(media_nodes.NodeInputError) as err:
        node.execute(video_from_file(path), start_s=0.0, duration_s=0.0, fps=0.0, max_side=0)
    assert str(err.value) == (
        "AVLab Load Video Segment: input 'duration_s' expected a value whose output fits in memory: the segment "
        "(72 frames of 96x64 RGB float32 = 3.0 s at 24 fps, plus 2-channel audio; a lower 'max_side' or 'fps' "
        "shrinks it too) needs about 6.1 MiB, but only 5.0 MiB may be used (50% of 10.0 MiB available; "
        "set AVLAB_MEMORY_LIMIT_GB to change). Lower 'duration_s'")
    assert decoded == []                           # refused from the probed header, nothing decoded
    out = node.execute(video_from_file(path), start_s=0.0, duration_s=0.0, fps=0.0, max_side=48)
    assert out.result[0].shape == (72, 32, 48, 3) and decoded == [1]   # a smaller max_side fits
