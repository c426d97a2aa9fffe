"""Host tier: LightCache vs ComfyUI's built-in EasyCache on the same tiny Wan model and seed.

The trained toy Wan DiT (``weights/toy/toy_wan_dit``, diffusers layout) is converted with
``avlab.common.wan_convert.diffusers_to_comfy_wan`` and loaded by ComfyUI 0.3.64's own loader
(``comfy.sd.load_diffusion_model_state_dict`` → ``WAN21_T2V`` ModelPatcher), imported in-process on
the CPU. Every configuration samples the same noise and prompts with ``comfy.sample.sample_custom``
(Euler, the toy's shifted flow sigmas, CFG): uncached; EasyCache (the host node's wrappers, a sweep
of ``reuse_threshold``); AVLab LightCache (``lightcache.comfy_glue.apply_to_model_patcher``, the
node's wiring, a sweep of ``cache_interval`` and ``cache_depth``). Reported: speed-up (fastest of
interleaved rounds in one process), PSNR/SSIM of the decoded video against uncached, and per
PSNR level the best speed-up each method reaches ("speed-up at equal PSNR"). A sanity row checks
that uncached ComfyUI sampling reproduces the diffusers sampler on the same weights.

    COMFYUI_PATH=/work/comfyui python benchmarks/lightcache_vs_easycache.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402
from harness import RunLog  # noqa: E402
RESULTS = HERE / "results" / "lightcache_vs_easycache.md"
EASYCACHE_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
LIGHTCACHE = ([(k, d, "uniform") for d in (0, 1) for k in (2, 3, 4, 5, 6)]
              + [(k, 0, "non-uniform") for k in (2, 3, 4, 5, 6)])
PSNR_LEVELS = (40.0, 35.0, 30.0, 25.0, 20.0)


def import_comfy(path: str):
    """ComfyUI in-process on the CPU (``harness.import_comfy``) plus its EasyCache node module."""
    comfy = harness.import_comfy(path)
    from comfy_extras import nodes_easycache

    return comfy, nodes_easycache


def psnr_ssim(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB, range 1) and mean per-frame SSIM of videos ``[B,T,H,W,3]``."""
    from avlab.common.metrics import psnr, video_ssim

    return psnr(a, b), video_ssim(a, b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--weights", type=Path, default=None, help="toy weights directory (default: weights/toy)")
    args = ap.parse_args(argv)
    if not args.comfyui:
        raise SystemExit("set COMFYUI_PATH (or --comfyui) to a ComfyUI 0.3.64 checkout")
    torch.set_num_threads(args.threads)
    comfy, nodes_easycache = import_comfy(args.comfyui)
    runlog = RunLog()
    for h in logging.getLogger().handlers:
        h.setLevel(max(h.level, logging.WARNING))
    logging.getLogger().addHandler(runlog)
    logging.getLogger().setLevel(logging.INFO)   # only RunLog listens: keeps each method's summary line

    from avlab.common.wan_convert import diffusers_to_comfy_wan
    from avlab.lightcache import LightCacheConfig
    from avlab.lightcache.comfy_glue import apply_to_model_patcher
    from avlab.toymodels import ToyVideoModel
    from avlab.toymodels.diffusion import flow_sigmas

    toy = ToyVideoModel.load("wan_dit", *([args.weights] if args.weights else []))
    cfg = toy.config
    sd = {k: v.clone() for k, v in diffusers_to_comfy_wan(toy.model.state_dict()).items()}
    base = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})
    detected = type(base.model.model_config).__name__
    labels = torch.arange(min(2, cfg.num_classes))
    null = toy.context(torch.full_like(labels, cfg.num_classes))
    positive = [[toy.context(labels), {}]]
    # The null prompt is identical zero tokens: one of them gives exactly the same cross-attention
    # output as all of them, and the different token count keeps cond and uncond in separate model
    # calls (as real Wan prompts of different lengths are). ComfyUI 0.3.64's EasyCache needs that:
    # its apply_cache_diff adds every uuid's cached diff to the whole batch of a call.
    negative = [[null[:, :1], {}]]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(cfg.latent_shape(len(labels)), generator=g)
    empty = torch.zeros_like(noise)
    sigmas = flow_sigmas(cfg.sample_steps, cfg.flow_shift)
    sampler = comfy.samplers.sampler_object("euler")
    latent_format = base.get_model_object("latent_format")

    def run(model):
        out = comfy.sample.sample_custom(model, noise, cfg.guidance, sampler, sigmas, positive, negative,
                                         empty, disable_pbar=True, seed=0)
        return latent_format.process_in(out)   # undo process_latent_out: back to the toy latent

    def easycache(th):
        return nodes_easycache.EasyCacheNode.execute(base, th, 0.15, 0.95, False).result[0]

    def lightcache(k, d, schedule):
        return apply_to_model_patcher(base, LightCacheConfig(cache_interval=k, cache_depth=d, schedule=schedule),
                                      comfy.patcher_extension.WrappersMP)

    configs = [("uncached", "–", lambda: base)]
    configs += [("EasyCache", f"reuse_threshold {th}", (lambda th=th: easycache(th))) for th in EASYCACHE_THRESHOLDS]
    configs += [("LightCache", f"interval {k}, depth {d}, {sch}", (lambda k=k, d=d, sch=sch: lightcache(k, d, sch)))
                for k, d, sch in LIGHTCACHE]
    models = {name + setting: make() for name, setting, make in configs}

    # sanity: the ComfyUI run reproduces the diffusers sampler on the same weights and noise
    ref = run(base)
    from avlab.toymodels.diffusion import sample_euler_flow
    with torch.no_grad():
        diff_ref = sample_euler_flow(toy.predict, noise.clone(), toy.context(labels), cfg.sample_steps,
                                     shift=cfg.flow_shift, uncond=null, guidance=cfg.guidance)
    sanity = float((diff_ref - ref).abs().max())
    print(f"detected {detected}; |ComfyUI − diffusers| max {sanity:.2e}", flush=True)

    times = {k: [] for k in models}
    outs, skipped = {}, {}
    for r in range(args.rounds):
        for key, m in models.items():
            t0 = time.perf_counter()
            runlog.last = None
            outs[key] = run(m)
            skipped[key] = runlog.skipped_text()
            times[key].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: uncached {times['uncached–'][-1]:.2f} s", flush=True)
    ref_video = toy.decode(outs["uncached–"])
    base_t = min(times["uncached–"])
    rows = []
    for name, setting, _ in configs:
        key = name + setting
        med = min(times[key])
        psnr, ssim = (float("inf"), 1.0) if name == "uncached" else psnr_ssim(ref_video, toy.decode(outs[key]))
        rows.append((name, setting, med, base_t / med, psnr, ssim, skipped[key]))
        print(f"{name:10s} {setting:22s} {med:6.2f} s ×{base_t / med:.2f} PSNR {psnr:.2f} SSIM {ssim:.4f}", flush=True)
    write_markdown(args, rows, detected, sanity, cfg, len(labels))
    print(f"wrote {args.out}")
    return 0


def write_markdown(args, rows, detected, sanity, cfg, batch) -> None:
    import platform

    def f(v, spec):
        return "∞" if v == float("inf") else spec.format(v)

    lines = ["# LightCache vs EasyCache (ComfyUI 0.3.64, in-process, CPU)", "",
             f"`python benchmarks/lightcache_vs_easycache.py --rounds {args.rounds} --threads {args.threads}` — "
             f"toy Wan DiT (`weights/toy/toy_wan_dit`, dim {cfg.dim}, {cfg.num_layers} blocks, trained on the "
             f"synthetic domain) converted with `avlab.common.wan_convert` and loaded by "
             f"`comfy.sd.load_diffusion_model_state_dict` (detected **{detected}**). {batch} videos × "
             f"{cfg.frames} latent frames × {cfg.latent_size}², Euler {cfg.sample_steps} steps (shifted flow "
             f"sigmas, shift {cfg.flow_shift}), CFG {cfg.guidance}, seed 0. CPU "
             f"({platform.machine()}, {args.threads} thread(s), shared machine), torch {torch.__version__}. "
             f"Speed-up = fastest uncached / fastest time over {args.rounds} interleaved rounds in one process; "
             "PSNR/SSIM of the decoded video against the uncached ComfyUI output.", "",
             f"Sanity: uncached ComfyUI sampling vs the diffusers sampler on the unconverted weights: max |Δ| = "
             f"{sanity:.2e} (latent).", "",
             "EasyCache: the host node's own wrappers (`EasyCacheNode.execute`, start 0.15, end 0.95); on a "
             "skipped step it reuses the whole model call (output − input of the last computed step added to "
             "the new input). LightCache: `avlab.lightcache.comfy_glue.apply_to_model_patcher` (the AVLab "
             "LightCache node's wiring), whole schedule; depth d = the first and last d of the blocks always "
             "run, the residual of the blocks between is cached.", "",
             "Prompts: the toy's class prompts (4 tokens) and its null prompt given as 1 zero token (identical "
             "cross-attention output to its 4 zero tokens; checked by the sanity row, which uses 4). The "
             "different lengths keep cond and uncond in separate model calls, as real Wan prompts of different "
             "lengths are. This matters for EasyCache in 0.3.64: `EasyCacheHolder.apply_cache_diff` adds every "
             "uuid's cached diff to the *whole* batch of a call, so it fails (batch > 1) or mixes cond and "
             "uncond (batch 1) when ComfyUI batches them into one call.", "",
             "| method | setting | steps skipped (its log) | time (s) | speed-up | PSNR (dB) | SSIM |",
             "|---|---|---|---|---|---|---|"]
    for name, setting, med, sp, psnr, ssim, skip in rows:
        lines.append(f"| {name} | {setting} | {skip} | {med:.2f} | {sp:.2f}× | {f(psnr, '{:.2f}')} | "
                     f"{f(ssim, '{:.4f}')} |")
    lines += ["", "## Speed-up at equal PSNR", "",
              "Best speed-up among the settings that reuse something (PSNR < ∞) and whose PSNR against uncached "
              "is at least the level. The LightCache PSNRs can be set beside the diffusers-side sweep in "
              "`lightcache_speed.md` (same weights, seed and sampler).", "",
              "| PSNR ≥ | EasyCache | LightCache |", "|---|---|---|"]
    for level in PSNR_LEVELS:
        best = {}
        for method in ("EasyCache", "LightCache"):
            cands = [(sp, setting) for name, setting, _, sp, psnr, _, _ in rows
                     if name == method and level <= psnr < float("inf")]      # ∞ = nothing was reused
            best[method] = max(cands) if cands else None
        cell = {m: (f"{b[0]:.2f}× ({b[1]})" if b else "none") for m, b in best.items()}
        lines.append(f"| {level:.0f} dB | {cell['EasyCache']} | {cell['LightCache']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
