"""Peak memory of LightCache feature chunking and sliced decoding (paper 1; issue 3 targets).

Not a test: run it, read the table it writes to ``benchmarks/results/lightcache_memory.md``.

    python benchmarks/lightcache_memory.py                 # all cases, CPU
    python benchmarks/lightcache_memory.py --cases chunk_unet decode_sd --device cuda

Every configuration runs in its own fresh subprocess (so allocator state and earlier peaks never
leak between them). Each worker builds its model (seeded random weights, diffusers classes at
moderate widths), runs the workload once to warm up kernels and caches, then measures a second run:

* **CPU** — peak resident memory *increase* over the resident memory right before the measured run
  (model loaded, inputs built, warm-up done). The Linux peak (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` just before the run and read after it; glibc's mmap threshold is fixed
  at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so large tensors are mmapped and returned to the OS when
  freed, making RSS follow live tensor memory. If ``clear_refs`` is not writable the worker falls
  back to ``ru_maxrss`` (then the warm-up is skipped so it cannot set the peak).
* **CUDA** — ``torch.cuda.max_memory_allocated`` over ``memory_allocated`` before the run.

Ratios compare configurations of one case measured in this invocation. Outputs are saved by each
worker and compared by the parent: chunked vs unchunked and sliced vs full report the max abs
difference (SVD's overlap blend: PSNR against the whole-clip decode).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lightcache_memory.md"

# case -> (description, [(variant, label, options)], baseline variant, target ratio or None)
CASES: dict[str, dict] = {
    "chunk_unet": {
        "what": "AnimateDiff-style `UNetMotionModel` forward (widths 64/128/256, CFG batch 2 × 16 frames, "
                "32×32 latent)",
        "variants": [("whole", "unchunked", {}),
                     ("c9x2", "chunked 9 × 2 (official defaults)", {"temporal": 9, "spatial": 2}),
                     ("c16x8", "chunked 16 × 8", {"temporal": 16, "spatial": 8})],
        "baseline": "whole", "target": ("c9x2", 0.6),
        "note": "ResBlocks, spatial transformers and up/down-samplers run on chunks of the 32 "
                "frame-samples, motion-module blocks on chunks of the 2048 pixel rows (their FFNs also "
                "on frame chunks). Differences are float summation order only.",
    },
    "chunk_dit": {
        "what": "Wan-style `WanTransformer3DModel` forward (dim 384, FFN 2240, 4 blocks, 17 frames "
                "→ 5 × 30 × 52 = 7800 tokens)",
        "variants": [("whole", "unchunked", {}),
                     ("c9", "chunked (FFN token axis, 9)", {"temporal": 9, "spatial": 2})],
        "baseline": "whole", "target": ("c9", 0.6),
        "note": "Only the FFN (dim → ffn_dim, 5.8× wider) is chunked over tokens; self/cross attention "
                "and the modulated norms stay whole, so the peak falls to the attention block's level.",
    },
    "decode_sd": {
        "what": "SD/AnimateDiff VAE decode (`AutoencoderKL`, SD widths 128–512) of 16 frames at 128×128",
        "variants": [("full", "full decode", {}),
                     ("s1", "sliced, 1 frame per slice", {"fps": 1}),
                     ("s2", "sliced, 2 frames per slice", {"fps": 2}),
                     ("s4", "sliced, 4 frames per slice", {"fps": 4})],
        "baseline": "full", "target": ("s2", 0.35),
        "note": "Per-frame VAE: slicing is exact; the only differences are float rounding of the "
                "convolution kernels the CPU backend picks per batch size (≈ 1e-5 of the output's "
                "magnitude).",
    },
    "decode_svd": {
        "what": "SVD temporal decoder (`AutoencoderKLTemporalDecoder`, SVD widths) of 16 frames at 64×64",
        "variants": [("full", "full decode (one clip)", {}),
                     ("b8o4", "sliced, 8-frame windows, overlap 4, linear blend", {"fps": 8, "overlap": 4}),
                     ("b4o2", "sliced, 4-frame windows, overlap 2, linear blend", {"fps": 4, "overlap": 2})],
        "baseline": "full", "target": None,
        "note": "The temporal decoder mixes over the whole clip, so windows are approximate: linear "
                "cross-fade over the overlap (PSNR vs the whole-clip decode). Random weights with "
                "`mix_factor` 0 (equal spatial/temporal share) — trained weights will differ.",
    },
    "decode_wan": {
        "what": "Wan 2.1 causal VAE (`AutoencoderKLWan`, Wan widths) of 17 frames (5 latent) at 128×128",
        "variants": [("full", "full decode (`vae.decode`)", {}),
                     ("causal", "sliced: one latent frame per step, chunks to output at once",
                      {"causal": True})],
        "baseline": "full", "target": None,
        "note": "diffusers' `AutoencoderKLWan.decode` already steps one latent frame at a time with its "
                "causal cache, so the decoder's activations peak the same in both rows (no quality "
                "change: diff 0). What sliced decoding removes is the whole decoded video (grown by "
                "repeated `torch.cat`) on the compute device; on this CPU run both outputs live in host "
                "memory, so the ratio stays ≈ 1. It matters on a GPU with long, large clips.",
    },
}


# ------------------------------------------------------------------------------------------ worker


def _import_avlab():
    try:
        import avlab  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location("avlab", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["avlab"] = module
        spec.loader.exec_module(module)


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M).group(1))


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Meter:
    """Peak memory increase of one measured run (see module docstring)."""

    def __init__(self, device: str):
        self.device = device
        self.reset_ok = device == "cuda" or _can_reset_peak()

    def __enter__(self):
        import gc

        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif self.reset_ok:
            self.base = _status_kb("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")
        else:
            import resource

            self.base = _status_kb("VmRSS") * 1024
            self.maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.reset_ok:
            peak = _status_kb("VmHWM") * 1024
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.seconds = time.perf_counter() - self.t0
        self.peak = max(0, peak - self.base)


def _build_motion_unet(device):
    import torch
    from diffusers import UNetMotionModel

    torch.manual_seed(0)
    model = UNetMotionModel(
        block_out_channels=(64, 128, 256), layers_per_block=1, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion"),
        cross_attention_dim=256, num_attention_heads=4, in_channels=4, out_channels=4,
        motion_max_seq_length=32, motion_num_attention_heads=4).eval().to(device)
    g = torch.Generator().manual_seed(1)
    b, f = 2, 16
    x = torch.randn(b, 4, f, 32, 32, generator=g).to(device)
    ctx = torch.randn(b * f, 16, 256, generator=g).to(device)
    return lambda: model(x, torch.tensor(500, device=device), ctx).sample, model


def _build_wan_dit(device):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=3, attention_head_dim=128,
                                  in_channels=16, out_channels=16, text_dim=256, freq_dim=256, ffn_dim=2240,
                                  num_layers=4).eval().to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 5, 60, 104, generator=g).to(device)
    ctx = torch.randn(1, 32, 256, generator=g).to(device)
    t = torch.tensor([500.0], device=device)
    return lambda: model(x, t, ctx, return_dict=False)[0], model


def _chunked_run(build, device, opts):
    from avlab.lightcache.chunking import chunked

    forward, model = build(device)
    if not opts:
        return forward

    def run():
        with chunked(model, opts["temporal"], opts["spatial"]):
            return forward()

    return run


def _build_sd_vae(device, opts):
    import torch
    from diffusers import AutoencoderKL

    from avlab.lightcache.sliced_decode import decode_frames, full_decode_to

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).eval().to(device)
    z = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    decode = lambda s: vae.decode(s).sample  # noqa: E731
    if not opts:
        return lambda: full_decode_to(decode, z)
    return lambda: decode_frames(decode, z, opts["fps"])


def _build_svd_vae(device, opts):
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    from avlab.lightcache.sliced_decode import decode_temporal_blend, full_decode_to

    torch.manual_seed(0)
    # SVD's VAE widths (the class defaults are a one-level toy decoder).
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                       down_block_types=("DownEncoderBlock2D",) * 4,
                                       latent_channels=4).eval().to(device)
    with torch.no_grad():  # give the time mixing a real share (the default init leaves it at 0.5)
        for name, p in vae.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(0.0)
    g = torch.Generator().manual_seed(1)
    base, drift = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    z = (base + 0.0125 * torch.arange(16.0).view(-1, 1, 1, 1) * drift).to(device)
    decode = lambda s: vae.decode(s, num_frames=s.shape[0]).sample  # noqa: E731
    if not opts:
        return lambda: full_decode_to(decode, z)
    return lambda: decode_temporal_blend(decode, z, opts["fps"], opts["overlap"])


def _build_wan_vae(device, opts):
    import torch
    from diffusers import AutoencoderKLWan

    from avlab.lightcache.sliced_decode import decode_causal, full_decode_to

    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval().to(device)
    z = torch.randn(1, 16, 5, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    if opts.get("causal"):
        return lambda: decode_causal(vae, z)
    return lambda: full_decode_to(lambda v: vae.decode(v).sample, z)


def worker(case: str, variant: str, device: str, out_path: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    _import_avlab()
    torch.manual_seed(0)
    opts = dict(next(v for v in CASES[case]["variants"] if v[0] == variant)[2])
    if case == "chunk_unet":
        run = _chunked_run(_build_motion_unet, device, opts)
    elif case == "chunk_dit":
        run = _chunked_run(_build_wan_dit, device, opts)
    elif case == "decode_sd":
        run = _build_sd_vae(device, opts)
    elif case == "decode_svd":
        run = _build_svd_vae(device, opts)
    elif case == "decode_wan":
        run = _build_wan_vae(device, opts)
    else:
        raise SystemExit(f"unknown case {case}")
    meter = _Meter(device)
    with torch.no_grad():
        if meter.reset_ok:
            run()  # warm-up: kernel caches and one-time allocations are not part of the peak
        with meter:
            out = run()
    torch.save(out.detach().to("cpu"), out_path)
    return {"case": case, "variant": variant, "peak_bytes": meter.peak, "seconds": meter.seconds,
            "method": "cuda max_memory_allocated" if device == "cuda" else
                      ("VmHWM reset via clear_refs" if meter.reset_ok else "ru_maxrss (no warm-up)")}


# ------------------------------------------------------------------------------------------ parent


def _spawn(case: str, variant: str, device: str, out_path: str, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.fspath(Path(__file__).resolve()), "--worker", case, variant,
           "--device", device, "--out", out_path, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=os.fspath(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"{case}/{variant} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def _psnr(a, b) -> float:
    from avlab.common.metrics import psnr

    return psnr(a.clamp(-1, 1), b.clamp(-1, 1), data_range=2.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads per worker (1: steady timings on shared cores)")
    ap.add_argument("--out", default=os.fspath(RESULTS), help="markdown table to write")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.device, args.out, args.threads)))
        return 0

    import torch

    rows, notes = [], []
    method = None
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            spec = CASES[case]
            results, outputs = {}, {}
            for variant, label, _ in spec["variants"]:
                path = os.path.join(tmp, f"{case}_{variant}.pt")
                res = _spawn(case, variant, args.device, path, args.threads)
                results[variant] = res
                outputs[variant] = torch.load(path, weights_only=True)
                method = res["method"]
                print(f"{case:11s} {variant:7s} peak +{_mib(res['peak_bytes'])} MiB  {res['seconds']:.1f} s",
                      flush=True)
            base = results[spec["baseline"]]
            ref = outputs[spec["baseline"]]
            for variant, label, _ in spec["variants"]:
                res = results[variant]
                ratio = res["peak_bytes"] / max(1, base["peak_bytes"])
                if variant == spec["baseline"]:
                    diff = "—"
                elif case == "decode_svd":
                    diff = f"PSNR {_psnr(outputs[variant], ref):.1f} dB"
                else:
                    diff = (f"{(outputs[variant] - ref).abs().max().item():.1e} "
                            f"(max abs output {ref.abs().max().item():.2g})")
                target = ""
                if spec["target"] and spec["target"][0] == variant:
                    goal = spec["target"][1]
                    target = f"≤ {goal} → {'met' if ratio <= goal else 'NOT met'}"
                rows.append((spec["what"] if variant == spec["baseline"] else "", label,
                             _mib(res["peak_bytes"]), f"{ratio:.2f}", f"{res['seconds']:.1f}", diff, target))
            if spec.get("note"):
                notes.append(f"* **{case}** — {spec['note']}")

    lines = [
        "# LightCache peak memory: feature chunking and sliced decoding",
        "",
        f"Produced by `python benchmarks/lightcache_memory.py` on {args.device} "
        f"(torch {torch.__version__}, {args.threads} torch thread(s) per worker, {os.cpu_count()} CPUs). Each row ran in its own "
        f"process; peak = {method} increase over the memory right before the measured run "
        "(model and inputs loaded, one warm-up run done). Ratio = peak / the case's first row. "
        "Output diff = max abs difference against the first row (SVD: PSNR against the whole-clip "
        "decode, data range [-1, 1]). Random weights (seeded); wall times are one run on a shared "
        "machine and only indicative.",
        "",
        "| case | configuration | peak MiB | ratio | seconds | output vs first row | issue target |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
