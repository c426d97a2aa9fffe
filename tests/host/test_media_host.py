"""Host tier: the media nodes inside a real ComfyUI — native LoadVideo → AVLab Load Video Segment →
AVLab Save Video With Audio — and their bad-input errors (the server survives every one)."""

from __future__ import annotations

import av
import pytest

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
