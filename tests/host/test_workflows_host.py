"""Host tier: every shipped workflow (``workflows/*.json``) loads in and runs through a real ComfyUI.

Each workflow is read in its UI format, converted to an API prompt with
``avlab.common.workflow_json.ui_to_api`` (the official weight file names swapped for the tiny test
checkpoints, sizes, steps and frame counts made small) and queued with ``POST /prompt``; the test
then opens the saved video and counts its frames.

What the tiny checkpoints cannot run is replaced, and only that:

* Wan 2.1: ``CLIPLoader`` type ``wan`` only accepts the full umT5-XXL (fixed config, ~5.7 B
  parameters), so the two ``CLIPTextEncode`` nodes become ``HostTestConditioning`` (4096-wide
  context, as umT5 gives) and the ``CLIPLoader`` is dropped. Everything else runs as shipped.
* SVD: ``ImageOnlyCheckpointLoader`` loads a tiny ``svd_xt`` layout checkpoint (U-Net + temporal VAE)
  without the CLIP-ViT-H image encoder (fixed at ~632 M parameters), so its CLIP_VISION output is
  None and ``SVD_img2vid_Conditioning`` cannot run. It is replaced by the same data path minus the
  image embedding: the start image resized (``ImageScale``) and VAE-encoded as the concat latent
  (``InstructPixToPixConditioning``), a 1024-wide test context for the cross-attention, and the
  empty latent repeated to ``video_frames`` (``RepeatLatentBatch``). ``LoadImage``,
  ``VideoLinearCFGGuidance``, LightCache on the SVD U-Net, ``KSampler``, the sliced decode through
  SVD's temporal VAE (overlap > 0), ``CreateVideo`` and ``SaveVideo`` run as shipped.
* AnimateDiff: runs as shipped with AnimateDiff-Evolved's nodes (the ``animatediff`` fixture copies the
  pack into the server's ``custom_nodes/``; without it the AnimateDiff workflow's tests skip, naming
  where it was looked for), on ``sd15_ad`` (an SD1.5 checkpoint with the full-width U-Net block
  structure a motion module needs) and the tiny ``mm_sd_v15_v2`` motion module
  (``tiny_checkpoints.EXTRA_FILES``).

It also checks that the committed files are exactly what ``scripts/make_workflows.py`` generates
from this host's ``/object_info``, so they never go stale.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import pytest

from avlab.common.workflow_json import node_types, ui_to_api
from tiny_checkpoints import TINY, ensure_extra_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def _make_workflows():
    spec = importlib.util.spec_from_file_location("avlab_make_workflows", REPO / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def object_info(comfy_client) -> dict:
    return comfy_client.object_info()


@pytest.fixture(scope="module")
def svd_xt_checkpoint(comfyui_path, comfy_host) -> str:
    """The tiny ``svd_xt``-layout checkpoint, added to the running server's ``checkpoints/``."""
    return comfy_host.add_model("checkpoints", ensure_extra_checkpoint("svd_xt", comfyui_path))


ANIMATEDIFF_WORKFLOW = "lightcache_animatediff_sd15"


def _needs_animatediff(path: Path, animatediff: dict) -> None:
    """Skip a check of the AnimateDiff workflow when AnimateDiff-Evolved is not in the host."""
    if path.stem == ANIMATEDIFF_WORKFLOW and animatediff["path"] is None:
        pytest.skip(f"{path.name} uses AnimateDiff-Evolved's nodes: {animatediff['how']}")


def _load(name: str) -> dict:
    return json.loads((REPO / "workflows" / name).read_text())


def _ids(api: dict, class_type: str) -> list[str]:
    return [nid for nid, node in api.items() if node["class_type"] == class_type]


def _video(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"frames": sum(1 for _ in container.decode(video=0)),
                "size": (stream.codec_context.width, stream.codec_context.height),
                "audio_channels": container.streams.audio[0].codec_context.channels
                if container.streams.audio else 0}
    return info


def _saved_video(comfy_host, history: dict, api: dict) -> dict:
    [save_id] = _ids(api, "SaveVideo")
    [path] = comfy_host.output_files(history, save_id)
    assert path.is_file() and path.stat().st_size > 0
    return _video(path)


# ------------------------------------------------------------------------------------------------
# every workflow
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_node_type_of_the_workflow_exists_in_the_host(path, object_info, animatediff):
    _needs_animatediff(path, animatediff)
    missing = node_types(json.loads(path.read_text())) - set(object_info)
    assert not missing, f"{path.name}: node types unknown to ComfyUI: {sorted(missing)}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_committed_workflow_is_what_make_workflows_generates_from_the_host(path, object_info, animatediff):
    _needs_animatediff(path, animatediff)
    make = _make_workflows()
    assert make.dumps(make.WORKFLOWS[path.name](object_info)) == path.read_text(), \
        f"{path.name} is stale: run scripts/make_workflows.py --comfyui $COMFYUI_PATH"


def test_comfyui_serves_the_workflows_as_the_packs_templates(comfy_client):
    assert sorted(comfy_client.get_json("/workflow_templates")["avlab"]) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        assert comfy_client.get_json(f"/api/workflow_templates/avlab/{path.name}") == json.loads(path.read_text())


def test_every_committed_workflow_has_a_host_run():
    runs = {name[len("test_runs_"):] for name in globals() if name.startswith("test_runs_")}
    assert runs == {p.stem for p in WORKFLOWS}


# ------------------------------------------------------------------------------------------------
# running them
# ------------------------------------------------------------------------------------------------

def test_runs_lightcache_animatediff_sd15(comfy_host, comfy_client, object_info, animatediff_server_models):
    api = ui_to_api(_load("lightcache_animatediff_sd15.json"), object_info, overrides={
        "CheckpointLoaderSimple": {"ckpt_name": animatediff_server_models["ckpt"]},
        "ADE_AnimateDiffLoaderGen1": {"model_name": animatediff_server_models["motion_model"]},
        "EmptyLatentImage": {"width": 32, "height": 32, "batch_size": 4},
        # the shipped adaptive schedule with a loose knob: deterministic reuse on random tiny weights
        "AVLabLightCache": {"adaptive_error": 10.0},
        "KSampler": {"steps": 3},
        "SaveVideo": {"filename_prefix": "workflows/animatediff_sd15"},
    })
    offset = comfy_client.log_offset()
    try:
        history = comfy_client.run(api, timeout=600)
        assert _saved_video(comfy_host, history, api) == {"frames": 4, "size": (32, 32), "audio_channels": 0}
        log = comfy_client.log_text(offset)
        assert f"Using motion module {animatediff_server_models['motion_model']}:v2" in log  # injected
        assert "LightCache - skipped 1/3 steps" in log  # adaptive: steps 0, 1 full (sensitivity), 2 reuses
    finally:
        comfy_client.free(unload_models=True, free_memory=True)  # ~4 GB of fp32 weights


def test_runs_lightcache_svd_img2vid(comfy_host, comfy_client, object_info, svd_xt_checkpoint):
    from PIL import Image

    Image.new("RGB", (96, 80), (200, 40, 30)).save(comfy_host.input_dir / "avlab_workflow_start.png")
    frames, size = 5, 64
    api = ui_to_api(_load("lightcache_svd_img2vid.json"), object_info, overrides={
        "ImageOnlyCheckpointLoader": {"ckpt_name": svd_xt_checkpoint},
        "LoadImage": {"image": "avlab_workflow_start.png"},
        "SVD_img2vid_Conditioning": {"width": size, "height": size, "video_frames": frames},
        "KSampler": {"steps": 3},
        "AVLabSlicedVAEDecode": {"frames_per_slice": 3, "overlap": 1},
        "AVLabLightCache": {"adaptive_error": 10.0},
        "SaveVideo": {"filename_prefix": "workflows/svd_img2vid"},
    })
    # SVD_img2vid_Conditioning without its CLIP-ViT-H image embedding (see the module docstring).
    [cond_id] = _ids(api, "SVD_img2vid_Conditioning")
    cond = api[cond_id]["inputs"]
    api["svd_context_pos"] = {"class_type": "HostTestConditioning",
                              "inputs": {"width": 1024, "tokens": 1, "fill": "normal", "seed": 3}}
    api["svd_context_neg"] = {"class_type": "HostTestConditioning",
                              "inputs": {"width": 1024, "tokens": 1, "fill": "zeros", "seed": 0}}
    api["svd_resize"] = {"class_type": "ImageScale", "inputs": {
        "image": cond["init_image"], "upscale_method": "bilinear", "width": cond["width"],
        "height": cond["height"], "crop": "center"}}
    api[cond_id] = {"class_type": "InstructPixToPixConditioning", "inputs": {
        "positive": ["svd_context_pos", 0], "negative": ["svd_context_neg", 0], "vae": cond["vae"],
        "pixels": ["svd_resize", 0]}}
    api["svd_frames"] = {"class_type": "RepeatLatentBatch",
                         "inputs": {"samples": [cond_id, 2], "amount": cond["video_frames"]}}
    [sampler_id] = _ids(api, "KSampler")
    assert api[sampler_id]["inputs"]["latent_image"] == [cond_id, 2]
    api[sampler_id]["inputs"]["latent_image"] = ["svd_frames", 0]

    offset = comfy_client.log_offset()
    history = comfy_client.run(api, timeout=600)
    assert _saved_video(comfy_host, history, api) == {"frames": frames, "size": (size, size), "audio_channels": 0}
    assert "LightCache - skipped 1/3 steps" in comfy_client.log_text(offset)  # adaptive: steps 0, 1 full


def test_runs_lightcache_wan21_t2v(comfy_host, comfy_client, object_info):
    api = ui_to_api(_load("lightcache_wan21_t2v.json"), object_info, overrides={
        "UNETLoader": {"unet_name": TINY["wan21_t2v"]},
        "VAELoader": {"vae_name": TINY["wan21_vae"]},
        "EmptyHunyuanLatentVideo": {"width": 32, "height": 32, "length": 5},
        "AVLabLightCache": {"adaptive_error": 10.0},
        "KSampler": {"steps": 4},
        "SaveVideo": {"filename_prefix": "workflows/wan21_t2v"},
    })
    # no tiny umT5-XXL exists: 4096-wide test conditionings stand in for the two text encodes
    for i, nid in enumerate(_ids(api, "CLIPTextEncode")):
        api[nid] = {"class_type": "HostTestConditioning",
                    "inputs": {"width": 4096, "tokens": 8, "fill": "normal" if i == 0 else "zeros", "seed": 1}}
    [clip_id] = _ids(api, "CLIPLoader")
    del api[clip_id]

    offset = comfy_client.log_offset()
    history = comfy_client.run(api, timeout=600)
    assert _saved_video(comfy_host, history, api) == {"frames": 5, "size": (32, 32), "audio_channels": 0}
    assert "LightCache - skipped 2/4 steps" in comfy_client.log_text(offset)  # adaptive: steps 0, 1 full


def test_runs_synthetic_scene_preview(comfy_host, comfy_client, object_info):
    api = ui_to_api(_load("synthetic_scene_preview.json"), object_info, overrides={
        "AVLabSyntheticScene": {"frames": 12, "width": 64, "height": 48, "fps": 12.0},
        "SaveVideo": {"filename_prefix": "workflows/synthetic_scene"},
        "SaveAudio": {"filename_prefix": "workflows/synthetic_scene_audio"},
    })
    history = comfy_client.run(api, timeout=300)
    assert _saved_video(comfy_host, history, api) == {"frames": 12, "size": (64, 48), "audio_channels": 2}

    [audio_id] = _ids(api, "SaveAudio")
    [audio] = comfy_host.output_files(history, audio_id, kind="audio")
    with av.open(str(audio)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == 44100 and stream.codec_context.channels == 2
        assert sum(f.samples for f in container.decode(audio=0)) == 44100  # 12 frames at 12 fps = 1 s

    [depth_id] = _ids(api, "PreviewImage")
    depth = comfy_host.output_files(history, depth_id)
    assert len(depth) == 12 and all(p.is_file() for p in depth)

    [sentence_id] = _ids(api, "PreviewAny")
    [sentence] = history["outputs"][sentence_id]["text"]
    assert isinstance(sentence, str) and sentence.strip()


def test_runs_concert_multicam_edit(comfy_host, comfy_client, object_info):
    api = ui_to_api(_load("concert_multicam_edit.json"), object_info, overrides={
        "AVLabSyntheticConcert": {"duration": 16.0, "width": 64, "height": 36},
        "SaveVideo": {"filename_prefix": "workflows/concert_edit"},
        "AVLabSaveEditList": {"filename_prefix": "workflows/concert_edit_list"},
    })
    history = comfy_client.run(api, timeout=600)
    saved = _saved_video(comfy_host, history, api)          # the program lasts as long as the music
    assert saved["frames"] == 16 * 5 and saved["size"] == (64, 36) and saved["audio_channels"] >= 1
    [list_id] = _ids(api, "AVLabSaveEditList")
    files = history["outputs"][list_id]["text"][0].splitlines()
    edit = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert edit["shots"][0]["start_s"] == 0 and abs(edit["shots"][-1]["end_s"] - 16.0) < 1e-6
    [plot_id] = _ids(api, "PreviewImage")
    assert len(comfy_host.output_files(history, plot_id)) == 1


def test_runs_flowrvs_referring_segmentation(comfy_host, comfy_client, object_info, tmp_path):
    import torch
    from avlab.common import media
    from test_flowrvs_host import build_tiny_dit, build_tiny_mask_vae

    build_tiny_dit(tmp_path / "wf_flowrvs_dit.pth", 32, seed=2)
    build_tiny_mask_vae(tmp_path / "wf_tuned_vae.pth", seed=2)
    dit = comfy_host.add_model("avlab/flowrvs", tmp_path / "wf_flowrvs_dit.pth")
    mask_vae = comfy_host.add_model("avlab/flowrvs", tmp_path / "wf_tuned_vae.pth")
    frames, fps, sr = 6, 8.0, 16000                     # 6 frames (not 4k+1) of 56x40 (not multiples of 16)
    video = torch.rand(frames, 40, 56, 3)
    audio = torch.randn(2, int(sr * frames / fps)) * 0.1
    media.write_video(comfy_host.input_dir / "avlab_flowrvs_input.mp4", video, fps, audio=audio, sample_rate=sr)
    api = ui_to_api(_load("flowrvs_referring_segmentation.json"), object_info, overrides={
        "LoadVideo": {"file": "avlab_flowrvs_input.mp4"},
        "AVLabFlowRVSLoader": {"model_name": dit, "mask_vae_name": mask_vae},
        "VAELoader": {"vae_name": TINY["wan21_vae"]},
    })
    # no tiny umT5-XXL exists: a 4096-wide test conditioning stands in for the sentence's text encode
    [enc_id] = _ids(api, "CLIPTextEncode")
    api[enc_id] = {"class_type": "HostTestConditioning", "inputs": {"width": 4096, "tokens": 8, "fill": "normal",
                                                                   "seed": 1}}
    [clip_id] = _ids(api, "CLIPLoader")
    del api[clip_id]
    history = comfy_client.run(api, timeout=600)
    saved = {}
    for nid in _ids(api, "SaveVideo"):
        [path] = comfy_host.output_files(history, nid)
        saved[api[nid]["inputs"]["filename_prefix"]] = _video(path)
    assert saved["AVLab/flowrvs_overlay"] == {"frames": frames, "size": (56, 40), "audio_channels": 2}
    assert saved["AVLab/flowrvs_mask"] == {"frames": frames, "size": (56, 40), "audio_channels": 0}
    [preview_id] = _ids(api, "PreviewImage")
    assert len(comfy_host.output_files(history, preview_id)) == frames


def test_runs_flowrvs_synthetic_builtin(comfy_host, comfy_client, object_info):
    from avlab.flowrvs.tiny import WEIGHTS_DIR
    if not (WEIGHTS_DIR / "flowrvs_tiny.json").is_file():
        pytest.skip("no trained tiny FlowRVS committed (scripts/train_flowrvs_synthetic.py)")
    api = ui_to_api(_load("flowrvs_synthetic_builtin.json"), object_info, overrides={
        "SaveVideo": {"filename_prefix": "workflows/flowrvs_builtin"},
    })
    history = comfy_client.run(api, timeout=600)
    assert _saved_video(comfy_host, history, api) == {"frames": 9, "size": (96, 96), "audio_channels": 0}
    [sentence_id] = _ids(api, "PreviewAny")
    [sentence] = history["outputs"][sentence_id]["text"]
    assert sentence.startswith("the ") and " moving " in sentence


def test_runs_gram_similarity(comfy_host, comfy_client, object_info, tmp_path):
    import torch
    from avlab.common import media
    from tiny_gram import bert_folder, official_layout_checkpoint

    folder = bert_folder(tmp_path)
    path, _ = official_layout_checkpoint(tmp_path, folder)
    ckpt = comfy_host.add_model("avlab/gram", Path(path), name="wf_model_step_1000.pt")
    text_folder = comfy_host.add_model("avlab/gram", folder, name="wf_bert")
    frames, fps, sr = 10, 10.0, 16000
    media.write_video(comfy_host.input_dir / "avlab_gram_input.mp4", torch.rand(frames, 40, 56, 3), fps,
                      audio=torch.randn(2, int(sr * frames / fps)) * 0.1, sample_rate=sr)
    api = ui_to_api(_load("gram_similarity.json"), object_info, overrides={
        "LoadVideo": {"file": "avlab_gram_input.mp4"},
        "AVLabGramLoader": {"gram_name": ckpt, "text_folder": text_folder},
    })
    history = comfy_client.run(api, timeout=600)
    images = [p for kind in ("PreviewImage", "SaveImage") for nid in _ids(api, kind)
              for p in comfy_host.output_files(history, nid)]
    assert len(images) == 2 and all(p.is_file() for p in images)
    [ranking_id] = _ids(api, "PreviewAny")
    [ranking] = history["outputs"][ranking_id]["text"]
    assert ranking.startswith("video (10 frames): #") and ranking.count("volume") == 3


def test_runs_gram_synthetic_builtin(comfy_host, comfy_client, object_info):
    import avlab

    if not (Path(avlab.__file__).parent / "weights" / "gram" / "gram_synthetic.safetensors").is_file():
        pytest.skip("no trained tiny GRAM committed (scripts/train_gram_synthetic.py)")
    api = ui_to_api(_load("gram_synthetic_builtin.json"), object_info, overrides={
        "SaveVideo": {"filename_prefix": "workflows/gram_builtin"},
    })
    history = comfy_client.run(api, timeout=600)
    assert _saved_video(comfy_host, history, api)["frames"] == 8
    texts = {api[nid]["_meta"]["title"] if "_meta" in api[nid] else nid: history["outputs"][nid]["text"][0]
             for nid in _ids(api, "PreviewAny")}
    ranking = next(t for t in texts.values() if "volume" in t)
    truth = next(t for t in texts.values() if "volume" not in t)
    # the built-in model puts the caption naming the clip's own combination first (held-out clip 0)
    assert truth == "the yellow circle made of metal is sliding"
    assert ranking.split("#", 1)[1].startswith("0 a yellow metal circle sliding"), ranking


def test_runs_foleygram_synthetic_builtin(comfy_host, comfy_client, object_info):
    """The shipped no-weights FoleyGRAM graph (built-in GRAM, RMS mapper, tiny Stable Audio, ControlNet),
    run twice through /prompt: with the ControlNet and at strength 0. The mp4 holds 44.1 kHz stereo as
    long as the 2-s clip, and the ControlNet changes the sound's loudness envelope (its effect on timing
    is measured over 32 held-out clips host-free, ``benchmarks/results/foley_controlnet_synthetic.md``;
    on one clip with the mapper's envelope it is not a stable quantity to assert)."""
    from avlab.foley import generator_train as G
    from avlab.synthetic import foley

    if not G.BUILTIN_CONTROLNET.is_file():
        pytest.skip("no tiny Stable Audio / ControlNet committed (scripts/train_foley_generator.py)")
    import torch

    data = G.FoleyAudioData()
    (clip,) = foley.split_clips("test", 1, offset=0, config=data.clip_config())
    scores = {}
    for strength in (1.0, 0.0):
        api = ui_to_api(_load("foleygram_synthetic_builtin.json"), object_info, overrides={
            "AVLabEnvelopeControlNetApply": {"strength": strength},
            "AVLabSaveVideoWithAudio": {"filename_prefix": f"workflows/foleygram_builtin_{strength}"},
        })
        history = comfy_client.run(api, timeout=900)
        [save] = _ids(api, "AVLabSaveVideoWithAudio")
        [path] = comfy_host.output_files(history, save)
        with av.open(str(path)) as f:
            audio, video = f.streams.audio[0], f.streams.video[0]
            assert audio.rate == 44100 and audio.channels == 2 and video.frames == data.frames
            assert float(audio.duration * audio.time_base) == pytest.approx(data.frames / data.fps, abs=0.03)
        from avlab.common import media

        wave, rate = media.read_audio(path)
        n = min(wave.shape[-1], clip.audio.shape[-1])
        env = G.latent_envelopes(torch.stack([wave[:, :n].mean(0, keepdim=True), clip.audio[None, :n]]), rate, 44)
        scores[strength] = float((env[0] - env[1]).abs().mean())
    assert abs(scores[1.0] - scores[0.0]) > 0.01, scores


def test_runs_foleygram_video_to_audio(comfy_host, comfy_client, object_info, tmp_path, comfy_inprocess):
    """The FoleyGRAM graph with tiny stand-ins: a tiny GRAM (pack format), a ControlNet + projection
    for the test-only Stable Audio (ComfyUI detects Stable Audio only at full size, so
    HostTestStableAudioLoader replaces CheckpointLoaderSimple: MODEL 0, VAE 1)."""
    import torch
    from avlab.common import media
    from tiny_gram import build_controlnet_file, build_gram_files

    gram = comfy_host.add_model("avlab/gram", build_gram_files(tmp_path)["tiny_gram.safetensors"])
    controlnet = comfy_host.add_model("avlab/controlnet", build_controlnet_file(tmp_path))
    frames, fps = 30, 15.0                                   # 2 s, silent
    media.write_video(comfy_host.input_dir / "avlab_foleygram_input.mp4", torch.rand(frames, 40, 56, 3), fps)
    api = ui_to_api(_load("foleygram_video_to_audio.json"), object_info, overrides={
        "LoadVideo": {"file": "avlab_foleygram_input.mp4"},
        "AVLabGramLoader": {"gram_name": gram, "text_folder": "none"},
        "AVLabGramConditioning": {"projection": controlnet},
        "AVLabEnvelopeControlNetLoader": {"controlnet_name": controlnet},
        "KSampler": {"steps": 2, "sampler_name": "euler", "scheduler": "normal"},
        "AVLabSaveVideoWithAudio": {"filename_prefix": "workflows/foleygram"},
        "SaveAudio": {"filename_prefix": "workflows/foleygram"},
    })
    [ckpt] = _ids(api, "CheckpointLoaderSimple")
    api[ckpt] = {"class_type": "HostTestStableAudioLoader", "inputs": {"depth": 2, "seed": 0}}
    for node in api.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == ckpt and value[1] == 2:
                node["inputs"][name] = [ckpt, 1]
    history = comfy_client.run(api, timeout=600)
    [save] = _ids(api, "AVLabSaveVideoWithAudio")
    [path] = comfy_host.output_files(history, save)
    with av.open(str(path)) as f:
        audio, video = f.streams.audio[0], f.streams.video[0]
        assert audio.rate == 44100 and audio.channels == 2
        assert float(audio.duration * audio.time_base) == pytest.approx(frames / fps, abs=0.03)
        assert video.frames == frames
