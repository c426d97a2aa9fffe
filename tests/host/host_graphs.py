"""API-format prompts of native ComfyUI graphs on the tiny checkpoints, for host tests to reuse.

Node ids are stable names ("ckpt"/"unet", "pos", "neg", "latent", "sample", "vae", "decode", "save"),
so a test can splice its own node in, e.g. put an AVLab model patch between loader and sampler::

    prompt = sd15_txt2img("lightcache/sd15")
    prompt["patch"] = {"class_type": "AVLabLightCache", "inputs": {"model": ["ckpt", 0], ...}}
    prompt["sample"]["inputs"]["model"] = ["patch", 0]
"""

from __future__ import annotations

from tiny_checkpoints import TINY


def sd15_txt2img(prefix: str, width: int = 64, height: int = 64, steps: int = 2, seed: int = 0) -> dict:
    """CheckpointLoaderSimple + 2×CLIPTextEncode + EmptyLatentImage + KSampler + VAEDecode + SaveImage."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY["sd15"]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube on a table", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def wan21_t2v(prefix: str, width: int = 32, height: int = 32, length: int = 5, steps: int = 2, seed: int = 0) -> dict:
    """UNETLoader (Wan 2.1 T2V) + 4096-wide test conditioning + EmptyHunyuanLatentVideo + KSampler +
    VAELoader (Wan 2.1 VAE) + VAEDecode + SaveImage (one PNG per frame)."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY["wan21_t2v"], "weight_dtype": "default"}},
        "pos": {"class_type": "HostTestConditioning", "inputs": {"width": 4096, "tokens": 8, "fill": "normal", "seed": 1}},
        "neg": {"class_type": "HostTestConditioning", "inputs": {"width": 4096, "tokens": 8, "fill": "zeros", "seed": 0}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": TINY["wan21_vae"]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
