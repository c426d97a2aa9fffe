"""LightCache speed / memory / quality sweep on the trained toy video models (papers.md §1, "Benchmarks").

Every configuration — the uncached baseline included — samples the same prompts and seed in its own
process (:func:`worker`), which

* loads the model, warms up with a 2-step run through the same code path (lazy inits, allocator),
  then resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``),
* times ``--repeats`` full sampling runs (the fastest is kept: on a shared machine other jobs only
  ever add time),
* records the peak RSS of the timed runs (``VmHWM``; on CUDA also ``max_memory_allocated``),
* saves the final latent; the parent decodes it and compares it with the uncached video (PSNR over
  all pixels in 0..1, mean per-frame SSIM).

Process isolation: ``--isolation fork`` (default on Linux) forks each configuration from a parent
that has imported torch/diffusers but never loaded a model or sampled (all metrics are computed after
the last child), so a configuration's peak and allocator state never leak into another's and the
10–20 s interpreter start is paid once; ``--isolation spawn`` starts a fresh interpreter per
configuration instead.

The baseline runs first and last; speed-ups are ratios to the mean of those two baseline times, so
every number in a table comes from the same run. Models (``weights/toy/``, made by
``scripts/train_toy_video_models.py`` on the synthetic domain): the toy U-Net (diffusers
``UNetMotionModel``, 50 steps) and the toy Wan DiT (diffusers ``WanTransformer3DModel``, 30 steps),
both with CFG; sampler and step count are each model's recipe (``weights/toy/*.json``). Sweep:
``cache_interval`` 2–6 × ``cache_depth`` (U-Net: branch id; DiT: leading/trailing blocks that always
run) with the uniform schedule, plus the non-uniform schedule at depth 0.

    python benchmarks/lightcache_speed.py                    # both models → results/lightcache_speed.md
    python benchmarks/lightcache_speed.py --models toy_unet --intervals 4 --depths 0 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lightcache_speed.md"
MODELS = {"toy_unet": "unet_motion", "toy_wan": "wan_dit"}
INTERVALS = (2, 3, 4, 5, 6)
DEPTHS = (0, 1, 2)
TARGET = (2.5, 30.0)          # issue: ≥ 2.5× at PSNR ≥ 30 dB on the trained toy U-Net
LABELS = (0, 1)               # two videos (two scene classes); CFG doubles the batch


# -- one configuration (runs in its own process) ----------------------------------------------------------
def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    """Sample ``spec["repeats"]`` times with one configuration; return timings, memory, LightCache summary."""
    import resource

    from avlab import lightcache
    from avlab.toymodels import ToyVideoModel

    torch.set_num_threads(spec["threads"])
    toy = ToyVideoModel.load(MODELS[spec["model"]], spec["weights"])
    steps = spec["steps"]
    handle = None
    if spec["interval"] > 1:
        handle = lightcache.apply(toy.model, cache_interval=spec["interval"], cache_depth=spec["depth"],
                                  schedule=spec["schedule"])

    def sample(n_steps):
        if handle is None:
            return toy.sample(list(LABELS), seed=0, steps=n_steps)
        with handle.run(n_steps):
            return toy.sample(list(LABELS), seed=0, steps=n_steps)

    sample(2)                                    # warm-up through the same code path
    reset_ok = _reset_peak()
    rss_start = _status_mb("VmRSS")
    times, out, summary = [], None, None
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        out = sample(steps)
        times.append(time.perf_counter() - t0)
        summary = handle.last_summary if handle is not None else None
    peak = _status_mb("VmHWM") if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if handle is not None:
        handle.remove()
    torch.save(out.cpu(), spec["out"])
    res = {"seconds": min(times), "all_seconds": [round(t, 3) for t in times], "peak_rss_mb": round(peak, 1),
           "rss_start_mb": round(rss_start, 1), "summary": summary}
    if torch.cuda.is_available() and toy.model.device.type == "cuda":
        res["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return res


def _child(spec: dict, conn) -> None:
    try:
        conn.send(("ok", worker(spec)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        conn.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_isolated(spec: dict, isolation: str) -> dict:
    """Run one configuration in a new process (``fork`` of this interpreter, or ``spawn``: a fresh one)."""
    if isolation == "fork":
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(spec, send))
        proc.start()
        send.close()
        try:
            status, payload = recv.recv()
        except EOFError:
            status, payload = "error", "worker process died"
        proc.join()
        if status != "ok":
            raise RuntimeError(f"configuration {spec['name']} failed:\n{payload}")
        return payload
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- metrics ----------------------------------------------------------------------------------------------
def psnr_ssim(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB, range 1) over all pixels and mean per-frame SSIM of videos ``[B,T,H,W,3]`` in 0..1."""
    from avlab.common.metrics import psnr, video_ssim

    return psnr(ref, out), video_ssim(ref, out)


# -- the sweep --------------------------------------------------------------------------------------------
def plan(model: str, args, tmp: Path) -> list[dict]:
    """The configurations of ``model`` in run order: baseline, sweep, baseline."""
    from avlab.toymodels import ToyVideoModel

    meta = ToyVideoModel.record(MODELS[model], args.weights)["config"]
    steps = args.steps or meta["sample_steps"]

    def spec(name, interval=1, depth=0, schedule="uniform"):
        return {"model": model, "weights": str(args.weights), "name": name, "steps": steps, "threads": args.threads,
                "repeats": args.repeats, "interval": interval, "depth": depth, "schedule": schedule,
                "out": str(tmp / f"{model}_{name}.pt")}

    configs = [spec(f"k{k}_d{d}_uniform", k, d) for d in args.depths for k in args.intervals]
    if 0 in args.depths and not args.no_non_uniform:
        configs += [spec(f"k{k}_d0_non-uniform", k, 0, "non-uniform") for k in args.intervals]
    return [spec("uncached_first")] + configs + [spec("uncached_last")]


def evaluate(model: str, specs: list[dict], results: dict, weights: Path) -> dict:
    """Decode every saved latent and build the table rows (runs in the parent after all children)."""
    from avlab.lightcache import full_step_mask
    from avlab.toymodels import ToyVideoModel

    toy = ToyVideoModel.load(MODELS[model], weights)

    def video(name):
        return toy.decode(torch.load(results[name]["out"], weights_only=True))

    first, last = results["uncached_first"], results["uncached_last"]
    ref = video("uncached_first")
    base_t = statistics.mean([first["seconds"], last["seconds"]])
    base_rss = statistics.mean([first["peak_rss_mb"], last["peak_rss_mb"]])
    rows = []
    for s in specs:
        if s["interval"] <= 1:
            continue
        r = results[s["name"]]
        psnr, ssim = psnr_ssim(ref, video(s["name"]))
        rows.append({**r, "full_steps": sum(full_step_mask(s["steps"], s["interval"], schedule=s["schedule"])),
                     "speedup": base_t / r["seconds"], "psnr": psnr, "ssim": ssim,
                     "rss_delta": r["peak_rss_mb"] - base_rss})
    return {"model": model, "config": toy.config, "steps": specs[0]["steps"], "rows": rows, "base_t": base_t,
            "base_rss": base_rss, "baseline": [first, last],
            "drift": float((video("uncached_last") - ref).abs().max()),
            "record": ToyVideoModel.record(MODELS[model], weights)["record"]}


# -- report -----------------------------------------------------------------------------------------------
def _f(v, spec):
    return "∞" if v == float("inf") else spec.format(v)


def _est(summary) -> str:
    """The speed-up LightCache estimates itself (from its one-line run summary)."""
    if not summary or "speed-up" not in summary:
        return "–"
    return summary.split("speed-up", 1)[1].strip().split("x", 1)[0] + "×"


def _cache_size(summary) -> str | None:
    """``"256.0 KB"`` from LightCache's "cache 256.0 KB peak in CPU memory" summary, or None."""
    if not summary or "cache " not in summary or " peak" not in summary:
        return None
    return summary.rsplit("cache ", 1)[1].split(" peak", 1)[0]


def _title(sec) -> str:
    cfg = sec["config"]
    sampler = (f"v-prediction, DDIM {sec['steps']} steps" if cfg.objective == "v" else
               f"rectified flow, Euler {sec['steps']} steps (shift {cfg.flow_shift})")
    if sec["model"] == "toy_unet":
        return f"toy U-Net — diffusers UNetMotionModel {tuple(cfg.block_out_channels)}, {sampler}, CFG {cfg.guidance}"
    return (f"toy Wan DiT — diffusers WanTransformer3DModel dim {cfg.dim}, {cfg.num_layers} blocks, {sampler}, "
            f"CFG {cfg.guidance}")


def best_at(rows, psnr_min):
    ok = [r for r in rows if r["psnr"] >= psnr_min]
    return max(ok, key=lambda r: r["speedup"]) if ok else None


def write_markdown(path: Path, sections: list, args, seconds: float) -> None:
    cmd = " ".join(["python benchmarks/lightcache_speed.py", *args.argv])
    lines = ["# LightCache speed, memory and quality sweep (toy video models)", "",
             f"`{cmd}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU ({platform.machine()}, "
             f"{os.cpu_count()} cores shared with other jobs, {args.threads} torch thread per process), torch "
             f"{torch.__version__}, whole sweep {seconds / 60:.1f} min.", "",
             f"Every configuration ran in its own process ({args.isolation}): 2-step warm-up through the same "
             f"code path, then {args.repeats} timed sampling run(s), fastest kept. The uncached baseline ran "
             "first and last; speed-up = mean baseline time ÷ configuration time. Peak RSS = the process's "
             "resident-set high-water mark during the timed runs (reset after the warm-up); Δ RSS = minus the "
             "baseline's. PSNR (all pixels, 0..1) and SSIM (mean per frame) of the decoded video against the "
             "uncached one, same prompts (2 scene classes) and seed. *full steps* = steps that run the whole "
             "network (the others reuse the cached deep features); *est.* = the speed-up LightCache itself "
             "estimates from per-call timings (its log line).", ""]
    for sec in sections:
        cfg, (b0, b1), rec = sec["config"], sec["baseline"], sec["record"]
        depth_note = ("cache_depth = branch id: skip connections 0..d form the shallow path that always runs"
                      if sec["model"] == "toy_unet" else
                      f"cache_depth d = the first and last d of the {cfg.num_layers} blocks always run, the residual "
                      "of the blocks between is cached")
        lines += [f"## {sec['model']}: {_title(sec)}", "",
                  f"{len(LABELS)} videos × {cfg.frames} frames × {cfg.size}² (latent {cfg.latent_channels}×"
                  f"{cfg.frames}×{cfg.latent_size}²), {rec.get('params', 0) / 1e6:.2f} M parameters, trained "
                  f"{rec.get('steps')} steps (held-out loss {rec.get('heldout_loss_untrained')} untrained → "
                  f"{rec.get('heldout_loss_trained')} trained). {depth_note}.", "",
                  f"Uncached baseline: {b0['seconds']:.2f} s (first) / {b1['seconds']:.2f} s (last); max |Δ| between "
                  f"the two baseline videos {sec['drift']:.1e}.", "",
                  "| cache_interval | cache_depth | schedule | full steps | time (s) | speed-up | est. | PSNR (dB) | "
                  "SSIM | peak RSS (MB) | Δ RSS (MB) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| uncached | – | – | {sec['steps']} | {sec['base_t']:.2f} | 1.00× | – | ∞ | 1.0000 | "
                  f"{sec['base_rss']:.0f} | 0 |"]
        for r in sec["rows"]:
            lines.append(f"| {r['interval']} | {r['depth']} | {r['schedule']} | {r['full_steps']} | {r['seconds']:.2f} | "
                         f"{r['speedup']:.2f}× | {_est(r['summary'])} | {_f(r['psnr'], '{:.2f}')} | {r['ssim']:.4f} | "
                         f"{r['peak_rss_mb']:.0f} | {round(r['rss_delta']):+d} |")
        lines.append("")
        for level in (40.0, 35.0, 30.0):
            b = best_at(sec["rows"], level)
            lines.append(f"* Best speed-up at PSNR ≥ {level:.0f} dB: " + (
                f"**{b['speedup']:.2f}×** (interval {b['interval']}, depth {b['depth']}, {b['schedule']}; "
                f"{b['psnr']:.2f} dB, SSIM {b['ssim']:.4f})" if b else "none"))
        uni = {r["interval"]: r for r in sec["rows"] if r["depth"] == 0 and r["schedule"] == "uniform"}
        gaps = [uni[r["interval"]]["psnr"] - r["psnr"] for r in sec["rows"]
                if r["schedule"] == "non-uniform" and r["interval"] in uni]
        if gaps:
            word = "lower" if min(gaps) > 0 else ("higher" if max(gaps) < 0 else "different")
            lo, hi = sorted(abs(g) for g in (min(gaps), max(gaps)))
            lines.append(f"* Non-uniform vs uniform schedule at depth 0 (same number of full steps): PSNR {word} by "
                         f"{lo:.1f}–{hi:.1f} dB.")
        sizes = sorted({_cache_size(r["summary"]) for r in sec["rows"]} - {None})
        if sizes:
            deltas = [round(r["rss_delta"]) for r in sec["rows"]]
            lines.append(f"* Feature cache held in CPU memory (LightCache's log): {', '.join(sizes)} at peak. Peak "
                         f"RSS differs from the baseline by {min(deltas):+d} to {max(deltas):+d} MB on a "
                         f"{sec['base_rss']:.0f} MB process. GPU peak memory, chunking and sliced decoding are "
                         "measured in `lightcache_memory.md`.")
        if sec["model"] == "toy_unet":
            b = best_at(sec["rows"], TARGET[1])
            met = b is not None and b["speedup"] >= TARGET[0]
            lines.append(f"* Issue target (≥ {TARGET[0]}× at PSNR ≥ {TARGET[1]:.0f} dB on the trained toy U-Net): "
                         f"**{'met' if met else 'not met'}**.")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--intervals", nargs="+", type=int, default=list(INTERVALS))
    ap.add_argument("--depths", nargs="+", type=int, default=list(DEPTHS))
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: each model's recipe)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (fastest kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--isolation", choices=("fork", "spawn"), default="fork" if sys.platform == "linux" else "spawn")
    ap.add_argument("--no-non-uniform", action="store_true", help="skip the non-uniform schedule rows")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--weights", type=Path, default=None, help="toy weights directory (default: weights/toy)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.weights is None:
        from avlab.toymodels import WEIGHTS_DIR

        args.weights = WEIGHTS_DIR
    torch.set_num_threads(args.threads)   # the parent never computes before the last child (safe fork)
    if args.isolation == "fork":          # import once, inherited by every child
        import diffusers  # noqa: F401
        from diffusers import UNetMotionModel, WanTransformer3DModel  # noqa: F401

        import avlab.lightcache  # noqa: F401
        import avlab.toymodels  # noqa: F401
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avlab_lc_speed_") as tmp:
        plans = {m: plan(m, args, Path(tmp)) for m in args.models}
        results = {m: {} for m in args.models}
        for model, specs in plans.items():
            print(f"{model}: {len(specs)} configurations", flush=True)
            for s in specs:
                t1 = time.perf_counter()
                r = results[model][s["name"]] = {**s, **run_isolated(s, args.isolation)}
                print(f"  {s['name']}: {r['seconds']:.2f} s {r['all_seconds']}, peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"({time.perf_counter() - t1:.0f} s in all)", flush=True)
        sections = [evaluate(m, plans[m], results[m], args.weights) for m in args.models]
    write_markdown(args.out, sections, args, time.perf_counter() - t0)
    for sec in sections:
        for r in sec["rows"]:
            print(f"{sec['model']} k{r['interval']} d{r['depth']} {r['schedule']}: ×{r['speedup']:.2f} "
                  f"PSNR {r['psnr']:.2f} SSIM {r['ssim']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
