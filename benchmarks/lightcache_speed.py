"""LightCache speed benchmark (papers.md §1, issue "Benchmarks"): uncached vs cached sampling.

For each model, sample the same seed uncached and with LightCache over a sweep of
``cache_interval`` (2–6) and ``cache_depth``, and report

* wall-clock speed-up — ratios measured side by side in one process: rounds interleave the
  uncached run and every configuration, ratio = median(uncached) / median(cached);
* peak memory — every configuration sampled once in its own fresh process (peak RSS on CPU,
  ``torch.cuda.max_memory_allocated`` on CUDA), with the growth over the loaded model;
* PSNR / SSIM of the final video against the uncached one (decoded frames for the toy models;
  latents, range-normalised, for the random-weight model).

Models: the trained toy U-Net (diffusers ``UNetMotionModel``, DDIM 50 steps, CFG 3) and toy Wan DiT
(diffusers ``WanTransformer3DModel``, Euler 30 steps, CFG 3) from ``weights/toy/`` (made by
``scripts/train_toy_video_models.py``), and a diffusers ``UNetSpatioTemporalConditionModel`` in the
SVD layout (4 levels, 2 res blocks) with **random weights** (not a fair quality test: random
features are not redundant across steps; its speed-ups are still meaningful).

    python benchmarks/lightcache_speed.py                   # all, writes results/lightcache_speed.md
    python benchmarks/lightcache_speed.py --cases toy_unet --rounds 2 --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lightcache_speed.md"


# -- cases -----------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    title: str
    model: torch.nn.Module
    run: object          # () -> latent output
    steps: int
    depths: tuple
    to_video: object     # latent -> [B,T,H,W,3] frames in 0..1, or None (compare latents)
    note: str


def _toy_case(kind: str, name: str, depths: tuple) -> Case:
    from avlab.toymodels import ToyVideoModel

    toy = ToyVideoModel.load(kind)
    cfg = toy.config
    labels = list(range(min(2, cfg.num_classes)))
    title = (f"toy U-Net (UNetMotionModel {cfg.block_out_channels}, trained), DDIM {cfg.sample_steps} steps, CFG {cfg.guidance}"
             if kind == "unet_motion" else
             f"toy Wan DiT (WanTransformer3DModel dim {cfg.dim}, {cfg.num_layers} blocks, trained), "
             f"Euler {cfg.sample_steps} steps, CFG {cfg.guidance}")
    return Case(name, title, toy.model, lambda: toy.sample(labels, seed=0), cfg.sample_steps, depths,
                toy.decode, f"{len(labels)} videos × {cfg.frames} frames × {cfg.size}², latent {cfg.latent_shape(len(labels))[1:]}")


def _svd_case(depths: tuple) -> Case:
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    model = UNetSpatioTemporalConditionModel(
        sample_size=16, in_channels=8, out_channels=4, block_out_channels=(32, 64, 128, 128), layers_per_block=2,
        cross_attention_dim=128, num_attention_heads=(2, 4, 8, 8), addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=96).eval()
    frames, steps = 8, 25
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, frames, 4, 16, 16, generator=g)
    image_latent = torch.randn(1, 1, 4, 16, 16, generator=g).expand(1, frames, 4, 16, 16)
    ctx = torch.randn(1, 1, 128, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    sigmas = torch.cat([torch.exp(torch.linspace(torch.log(torch.tensor(700.0)), torch.log(torch.tensor(0.002)), steps)),
                        torch.zeros(1)])

    @torch.no_grad()
    def run():
        # EDM Euler (Karras et al. 2022) with SVD's preconditioning, no CFG.
        x = noise * sigmas[0]
        for i in range(steps):
            s = sigmas[i]
            c_in, c_skip, c_out = 1 / (s ** 2 + 1) ** 0.5, 1 / (s ** 2 + 1), -s / (s ** 2 + 1) ** 0.5
            inp = torch.cat([x * c_in, image_latent], dim=2)
            out = model(inp, (0.25 * s.log()).view(1), ctx, ids).sample
            denoised = c_skip * x + c_out * out
            x = x + (x - denoised) / s * (sigmas[i + 1] - s)
        return x.permute(0, 2, 1, 3, 4)  # [B,C,T,H,W]

    return Case("svd_random", "diffusers UNetSpatioTemporalConditionModel (SVD layout, widths 32–128, "
                "RANDOM weights), EDM Euler 25 steps", model, run, steps, depths, None,
                f"1 video × {frames} frames, latent 4×16×16")


def build_case(name: str) -> Case:
    if name == "toy_unet":
        return _toy_case("unet_motion", name, depths=(0, 1, 2))
    if name == "toy_wan":
        return _toy_case("wan_dit", name, depths=(0, 1))
    if name == "svd_random":
        return _svd_case(depths=(0,))
    raise SystemExit(f"unknown case {name}")


CASES = ("toy_unet", "toy_wan", "svd_random")
INTERVALS = (2, 3, 4, 5, 6)


# -- metrics ---------------------------------------------------------------------------------------------
def psnr_ssim(case: Case, ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and mean per-frame SSIM of ``out`` against ``ref``."""
    from skimage.metrics import structural_similarity

    if case.to_video is not None:
        a, b = case.to_video(ref).numpy(), case.to_video(out).numpy()   # [B,T,H,W,3]
        rng = 1.0
        frames = [(a[i, t], b[i, t]) for i in range(a.shape[0]) for t in range(a.shape[1])]
    else:
        lo, hi = float(ref.min()), float(ref.max())
        a = ((ref - lo) / (hi - lo)).permute(0, 2, 3, 4, 1).numpy()    # [B,T,H,W,C] range-normalised
        b = ((out - lo) / (hi - lo)).permute(0, 2, 3, 4, 1).numpy()
        rng = 1.0
        frames = [(a[i, t], b[i, t]) for i in range(a.shape[0]) for t in range(a.shape[1])]
    mse = float(((a - b) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(rng ** 2 / mse)).item()
    ssim = statistics.mean(structural_similarity(x, y, data_range=rng, channel_axis=-1, win_size=7)
                           for x, y in frames)
    return psnr, ssim


# -- one configuration in its own process (peak memory) -------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(case_name: str, interval: int, depth: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    case = build_case(case_name)
    cuda = torch.cuda.is_available() and os.environ.get("AVLAB_BENCH_DEVICE") == "cuda"
    loaded = _rss_mb()
    t0 = time.perf_counter()
    if interval == 0:
        case.run()
    else:
        from avlab import lightcache

        handle = lightcache.apply(case.model, cache_interval=interval, cache_depth=depth)
        with handle.run(case.steps):
            case.run()
        handle.remove()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mb": round(peak, 1), "loaded_rss_mb": round(loaded, 1),
           "growth_mb": round(peak - loaded, 1), "seconds": round(seconds, 2)}
    if cuda:
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def memory_in_subprocess(case_name: str, interval: int, depth: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", case_name, str(interval), str(depth), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- the side-by-side speed sweep -----------------------------------------------------------------------
def sweep(case: Case, rounds: int, log) -> tuple[dict, dict, dict, torch.Tensor]:
    from avlab import lightcache

    configs = [(k, d) for d in case.depths for k in INTERVALS]
    case.run()  # warm-up (allocator, lazy inits)
    times = {c: [] for c in [(0, 0)] + configs}
    outputs, summaries = {}, {}
    for r in range(rounds):
        for c in [(0, 0)] + configs:
            if c == (0, 0):
                t0 = time.perf_counter()
                out = case.run()
                times[c].append(time.perf_counter() - t0)
            else:
                handle = lightcache.apply(case.model, cache_interval=c[0], cache_depth=c[1])
                try:
                    with handle.run(case.steps):
                        t0 = time.perf_counter()
                        out = case.run()
                        times[c].append(time.perf_counter() - t0)
                    summaries[c] = handle.last_summary
                finally:
                    handle.remove()
            outputs[c] = out
        log(f"  {case.name} round {r + 1}/{rounds}: uncached {times[(0, 0)][-1]:.2f} s")
    return times, outputs, summaries, outputs[(0, 0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", nargs=3, metavar=("CASE", "INTERVAL", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], int(args.worker[1]), int(args.worker[2]), args.threads)))
        return 0
    torch.set_num_threads(args.threads)

    def log(msg):
        print(msg, flush=True)

    sections = []
    for name in args.cases:
        case = build_case(name)
        log(f"{name}: {case.title}")
        times, outputs, summaries, ref = sweep(case, args.rounds, log)
        base = statistics.median(times[(0, 0)])
        mem = {}
        if not args.no_memory:
            for c in times:
                mem[c] = memory_in_subprocess(name, c[0], c[1], args.threads)
                log(f"  memory {c}: {mem[c]}")
        rows = []
        for c in times:
            med = statistics.median(times[c])
            psnr, ssim = (float("inf"), 1.0) if c == (0, 0) else psnr_ssim(case, ref, outputs[c])
            m = mem.get(c, {})
            rows.append({"interval": c[0] or "uncached", "depth": "–" if c == (0, 0) else c[1],
                         "seconds": med, "speedup": base / med, "psnr": psnr, "ssim": ssim,
                         "peak": m.get("peak_rss_mb"), "growth": m.get("growth_mb"),
                         "cuda": m.get("cuda_peak_mb"), "summary": summaries.get(c, "")})
            log(f"  {c}: {med:.2f} s  ×{base / med:.2f}  PSNR {psnr:.2f}  SSIM {ssim:.4f}")
        sections.append((case, rows))
    write_markdown(args.out, sections, args)
    log(f"wrote {args.out}")
    return 0


def _fmt(v, spec):
    return "–" if v is None else (spec.format(v) if v != float("inf") else "∞")


def write_markdown(path: Path, sections, args) -> None:
    import platform

    lines = ["# LightCache speed benchmark", "",
             f"`python benchmarks/lightcache_speed.py --rounds {args.rounds} --threads {args.threads}` — "
             f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s), machine shared with "
             f"other jobs), torch {torch.__version__}. Speed-up = median uncached / median cached time over "
             f"{args.rounds} interleaved rounds in one process. Peak memory = peak RSS of a fresh process "
             "that loads the model and samples once with that configuration (growth = peak − RSS after "
             "loading). PSNR/SSIM of the final video against the uncached video of the same seed.", ""]
    for case, rows in sections:
        lines += [f"## {case.name}: {case.title}", "", f"{case.note}.", "",
                  "| cache_interval | cache_depth | time (s) | speed-up | PSNR (dB) | SSIM | peak RSS (MB) | growth (MB) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['interval']} | {r['depth']} | {r['seconds']:.2f} | {r['speedup']:.2f}× | "
                         f"{_fmt(r['psnr'], '{:.2f}')} | {_fmt(r['ssim'], '{:.4f}')} | "
                         f"{_fmt(r['peak'], '{:.0f}')} | {_fmt(r['growth'], '{:.0f}')} |")
        summ = [f"* interval {r['interval']}, depth {r['depth']}: {r['summary']}" for r in rows if r["summary"]]
        if summ:
            lines += ["", "LightCache run summaries:", ""] + summ
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
