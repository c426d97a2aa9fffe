"""Host tier: the synthetic-domain nodes run through ``POST /prompt`` and their outputs are saved by
ComfyUI's native ``CreateVideo`` → ``SaveVideo`` and ``SaveAudio`` nodes."""

from __future__ import annotations

import json

import av
import pytest

from comfy_host import ExecutionFailed, PromptRejected


def _scene_graph(prefix: str, **scene) -> dict:
    widgets = dict(seed=4, frames=24, width=96, height=64, fps=12.0, num_objects=3, sample_rate=44100,
                   target_object=1)
    widgets.update(scene)
    return {
        "scene": {"class_type": "AVLabSyntheticScene", "inputs": widgets},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["scene", 0], "fps": ["scene", 3],
                                                           "audio": ["scene", 2]}},
        "save_video": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": f"{prefix}/video",
                                                              "format": "mp4", "codec": "h264"}},
        "save_audio": {"class_type": "SaveAudio", "inputs": {"audio": ["scene", 2], "filename_prefix": f"{prefix}/audio"}},
        "save_mask": {"class_type": "SaveImage", "inputs": {"images": ["mask_image", 0], "filename_prefix": f"{prefix}/mask"}},
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["scene", 1]}},
        "save_depth": {"class_type": "SaveImage", "inputs": {"images": ["scene", 5], "filename_prefix": f"{prefix}/depth"}},
    }


def test_synthetic_scene_is_saved_by_native_video_and_audio_nodes(comfy_host, comfy_client):
    history = comfy_client.run(_scene_graph("synthetic/scene"), timeout=300)
    [video] = comfy_host.output_files(history, "save_video")
    with av.open(str(video)) as container:
        v = container.streams.video[0]
        a = container.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (96, 64)
        assert a.codec_context.channels == 2
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 24
    [audio] = comfy_host.output_files(history, "save_audio", kind="audio")
    with av.open(str(audio)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 2 and stream.codec_context.sample_rate == 44100
        samples = sum(f.samples for f in container.decode(audio=0))
    assert samples == 2 * 44100
    assert len(comfy_host.output_files(history, "save_mask")) == 24
    assert len(comfy_host.output_files(history, "save_depth")) == 24


def test_synthetic_concert_runs_and_reports_its_cuts(comfy_host, comfy_client):
    graph = {
        "concert": {"class_type": "AVLabSyntheticConcert",
                    "inputs": dict(seed=2, num_cameras=3, duration=12.0, fps=4.0, width=64, height=36, sample_rate=16000)},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["concert", 0], "fps": ["concert", 3],
                                                           "audio": ["concert", 2]}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": "synthetic/concert",
                                                        "format": "mp4", "codec": "h264"}},
        "grid": {"class_type": "PreviewImage", "inputs": {"images": ["concert", 1]}},
    }
    history = comfy_client.run(graph, timeout=300)
    [video] = comfy_host.output_files(history, "save")
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48
    assert len(comfy_host.output_files(history, "grid")) == 48


@pytest.mark.parametrize("bad,name", [(dict(fps=0.0), "fps"), (dict(fps=-5.0), "fps"),
                                      (dict(target_object=5, num_objects=2), "target_object")])
def test_synthetic_scene_rejects_bad_inputs_with_named_errors(comfy_client, bad, name):
    with pytest.raises(PromptRejected, match=name):
        comfy_client.queue_prompt(_scene_graph("synthetic/bad", **bad))


@pytest.mark.parametrize("node,widgets,name", [
    ("AVLabSyntheticScene", dict(frames=2400, width=2048, height=2048, num_objects=8, target_object=0), "frames"),
    ("AVLabSyntheticConcert", dict(seed=0, num_cameras=5, duration=600.0, fps=60.0, width=2048, height=2048,
                                   sample_rate=16000), "duration"),
])
def test_synthetic_maxima_are_refused_before_allocating(comfy_client, node, widgets, name):
    """The widgets' maxima need hundreds of GiB: the node fails at once with the estimate and the input
    to lower (the server's memory stays untouched)."""
    if node == "AVLabSyntheticScene":
        graph = _scene_graph("synthetic/huge", **widgets)
    else:
        graph = {"concert": {"class_type": node, "inputs": widgets},
                 "grid": {"class_type": "PreviewImage", "inputs": {"images": ["concert", 1]}}}
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(graph, timeout=120)
    assert err.value.exception_type.endswith("NodeInputError")
    message = err.value.exception_message
    assert f"input '{name}' expected a value whose output fits in memory" in message
    assert "GiB" in message and f"Lower '{name}'" in message


def test_synthetic_scene_labels_are_json_with_the_sentence(comfy_inprocess):
    from avlab.nodes.synthetic import AVLabSyntheticScene

    out = AVLabSyntheticScene.execute(seed=1, frames=8, width=32, height=32, fps=8.0, num_objects=2,
                                               sample_rate=16000, target_object=1)
    frames, mask, audio, fps, labels, depth, sentence = out.result
    assert comfy_inprocess is not None
    data = json.loads(labels)
    assert data["sentences"][1] == sentence and fps == 8.0
    assert frames.shape == (8, 32, 32, 3) and mask.shape == (8, 32, 32) and depth.shape == (8, 32, 32, 3)
    assert audio["waveform"].shape == (1, 2, 16000) and audio["sample_rate"] == 16000
