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
checkpoints/ (extra, on demand)  ``CheckpointLoaderSimple``       SD1.5's full-width block structure (an
``avlab_tiny_sd15_ad...``        → ``SD15``                       AnimateDiff motion module needs it, see
                                                                  :func:`build_sd15_ad`), spatial
                                                                  transformers on the first level only;
                                                                  VAE and CLIP as ``sd15``. ~0.57 B U-Net.
animatediff_models/ (extra)      AnimateDiff-Evolved's loaders    nothing (widths fixed by the loader):
``avlab_tiny_mm_sd_v15_v2...``   → SD1.5 motion module ``v2``     ``mm_sd_v15_v2.ckpt`` key layout, ~0.45 B
                                                                  (:func:`build_mm_sd_v15_v2`).
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
    "sd15_ad": ("checkpoints", "avlab_tiny_sd15_ad.safetensors"),
    "mm_sd_v15_v2": ("animatediff_models", "avlab_tiny_mm_sd_v15_v2.safetensors"),
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
#: SD1.5 U-Net that AnimateDiff-Evolved can inject a v2 motion module into (see :func:`build_sd15_ad`).
SD15_AD_UNET = dict(
    image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 0, 0, 0, 0, 0, 0],
    transformer_depth_output=[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], transformer_depth_middle=-1,
    context_dim=768, num_heads=8, num_head_channels=-1, use_linear_in_transformer=False,
    use_spatial_transformer=True, legacy=False, adm_in_channels=None, use_checkpoint=False,
)
#: AnimateDiff v2 motion module (``mm_sd_v15_v2.ckpt``): widths of its down blocks (up blocks reversed),
#: of its mid block, and its positional-encoding length.
MM_V2_WIDTHS = (320, 640, 1280, 1280)
MM_V2_MID = 1280
MM_V2_PE_LEN = 32
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


def build_sd15(unet_config: dict | None = None) -> dict:
    """Official SD1.x single-file layout: model.diffusion_model.* / first_stage_model.* /
    cond_stage_model.transformer.text_model.*"""
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.clip_model
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL

    sd = _fp16(_build(UNetModel, unet_config or SD15_UNET, SEED).state_dict(), "model.diffusion_model.")
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


def build_sd15_ad() -> dict:
    """SD1.5 checkpoint (same layout, VAE and CLIP as ``sd15``) whose U-Net takes an AnimateDiff motion module.

    AnimateDiff-Evolved builds an SD1.5 motion module at fixed widths (320/640/1280/1280, mid 1280,
    ``motion_module_ad.AnimateDiffModel``) and inserts its 8 down / 12 up / 1 mid temporal modules,
    in order, after the spatial transformer (else the first ResBlock) of every U-Net block that has
    one, so the U-Net needs SD1.5's full block structure at full width: 4 levels
    (``channel_mult [1, 2, 4, 4]``) of 2 res blocks, 3 per level on the way up, and a middle block.
    Nothing smaller is accepted: narrower levels break the motion module's GroupNorms, fewer res
    blocks leave modules without a block (or put them into one of another width). It is reduced in
    depth only: a spatial transformer (context 768, what detection matches as ``SD15``) on the first
    level alone, none deeper and none in the middle block (a single ResBlock) — ~0.57 B U-Net
    parameters instead of SD1.5's ~0.86 B.

    Cost (CI budget): 1.56 GB on disk (fp16; the motion module 0.91 GB more), generated once in ~35 s.
    On 32x32 images (4x4 latents, the two deepest levels at 1x1) the weights dominate: one denoiser
    call on 4 frames with CFG (batch 8), motion module injected, takes ~2 s on one CPU core, and
    loading checkpoint + motion module ~10 s; the AnimateDiff host tests keep to a few such calls.
    """
    return build_sd15(SD15_AD_UNET)


def _sinusoidal_pe(length: int, dim: int):
    """The fixed sinusoidal table AnimateDiff stores as ``pos_encoder.pe`` (``[1, length, dim]``)."""
    import math

    import torch

    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(pos * div)
    pe[0, :, 1::2] = torch.cos(pos * div)
    return pe


def build_mm_sd_v15_v2() -> dict:
    """Random AnimateDiff v2 motion module in the key layout of the official ``mm_sd_v15_v2.ckpt``.

    ``down_blocks.{0..3}.motion_modules.{0,1}``, ``up_blocks.{0..3}.motion_modules.{0,1,2}`` and
    ``mid_block.motion_modules.0``, each ``.temporal_transformer.`` + ``norm`` (GroupNorm 32),
    ``proj_in``, ``transformer_blocks.0.`` {``attention_blocks.{0,1}.`` (``to_q/k/v`` without bias,
    ``to_out.0``, ``pos_encoder.pe`` [1, 32, C]), ``norms.{0,1}``, ``ff.net.0.proj`` (GEGLU, C -> 8C),
    ``ff.net.2`` (4C -> C), ``ff_norm``} and ``proj_out``; widths 320/640/1280/1280 (up: reversed),
    mid 1280 — exactly what AnimateDiff-Evolved builds for an SD1.5 motion module, so its loader
    accepts the file (it verifies missing/unexpected keys) and detects it as ``v2`` (it has a mid
    block). Nothing can be reduced: the widths are fixed by the loader and must equal the U-Net's.
    Written without AnimateDiff-Evolved's code (the layout is the official checkpoint's).

    Weights are fan-in scaled normals like :func:`init_random` (norm gains 1, biases 0), except
    ``proj_out`` (zero in a fresh AnimateDiff module): std ``0.2 / sqrt(C)`` so that every temporal
    module visibly mixes frames while the activations stay in range. ~0.45 B parameters.
    """
    import torch

    gen = torch.Generator().manual_seed(SEED + 7)
    sd: dict = {}

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    def linear(prefix, n_out, n_in, bias=True, scale=1.0):
        sd[prefix + ".weight"] = normal((n_out, n_in), scale / n_in ** 0.5)
        if bias:
            sd[prefix + ".bias"] = torch.zeros(n_out)

    def norm(prefix, c):
        sd[prefix + ".weight"] = torch.ones(c)
        sd[prefix + ".bias"] = torch.zeros(c)

    def temporal_module(prefix, c):
        p = prefix + ".temporal_transformer"
        norm(p + ".norm", c)
        linear(p + ".proj_in", c, c)
        blk = p + ".transformer_blocks.0"
        for k in range(2):
            att = f"{blk}.attention_blocks.{k}"
            for name in ("to_q", "to_k", "to_v"):
                linear(f"{att}.{name}", c, c, bias=False)
            linear(f"{att}.to_out.0", c, c)
            sd[f"{att}.pos_encoder.pe"] = _sinusoidal_pe(MM_V2_PE_LEN, c)
            norm(f"{blk}.norms.{k}", c)
        linear(blk + ".ff.net.0.proj", 8 * c, c)
        linear(blk + ".ff.net.2", c, 4 * c)
        norm(blk + ".ff_norm", c)
        linear(p + ".proj_out", c, c, scale=0.2)

    for i, c in enumerate(MM_V2_WIDTHS):
        for j in range(2):
            temporal_module(f"down_blocks.{i}.motion_modules.{j}", c)
    for i, c in enumerate(reversed(MM_V2_WIDTHS)):
        for j in range(3):
            temporal_module(f"up_blocks.{i}.motion_modules.{j}", c)
    temporal_module("mid_block.motion_modules.0", MM_V2_MID)
    return _fp16(sd)


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
            "svd_unet": build_svd_unet, "svd_xt": build_svd_xt, "sd15_ad": build_sd15_ad,
            "mm_sd_v15_v2": build_mm_sd_v15_v2}


def _detect(name: str, sd: dict) -> str:
    """Which ComfyUI model config / VAE type the host's own detection picks for ``sd``."""
    import comfy.model_detection as md
    import comfy.utils

    sd = dict(sd)  # the helpers below pop keys
    if name == "mm_sd_v15_v2":  # what AnimateDiff-Evolved keys on: 4 down blocks (SD1.5), a mid block (v2)
        downs = {int(k.split(".")[1]) for k in sd if k.startswith("down_blocks.")}
        return "animatediff_sd15_v2" if downs == {0, 1, 2, 3} and any(
            k.startswith("mid_block.") for k in sd) else "unknown"
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
