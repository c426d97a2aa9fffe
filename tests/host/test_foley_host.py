"""Host tier: the FoleyGRAM part 1 nodes (papers.md §4; issue 9) through ``POST /prompt`` in a real
ComfyUI — a synthetic scene → AVLab GRAM Loader (a tiny GRAM in the pack's format, and the built-in
model) → AVLab GRAM Encode (video + fps, captions, audio) → AVLab GRAM Conditioning (a GRAM→token
projection file in models/avlab/controlnet) → ComfyUI's native KSampler on a small Stable Audio
model (built in-process by the test-only ``HostTestStableAudioLoader``: ComfyUI detects Stable Audio
only at full size) → VAEDecodeAudio → SaveAudio; Similarity's preview; the bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from comfy_host import ExecutionFailed

TEXT = "a red metal circle bouncing\nthe blue wood square is sliding\nspinning green triangle of glass"


@pytest.fixture(scope="module")
def gram_files(comfy_host, tmp_path_factory):
    from tiny_gram import build_gram_files

    built = build_gram_files(tmp_path_factory.mktemp("gram"))
    files = {n: comfy_host.add_model("avlab/gram", built[n])
             for n in ("tiny_gram.safetensors", "tiny_gram_24.safetensors", "model_step_1.pt")}
    files["projection"] = comfy_host.add_model("avlab/controlnet", built["tiny_projection.safetensors"])
    return files


def _encode_graph(gram: str, text: str = TEXT, video: bool = True, audio: bool = True) -> dict:
    enc = {"gram": ["gram", 0], "fps": ["scene", 3], "text": text}
    if video:
        enc["images"] = ["scene", 0]
    if audio:
        enc["audio"] = ["scene", 2]
    return {
        "scene": {"class_type": "AVLabSyntheticScene", "inputs": {
            "seed": 5, "frames": 12, "width": 64, "height": 48, "fps": 12.0, "num_objects": 2,
            "sample_rate": 44100, "target_object": 0}},
        "gram": {"class_type": "AVLabGramLoader", "inputs": {"gram_name": gram, "text_folder": "none",
                                                               "precision": "auto"}},
        "enc": {"class_type": "AVLabGramEncode", "inputs": enc},
    }


def test_gram_conditions_native_stable_audio_and_saves_audio(comfy_host, comfy_client, gram_files):
    g = _encode_graph(gram_files["tiny_gram.safetensors"])
    g.update({
        "cond": {"class_type": "AVLabGramConditioning", "inputs": {
            "embeds": ["enc", 0], "projection": gram_files["projection"], "seconds_start": 0.0,
            "seconds_total": 1.0, "item": 1}},
        "sa": {"class_type": "HostTestStableAudioLoader", "inputs": {"depth": 2, "seed": 0}},
        "latent": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 1.0, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["sa", 0], "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["latent", 0],
            "seed": 0, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["sample", 0], "vae": ["sa", 1]}},
        "save": {"class_type": "SaveAudio", "inputs": {"audio": ["decode", 0], "filename_prefix": "foley/gram"}},
    })
    history = comfy_client.run(g, timeout=600)
    files = comfy_host.output_files(history, "save", kind="audio")
    assert len(files) == 1 and files[0].is_file() and files[0].stat().st_size > 1000
    import av

    with av.open(str(files[0])) as f:
        stream = f.streams.audio[0]
        assert stream.rate == 44100 and stream.channels == 2


def test_similarity_preview_and_ranking(comfy_host, comfy_client, gram_files):
    g = _encode_graph(gram_files["tiny_gram.safetensors"])
    g.update({
        "sim": {"class_type": "AVLabGramSimilarity", "inputs": {
            "queries": ["enc", 0], "query_modality": "video", "candidates": ["enc", 0],
            "candidate_modality": "text", "top_k": 2}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["sim", 0], "filename_prefix": "foley/sim"}},
    })
    history = comfy_client.run(g, timeout=300)
    from PIL import Image

    (png,) = comfy_host.output_files(history, "save")
    width, height = Image.open(png).size
    assert width > 3 * 48 and height > 48          # one row (the video) × three captions


def test_builtin_gram_is_listed(comfy_client):
    info = comfy_client.object_info("AVLabGramLoader")["AVLabGramLoader"]
    options = info["input"]["required"]["gram_name"]
    names = options[1]["options"] if isinstance(options[1], dict) and "options" in options[1] else options[0]
    from pathlib import Path

    import avlab

    if (Path(avlab.__file__).parent / "weights" / "gram" / "gram_synthetic.safetensors").is_file():
        assert "AVLab built-in: synthetic tiny GRAM" in names
    assert "avlab_gram" in comfy_client.model_folders() and "avlab_controlnet" in comfy_client.model_folders()


@pytest.mark.parametrize("case", ["empty_text", "dims", "official_without_tokenizer"])
def test_bad_inputs_name_node_and_input(comfy_client, gram_files, case):
    if case == "empty_text":
        g = _encode_graph(gram_files["tiny_gram.safetensors"], text="   ", video=False, audio=False)
        g["sink"] = {"class_type": "AVLabGramSimilarity", "inputs": {
            "queries": ["enc", 0], "query_modality": "text", "candidates": ["enc", 0],
            "candidate_modality": "text", "top_k": 1}}
        g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["sink", 0]}}
        expected = ("AVLab GRAM Encode", "'text'")
    elif case == "dims":
        g = _encode_graph(gram_files["tiny_gram.safetensors"], audio=False)
        other = _encode_graph(gram_files["tiny_gram_24.safetensors"], audio=False)
        g.update({"gram2": other["gram"], "enc2": dict(other["enc"])})
        g["enc2"]["inputs"] = dict(g["enc2"]["inputs"], gram=["gram2", 0])
        g["sim"] = {"class_type": "AVLabGramSimilarity", "inputs": {
            "queries": ["enc", 0], "query_modality": "text", "candidates": ["enc2", 0],
            "candidate_modality": "video", "top_k": 1}}
        g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["sim", 0]}}
        expected = ("AVLab GRAM Similarity", "'candidates'")
    else:
        g = _encode_graph(gram_files["model_step_1.pt"], audio=False, video=False)
        g["sim"] = {"class_type": "AVLabGramSimilarity", "inputs": {
            "queries": ["enc", 0], "query_modality": "text", "candidates": ["enc", 0],
            "candidate_modality": "text", "top_k": 1}}
        g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["sim", 0]}}
        expected = ("AVLab GRAM Loader", "'text_folder'")
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(g, timeout=300)
    message = str(err.value)
    assert all(part in message for part in expected), message


def test_audio_and_video_envelopes(comfy_host, comfy_client):
    """Envelopes of the synthetic scene's impacts (audio) and motion (video), previews saved."""
    g = {
        "scene": {"class_type": "AVLabSyntheticScene", "inputs": {
            "seed": 5, "frames": 24, "width": 64, "height": 48, "fps": 12.0, "num_objects": 2,
            "sample_rate": 44100, "target_object": 0}},
        "aenv": {"class_type": "AVLabAudioEnvelope", "inputs": {"audio": ["scene", 2], "rate": 21.5332,
                                                               "window_s": 0.23, "smooth_frames": 3}},
        "venv": {"class_type": "AVLabVideoEnvelope", "inputs": {"images": ["scene", 0], "fps": ["scene", 3],
                                                               "rate": 0.0}},
        "save_a": {"class_type": "SaveImage", "inputs": {"images": ["aenv", 1], "filename_prefix": "foley/aenv"}},
        "save_v": {"class_type": "SaveImage", "inputs": {"images": ["venv", 1], "filename_prefix": "foley/venv"}},
    }
    import avlab

    if (Path(avlab.__file__).parent / "weights" / "foley" / "rms_mapper.safetensors").is_file():
        g["menv"] = {"class_type": "AVLabVideoEnvelope", "inputs": {"images": ["scene", 0], "fps": ["scene", 3],
                                                                   "rate": 21.5332,
                                                                   "mapper": "AVLab built-in: synthetic RMS mapper"}}
        g["save_m"] = {"class_type": "SaveImage", "inputs": {"images": ["menv", 1], "filename_prefix": "foley/menv"}}
    history = comfy_client.run(g, timeout=300)
    from PIL import Image

    for node in [n for n in ("save_a", "save_v", "save_m") if n in g]:
        (png,) = comfy_host.output_files(history, node)
        assert Image.open(png).size == (512, 160)


@pytest.fixture(scope="module")
def controlnet_file(comfy_host, comfy_inprocess, tmp_path_factory):
    from tiny_gram import build_controlnet_file

    return comfy_host.add_model("avlab/controlnet", build_controlnet_file(tmp_path_factory.mktemp("controlnet")))


def _video_to_audio_graph(gram: str, controlnet: str, strength: float = 1.0) -> dict:
    g = _encode_graph(gram, text="a red metal circle bouncing", audio=False)
    g.update({
        "venv": {"class_type": "AVLabVideoEnvelope", "inputs": {"images": ["scene", 0], "fps": ["scene", 3],
                                                               "rate": 0.0}},
        "cond": {"class_type": "AVLabGramConditioning", "inputs": {
            "embeds": ["enc", 0], "projection": controlnet, "seconds_start": 0.0, "seconds_total": ["venv", 2],
            "item": 0}},
        "sa": {"class_type": "HostTestStableAudioLoader", "inputs": {"depth": 2, "seed": 0}},
        "cnl": {"class_type": "AVLabEnvelopeControlNetLoader", "inputs": {"controlnet_name": controlnet}},
        "cna": {"class_type": "AVLabEnvelopeControlNetApply", "inputs": {
            "model": ["sa", 0], "controlnet": ["cnl", 0], "envelope": ["venv", 0], "strength": strength,
            "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": ["venv", 2], "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["cna", 0], "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["latent", 0],
            "seed": 0, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["sample", 0], "vae": ["sa", 1]}},
        "save": {"class_type": "AVLabSaveVideoWithAudio", "inputs": {
            "images": ["scene", 0], "fps": ["scene", 3], "filename_prefix": "foley/v2a", "crf": 23,
            "audio_fit": "pad or trim", "audio": ["decode", 0]}},
    })
    return g


def test_video_to_audio_with_the_envelope_controlnet_writes_a_synchronised_mp4(comfy_host, comfy_client, gram_files,
                                                                               controlnet_file):
    """Scene (24 frames at 12 fps = 2 s) → video envelope → ControlNet on the native Stable Audio →
    KSampler → VAEDecodeAudio → mp4 whose audio is 44.1 kHz stereo and as long as the picture."""
    graph = _video_to_audio_graph(gram_files["tiny_gram.safetensors"], controlnet_file)
    graph["scene"]["inputs"].update(frames=24)
    history = comfy_client.run(graph, timeout=600)
    (mp4,) = comfy_host.output_files(history, "save")
    import av

    with av.open(str(mp4)) as f:
        stream = f.streams.audio[0]
        assert stream.rate == 44100 and stream.channels == 2
        video = f.streams.video[0]
        audio_seconds = float(stream.duration * stream.time_base) if stream.duration else None
        video_seconds = float(video.frames / video.average_rate)
    assert video_seconds == pytest.approx(2.0, abs=0.05)
    if audio_seconds is not None:
        assert audio_seconds == pytest.approx(video_seconds, abs=0.05)


def test_controlnet_apply_refuses_a_model_that_is_not_stable_audio(comfy_client, gram_files, controlnet_file):
    from tiny_checkpoints import TINY

    graph = _video_to_audio_graph(gram_files["tiny_gram.safetensors"], controlnet_file)
    graph["wan"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY["wan21_t2v"], "weight_dtype": "default"}}
    graph["cna"]["inputs"]["model"] = ["wan", 0]
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(graph, timeout=300)
    assert "AVLab Envelope ControlNet Apply" in str(err.value) and "'model'" in str(err.value)
