#!/usr/bin/env python
"""Generate AVLab's shipped ComfyUI workflows (``workflows/*.json``, the editor's UI format).

Each workflow is a compact spec below; :func:`avlab.common.workflow_json.build_ui_workflow` turns it
into the UI format using the node definitions of a real ComfyUI (``/object_info``), so widget order,
defaults and helper widgets always match the host. The script also records the ``/object_info``
entries of every node type the workflows use in ``tests/data/object_info_workflows.json``, the
fixture of the CI-tier tests (``tests/test_workflow_json.py``). The host tier
(``tests/host/test_workflows_host.py``) runs every workflow and checks that the committed files are
exactly what this script makes from the host's ``/object_info``.

    python scripts/make_workflows.py --comfyui /path/to/ComfyUI     # starts ComfyUI with the pack
    python scripts/make_workflows.py --url http://127.0.0.1:8188     # a running ComfyUI with AVLab

AnimateDiff-Evolved must be in that ComfyUI too (``lightcache_animatediff_sd15.json`` uses its nodes):
``--comfyui`` copies it in from where the host tests find it (``$AVLAB_ANIMATEDIFF_PATH``,
``<ComfyUI>/custom_nodes/ComfyUI-AnimateDiff-Evolved`` or ``../shared/host/``).
    python scripts/make_workflows.py --object-info object_info.json  # offline, from a saved answer
    ... --check                                                     # only compare, exit 1 if stale
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"
FIXTURE = ROOT / "tests" / "data" / "object_info_workflows.json"

try:
    from avlab.common.workflow_json import ModelFile, Node, Note, build_ui_workflow, node_types, trim_object_info
except ModuleNotFoundError:  # not installed: load the repository root under the name "avlab"
    import importlib.util

    _spec = importlib.util.spec_from_file_location("avlab", ROOT / "__init__.py",
                                                   submodule_search_locations=[str(ROOT)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["avlab"] = _module
    _spec.loader.exec_module(_module)
    from avlab.common.workflow_json import ModelFile, Node, Note, build_ui_workflow, node_types, trim_object_info

# ------------------------------------------------------------------------------------------------
# official weight files (Comfy-Org repackaged where they exist)
# ------------------------------------------------------------------------------------------------

_HF = "https://huggingface.co"
SD15 = ModelFile("v1-5-pruned-emaonly-fp16.safetensors",
                 f"{_HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
                 "checkpoints")
SVD_XT = ModelFile("svd_xt.safetensors",
                   f"{_HF}/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/svd_xt.safetensors",
                   "checkpoints")
_WAN = f"{_HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN21_T2V_1_3B = ModelFile("wan2.1_t2v_1.3B_fp16.safetensors",
                           f"{_WAN}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", "diffusion_models")
UMT5_XXL = ModelFile("umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                     f"{_WAN}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders")
WAN21_VAE = ModelFile("wan_2.1_vae.safetensors", f"{_WAN}/vae/wan_2.1_vae.safetensors", "vae")
STABLE_AUDIO_OPEN = ModelFile("stable-audio-open-1.0.safetensors",
                              f"{_HF}/stabilityai/stable-audio-open-1.0/resolve/main/model.safetensors", "checkpoints")
#: AVLab LightCache caching settings in the shipped workflows: the library defaults (adaptive schedule, chosen
#: on the benchmark zoo), so a workflow opened as shipped runs what the README measures
def _lightcache_defaults() -> dict:
    from avlab.lightcache import LightCacheConfig

    d = LightCacheConfig()
    return {"cache_interval": d.cache_interval, "cache_depth": d.cache_depth, "start_percent": d.start_percent,
            "end_percent": d.end_percent, "schedule": d.schedule, "swap": d.swap, "verbose": False,
            "adaptive_error": d.adaptive_error}


LIGHTCACHE_DEFAULTS = _lightcache_defaults()

#: AnimateDiff v2 motion module, loaded by the AnimateDiff-Evolved node pack (not a ComfyUI core node).
ANIMATEDIFF_MM = ModelFile("mm_sd_v15_v2.ckpt", f"{_HF}/guoyww/animatediff/resolve/main/mm_sd_v15_v2.ckpt",
                           "animatediff_models")
ANIMATEDIFF_EVOLVED = "https://github.com/Kosinkadink/ComfyUI-AnimateDiff-Evolved"


def _weights(*files: ModelFile) -> str:
    return "\n".join(f"* {f.name}\n  -> ComfyUI/models/{f.directory}/\n  {f.url}" for f in files)


_LIGHTCACHE_ABOUT = (
    "AVLab LightCache (experimental) makes sampling faster without retraining: every cache_interval "
    "steps the whole network runs and its deep features are cached; the steps in between run only the "
    "shallow blocks and reuse the cache. cache_interval 1 = exactly the uncached result. The cache "
    "lives in pinned CPU memory between steps (swap auto, CUDA only). temporal_chunks / spatial_chunks "
    "lower peak memory (same result, a little slower).\n"
    "AVLab Sliced VAE Decode decodes a few latent frames at a time and moves each slice off the GPU, "
    "so long videos decode in little memory.")

_SAVE_NOTE = "Output: ComfyUI/output/AVLab/ (mp4, h264)."


# ------------------------------------------------------------------------------------------------
# the workflows
# ------------------------------------------------------------------------------------------------

def lightcache_animatediff_sd15(object_info: dict) -> dict:
    """SD1.5 → AnimateDiff-Evolved (Gen1 loader, v2 motion module, static context windows) → LightCache
    → KSampler → sliced decode → video."""
    nodes = {
        "ckpt": Node("CheckpointLoaderSimple", models={"ckpt_name": SD15}),
        "context": Node("ADE_StandardStaticContextOptions", title="Context windows (for > 16 frames)",
                        widgets={"context_length": 16, "context_overlap": 4, "fuse_method": "pyramid",
                                 "use_on_equal_length": False, "start_percent": 0.0, "guarantee_steps": 1}),
        "animatediff": Node("ADE_AnimateDiffLoaderGen1", title="AnimateDiff Loader",
                            models={"model_name": ANIMATEDIFF_MM}, widgets={"beta_schedule": "autoselect"},
                            links={"model": ("ckpt", 0), "context_options": ("context", 0)}),
        "pos": Node("CLIPTextEncode", title="Prompt", links={"clip": ("ckpt", 1)},
                    widgets={"text": "a red fox trotting through fresh snow in a birch forest, morning light, "
                                     "cinematic, highly detailed"},
                    color="#232", bgcolor="#353"),
        "neg": Node("CLIPTextEncode", title="Negative prompt", links={"clip": ("ckpt", 1)},
                    widgets={"text": "blurry, low quality, watermark, text, deformed"},
                    color="#322", bgcolor="#533"),
        "latent": Node("EmptyLatentImage", title="16 frames (batch = frames)",
                       widgets={"width": 512, "height": 512, "batch_size": 16}),
        "lightcache": Node("AVLabLightCache", widgets={
            **LIGHTCACHE_DEFAULTS, "temporal_chunks": 9, "spatial_chunks": 2}, links={"model": ("animatediff", 0)}),
        "sample": Node("KSampler", links={"model": ("lightcache", 0), "positive": ("pos", 0),
                                          "negative": ("neg", 0), "latent_image": ("latent", 0)},
                       widgets={"seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                                "scheduler": "normal", "denoise": 1.0}),
        "decode": Node("AVLabSlicedVAEDecode", links={"vae": ("ckpt", 2), "samples": ("sample", 0)},
                       widgets={"frames_per_slice": 8, "overlap": 0}),
        "video": Node("CreateVideo", links={"images": ("decode", 0)}, widgets={"fps": 8.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/lightcache_animatediff_sd15", "format": "mp4",
                              "codec": "h264"}),
    }
    notes = [
        Note(title="Weights", text=(
            "Stable Diffusion 1.5 (Comfy-Org repackage):\n" + _weights(SD15) + "\n\n"
            "AnimateDiff v2 motion module, for the 'AnimateDiff Loader':\n" + _weights(ANIMATEDIFF_MM) + "\n\n"
            "The motion nodes come from the AnimateDiff-Evolved node pack (install it with the ComfyUI "
            "Manager or clone " + ANIMATEDIFF_EVOLVED + " into ComfyUI/custom_nodes/); it reads motion "
            "modules from ComfyUI/models/animatediff_models/.")),
        Note(title="AnimateDiff", text=(
            "AnimateDiff Loader (AnimateDiff-Evolved, Gen1) puts the motion module mm_sd_v15_v2.ckpt into "
            "the SD1.5 U-Net; beta_schedule autoselect picks 'sqrt_linear (AnimateDiff)' for it. The 16-image "
            "batch of Empty Latent Image is the 16 frames of one clip (v2 was trained on 16 frames).\n\n"
            "Longer clips: raise batch_size; the Standard Static context options then sample overlapping "
            "windows of 16 frames. Static windows are the same at every step, so LightCache keeps one cache "
            "per window and reuses it; Uniform context options move the windows every step, so cache steps "
            "find nothing stored for the new windows and run in full (correct, but no speed-up).\n"
            "Keep LightCache after the AnimateDiff nodes, right before the KSampler: the motion layers inside "
            "the cached deep blocks are then skipped on cache steps too.")),
        Note(title="AVLab nodes", text=(
            _LIGHTCACHE_ABOUT + "\n\nStarting point here: cache_interval 3, cache_depth 0 (DeepCache / "
            "paper defaults), temporal_chunks 9 and spatial_chunks 2 (paper defaults: frames are split "
            "through the spatial layers, pixels through the motion module's temporal attention). If details "
            "suffer, use cache_interval 2 or raise start_percent to 0.1-0.2. Sliced decode: 8 frames per "
            "slice (the SD VAE is per-frame, so slicing is exact and overlap is not needed).\n" + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="lightcache_animatediff_sd15")


def lightcache_svd_img2vid(object_info: dict) -> dict:
    """SVD-XT image → video with LightCache and overlapping sliced decode of SVD's temporal VAE."""
    nodes = {
        "ckpt": Node("ImageOnlyCheckpointLoader", models={"ckpt_name": SVD_XT}),
        "image": Node("LoadImage", title="Start image", widgets={"image": "example.png"}, free=("image",)),
        "cond": Node("SVD_img2vid_Conditioning",
                     links={"clip_vision": ("ckpt", 1), "init_image": ("image", 0), "vae": ("ckpt", 2)},
                     widgets={"width": 1024, "height": 576, "video_frames": 25, "motion_bucket_id": 127,
                              "fps": 6, "augmentation_level": 0.0}),
        "guidance": Node("VideoLinearCFGGuidance", links={"model": ("ckpt", 0)}, widgets={"min_cfg": 1.0}),
        "lightcache": Node("AVLabLightCache", widgets={
            **LIGHTCACHE_DEFAULTS, "temporal_chunks": 9, "spatial_chunks": 2}, links={"model": ("guidance", 0)}),
        "sample": Node("KSampler", links={"model": ("lightcache", 0), "positive": ("cond", 0),
                                          "negative": ("cond", 1), "latent_image": ("cond", 2)},
                       widgets={"seed": 42, "steps": 20, "cfg": 2.5, "sampler_name": "euler",
                                "scheduler": "karras", "denoise": 1.0}),
        "decode": Node("AVLabSlicedVAEDecode", links={"vae": ("ckpt", 2), "samples": ("sample", 0)},
                       widgets={"frames_per_slice": 8, "overlap": 2}),
        "video": Node("CreateVideo", links={"images": ("decode", 0)}, widgets={"fps": 8.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/lightcache_svd_img2vid", "format": "mp4",
                              "codec": "h264"}),
    }
    notes = [
        Note(title="Weights", text=(
            "Stable Video Diffusion XT (Stability AI; one file holding the U-Net, the temporal VAE and "
            "the CLIP-ViT-H image encoder):\n" + _weights(SVD_XT) + "\n\n"
            "Load any start image in 'Start image' (it is resized to width x height of "
            "SVD_img2vid_Conditioning; 1024x576 is SVD's native size).")),
        Note(title="AVLab nodes", text=(
            _LIGHTCACHE_ABOUT + "\n\nStarting point for SVD-XT (25 frames, 20 steps): cache_interval 3, "
            "cache_depth 0, temporal_chunks 9, spatial_chunks 2 (chunking splits frames through the "
            "spatial layers and pixels through the temporal layers). VideoLinearCFGGuidance stays "
            "before LightCache.\n"
            "Sliced decode: SVD's VAE decoder mixes over time, so slices of 8 frames overlap by 2 "
            "frames and are cross-faded (overlap must be < frames_per_slice; more overlap = smoother, "
            "slower).\n" + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="lightcache_svd_img2vid")


def lightcache_wan21_t2v(object_info: dict) -> dict:
    """Wan 2.1 T2V 1.3B text → video with LightCache on the DiT blocks and Wan-VAE sliced decode."""
    nodes = {
        "unet": Node("UNETLoader", models={"unet_name": WAN21_T2V_1_3B}, widgets={"weight_dtype": "default"}),
        "clip": Node("CLIPLoader", models={"clip_name": UMT5_XXL}, widgets={"type": "wan", "device": "default"}),
        "vae": Node("VAELoader", models={"vae_name": WAN21_VAE}),
        "pos": Node("CLIPTextEncode", title="Prompt", links={"clip": ("clip", 0)},
                    widgets={"text": "a red fox trotting through fresh snow in a birch forest, morning light, "
                                     "tracking shot"},
                    color="#232", bgcolor="#353"),
        "neg": Node("CLIPTextEncode", title="Negative prompt", links={"clip": ("clip", 0)},
                    widgets={"text": "static, blurry, low quality, watermark, subtitles, deformed, "
                                     "extra limbs"},
                    color="#322", bgcolor="#533"),
        "latent": Node("EmptyHunyuanLatentVideo", widgets={"width": 832, "height": 480, "length": 33,
                                                           "batch_size": 1}),
        "shift": Node("ModelSamplingSD3", links={"model": ("unet", 0)}, widgets={"shift": 8.0}),
        "lightcache": Node("AVLabLightCache", widgets={
            **LIGHTCACHE_DEFAULTS, "temporal_chunks": 1, "spatial_chunks": 1}, links={"model": ("shift", 0)}),
        "sample": Node("KSampler", links={"model": ("lightcache", 0), "positive": ("pos", 0),
                                          "negative": ("neg", 0), "latent_image": ("latent", 0)},
                       widgets={"seed": 42, "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc",
                                "scheduler": "simple", "denoise": 1.0}),
        "decode": Node("AVLabSlicedVAEDecode", links={"vae": ("vae", 0), "samples": ("sample", 0)},
                       widgets={"frames_per_slice": 8, "overlap": 0}),
        "video": Node("CreateVideo", links={"images": ("decode", 0)}, widgets={"fps": 16.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/lightcache_wan21_t2v", "format": "mp4",
                              "codec": "h264"}),
    }
    notes = [
        Note(title="Weights", text=(
            "Wan 2.1 text-to-video 1.3B (Comfy-Org repackage):\n"
            + _weights(WAN21_T2V_1_3B, UMT5_XXL, WAN21_VAE))),
        Note(title="AVLab nodes", text=(
            _LIGHTCACHE_ABOUT + "\n\nOn Wan's DiT, LightCache caches the residual of the middle "
            "transformer blocks: cache_depth 2 = the first 2 and the last 2 of the 1.3B model's 30 "
            "blocks always run, cache_interval 2 = every other step reuses the cache, start_percent 0.1 keeps the "
            "first 10 % of the steps full (they fix the layout). ModelSamplingSD3 (shift 8) stays before "
            "LightCache.\n"
            "Sliced decode: Wan's causal VAE decodes one latent frame at a time with its own cache, so "
            "the result equals the plain VAE Decode (frames_per_slice and overlap are ignored).\n"
            "832x480, 33 frames at 16 fps; length must be 4k+1.\n" + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="lightcache_wan21_t2v")


def synthetic_scene_preview(object_info: dict) -> dict:
    """AVLab's procedural scene (no weights) saved as a video with sound, its audio and depth."""
    nodes = {
        "scene": Node("AVLabSyntheticScene", widgets={
            "seed": 0, "frames": 48, "width": 256, "height": 256, "fps": 24.0, "num_objects": 3,
            "sample_rate": 44100, "target_object": 0}),
        "video": Node("CreateVideo", links={"images": ("scene", 0), "fps": ("scene", 3), "audio": ("scene", 2)},
                      widgets={"fps": 24.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/synthetic_scene", "format": "mp4", "codec": "h264"}),
        "audio": Node("SaveAudio", links={"audio": ("scene", 2)},
                      widgets={"filename_prefix": "AVLab/synthetic_scene_audio"}),
        "depth": Node("PreviewImage", title="Depth (near = black)", links={"images": ("scene", 5)}),
        "sentence": Node("PreviewAny", title="Referring sentence of target_object", links={"source": ("scene", 6)}),
    }
    notes = [
        Note(title="AVLab Synthetic Scene", text=(
            "No weights needed. AVLab Synthetic Scene renders a deterministic procedural clip: coloured "
            "shapes bounce, hit the walls and cross the frame; every impact makes a material-dependent "
            "sound and moving objects are panned in stereo by their x position. The same seed and "
            "settings always give the same clip.\n\n"
            "Outputs: frames, the mask of target_object, stereo audio, fps, all ground truth as JSON "
            "(labels), depth maps and a referring sentence for target_object. Create Video muxes the "
            "frames with the audio at the scene's fps; Save Audio writes FLAC.\n"
            "Use it to try any AVLab graph without your own media.\n"
            "Output: ComfyUI/output/AVLab/.")),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="synthetic_scene_preview")


def concert_multicam_edit(object_info: dict) -> dict:
    """Concert cutting (papers.md §3): when to cut, which camera next, the rendered edit, the edit list."""
    nodes = {
        "concert": Node("AVLabSyntheticConcert", title="Cameras + master audio (replace with your recordings)",
                        widgets={"seed": 7, "num_cameras": 3, "duration": 60.0, "fps": 5.0, "width": 256,
                                 "height": 144, "sample_rate": 16000}),
        "models": Node("AVLabConcertModelLoader", widgets={"model": "built-in (synthetic domain)"}),
        "cuts": Node("AVLabConcertCutPoints", links={"models": ("models", 0), "audio": ("concert", 2),
                                                     "cameras": ("concert", 5)},
                     widgets={"variant": "audio", "threshold": -1.0, "min_shot_s": 2.0, "max_shot_s": 20.0,
                              "fps": 5.0}),
        "plot": Node("PreviewImage", title="P(cut) per 4 s segment, and the cuts", links={"images": ("cuts", 2)}),
        "select": Node("AVLabCameraSelector", links={"models": ("models", 0), "cuts": ("cuts", 0),
                                                     "cameras": ("concert", 5)},
                       widgets={"first_camera": 1}),
        "render": Node("AVLabRenderEdit", links={"edit_list": ("select", 0), "cameras": ("concert", 5),
                                                 "audio": ("concert", 2)}),
        "save": Node("SaveVideo", links={"video": ("render", 0)},
                     widgets={"filename_prefix": "AVLab/concert_edit", "format": "mp4", "codec": "h264"}),
        "save_list": Node("AVLabSaveEditList", links={"edit_list": ("select", 0)},
                          widgets={"filename_prefix": "AVLab/concert_edit_list"}),
        "truth": Node("PreviewAny", title="Ground truth of the synthetic concert", links={"source": ("concert", 4)}),
    }
    notes = [
        Note(title="Concert cutting (AVLab)", text=(
            "When to cut: AVLab Concert Cut Points scores every 4 s segment of the music (2 s hop) with the "
            "when-to-cut model (log-mel audio + time since the last cut; the multimodal variant also sees the "
            "latest frame) and cuts on the music inside the segments it picks, every shot between min_shot_s "
            "and max_shot_s.\nHow to cut: AVLab Camera Selector lets the how-to-cut model choose the next "
            "camera at every cut. AVLab Render Edit assembles the program with the master audio; Save Edit "
            "List writes .json, .edl (CMX 3600) and .otio for editing software.\n\n"
            "Weights: the built-in models (trained on the pack's synthetic concerts) need no download. Your "
            "own: a folder in ComfyUI/models/avlab/concert/ with when_audio.safetensors + .json, how."
            "safetensors + .json (optional when_multimodal.*), made by `python -m avlab train concert-when` / "
            "`concert-how`.\nYour recordings: Load Video → Get Video Components per camera → AVLab Camera Set "
            "(same length, size and fps); the master audio into Cut Points and Render Edit. Long concerts: "
            "`python -m avlab concert edit cam1.mp4 cam2.mp4 ... --audio master.wav` streams the files.\n"
            "Output: ComfyUI/output/AVLab/.")),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="concert_multicam_edit")


_FLOWRVS_ABOUT = (
    "FlowRVS (arXiv 2510.06139) segments the object a sentence refers to in every frame: a Wan 2.1 DiT "
    "deforms the video latent into the mask latent along a language-conditioned flow (one Euler step by "
    "default), and a tuned Wan VAE decoder turns the mask latent into masks. Frames of any size and count: "
    "worked on inside 480x832 at multiples of 16 with 4k+1 frames, returned at the input's size and count.")


def flowrvs_referring_segmentation(object_info: dict) -> dict:
    """FlowRVS (papers.md §2): a video + a sentence → per-frame masks, an overlay video, boxes."""
    nodes = {
        "load_video": Node("LoadVideo", title="Your video", widgets={"file": "video.mp4"}, free=("file",)),
        "components": Node("GetVideoComponents", links={"video": ("load_video", 0)}),
        "flowrvs": Node("AVLabFlowRVSLoader", widgets={"model_name": "FlowRVS_dit_mevis.pth",
                                                       "mask_vae_name": "tuned_vae.pth"},
                        free=("model_name", "mask_vae_name")),
        "clip": Node("CLIPLoader", models={"clip_name": UMT5_XXL}, widgets={"type": "wan", "device": "default"}),
        "vae": Node("VAELoader", models={"vae_name": WAN21_VAE}),
        "sentence": Node("CLIPTextEncode", title="Referring sentence", links={"clip": ("clip", 0)},
                         widgets={"text": "the dog running on the left"}, color="#232", bgcolor="#353"),
        "segment": Node("AVLabFlowRVSSegment", links={
            "model": ("flowrvs", 0), "positive": ("sentence", 0), "vae": ("vae", 0),
            "mask_decoder": ("flowrvs", 1), "images": ("components", 0)},
            widgets={"steps": 1, "shift": 3.0, "threshold": 0.5}),
        "overlay": Node("AVLabMaskOverlay", links={"images": ("components", 0), "mask": ("segment", 0)},
                        widgets={"colour": "#ff2020", "alpha": 0.55}),
        "overlay_video": Node("CreateVideo", links={"images": ("overlay", 0), "fps": ("components", 2),
                                                    "audio": ("components", 1)}, widgets={"fps": 24.0}),
        "save_overlay": Node("SaveVideo", links={"video": ("overlay_video", 0)},
                             widgets={"filename_prefix": "AVLab/flowrvs_overlay", "format": "mp4", "codec": "h264"}),
        "mask_images": Node("MaskToImage", links={"mask": ("segment", 0)}),
        "mask_video": Node("CreateVideo", links={"images": ("mask_images", 0), "fps": ("components", 2)},
                           widgets={"fps": 24.0}),
        "save_mask": Node("SaveVideo", links={"video": ("mask_video", 0)},
                          widgets={"filename_prefix": "AVLab/flowrvs_mask", "format": "mp4", "codec": "h264"}),
        "boxes": Node("AVLabMaskToBoxes", links={"mask": ("segment", 0)},
                      widgets={"threshold": 0.5, "empty": "hold last"}),
        "boxes_preview": Node("PreviewImage", title="Boxes per frame", links={"images": ("boxes", 2)}),
    }
    notes = [
        Note(title="Weights", text=(
            "FlowRVS (https://huggingface.co/xmz111/FlowRVS), both into ComfyUI/models/avlab/flowrvs/:\n"
            "* FlowRVS_dit_mevis.pth (the DiT; or its .safetensors made by the AVLab converter)\n"
            "* tuned_vae.pth (the mask decoder)\n"
            "Wan 2.1 (Comfy-Org repackage):\n" + _weights(UMT5_XXL, WAN21_VAE) + "\n"
            "The .pth files are read with torch.load(weights_only=True) only; nothing is downloaded.")),
        Note(title="AVLab FlowRVS", text=(
            _FLOWRVS_ABOUT + "\n\nWrite the sentence in the Referring sentence node. steps 1 is the paper's "
            "setting; more steps use the shifted schedule (AVLab LightCache can then go between the loader and "
            "Segment). Outputs: the overlay video with the original audio, the mask video, per-frame boxes.\n"
            "Load Video reads the file from ComfyUI/input/. " + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="flowrvs_referring_segmentation")


def flowrvs_synthetic_builtin(object_info: dict) -> dict:
    """The pack's tiny FlowRVS on a held-out synthetic referring clip (no weights needed)."""
    nodes = {
        "clip": Node("AVLabSyntheticReferringClip", widgets={"split": "test", "index": 0, "frames": 9, "size": 96,
                                                            "num_objects": 3}),
        "segment": Node("AVLabFlowRVSBuiltin", links={"images": ("clip", 0), "sentence": ("clip", 2)},
                        widgets={"sentence": "the red circle moving left", "steps": 1, "shift": 3.0}),
        "overlay": Node("AVLabMaskOverlay", title="Prediction (red)", links={"images": ("clip", 0),
                                                                             "mask": ("segment", 0)},
                        widgets={"colour": "#ff2020", "alpha": 0.55}),
        "truth": Node("AVLabMaskOverlay", title="Ground truth (green)", links={"images": ("clip", 0),
                                                                               "mask": ("clip", 1)},
                      widgets={"colour": "#20ff40", "alpha": 0.55}),
        "video": Node("CreateVideo", links={"images": ("overlay", 0)}, widgets={"fps": 4.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/flowrvs_builtin", "format": "mp4", "codec": "h264"}),
        "truth_preview": Node("PreviewImage", title="Ground truth (green)", links={"images": ("truth", 0)}),
        "sentence": Node("PreviewAny", title="Referring sentence", links={"source": ("clip", 2)}),
        "boxes": Node("AVLabMaskToBoxes", links={"mask": ("segment", 0)},
                      widgets={"threshold": 0.5, "empty": "hold last"}),
        "boxes_preview": Node("PreviewImage", title="Boxes per frame", links={"images": ("boxes", 2)}),
    }
    notes = [
        Note(title="AVLab FlowRVS Built-in (synthetic)", text=(
            "No weights needed. " + _FLOWRVS_ABOUT + "\n\nThis graph runs the pack's tiny FlowRVS (trained on AVLab's "
            "synthetic referring clips) on a clip of the held-out test split: its sentence names a colour/shape/"
            "motion combination the model never saw, often next to a same-colour, same-shape twin that moves "
            "another way. Change index for other clips, or type your own sentence in the Built-in node after "
            "unlinking it (colours red green blue yellow magenta cyan orange white; circle square triangle; "
            "moving left/right/up/down).\nFor real videos open flowrvs_referring_segmentation.json. " + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="flowrvs_synthetic_builtin")


_GRAM_ABOUT = (
    "GRAM (arXiv 2412.11959, used by FoleyGRAM arXiv 2510.05829) embeds video (EVA-CLIP ViT-g/14, frames sampled "
    "by time from the real fps), text (BERT) and audio (BEATs) in one 512-d space and measures how well they "
    "belong together by the volume of the parallelotope their unit vectors span: smaller volume = better aligned. "
    "AVLab GRAM Similarity ranks candidates by that volume (preview: darker = smaller, the best outlined).")


def gram_similarity(object_info: dict) -> dict:
    """GRAM (papers.md §4): which caption / which sound fits your video — volume ranking."""
    nodes = {
        "load_video": Node("LoadVideo", title="Your video", widgets={"file": "video.mp4"}, free=("file",)),
        "components": Node("GetVideoComponents", links={"video": ("load_video", 0)}),
        "gram": Node("AVLabGramLoader", widgets={"gram_name": "model_step_150000.pt", "text_folder": "bert-base-uncased",
                                                 "precision": "auto"}, free=("gram_name", "text_folder")),
        "encode": Node("AVLabGramEncode", title="Video + its sound + candidate captions", links={
            "gram": ("gram", 0), "images": ("components", 0), "fps": ("components", 2), "audio": ("components", 1)},
            widgets={"fps": 24.0, "text": "a dog barks in a park\nglass shatters on a tiled floor\n"
                     "footsteps on gravel\na car engine starts"}, color="#232", bgcolor="#353"),
        "captions": Node("AVLabGramSimilarity", title="Which caption fits the video?", links={
            "queries": ("encode", 0), "candidates": ("encode", 0)},
            widgets={"query_modality": "video", "candidate_modality": "text", "top_k": 3}),
        "captions_preview": Node("SaveImage", links={"images": ("captions", 0)},
                                 widgets={"filename_prefix": "AVLab/gram_captions"}),
        "captions_ranking": Node("PreviewAny", title="Ranking", links={"source": ("captions", 1)}),
        "with_sound": Node("AVLabGramSimilarity", title="Which caption fits video + sound (3-way volume)?", links={
            "queries": ("encode", 0), "candidates": ("encode", 0)},
            widgets={"query_modality": "text", "candidate_modality": "video+audio", "top_k": 3}),
        "with_sound_preview": Node("PreviewImage", links={"images": ("with_sound", 0)}),
    }
    notes = [
        Note(title="Weights", text=(
            "Into ComfyUI/models/avlab/gram/:\n"
            "* a GRAM checkpoint from the GRAM authors (https://github.com/ispamm/GRAM: ckpt/model_step_N.pt of "
            "GRAM_pretrained_4modalities or a fine-tuned one) — it holds EVA-CLIP ViT-g/14, BERT-base, BEATs and the "
            "512-d heads;\n"
            "* a folder bert-base-uncased/ with its config.json and vocab.txt (https://huggingface.co/bert-base-uncased), "
            "for the tokenizer.\nRead with torch.load(weights_only=True) only; nothing is downloaded.")),
        Note(title="AVLab GRAM", text=(
            _GRAM_ABOUT + "\n\nType candidate captions in the Encode node, one per line. The first Similarity asks "
            "which caption fits the picture; the second uses the sound too (the 3-way volume of caption, video "
            "and audio). Without weights, open gram_synthetic_builtin.json.")),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="gram_similarity")


def gram_synthetic_builtin(object_info: dict) -> dict:
    """The pack's tiny GRAM on a held-out synthetic Foley clip (no weights needed)."""
    nodes = {
        "clip": Node("AVLabSyntheticFoleyClip", widgets={"split": "test", "index": 0}),
        "gram": Node("AVLabGramLoader", widgets={"gram_name": "AVLab built-in: synthetic tiny GRAM",
                                                 "text_folder": "none", "precision": "auto"}),
        "encode": Node("AVLabGramEncode", links={"gram": ("gram", 0), "images": ("clip", 0), "fps": ("clip", 2),
                                                 "audio": ("clip", 1)},
                       widgets={"fps": 8.0, "text": "a yellow metal circle sliding\na yellow glass circle sliding\n"
                                "a yellow metal square sliding\na white metal circle sliding\n"
                                "a yellow metal circle bouncing\na blue wood triangle spinning"},
                       color="#232", bgcolor="#353"),
        "similarity": Node("AVLabGramSimilarity", links={"queries": ("encode", 0), "candidates": ("encode", 0)},
                           widgets={"query_modality": "video", "candidate_modality": "text", "top_k": 3}),
        "preview": Node("PreviewImage", links={"images": ("similarity", 0)}),
        "ranking": Node("PreviewAny", title="Ranking", links={"source": ("similarity", 1)}),
        "truth": Node("PreviewAny", title="True caption", links={"source": ("clip", 3)}),
        "video": Node("CreateVideo", links={"images": ("clip", 0), "audio": ("clip", 1), "fps": ("clip", 2)},
                      widgets={"fps": 8.0}),
        "save": Node("SaveVideo", links={"video": ("video", 0)},
                     widgets={"filename_prefix": "AVLab/gram_clip", "format": "mp4", "codec": "h264"}),
    }
    notes = [
        Note(title="AVLab GRAM Built-in (synthetic)", text=(
            "No weights needed. " + _GRAM_ABOUT + "\n\nThis graph runs the pack's tiny GRAM (trained on AVLab's "
            "synthetic Foley clips: one object whose colour, shape, material and motion are all visible and audible) "
            "on a held-out clip — a combination never seen in training. Edit the candidate captions (colours red green "
            "blue yellow magenta cyan orange white; circle square triangle; metal glass wood rubber; bouncing sliding "
            "spinning) or change index. For real videos open gram_similarity.json. " + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="gram_synthetic_builtin")


def foleygram_video_to_audio(object_info: dict) -> dict:
    """FoleyGRAM (papers.md §4): a silent video → GRAM conditioning + the envelope from the picture →
    Stable Audio Open with the envelope ControlNet → the video with its new soundtrack."""
    nodes = {
        "load_video": Node("LoadVideo", title="Your video (silent is fine)", widgets={"file": "video.mp4"},
                           free=("file",)),
        "components": Node("GetVideoComponents", links={"video": ("load_video", 0)}),
        "gram": Node("AVLabGramLoader", widgets={"gram_name": "model_step_150000.pt", "text_folder": "bert-base-uncased",
                                                 "precision": "auto"}, free=("gram_name", "text_folder")),
        "encode": Node("AVLabGramEncode", links={"gram": ("gram", 0), "images": ("components", 0),
                                                 "fps": ("components", 2)},
                       widgets={"fps": 24.0, "text": "a wooden stick hitting a metal railing"},
                       color="#232", bgcolor="#353"),
        "envelope": Node("AVLabVideoEnvelope", links={"images": ("components", 0), "fps": ("components", 2)},
                         widgets={"fps": 24.0, "rate": round(44100 / 2048, 4)}),
        "envelope_preview": Node("PreviewImage", title="Envelope from the picture", links={"images": ("envelope", 1)}),
        "conditioning": Node("AVLabGramConditioning", links={"embeds": ("encode", 0), "seconds_total": ("envelope", 2)},
                             widgets={"projection": "foleygram_envelope_controlnet.safetensors", "seconds_start": 0.0,
                                      "seconds_total": 10.0, "item": 0}, free=("projection",)),
        "checkpoint": Node("CheckpointLoaderSimple", models={"ckpt_name": STABLE_AUDIO_OPEN}),
        "controlnet": Node("AVLabEnvelopeControlNetLoader",
                           widgets={"controlnet_name": "foleygram_envelope_controlnet.safetensors"},
                           free=("controlnet_name",)),
        "apply": Node("AVLabEnvelopeControlNetApply", links={
            "model": ("checkpoint", 0), "controlnet": ("controlnet", 0), "envelope": ("envelope", 0)},
            widgets={"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}),
        "latent": Node("EmptyLatentAudio", links={"seconds": ("envelope", 2)}, widgets={"seconds": 10.0, "batch_size": 1}),
        "sample": Node("KSampler", links={"model": ("apply", 0), "positive": ("conditioning", 0),
                                          "negative": ("conditioning", 1), "latent_image": ("latent", 0)},
                       widgets={"seed": 0, "steps": 100, "cfg": 7.0, "sampler_name": "dpmpp_3m_sde_gpu",
                                "scheduler": "exponential", "denoise": 1.0}),
        "decode": Node("VAEDecodeAudio", links={"samples": ("sample", 0), "vae": ("checkpoint", 2)}),
        "save": Node("AVLabSaveVideoWithAudio", links={"images": ("components", 0), "fps": ("components", 2),
                                                       "audio": ("decode", 0)},
                     widgets={"fps": 24.0, "filename_prefix": "AVLab/foleygram", "crf": 19, "audio_fit": "pad or trim"}),
        "save_audio": Node("SaveAudio", links={"audio": ("decode", 0)}, widgets={"filename_prefix": "AVLab/foleygram"}),
    }
    notes = [
        Note(title="Weights", text=(
            "Into ComfyUI/models/avlab/gram/: the GRAM checkpoint (model_step_N.pt, https://github.com/ispamm/GRAM) and a "
            "bert-base-uncased/ folder (config.json + vocab.txt).\n"
            "Into ComfyUI/models/avlab/controlnet/: a FoleyGRAM envelope ControlNet .safetensors trained by "
            "`python -m avlab train foley-controlnet` (it also holds the GRAM→token projection). No official FoleyGRAM "
            "ControlNet weights are published; AVLab does not ship one for Stable Audio Open yet.\n"
            "Stable Audio Open:\n" + _weights(STABLE_AUDIO_OPEN) + "\nNothing is downloaded by AVLab.")),
        Note(title="AVLab FoleyGRAM", text=(
            "FoleyGRAM (arXiv 2510.05829) makes the sound of a video with Stable Audio Open: GRAM embeddings of the "
            "picture (and your caption) replace the T5 text tokens, and an envelope ControlNet puts the sound's "
            "loudness where the picture moves. AVLab Video Envelope gives that envelope from the frames (motion "
            "energy, no weights) and the video's length in seconds, which sets the audio length; AVLab Audio Envelope "
            "takes it from a reference sound instead. The result is saved with the video, audio padded/trimmed to it.")),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="foleygram_video_to_audio")


def foleygram_synthetic_builtin(object_info: dict) -> dict:
    """FoleyGRAM end to end on the pack's own tiny models (no weights needed): a held-out synthetic clip →
    GRAM video token + envelope from the picture → tiny Stable Audio with the envelope ControlNet → mp4."""
    builtin_cn = "AVLab built-in: synthetic tiny ControlNet (for AVLab Tiny Stable Audio)"
    nodes = {
        "clip": Node("AVLabSyntheticFoleyClip", widgets={"split": "test", "index": 0,
                                                         "preset": "Foley generator: 32 frames at 16 fps, 44.1 kHz (2 s)"}),
        "gram": Node("AVLabGramLoader", widgets={"gram_name": "AVLab built-in: synthetic tiny GRAM",
                                                 "text_folder": "none", "precision": "auto"}),
        "encode": Node("AVLabGramEncode", links={"gram": ("gram", 0), "images": ("clip", 0), "fps": ("clip", 2)},
                       widgets={"fps": 16.0, "text": ""}, color="#232", bgcolor="#353"),
        "envelope": Node("AVLabVideoEnvelope", links={"images": ("clip", 0), "fps": ("clip", 2)},
                         widgets={"fps": 16.0, "rate": round(44100 / 2048, 4), "mapper": "AVLab built-in: synthetic RMS mapper"}),
        "envelope_preview": Node("PreviewImage", title="Envelope from the picture", links={"images": ("envelope", 1)}),
        "conditioning": Node("AVLabGramConditioning", links={"embeds": ("encode", 0), "seconds_total": ("envelope", 2)},
                             widgets={"projection": builtin_cn, "seconds_start": 0.0, "seconds_total": 2.0, "item": 0}),
        "model": Node("AVLabTinyStableAudio"),
        "controlnet": Node("AVLabEnvelopeControlNetLoader", widgets={"controlnet_name": builtin_cn}),
        "apply": Node("AVLabEnvelopeControlNetApply", links={
            "model": ("model", 0), "controlnet": ("controlnet", 0), "envelope": ("envelope", 0)},
            widgets={"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}),
        "latent": Node("EmptyLatentAudio", links={"seconds": ("envelope", 2)}, widgets={"seconds": 2.0, "batch_size": 1}),
        "sample": Node("KSampler", links={"model": ("apply", 0), "positive": ("conditioning", 0),
                                          "negative": ("conditioning", 1), "latent_image": ("latent", 0)},
                       widgets={"seed": 0, "steps": 50, "cfg": 1.0, "sampler_name": "euler",
                                "scheduler": "simple", "denoise": 1.0}),
        "decode": Node("VAEDecodeAudio", links={"samples": ("sample", 0), "vae": ("model", 1)}),
        "save": Node("AVLabSaveVideoWithAudio", links={"images": ("clip", 0), "fps": ("clip", 2), "audio": ("decode", 0)},
                     widgets={"fps": 16.0, "filename_prefix": "AVLab/foleygram_synthetic", "crf": 19,
                              "audio_fit": "pad or trim"}),
        "original": Node("PreviewAudio", title="The clip's real sound", links={"audio": ("clip", 1)}),
    }
    notes = [
        Note(title="AVLab FoleyGRAM Built-in (synthetic)", text=(
            "No weights needed. FoleyGRAM end to end on AVLab's own tiny models, trained on its synthetic Foley "
            "domain: a held-out clip (a colour/shape/material combination never seen in training) → the built-in "
            "GRAM's video embedding as the conditioning token, and the loudness envelope predicted from the frames "
            "by the built-in RMS mapper → the tiny Stable Audio (ComfyUI's own Stable Audio classes, 44.1 kHz "
            "stereo) with its envelope ControlNet → the clip with its generated sound. Set the ControlNet's "
            "strength to 0 to hear the base model alone: the impacts lose their timing. Compare with 'The clip's "
            "real sound'. For real videos open foleygram_video_to_audio.json. " + _SAVE_NOTE)),
    ]
    return build_ui_workflow(nodes, object_info, notes, workflow_id="foleygram_synthetic_builtin")


WORKFLOWS: dict[str, Callable[[dict], dict]] = {
    "concert_multicam_edit.json": concert_multicam_edit,
    "flowrvs_referring_segmentation.json": flowrvs_referring_segmentation,
    "flowrvs_synthetic_builtin.json": flowrvs_synthetic_builtin,
    "foleygram_synthetic_builtin.json": foleygram_synthetic_builtin,
    "foleygram_video_to_audio.json": foleygram_video_to_audio,
    "gram_similarity.json": gram_similarity,
    "gram_synthetic_builtin.json": gram_synthetic_builtin,
    "lightcache_animatediff_sd15.json": lightcache_animatediff_sd15,
    "lightcache_svd_img2vid.json": lightcache_svd_img2vid,
    "lightcache_wan21_t2v.json": lightcache_wan21_t2v,
    "synthetic_scene_preview.json": synthetic_scene_preview,
}


def build_all(object_info: dict) -> dict[str, dict]:
    """Every shipped workflow: file name → UI-format JSON."""
    return {name: make(object_info) for name, make in WORKFLOWS.items()}


def dumps(workflow: dict) -> str:
    """The exact text written to disk (stable key order, UTF-8, trailing newline)."""
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


#: Recorded in the fixture besides the workflows' own types: the CI tests also convert workflows the
#: ComfyUI editor saved (the core templates), which decode with the native VAE Decode.
FIXTURE_EXTRA_TYPES = ("VAEDecode",)


#: Inputs whose options are the files of the machine that recorded the fixture (model folders, input/):
#: emptied in the fixture so it never depends on (or reveals) that machine's files.
FILE_LIST_INPUTS = {("CheckpointLoaderSimple", "ckpt_name"), ("ImageOnlyCheckpointLoader", "ckpt_name"),
                    ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"),
                    ("LoadImage", "image"), ("LoadVideo", "file"),
                    ("AVLabFlowRVSLoader", "model_name"), ("AVLabFlowRVSLoader", "mask_vae_name"),
                    ("ADE_AnimateDiffLoaderGen1", "model_name")}


def fixture(object_info: dict, workflows: dict[str, dict]) -> dict:
    """The ``/object_info`` entries of every node type the workflows use (the CI-tier fixture)."""
    types = set().union(*(node_types(w) for w in workflows.values()), FIXTURE_EXTRA_TYPES)
    trimmed = json.loads(json.dumps(trim_object_info(object_info, types)))  # a deep copy
    for node_type, name in FILE_LIST_INPUTS:
        spec = trimmed.get(node_type, {}).get("input", {}).get("required", {}).get(name)
        if spec is not None and isinstance(spec[0], list):
            spec[0] = []
    return trimmed


# ------------------------------------------------------------------------------------------------
# getting /object_info
# ------------------------------------------------------------------------------------------------

def object_info_from_url(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=120) as resp:
        return json.loads(resp.read())


def object_info_from_comfyui(comfyui: Path, timeout: float = 240.0) -> dict:
    """Start ComfyUI (``--cpu``, temporary base dir, this repository linked as ``custom_nodes/avlab``,
    a copy of AnimateDiff-Evolved beside it — found as the host tests find it, see
    ``tests/host/comfy_host.find_animatediff``: ``$AVLAB_ANIMATEDIFF_PATH``,
    ``<comfyui>/custom_nodes/ComfyUI-AnimateDiff-Evolved`` or ``../shared/host/``)."""
    sys.path.insert(0, str(ROOT / "tests" / "host"))
    from comfy_host import ANIMATEDIFF_DIR, ComfyHost, find_animatediff  # no comfy import

    animatediff, how = find_animatediff(comfyui)
    if animatediff is None:
        raise SystemExit(f"make_workflows: {how}\n(lightcache_animatediff_sd15.json uses its nodes)")
    with tempfile.TemporaryDirectory(prefix="avlab-make-workflows-") as base:
        host = ComfyHost(Path(comfyui), Path(base))
        host.link_custom_node("avlab", ROOT)
        host.copy_custom_node(ANIMATEDIFF_DIR, animatediff)
        try:
            host.start(timeout=timeout)
            return host.client.object_info()
        finally:
            host.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--comfyui", type=Path, help="ComfyUI checkout to start (with this pack linked)")
    src.add_argument("--url", help="URL of a running ComfyUI that has AVLab installed")
    src.add_argument("--object-info", type=Path, help="a saved /object_info JSON answer")
    ap.add_argument("--out", type=Path, default=WORKFLOW_DIR, help="output directory (default: workflows/)")
    ap.add_argument("--fixture", type=Path, default=FIXTURE,
                    help="where to write the trimmed /object_info fixture ('' = don't)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or stale")
    args = ap.parse_args(argv)

    if args.comfyui:
        info = object_info_from_comfyui(args.comfyui)
    elif args.url:
        info = object_info_from_url(args.url)
    else:
        info = json.loads(args.object_info.read_text())

    workflows = build_all(info)
    outputs = {args.out / name: dumps(wf) for name, wf in workflows.items()}
    if str(args.fixture):
        outputs[args.fixture] = json.dumps(fixture(info, workflows), indent=1, sort_keys=True) + "\n"
    stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p}")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{'wrote' if path in stale else 'unchanged'} {path.relative_to(ROOT) if ROOT in path.parents else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
