"""LightCache on the benchmark zoo: defaults that hold on unseen models, and the speed/quality frontier
against ComfyUI's own EasyCache and LazyCache (LightCache part 2).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/lightcache_zoo.py            # everything (~40 min, 2 cores)
    COMFYUI_PATH=... python benchmarks/lightcache_zoo.py --aggregate-only        # tables + plot from saved cells

Models: the six zoo models of ``benchmarks/lightcache_zoo_models.py`` (trained by
``scripts/train_lightcache_zoo.py``; three marked ``tune``, three ``report``). Each (model, sampler
setting) *cell* runs in its own process (``--worker``) on the CPU with one thread: every method and
setting samples the same noise and prompts with ComfyUI's ``comfy.sample.sample`` (its KSampler with
the cell's sampler, scheduler, steps and CFG), in ``--rounds`` interleaved rounds; time = fastest
round; quality = PSNR (dB) of the toy-codec-decoded video against the uncached run of the same cell.

Methods: uncached; AVLab LightCache through the node's wiring (``apply_to_model_patcher``) — the
library defaults, fixed uniform intervals and an adaptive sweep; EasyCache and LazyCache through
their host nodes' ``execute`` (their defaults: start 0.15, end 0.95) over a threshold sweep.

Aggregation (written to ``benchmarks/results/lightcache_zoo.md`` + ``lightcache_zoo_frontier.png``):

* defaults table — every model × sampler at ``LightCacheConfig()`` (worst case and median);
* default choice — among the adaptive settings, the fastest (median speed-up on the *tune* cells)
  whose worst PSNR on every *tune* cell is at least ``--target`` + ``--margin`` dB; reported on the
  *report* models, which played no part in it;
* frontier — per report model, each setting's worst PSNR over the model's sampler cells against its
  median speed-up; at each PSNR level the best speed-up per method, and adaptive LightCache ÷ the
  better ComfyUI cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lightcache_zoo_models as zoo  # noqa: E402
from harness import RunLog  # noqa: E402

RESULTS = HERE / "results"
CELLS_DIR = HERE.parent / "runs" / "lightcache_zoo_cells"

#: sampler settings (name, sampler, scheduler, steps, cfg)
SAMPLERS = (
    ("euler-simple-30-cfg1", "euler", "simple", 30, 1.0),
    ("euler-normal-20-cfg3", "euler", "normal", 20, 3.0),
    ("dpmpp_2m-karras-30-cfg3", "dpmpp_2m", "karras", 30, 3.0),
    ("uni_pc-simple-20-cfg1", "uni_pc", "simple", 20, 1.0),
    ("dpmpp_2m-simple-50-cfg1", "dpmpp_2m", "simple", 50, 1.0),
    ("uni_pc-karras-30-cfg3", "uni_pc", "karras", 30, 3.0),
)
FIXED_INTERVALS = (2, 3, 4)
ADAPTIVE_ERRORS = (0.05, 0.1, 0.2, 0.4)
ADAPTIVE_CAPS = (4, 6)
COMFY_THRESHOLDS = (0.05, 0.1, 0.2, 0.4)
#: the low end of EasyCache / LazyCache (their quality range on these models), run as a second pass
COMFY_THRESHOLDS_LOW = (0.01, 0.02, 0.03)
PSNR_LEVELS = (40.0, 35.0, 30.0, 25.0)
VIDEOS = 2


def settings(pass_name: str = "main") -> list[dict]:
    """Every (method, setting) run in a cell, in run order (``"low"``: the second pass, ComfyUI's caches
    at their strictest thresholds)."""
    if pass_name == "low":
        return [{"method": "uncached", "setting": "–"}] + [
            {"method": m, "setting": f"threshold {t}", "threshold": t} for m in ("EasyCache", "LazyCache")
            for t in COMFY_THRESHOLDS_LOW]
    out = [{"method": "uncached", "setting": "–"},
           {"method": "LightCache defaults", "setting": "LightCacheConfig()"}]
    out += [{"method": "LightCache uniform", "setting": f"interval {k}", "config": {"schedule": "uniform",
             "cache_interval": k}} for k in FIXED_INTERVALS]
    out += [{"method": "LightCache adaptive", "setting": f"error {e}, cap {c}",
             "config": {"schedule": "adaptive", "adaptive_error": e, "cache_interval": c}}
            for c in ADAPTIVE_CAPS for e in ADAPTIVE_ERRORS]
    out += [{"method": m, "setting": f"threshold {t}", "threshold": t} for m in ("EasyCache", "LazyCache")
            for t in COMFY_THRESHOLDS]
    return out


# -- one cell (worker process) ----------------------------------------------------------------------------
def run_cell(comfy_path: str, model_name: str, sampler_index: int, rounds: int, pass_name: str = "main") -> dict:
    comfy = zoo.import_comfy(comfy_path)
    import comfy.patcher_extension
    from comfy_extras import nodes_easycache

    from avlab.common.metrics import psnr
    from avlab.lightcache import LightCacheConfig
    from avlab.lightcache.comfy_glue import apply_to_model_patcher

    runlog = RunLog()
    root = logging.getLogger()
    for h in root.handlers:
        h.setLevel(max(h.level, logging.WARNING))
    root.addHandler(runlog)
    root.setLevel(logging.INFO)

    spec = zoo.by_name(model_name)
    label, sampler, scheduler, steps, cfg = SAMPLERS[sampler_index]
    base = zoo.load(comfy, spec)
    _, _, codec = zoo.domain_latents(1, zoo.HELDOUT_DATA_SEED)
    labels = torch.arange(VIDEOS) % zoo.NUM_CLASSES
    shape = zoo.to_model_layout(spec, torch.zeros(VIDEOS, zoo.CHANNELS, zoo.FRAMES, zoo.LATENT, zoo.LATENT)).shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + sampler_index))
    latent = torch.zeros(shape)
    positive = [[zoo.context_for(spec, labels), {}]]
    # null prompt as 5 zero tokens (the same cross-attention output as the table's 4 zero tokens): 4 and 5
    # tokens cannot be padded to one batch (lcm 20 > ComfyUI's 4× limit), so cond and uncond stay separate
    # calls, which ComfyUI 0.3.64's EasyCache/LazyCache need (their cached diff is added to the whole call)
    negative = [[torch.zeros(1, zoo.TOKENS + 1, zoo.CONTEXT_DIM), {}]]

    def patched(s: dict):
        m = s["method"]
        if m == "uncached":
            return base
        if m.startswith("LightCache"):
            config = LightCacheConfig(**s.get("config", {}))
            return apply_to_model_patcher(base, config, comfy.patcher_extension.WrappersMP)
        node = nodes_easycache.EasyCacheNode if m == "EasyCache" else nodes_easycache.LazyCacheNode
        return node.execute(base, s["threshold"], 0.15, 0.95, False).result[0]

    runs = settings(pass_name)
    models = [patched(s) for s in runs]
    times = [[] for _ in runs]
    outs, skipped, reused, est = ([None] * len(runs) for _ in range(4))
    for _ in range(rounds):
        for i, m in enumerate(models):
            runlog.last = None
            t0 = time.perf_counter()
            out = comfy.sample.sample(m, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                      disable_pbar=True, seed=0)
            times[i].append(time.perf_counter() - t0)
            outs[i], skipped[i], reused[i] = out, runlog.skipped(), runlog.reused_calls()
            est[i] = runlog.estimated_speedup()
    frames = [codec.decode(zoo.from_model_layout(spec, o)) for o in outs]
    base_t = min(times[0])
    rows = []
    for i, s in enumerate(runs):
        p = float("inf") if i == 0 else psnr(frames[0], frames[i])
        rows.append({**{k: v for k, v in s.items() if k in ("method", "setting")}, "seconds": min(times[i]),
                     "speedup": base_t / min(times[i]), "psnr": p if p != float("inf") else None,
                     "identical": bool(torch.equal(outs[0], outs[i])), "skipped": skipped[i],
                     "reused_calls": reused[i], "estimated_speedup": est[i]})
    shift = float(base.get_model_object("model_sampling").shift) if spec.family == zoo.WAN else None
    return {"model": model_name, "role": spec.role, "sampler": label, "steps": steps, "cfg": cfg, "shift": shift,
            "pass": pass_name,
            "rounds": rounds, "defaults": _defaults_dict(), "rows": rows,
            "uncached_finite": bool(torch.isfinite(outs[0]).all())}


def _defaults_dict() -> dict:
    from dataclasses import asdict

    from avlab.lightcache import LightCacheConfig

    return asdict(LightCacheConfig())


# -- driver ---------------------------------------------------------------------------------------------------
def run_all(args) -> None:
    CELLS_DIR.mkdir(parents=True, exist_ok=True)
    cells = [(m.name, i) for m in zoo.ZOO if not args.models or m.name in args.models
             for i in range(len(SAMPLERS))]

    cells = [(name, i, p) for p in args.passes for name, i in cells]

    def one(cell):
        name, i, pass_name = cell
        out = CELLS_DIR / f"{name}__{SAMPLERS[i][0]}__{pass_name}.json"
        if args.resume and out.is_file():
            return
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(i), "--rounds", str(args.rounds),
               "--comfyui", args.comfyui, "--out", str(out), "--pass", pass_name]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        status = "ok" if r.returncode == 0 else f"FAILED\n{r.stderr[-3000:]}"
        print(f"{name} {SAMPLERS[i][0]} ({pass_name}): {time.time() - t0:.0f} s {status}", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, cells))


def load_cells(directory: Path = CELLS_DIR) -> list[dict]:
    """One record per (model, sampler): the passes' rows merged (each pass ran its own uncached baseline
    on the same noise; its speed-ups are relative to that)."""
    merged: dict = {}
    for p in sorted(directory.glob("*.json")):
        c = json.loads(p.read_text())
        d = c.get("defaults", {})
        if d.get("schedule") == "adaptive" and d != _defaults_dict():
            for r in c["rows"]:   # defaults measured under earlier defaults: name them by their setting
                if r["method"] == "LightCache defaults":
                    r["method"], r["setting"] = ("LightCache adaptive",
                                                 f"error {d['adaptive_error']}, cap {d['cache_interval']}")
        key = (c["model"], c["sampler"])
        if key not in merged:
            merged[key] = c
        else:   # the main pass is the record; the other passes add their rows
            base, extra = (c, merged[key]) if c.get("pass", "main") == "main" else (merged[key], c)
            base["rows"] += [r for r in extra["rows"] if r["method"] != "uncached"]
            merged[key] = base
    return list(merged.values())


def _psnr(row) -> float:
    return float("inf") if row["psnr"] is None else row["psnr"]


def _fmt_db(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:.1f}"


def by_setting(cells: list[dict]) -> dict:
    """{(method, setting): [(cell, row), ...]}."""
    out: dict = {}
    for c in cells:
        for r in c["rows"]:
            out.setdefault((r["method"], r["setting"]), []).append((c, r))
    return out


def defaults_row(cell: dict, defaults: dict) -> dict | None:
    """The row measuring ``defaults`` in ``cell``: its "LightCache defaults" row when the cell was run with
    these defaults, else the sweep row of the same configuration (None if neither exists)."""
    keys = ("schedule", "adaptive_error", "cache_interval", "cache_depth", "start_percent", "end_percent")
    if all(cell["defaults"].get(k) == defaults.get(k) for k in keys):
        return next((r for r in cell["rows"] if r["method"] == "LightCache defaults"), None)
    if defaults["schedule"] == "adaptive" and defaults["cache_depth"] == 0 and (defaults["start_percent"],
                                                                                defaults["end_percent"]) == (0.0, 1.0):
        label = f"error {defaults['adaptive_error']}, cap {defaults['cache_interval']}"
        return next((r for r in cell["rows"] if r["method"] == "LightCache adaptive" and r["setting"] == label), None)
    return None


def reused_fraction(row: dict) -> float:
    """Share of model calls that reused the cache (deterministic; wall clock on a shared CPU is not)."""
    r = row.get("reused_calls")
    return r[0] / r[1] if r and r[1] else 0.0


def choose_default(cells: list[dict], target: float, margin: float) -> tuple | None:
    """The adaptive setting reusing the most (median share of model calls over the tune cells) whose worst
    tune PSNR ≥ target + margin: (setting, worst PSNR, median reused share, median wall-clock speed-up)."""
    tune = [c for c in cells if c["role"] == zoo.TUNE]
    best = None
    for (method, setting), items in by_setting(tune).items():
        if method != "LightCache adaptive":
            continue
        worst = min(_psnr(r) for _, r in items)
        share = statistics.median(reused_fraction(r) for _, r in items)
        if worst >= target + margin and (best is None or share > best[2]):
            best = (setting, worst, share, statistics.median(r["speedup"] for _, r in items))
    return best


def frontier(cells: list[dict], model: str) -> dict:
    """Per method: [(worst PSNR over the model's cells, median speed-up, setting)] of every setting."""
    mine = [c for c in cells if c["model"] == model]
    out: dict = {}
    for (method, setting), items in by_setting(mine).items():
        if method == "uncached":
            continue
        worst = min(_psnr(r) for _, r in items)
        med = statistics.median(r["speedup"] for _, r in items)
        out.setdefault(method, []).append((worst, med, setting))
    return out


def best_at(points: list, level: float):
    ok = [p for p in points if p[0] >= level and p[0] != float("inf")]
    return max(ok, key=lambda p: p[1]) if ok else None


def write_report(cells: list[dict], args) -> Path:
    import platform

    cells = [c for c in cells if c["model"] in {m.name for m in zoo.ZOO}]
    models = [m for m in zoo.ZOO if any(c["model"] == m.name for c in cells)]
    defaults = _defaults_dict()    # the library's defaults now (looked up in each cell's sweep)
    lines = ["# LightCache on the benchmark zoo (ComfyUI 0.3.64, in-process, CPU)", "",
             "`COMFYUI_PATH=... python benchmarks/lightcache_zoo.py` — each (model, sampler) cell in its own "
             f"process, 1 thread, {cells[0]['rounds'] if cells else '?'} interleaved rounds (time = fastest round). "
             f"{VIDEOS} videos × {zoo.FRAMES} frames × {zoo.SIZE}² px per run (toy latent 16 × {zoo.LATENT}²), "
             "same noise and prompts for every method; PSNR of the decoded video against the uncached run of "
             f"the same cell. CPU {platform.machine()}, torch {torch.__version__}. Speed-up = wall clock of the "
             "whole sampling run (model calls + sampler), uncached ÷ method.", "",
             "## The zoo", "", "| model | role | architecture / training | params | held-out loss untrained → trained |",
             "|---|---|---|---|---|"]
    for m in models:
        meta = json.loads((zoo.ZOO_DIR / f"{m.name}.json").read_text())
        rec = meta["record"]
        lines.append(f"| {m.name} | {m.role} | {zoo.describe(m)} | {rec.get('parameters', 0) / 1e6:.2f} M | "
                     f"{rec['heldout_loss_untrained']:.3f} → {rec['heldout_loss_trained']:.3f} |")
    lines += ["", "Sampler settings (every model): " + "; ".join(s[0] for s in SAMPLERS) + ".", ""]

    # defaults
    cfg_txt = ", ".join(f"{k} {v}" for k, v in defaults.items() if k in ("schedule", "adaptive_error",
                                                                          "cache_interval", "cache_depth"))
    lines += ["## Every model × sampler at the defaults", "", f"`LightCacheConfig()` = {cfg_txt}.", "",
              "| model | role | sampler | steps skipped | model calls reused | speed-up (wall clock) | "
              "LightCache's estimate | PSNR (dB) |", "|---|---|---|---|---|---|---|---|"]
    stats = {zoo.TUNE: [], zoo.REPORT: []}
    for c in cells:
        r = defaults_row(c, defaults)
        if r is None:
            continue
        stats[c["role"]].append((_psnr(r), r["speedup"]))
        calls = "/".join(map(str, r["reused_calls"])) if r.get("reused_calls") else "–"
        lines.append(f"| {c['model']} | {c['role']} | {c['sampler']} | {r['skipped']}/{c['steps']} | {calls} | "
                     f"{r['speedup']:.2f}× | {(str(r['estimated_speedup']) + '×') if r.get('estimated_speedup') else '–'} | "
                     f"{_fmt_db(_psnr(r))} |")
    lines += ["", "| cells | worst PSNR | median PSNR | worst speed-up | median speed-up |", "|---|---|---|---|---|"]
    for role in (zoo.TUNE, zoo.REPORT):
        v = stats[role]
        if v:
            ps, sp = [p for p, _ in v], [s for _, s in v]
            lines.append(f"| {role} ({len(v)}) | {_fmt_db(min(ps))} dB | {_fmt_db(statistics.median(ps))} dB | "
                         f"{min(sp):.2f}× | {statistics.median(sp):.2f}× |")

    choice = choose_default(cells, args.target, args.margin)
    lines += ["", "## How the default was chosen (tune models only)", "",
              f"Among the adaptive settings: the one reusing the most model calls (median share over the tune "
              f"cells; call counts are exact, wall clock on a shared CPU is not) whose worst PSNR on every tune "
              f"cell is ≥ {args.target:.0f} + {args.margin:.0f} dB (margin for unseen models). "
              + (f"Chosen: **{choice[0]}** (tune worst {_fmt_db(choice[1])} dB, median {choice[2]:.0%} of calls "
                 f"reused, median wall-clock {choice[3]:.2f}×)." if choice else "No adaptive setting qualified.")]
    lines += ["", "| setting | tune worst PSNR | tune median calls reused | tune median speed-up | report worst PSNR "
              "| report median calls reused | report median speed-up |", "|---|---|---|---|---|---|---|"]
    groups = {role: by_setting([c for c in cells if c["role"] == role]) for role in (zoo.TUNE, zoo.REPORT)}
    for key in by_setting(cells):
        if not key[0].startswith("LightCache"):
            continue
        row = [f"{key[0]}: {key[1]}"]
        for role in (zoo.TUNE, zoo.REPORT):
            items = groups[role].get(key, [])
            row += ([_fmt_db(min(_psnr(r) for _, r in items)) + " dB",
                     f"{statistics.median(reused_fraction(r) for _, r in items):.0%}",
                     f"{statistics.median(r['speedup'] for _, r in items):.2f}×"] if items else ["–", "–", "–"])
        lines.append("| " + " | ".join(row) + " |")

    # frontier
    lines += ["", "## Frontier against ComfyUI's caches (report models)", "",
              "Per model and setting: worst PSNR over its sampler cells, median speed-up. At each level, the "
              "best speed-up each method reaches with a worst PSNR at or above it; last column = adaptive "
              "LightCache ÷ the better of EasyCache and LazyCache (goal ≥ 1.3 at ≥ 30 dB).", ""]
    methods = ("LightCache adaptive", "LightCache uniform", "EasyCache", "LazyCache")
    lines += ["| model | PSNR ≥ | " + " | ".join(methods) + " | adaptive ÷ better ComfyUI |",
              "|---|---|" + "---|" * (len(methods) + 1)]
    fronts = {}
    for m in models:
        fr = frontier(cells, m.name)
        fronts[m.name] = fr
        if m.role != zoo.REPORT and not args.all_frontiers:
            continue
        for level in PSNR_LEVELS:
            best = {k: best_at(fr.get(k, []), level) for k in methods}
            cellv = [f"{b[1]:.2f}× ({b[2]})" if b else "none" for b in (best[k] for k in methods)]
            comfy_best = max((best[k][1] for k in ("EasyCache", "LazyCache") if best[k]), default=None)
            ratio = (f"{best['LightCache adaptive'][1] / comfy_best:.2f}" if best["LightCache adaptive"] and comfy_best
                     else ("∞ (ComfyUI none)" if best["LightCache adaptive"] else "–"))
            lines.append(f"| {m.name} ({m.role}) | {level:.0f} dB | " + " | ".join(cellv) + f" | {ratio} |")
    png = plot_frontiers(fronts, models, RESULTS / "lightcache_zoo_frontier.png")
    lines += ["", f"![frontiers]({png.name})", ""]
    out = RESULTS / "lightcache_zoo.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def plot_frontiers(fronts: dict, models, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    style = {"LightCache adaptive": ("C0", "o-"), "LightCache uniform": ("C2", "s--"), "EasyCache": ("C3", "^-"),
             "LazyCache": ("C1", "v-"), "LightCache defaults": ("k", "*")}
    for ax, m in zip(axes[0], models):
        for method, pts in fronts[m.name].items():
            pts = sorted((min(p, 60.0), s) for p, s, _ in pts)
            color, fmt = style.get(method, ("C7", "x"))
            ax.plot([s for _, s in pts], [p for p, _ in pts], fmt, color=color, label=method, ms=5 if fmt != "*" else 12)
        ax.axhline(30, color="gray", lw=0.8, ls=":")
        ax.set_title(f"{m.name} ({m.role})", fontsize=9)
        ax.set_xlabel("median speed-up (×)")
        ax.set_ylabel("worst PSNR over samplers (dB, capped 60)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_grid(comfy_path: str, path: Path = RESULTS / "lightcache_zoo_samples.png") -> Path:
    """One row per zoo model: uncached ComfyUI samples (euler, 30 steps, CFG 3) of the three classes, every
    frame, decoded with the toy codec — evidence that each model learned the domain (or, for the
    under-trained ones, how far it got)."""
    import numpy as np
    from PIL import Image

    comfy = zoo.import_comfy(comfy_path)
    import comfy.sample  # noqa: F401

    rows = []
    labels = torch.arange(zoo.NUM_CLASSES)
    for spec in zoo.ZOO:
        model = zoo.load(comfy, spec)
        _, _, codec = zoo.domain_latents(1, zoo.HELDOUT_DATA_SEED)
        shape = zoo.to_model_layout(spec, torch.zeros(len(labels), zoo.CHANNELS, zoo.FRAMES, zoo.LATENT,
                                                      zoo.LATENT)).shape
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        out = comfy.sample.sample(model, noise, 30, 3.0, "euler", "simple",
                                  [[zoo.context_for(spec, labels), {}]],
                                  [[torch.zeros(1, zoo.TOKENS + 1, zoo.CONTEXT_DIM), {}]], torch.zeros(shape),
                                  disable_pbar=True, seed=0)
        frames = codec.decode(zoo.from_model_layout(spec, out)).clamp(0, 1)       # [B,T,H,W,3]
        b, t, h, w, _ = frames.shape
        rows.append(frames.permute(0, 2, 1, 3, 4).reshape(b * h, t * w, 3))
    grid = torch.cat(rows, dim=0)
    img = Image.fromarray((grid.numpy() * 255).round().astype(np.uint8))
    img = img.resize((img.width * 2, img.height * 2), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="cells in parallel (each one thread)")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--resume", action="store_true", help="keep cells already measured")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--target", type=float, default=30.0)
    ap.add_argument("--margin", type=float, default=10.0,
                    help="dB above --target the tune cells must keep (an unseen tiny Wan measured ~11 dB more "
                         "sensitive to caching than the zoo; a 3 dB margin picked a setting that fell to 28.5 dB "
                         "on the report models)")
    ap.add_argument("--all-frontiers", action="store_true", help="frontier rows for tune models too")
    ap.add_argument("--samples", action="store_true", help="only write the sample grid of the zoo models")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "SAMPLER_INDEX"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pass", dest="pass_name", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--passes", nargs="*", default=["main", "low"], choices=["main", "low"],
                    help="main: every method; low: EasyCache/LazyCache at their strictest thresholds")
    args = ap.parse_args(argv)
    if args.samples:
        print(f"wrote {sample_grid(args.comfyui)}")
        return 0
    if args.worker:
        torch.set_num_threads(1)
        cell = run_cell(args.comfyui, args.worker[0], int(args.worker[1]), args.rounds, args.pass_name)
        args.out.write_text(json.dumps(cell, indent=1))
        return 0
    if not args.aggregate_only:
        if not args.comfyui:
            raise SystemExit("set COMFYUI_PATH (or --comfyui) to a ComfyUI 0.3.64 checkout")
        run_all(args)
    print(f"wrote {write_report(load_cells(), args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
