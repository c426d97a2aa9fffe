"""The LightCache benchmark zoo: six small diffusion models built from ComfyUI's own classes, trained on
the synthetic domain (LightCache part 2: defaults must hold on models they were not tuned on).

Each zoo model is a real ComfyUI model object — ``comfy.model_base.BaseModel`` (SD-style
``UNetModel``, v-prediction on the SD discrete schedule) or ``comfy.model_base.WAN21`` (``WanModel``,
rectified flow with the discrete-flow shift) — built in-process at small widths (ComfyUI's loaders
only detect full-size checkpoints), so ComfyUI's samplers, schedulers, CFG, EasyCache/LazyCache and
the AVLab LightCache node all run on it exactly as on a downloaded model. The latent is the pack's
16-channel toy latent (:class:`avlab.toymodels.ToyLatentCodec`, ``weights/toy/toy_codec``) of 8-frame
32×32 synthetic clips: the Wan models see ``[B, 16, 8, 8, 8]`` videos, the U-Nets each frame as an
image (``[B·8, 16, 8, 8]``, an AnimateDiff-style U-Net without motion modules).

The zoo differs in family, depth, width, seed and training length (two models are deliberately
under-trained). ``role`` keeps the models the defaults are tuned on (``"tune"``) apart from the ones
they are reported on (``"report"``).

Training (``python scripts/train_lightcache_zoo.py``; never in CI): the shared loop
(:func:`avlab.common.training.train`, AdamW, warm-up + cosine, EMA), denoising loss
``|D(x_σ) − x₀|² / σ²`` (velocity MSE for the flow models; × (σ² + 1) = v-MSE for the U-Nets), σ drawn from
each model's own ``model_sampling`` as ComfyUI samples it, class prompt dropped with p = 0.1 (CFG).
Weights: ``weights/lightcache_zoo/<name>.safetensors`` (fp16) + ``<name>.json`` (spec + record).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from harness import import_comfy  # noqa: F401,E402  (re-exported: the zoo scripts import it from here)

ROOT = Path(__file__).resolve().parents[1]
ZOO_DIR = Path(os.environ.get("AVLAB_ZOO_DIR", ROOT / "weights" / "lightcache_zoo"))
UNET, WAN = "unet", "wan"
TUNE, REPORT = "tune", "report"
FRAMES, SIZE, LATENT, CHANNELS = 8, 32, 8, 16
NUM_CLASSES, TOKENS, CONTEXT_DIM, COND_SEED = 3, 4, 32, 4321
TRAIN_DATA_SEED, HELDOUT_DATA_SEED = 1000, 2000


@dataclass(frozen=True)
class ZooModel:
    """One zoo member: family, architecture overrides, seed, training length, tune/report role."""

    name: str
    family: str
    role: str
    arch: dict = field(default_factory=dict)
    seed: int = 0
    steps: int = 1000
    lr: float = 1e-3
    batch: int = 8
    shift: float = 3.0            # Wan: discrete-flow shift of its model_sampling
    note: str = ""
    prediction: str = "eps"       # U-Net: "eps" (SD1.5) or "v" (SD2-v style; better conditioned at high σ)


ZOO = (
    ZooModel("unet_s", UNET, TUNE, dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1), seed=0,
             steps=1500, prediction="v", note="2 levels, 1 res block"),
    ZooModel("wan_6x128", WAN, TUNE, dict(dim=128, num_heads=2, num_layers=6, ffn_dim=512), seed=0, steps=1500),
    ZooModel("wan_4x64_short", WAN, TUNE, dict(dim=64, num_heads=1, num_layers=4, ffn_dim=256), seed=1,
             steps=150, note="under-trained"),
    ZooModel("unet_m", UNET, REPORT, dict(model_channels=32, channel_mult=(1, 2, 3), num_res_blocks=2), seed=3,
             steps=2500, prediction="v", note="3 levels, 2 res blocks, well trained"),
    ZooModel("unet_s_short", UNET, REPORT, dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1),
             seed=4, steps=150, prediction="v", note="under-trained"),
    ZooModel("wan_10x96", WAN, REPORT, dict(dim=96, num_heads=2, num_layers=10, ffn_dim=384), seed=5,
             steps=2500, shift=5.0, note="deeper, well trained"),
)

#: tried and dropped: the same U-Nets with ε-prediction (SD1.5) denoised well at σ ≤ 1 but their samples from
#: pure noise were not recognisable after 1500 steps (ε too imprecise at σ ≥ 3); v-prediction fixed it
EXTRA = (
    ZooModel("unet_s_eps", UNET, TUNE, dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1), seed=0,
             steps=1500, prediction="eps", note="ε-prediction"),
)


def by_name(name: str) -> ZooModel:
    for m in ZOO + EXTRA:
        if m.name == name:
            return m
    raise KeyError(f"no zoo model {name!r}; known: {[m.name for m in ZOO]}")


# -- building the ComfyUI model objects ------------------------------------------------------------------
def _latent_format(comfy, dims: int):
    class ToyLatent(comfy.latent_formats.LatentFormat):
        """The toy latent is already unit-scale: process_in / process_out are the identity."""
        scale_factor = 1.0
        latent_channels = CHANNELS
        latent_dimensions = dims

    return ToyLatent()


def unet_config(spec: ZooModel) -> dict:
    a = spec.arch
    levels, r = len(a["channel_mult"]), a["num_res_blocks"]
    attn = [0] + [1] * (levels - 1)   # no attention at full resolution (SDXL-style)
    return dict(image_size=LATENT, in_channels=CHANNELS, out_channels=CHANNELS, model_channels=a["model_channels"],
                num_res_blocks=[r] * levels, channel_mult=list(a["channel_mult"]),
                transformer_depth=[d for d in attn for _ in range(r)],
                transformer_depth_output=[d for d in attn for _ in range(r + 1)],
                transformer_depth_middle=1, context_dim=CONTEXT_DIM, num_heads=2, num_head_channels=-1,
                use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
                adm_in_channels=None, use_checkpoint=False)


def wan_config(spec: ZooModel) -> dict:
    a = spec.arch
    return dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=TOKENS, in_dim=CHANNELS,
                dim=a["dim"], ffn_dim=a["ffn_dim"], freq_dim=64, text_dim=CONTEXT_DIM, out_dim=CHANNELS,
                num_heads=a["num_heads"], num_layers=a["num_layers"], window_size=(-1, -1), qk_norm=True,
                cross_attn_norm=True, eps=1e-6)


#: the discrete-flow shift a Wan model gets from ComfyUI's own loader (``supported_models.WAN21_T2V``); the
#: zoo's Wan models are *sampled* with it, as a user's would be, whatever shift they were trained with
COMFY_WAN_SHIFT = 8.0


def build(comfy, spec: ZooModel, device: str = "cpu", shift: float | None = None):
    """A fresh (randomly initialised) ComfyUI ``BaseModel`` for ``spec``; ``comfy`` = the imported package;
    ``shift`` (Wan) overrides the training shift of its ``model_sampling``."""
    import comfy.model_base
    import comfy.supported_models

    if spec.family == UNET:
        cfg = comfy.supported_models.SD15(unet_config(spec))
        cfg.latent_format = _latent_format(comfy, 2)
        cfg.set_inference_dtype(torch.float32, None)
        kind = comfy.model_base.ModelType.V_PREDICTION if spec.prediction == "v" else comfy.model_base.ModelType.EPS
        model = comfy.model_base.BaseModel(cfg, model_type=kind, device=device)
    elif spec.family == WAN:
        cfg = comfy.supported_models.WAN21_T2V(wan_config(spec))
        cfg.sampling_settings = {"shift": spec.shift if shift is None else shift}
        cfg.latent_format = _latent_format(comfy, 3)
        cfg.set_inference_dtype(torch.float32, None)
        model = comfy.model_base.WAN21(cfg, device=device)
    else:
        raise ValueError(f"unknown family {spec.family!r}")
    _init_weights(model.diffusion_model, spec.seed)
    return model


def _init_weights(module: torch.nn.Module, seed: int) -> None:
    """Standard torch init for ComfyUI's ``disable_weight_init`` layers (they skip their own), norms = 1/0,
    bare parameters N(0, 1/width)."""
    nn = torch.nn
    standard = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        for name, m in module.named_modules():
            base = next((c for c in type(m).__mro__ if c in standard), None)
            if base is not None:
                base.reset_parameters(m)
            elif "norm" in type(m).__name__.lower():
                for pname, p in m.named_parameters(recurse=False):
                    with torch.no_grad():
                        p.fill_(1.0 if pname == "weight" else 0.0)
            else:  # bare parameters (Wan's adaLN ``modulation``): N(0, 1/width) as the official init
                for p in m.parameters(recurse=False):
                    with torch.no_grad():
                        p.normal_(0.0, p.shape[-1] ** -0.5)
    for name, p in module.named_parameters():
        if not torch.isfinite(p).all() or p.abs().max() > 1e3:
            raise RuntimeError(f"zoo init left {name} uninitialised")


def patcher(comfy, model):
    """A CPU ``ModelPatcher`` around ``model`` (what a loader node would return)."""
    import comfy.model_patcher

    model.eval()
    model.requires_grad_(False)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


# -- prompts, data, layout ---------------------------------------------------------------------------
def prompt_table() -> torch.Tensor:
    """Fixed toy text encoder: ``[NUM_CLASSES + 1, TOKENS, CONTEXT_DIM]``, last row = null prompt (zeros)."""
    g = torch.Generator().manual_seed(COND_SEED)
    table = torch.randn(NUM_CLASSES + 1, TOKENS, CONTEXT_DIM, generator=g)
    table[NUM_CLASSES] = 0
    return table


def to_model_layout(spec: ZooModel, latents: torch.Tensor) -> torch.Tensor:
    """Toy latents ``[B,C,T,h,w]`` → the model's input (U-Net: frames as images ``[B·T,C,h,w]``)."""
    if spec.family == UNET:
        b, c, t, h, w = latents.shape
        return latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    return latents


def from_model_layout(spec: ZooModel, x: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    if spec.family == UNET:
        bt, c, h, w = x.shape
        return x.reshape(bt // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)
    return x


def context_for(spec: ZooModel, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample prompt tokens in the model's batch layout (U-Net: one per frame)."""
    ctx = prompt_table()[labels]
    return ctx.repeat_interleave(FRAMES, dim=0) if spec.family == UNET else ctx


def domain_latents(n: int, seed: int):
    """``n`` synthetic clips encoded with the committed toy codec → (latents ``[n,16,8,8,8]``, labels, codec)."""
    from avlab.toymodels import ToyLatentCodec, synthetic_clips
    from avlab.toymodels.toy import WEIGHTS_DIR
    from safetensors.torch import load_file

    codec = ToyLatentCodec.from_state_dict(load_file(str(WEIGHTS_DIR / "toy_codec.safetensors")))
    frames, labels = synthetic_clips(n, FRAMES, SIZE, seed=seed)
    return codec.encode(frames), labels, codec


# -- training --------------------------------------------------------------------------------------------
def denoise_loss(model, spec: ZooModel, x0: torch.Tensor, labels: torch.Tensor, dropout: float = 0.1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``|D(x_σ) − x₀|² / σ²`` with σ from the model's own sampling (ε / velocity MSE; v-prediction U-Nets:
    ``× (σ² + 1)``, the v-MSE)."""
    ms = model.model_sampling
    n = x0.shape[0]
    if spec.family == UNET:
        idx = torch.randint(0, len(ms.sigmas), (n,), generator=generator)
        sigma = ms.sigmas[idx].float()
    else:
        sigma = ms.sigma(torch.rand(n, generator=generator) * ms.multiplier).float().clamp(min=1e-3)
    drop = torch.rand(n, generator=generator) < dropout
    labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
    x0 = to_model_layout(spec, x0)
    ctx = context_for(spec, labels)
    if spec.family == UNET:
        sigma = sigma.repeat_interleave(FRAMES)
    noise = torch.randn(x0.shape, generator=generator)
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    xt = ms.noise_scaling(s, noise, x0)
    den = model.apply_model(xt, sigma, c_crossattn=ctx)
    weight = (s ** 2 + 1) / s ** 2 if spec.prediction == "v" else 1 / s ** 2   # v-MSE / ε-MSE
    return ((den - x0) ** 2 * weight).mean()


def train(comfy, spec: ZooModel, log_every: int = 50, on_log=None):
    """Train ``spec`` on the shared loop; returns (EMA BaseModel, record)."""
    from avlab.common.training import IndexedBatches, TrainConfig
    from avlab.common.training import train as shared_train

    latents, labels, _ = domain_latents(384, TRAIN_DATA_SEED)
    h_latents, h_labels, _ = domain_latents(32, HELDOUT_DATA_SEED)
    model = build(comfy, spec)
    loss_untrained = heldout_loss(model, spec, h_latents, h_labels)
    tcfg = TrainConfig(steps=spec.steps, lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.99), grad_clip=1.0,
                       ema=0.995, ema_warmup=True, warmup_steps=min(50, spec.steps // 5), cosine=True,
                       min_lr_ratio=0.05, log_every=log_every, seed=spec.seed + 1, device="cpu", progress=False)
    data = IndexedBatches(latents, labels, batch_size=spec.batch, seed=spec.seed + 1)
    t0, curve = time.time(), []

    def on_step(step, metrics):
        if step % log_every == 0 or step == spec.steps:
            entry = {"step": step, "loss": round(float(metrics["loss"]), 5), "seconds": round(time.time() - t0, 1)}
            curve.append(entry)
            if on_log is not None:
                on_log(entry)
        return None

    result = shared_train(model, lambda net, b: denoise_loss(net, spec, b[0], b[1]), data, tcfg, callback=on_step)
    trained = result.ema_model if result.ema_model is not None else result.model
    trained.eval()
    record = {"steps": result.step, "train_seconds": round(time.time() - t0, 1), "loss_curve": curve,
              "heldout_loss_untrained": round(loss_untrained, 5),
              "heldout_loss_trained": round(heldout_loss(trained, spec, h_latents, h_labels), 5),
              "trainer": "avlab.common.training"}
    return trained, record


@torch.no_grad()
def heldout_loss(model, spec: ZooModel, latents, labels, draws: int = 4) -> float:
    g = torch.Generator().manual_seed(7)
    return float(sum(denoise_loss(model, spec, latents, labels, dropout=0.0, generator=g)
                     for _ in range(draws)) / draws)


# -- weights -------------------------------------------------------------------------------------------------
def save(model, spec: ZooModel, record: dict, directory: Path = ZOO_DIR) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}
    path = directory / f"{spec.name}.safetensors"
    save_file(sd, str(path))
    meta = {"spec": asdict(spec), "record": record, "dtype": "float16"}
    (directory / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load(comfy, spec: ZooModel, directory: Path = ZOO_DIR, shift: float | None = COMFY_WAN_SHIFT):
    """The trained zoo model as a ComfyUI ``ModelPatcher`` (fp16 file → fp32 weights); Wan models sample
    with ``shift`` (default: ComfyUI's Wan 2.1 default, 8)."""
    from safetensors.torch import load_file

    path = directory / f"{spec.name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"zoo weights {path} are missing: run `python scripts/train_lightcache_zoo.py "
                                f"--only {spec.name}`")
    model = build(comfy, spec, shift=shift)
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    model.diffusion_model.load_state_dict(sd, strict=True)
    return patcher(comfy, model)


def param_count(model) -> int:
    return sum(p.numel() for p in model.diffusion_model.parameters())


def describe(spec: ZooModel) -> str:
    a = spec.arch
    if spec.family == UNET:
        arch = (f"U-Net ch {a['model_channels']} × {list(a['channel_mult'])}, {a['num_res_blocks']} res/level, "
                f"{spec.prediction}-prediction")
    else:
        arch = f"Wan DiT {a['num_layers']} blocks × {a['dim']}, trained at shift {spec.shift}"
    return f"{arch}, seed {spec.seed}, {spec.steps} steps" + (f" ({spec.note})" if spec.note else "")


__all__ = ["ZOO", "ZOO_DIR", "ZooModel", "build", "by_name", "context_for", "describe", "domain_latents",
           "from_model_layout", "load", "patcher", "prompt_table", "save", "to_model_layout", "train", "TUNE",
           "REPORT", "UNET", "WAN", "import_comfy"]
