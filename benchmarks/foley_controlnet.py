"""Envelope ControlNet cost per sampling step on ComfyUI's own Stable Audio DiT (papers.md §4; issue 10).

A Stable Audio DiT with the real depth (24 blocks) and head width (64) but a narrower model width,
built in-process from ComfyUI's classes (its detection only builds the full 1.1 B model), denoises a
10 s latent (215 frames) once per timed call: without the ControlNet (baseline), with it (5 copied
blocks = round(0.2 · 24)), and with it outside its ``[start, end]`` window (the patches run but skip
the copies). The copied 20 % of the blocks should cost about +20 %. Each configuration in its own
process (:mod:`harness`), 1 thread. Not a test.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/foley_controlnet.py [--width 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import Config, _import_avlab, ratio_table, run_all, write_results

HOST_TESTS = Path(__file__).resolve().parents[1] / "tests" / "host"


def step(mode: str = "off", width: int = 256, depth: int = 24, frames: int = 215) -> dict:
    """One denoiser call (the work of one sampling step without CFG)."""
    _import_avlab()
    import torch

    cache = step.__dict__.setdefault("cache", {})
    if "model" not in cache:
        sys.path.insert(0, os.environ["COMFYUI_PATH"])
        sys.path.insert(0, str(HOST_TESTS))            # the in-process Stable Audio builder of the host tier
        argv, sys.argv = sys.argv, ["comfyui", "--cpu"]
        try:
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.model_management  # noqa: F401
        finally:
            sys.argv = argv
        from tiny_stable_audio import apply_once, build_tiny_stable_audio

        from avlab.foley.controlnet import EnvelopeControlNet
        from avlab.foley.controlnet_glue import apply_envelope_controlnet
        from avlab.foley.envelope import STABLE_AUDIO_RATE, Envelope

        base = build_tiny_stable_audio(depth=depth, embed_dim=width, num_heads=width // 64)
        transformer = base.model.diffusion_model.transformer
        net = EnvelopeControlNet.from_base(transformer.layers, transformer.dim)
        env = Envelope(torch.rand(frames), STABLE_AUDIO_RATE)
        models = {"off": base, "on": apply_envelope_controlnet(base, net, env),
                  "window closed": apply_envelope_controlnet(base, net, env, start_percent=0.0, end_percent=0.0)}
        g = torch.Generator().manual_seed(0)
        cache.update(models=models, apply_once=apply_once, copied=net.copied,
                     x=torch.randn(1, 64, frames, generator=g), ctx=torch.randn(1, 3, 768, generator=g))
    m = cache["models"][mode]
    opts = dict(m.model_options.get("transformer_options", {}))
    if mode == "window closed":
        opts["sigmas"] = torch.tensor([1.0])                       # inside the run, outside [start, end]
    with torch.inference_mode():
        cache["apply_once"](m, cache["x"], sigma=1.0, cross_attn=cache["ctx"], transformer_options=opts,
                            seconds_total=10)
    return {"copied_blocks": cache["copied"]}


MODES = (("without ControlNet", "off"), ("with envelope ControlNet", "on"),
         ("ControlNet outside its window", "window closed"))


def interleaved(width: int = 256, rounds: int = 15) -> dict:
    """All modes in one process, alternating call by call (machine drift hits them alike); medians."""
    import statistics
    import time

    times = {mode: [] for _, mode in MODES}
    for _, mode in MODES:
        step(mode, width)                                           # warm-up (and the model build)
    for _ in range(rounds):
        for _, mode in MODES:
            t0 = time.perf_counter()
            step(mode, width)
            times[mode].append(time.perf_counter() - t0)
    return {mode: statistics.median(v) for mode, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("set COMFYUI_PATH to a ComfyUI 0.3.64 checkout")
    configs = [Config(name, "foley_controlnet:step", {"mode": mode, "width": args.width}) for name, mode in MODES]
    rows = run_all(configs, warmup=1, repeats=args.repeats, threads=1)
    table = ratio_table(rows, "without ControlNet", extra=("copied_blocks",))
    [row] = run_all([Config("interleaved", "foley_controlnet:interleaved", {"width": args.width,
                                                                           "rounds": args.repeats})],
                    warmup=0, repeats=1, threads=1)
    base = row["off"]
    inter = "\n".join(["| configuration | seconds per call | ÷ without |", "|---|---|---|"] + [
        f"| {name} | {row[mode]:.3f} | {row[mode] / base:.3f} |" for name, mode in MODES])
    path = write_results("foley_controlnet", "Envelope ControlNet: cost per sampling step", [
        (f"Interleaved in one process (the figure to read): {args.repeats} rounds, medians", inter),
        (f"Stable Audio DiT, 24 blocks, width {args.width}, 10 s latent (215 frames), 1 thread, one process each", table +
         "\n\n`seconds`: one denoiser call (median of the repeats after a warm-up). The ControlNet runs copies of "
         "the first 5 of 24 blocks (20.8 %) once per call and adds their residuals."),
    ], command="COMFYUI_PATH=... python benchmarks/foley_controlnet.py")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
