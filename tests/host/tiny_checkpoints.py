"""Tiny random checkpoints in the official key layouts, for the host test tier (design.md "Test tiers").

No machine here can download weights, so the host tests load *random* weights through ComfyUI's own
loaders. Every file uses the key names and layout of the official release, so the loaders' model
detection runs exactly as it does for the real checkpoints:

==============================  ===============================  ========================================
file (model folder)              ComfyUI loader / detection       what is reduced
==============================  ===============================  ========================================
checkpoints/                     ``CheckpointLoaderSimple``       U-Net depth only: ``channel_mult [1, 2]``,
``avlab_tiny_sd15.safetensors``  → ``SD15``                       1 res block, transformer depth 1 (widths
                                                                  320 / context 768 are what detection
                                                                  matches). Full SD VAE and full CLIP-L
                                                                  (fixed-size in ``comfy/sd.py``).
diffusion_models/                ``UNETLoader`` → ``WAN21_T2V``   dim 128 (1 head of 128), ffn 256,
``avlab_tiny_wan21_t2v...``                                       2 layers; text_dim 4096, in/out 16.
vae/                             ``VAELoader`` → Wan 2.1 VAE      nothing: ``comfy/sd.py`` builds the Wan
``avlab_tiny_wan21_vae...``                                       2.1 VAE at its fixed size (~127 M).
diffusion_models/                ``UNETLoader`` →                 ``channel_mult [1, 1, 1, 1]`` (widths 320
``avlab_tiny_svd_unet...``       ``SVD_img2vid``                  everywhere); depth is fixed by detection
                                                                  (``transformer_depth [1]*6 + [0, 0]``).
checkpoints/ (extra, on demand)  ``ImageOnlyCheckpointLoader``    the SVD U-Net above plus SVD's temporal
``avlab_tiny_svd_xt...``         → ``SVD_img2vid`` + video VAE    VAE (fixed size in ``comfy/sd.py``), in
                                                                  the ``svd_xt.safetensors`` layout but
                                                                  *without* the CLIP-ViT-H image encoder
                                                                  (fixed at ~632 M parameters), so the
                                                                  loader's CLIP_VISION output is None.
==============================  ===============================  ========================================

Files are fp16 on disk, random with fan-in scaled normals (norm gains 1, biases 0), seeded, so every
output is finite and reproducible. They are generated once per :data:`FACTORY_VERSION` into a cache
directory (``$AVLAB_TEST_CACHE`` or ``~/.cache/avlab-tests``) and never committed.

Generation builds the modules from the ComfyUI classes themselves (whose parameter names *are* the
official checkpoint names) and therefore imports ``comfy``. That never happens in the pytest process:
:func:`ensure_tiny_checkpoints` runs this file as a subprocess (``python tiny_checkpoints.py --comfyui
PATH --out DIR``) with ``--cpu`` parsed before ``comfy`` is imported.

Stable Audio is not here: its detection is fixed-size (``audio_model: dit1.0``), so a small model is
built in-process instead (``tiny_stable_audio.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Bump when any file's content or layout changes: the cache directory name carries it.
FACTORY_VERSION = 1
SEED = 20251125

# name -> (ComfyUI model folder, file name)
FILES: dict[str, tuple[str, str]] = {
    "sd15": ("checkpoints", "avlab_tiny_sd15.safetensors"),
    "wan21_t2v": ("diffusion_models", "avlab_tiny_wan21_t2v.safetensors"),
    "wan21_vae": ("vae", "avlab_tiny_wan21_vae.safetensors"),
    "svd_unet": ("diffusion_models", "avlab_tiny_svd_unet.safetensors"),
}
#: Files only some tests need, generated on demand by :func:`ensure_extra_checkpoint` (never linked
#: into the server's models by the ``comfy_host`` fixture; a test adds them with ``add_model``).
EXTRA_FILES: dict[str, tuple[str, str]] = {
    "svd_xt": ("checkpoints", "avlab_tiny_svd_xt.safetensors"),
}
#: name -> file name as ComfyUI lists it in its model folder (what loader nodes take).
TINY = {name: fname for name, (_folder, fname) in FILES.items()}

# Architecture numbers the files are built with (also written to the manifest).
SD15_UNET = dict(
    image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1, 1],
    channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
    transformer_depth_middle=1, context_dim=768, num_heads=8, num_head_channels=-1,
    use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    use_checkpoint=False,
)
SD_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
              num_res_blocks=2, attn_resolutions=[], dropout=0.0)
WAN21_T2V = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=128, ffn_dim=256, freq_dim=256,
                 text_dim=4096, out_dim=16, num_heads=1, num_layers=2, window_size=(-1, -1), qk_norm=True,
                 cross_attn_norm=True, eps=1e-6)
WAN21_VAE = dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
SVD_UNET = dict(
    image_size=32, in_channels=8, model_channels=320, out_channels=4, num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 1, 1, 1], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
    context_dim=1024, num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
    use_spatial_transformer=True, legacy=False, adm_in_channels=768, num_classes="sequential",
    use_temporal_resblock=True, use_temporal_attention=True, extra_ff_mix_layer=True, use_spatial_context=True,
    merge_strategy="learned_with_images", merge_factor=0.0, video_kernel_size=[3, 1, 1],
    disable_temporal_crossattention=False, use_checkpoint=False,
)


# --------------------------------------------------------------------------------------------------
# pytest side (no comfy import)
# --------------------------------------------------------------------------------------------------

def cache_root() -> Path:
    """``$AVLAB_TEST_CACHE`` or ``~/.cache/avlab-tests``."""
    env = os.environ.get("AVLAB_TEST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "avlab-tests"


def checkpoint_dir() -> Path:
    """Directory holding this factory version's files (``<cache>/tiny-checkpoints-v<N>``)."""
    return cache_root() / f"tiny-checkpoints-v{FACTORY_VERSION}"


def _complete(directory: Path) -> bool:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return False
    return all((directory / folder / name).is_file() for folder, name in FILES.values())


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tiny_checkpoints(comfyui_path: str | os.PathLike, python: str | None = None,
                            timeout: float = 1800.0) -> dict:
    """Return ``{"dir": Path, "files": {name: Path}, "manifest": dict, "generated_s": float|None}``.

    Generates the files (in a subprocess that imports ComfyUI from ``comfyui_path``) unless the cache
    already holds this factory version. Safe against concurrent runs (file lock + atomic rename).
    """
    target = checkpoint_dir()
    generated_s = None
    if not _complete(target):
        with _file_lock(cache_root() / f".tiny-checkpoints-v{FACTORY_VERSION}.lock"):
            if not _complete(target):
                t0 = time.perf_counter()
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-v{FACTORY_VERSION}-", dir=cache_root()))
                try:
                    cmd = [python or sys.executable, os.path.abspath(__file__),
                           "--comfyui", os.fspath(comfyui_path), "--out", os.fspath(tmp)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                          cwd=os.fspath(comfyui_path))
                    if proc.returncode != 0:
                        raise RuntimeError(
                            f"tiny checkpoint generation failed (exit {proc.returncode}):\n"
                            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
                    os.chmod(tmp, 0o755)
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(tmp, target)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
                generated_s = time.perf_counter() - t0
    manifest = json.loads((target / "manifest.json").read_text())
    files = {name: target / folder / fname for name, (folder, fname) in FILES.items()}
    return {"dir": target, "files": files, "manifest": manifest, "generated_s": generated_s}


def ensure_extra_checkpoint(name: str, comfyui_path: str | os.PathLike, python: str | None = None,
                            timeout: float = 1800.0) -> Path:
    """Path of the :data:`EXTRA_FILES` file ``name`` (generated once into
    ``<cache>/tiny-extra-<name>-v<N>``, like :func:`ensure_tiny_checkpoints`)."""
    folder, fname = EXTRA_FILES[name]
    target = cache_root() / f"tiny-extra-{name}-v{FACTORY_VERSION}"
    path = target / folder / fname
    if not path.is_file():
        with _file_lock(cache_root() / f".tiny-extra-{name}-v{FACTORY_VERSION}.lock"):
            if not path.is_file():
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-extra-{name}-", dir=cache_root()))
                try:
                    cmd = [python or sys.executable, os.path.abspath(__file__), "--comfyui", os.fspath(comfyui_path),
                           "--out", os.fspath(tmp), "--only", name]
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                          cwd=os.fspath(comfyui_path))
                    if proc.returncode != 0:
                        raise RuntimeError(f"tiny checkpoint {name} generation failed (exit {proc.returncode}):\n"
                                           f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
                    os.chmod(tmp, 0o755)
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(tmp, target)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------------------
# generator side (subprocess; imports comfy)
# --------------------------------------------------------------------------------------------------

def import_comfy(comfyui_path: str) -> None:
    """Put ComfyUI on ``sys.path`` and parse ``--cpu`` before anything imports ``comfy.model_management``."""
    comfyui_path = os.path.abspath(comfyui_path)
    if comfyui_path not in sys.path:
        sys.path.insert(0, comfyui_path)
    saved = sys.argv
    sys.argv = [os.path.join(comfyui_path, "main.py"), "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu now)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved


def init_random(module, seed: int) -> None:
    """Deterministic small random init of every parameter (ComfyUI's ops skip weight init).

    Linear/Conv/Embedding weights: normal with std 1/sqrt(fan_in) (0.02 for embeddings); norm gains 1;
    biases 0; SVD mix factors 0; anything else (Wan modulation, Fourier weights...) normal std 0.02;
    rotary ``inv_freq`` buffers (allocated empty by ComfyUI) the standard base-10000 frequencies.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def normal_(t, std):
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std)

    with torch.no_grad():
        for mod in module.modules():
            cls = type(mod).__mro__
            names = {c.__name__ for c in cls}
            direct = dict(mod.named_parameters(recurse=False))
            if not direct:
                continue
            if any("Norm" in n or n.startswith("RMS") for n in names):
                for pname, p in direct.items():
                    (p.zero_() if pname in ("bias", "beta") else p.fill_(1.0))
                    done.add(id(p))
            elif names & {"Linear", "Conv1d", "Conv2d", "Conv3d"}:
                w = direct.get("weight")
                if w is not None:
                    normal_(w, 1.0 / max(1, w[0].numel()) ** 0.5)
                    done.add(id(w))
                b = direct.get("bias")
                if b is not None:
                    b.zero_()
                    done.add(id(b))
            elif "Embedding" in names:
                w = direct["weight"]
                normal_(w, 0.02)
                done.add(id(w))
        for pname, p in module.named_parameters():
            if id(p) in done:
                continue
            if pname.endswith("mix_factor") or pname.endswith("bias") or pname.endswith("beta"):
                p.zero_()
            elif pname.endswith("gamma"):
                p.fill_(1.0)
            elif pname.endswith("modulation"):
                normal_(p, p.shape[-1] ** -0.5)
            else:
                normal_(p, 0.02)
        for bname, b in module.named_buffers():
            if bname.endswith("inv_freq") and b.ndim == 1:
                # rotary frequencies that ComfyUI allocates with torch.empty and fills from the checkpoint
                # (Stable Audio DiT): garbage memory here made the host tier flaky (NaN outputs)
                dim = 2 * b.numel()
                b.copy_(1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)))
            elif b.is_floating_point() and not torch.isfinite(b).all():
                raise RuntimeError(f"uninitialised buffer {bname}")


def _build(cls, kwargs, seed):
    import torch
    import comfy.ops

    module = cls(**kwargs, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
    module = module.to_empty(device="cpu")
    init_random(module, seed)
    return module


def _fp16(sd: dict, prefix: str = "") -> dict:
    import torch

    out = {}
    for k, v in sd.items():
        v = v.detach()
        out[prefix + k] = (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
    return out


def build_sd15() -> dict:
    """Official SD1.x single-file layout: model.diffusion_model.* / first_stage_model.* /
    cond_stage_model.transformer.text_model.*"""
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.clip_model
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL

    sd = _fp16(_build(UNetModel, SD15_UNET, SEED).state_dict(), "model.diffusion_model.")
    vae = AutoencoderKL(ddconfig=dict(SD_VAE), embed_dim=4)  # torch-initialised, then re-randomised
    init_random(vae, SEED + 1)
    sd.update(_fp16(vae.state_dict(), "first_stage_model."))
    cfg_path = os.path.join(os.path.dirname(comfy.clip_model.__file__), "sd1_clip_config.json")
    with open(cfg_path) as fh:
        clip_cfg = json.load(fh)
    clip = comfy.clip_model.CLIPTextModel(clip_cfg, dtype=torch.float32, device="meta",
                                          operations=comfy.ops.disable_weight_init).to_empty(device="cpu")
    init_random(clip, SEED + 2)
    clip_sd = {k: v for k, v in clip.state_dict().items() if k.startswith("text_model.")}
    sd.update(_fp16(clip_sd, "cond_stage_model.transformer."))
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return sd


def build_wan21_t2v() -> dict:
    """Original Wan 2.1 key names (``patch_embedding``, ``blocks.N.self_attn.q``, ``head.modulation``)."""
    from comfy.ldm.wan.model import WanModel

    return _fp16(_build(WanModel, WAN21_T2V, SEED + 3).state_dict())


def build_wan21_vae() -> dict:
    """Original Wan 2.1 VAE key names (``encoder.conv1``, ``decoder.middle.0.residual.0.gamma``...)."""
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(**WAN21_VAE)
    init_random(vae, SEED + 4)
    return _fp16(vae.state_dict())


def build_svd_unet() -> dict:
    """SVD (sgm) U-Net keys under the official ``model.diffusion_model.`` prefix (U-Net only)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return _fp16(_build(UNetModel, SVD_UNET, SEED + 5).state_dict(), "model.diffusion_model.")


SVD_VAE = dict(SD_VAE)  # comfy/sd.py: the encoder's config; the decoder adds video_kernel_size / alpha


def build_svd_xt() -> dict:
    """``svd_xt.safetensors`` layout minus the image encoder: ``model.diffusion_model.*`` (the tiny SVD
    U-Net) + ``first_stage_model.*`` (SVD's VAE with the temporal ``VideoDecoder``)."""
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    sd = build_svd_unet()
    vae = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": dict(SVD_VAE)},
        decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder",
                        "params": dict(SVD_VAE, video_kernel_size=[3, 1, 1], alpha=0.0)})
    init_random(vae, SEED + 6)
    sd.update(_fp16(vae.state_dict(), "first_stage_model."))
    return sd


BUILDERS = {"sd15": build_sd15, "wan21_t2v": build_wan21_t2v, "wan21_vae": build_wan21_vae,
            "svd_unet": build_svd_unet, "svd_xt": build_svd_xt}


def _detect(name: str, sd: dict) -> str:
    """Which ComfyUI model config / VAE type the host's own detection picks for ``sd``."""
    import comfy.model_detection as md
    import comfy.utils

    sd = dict(sd)  # the helpers below pop keys
    if name == "wan21_vae":
        return "wan21_vae" if ("decoder.middle.0.residual.0.gamma" in sd
                               and "decoder.upsamples.0.upsamples.0.residual.2.weight" not in sd) else "unknown"
    prefix = md.unet_prefix_from_state_dict(sd)
    if name != "sd15":  # UNETLoader strips a checkpoint prefix, then detects with prefix ""
        if prefix == "model.diffusion_model.":
            sd = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
        prefix = ""
    cfg = md.model_config_from_unet(sd, prefix)
    return type(cfg).__name__ if cfg is not None else "none"


def generate(comfyui_path: str, out: str, names: list[str] | None = None) -> dict:
    """Write every file of :data:`FILES` (or the named files of :data:`FILES` / :data:`EXTRA_FILES`)
    plus ``manifest.json`` into ``out``."""
    import_comfy(comfyui_path)
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    manifest = {"factory_version": FACTORY_VERSION, "seed": SEED, "files": {}}
    every = {**FILES, **EXTRA_FILES}
    for name, (folder, fname) in (FILES if names is None else {n: every[n] for n in names}).items():
        t0 = time.perf_counter()
        sd = BUILDERS[name]()
        detected = _detect(name, sd)
        path = Path(out) / folder / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, os.fspath(path), metadata={"avlab_tiny_checkpoint": name,
                                                  "factory_version": str(FACTORY_VERSION)})
        manifest["files"][name] = {
            "folder": folder, "filename": fname, "detected": detected,
            "params": int(sum(v.numel() for v in sd.values())), "bytes": path.stat().st_size,
            "build_s": round(time.perf_counter() - t0, 2),
        }
        del sd
        print(f"{name}: {manifest['files'][name]}", flush=True)
    (Path(out) / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (COMFYUI_PATH)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--only", nargs="*", default=None, help="only these files (names of FILES / EXTRA_FILES)")
    args = ap.parse_args(argv)
    generate(args.comfyui, args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
