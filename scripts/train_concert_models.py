"""Train the concert-cutting models on synthetic concerts and write ``weights/concert/`` + the evaluation.

    python scripts/train_concert_models.py                       # the committed recipe (~12 min, 1 thread)
    python scripts/train_concert_models.py --out /tmp/concert --results /tmp/concert_eval.md --when-steps 100

Papers.md §3 proof on the synthetic domain (:mod:`avlab.concert_edit.train` has the data, recipe and
metrics). Concerts are made from seeds (:class:`~avlab.concert_edit.train.ConcertDataConfig`):
train ``10000..10095`` (96 concerts of 60 s), val ``20000..20015`` (16; every threshold is tuned
there) and test ``30000..30015`` (16; held out, reported only). Trains on the shared loop (one
thread): the when-to-cut model audio-only and multimodal, and the how-to-cut model; evaluates them
against the Poisson / exponential shot-length baselines and chance; writes ``when_audio``,
``when_multimodal`` and ``how`` (``.safetensors`` fp16 + ``.json`` with config, shot statistics,
image encoder and the training/eval record) and the markdown table. Reproducible: same seeds, same
weights (CPU, one thread).

Targets (issue 11): when-to-cut F1 ≥ the better statistical baseline + 10 points; how-to-cut
Recall@1 ≥ 2 × chance — on the held-out test concerts.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from avlab.concert_edit import train as T
    from avlab.concert_edit.models import (HOW_FILE, WHEN_FILES, HowToCutConfig, WhenToCutConfig,
                                           save_concert_model)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "concert")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "concert_eval.md")
    ap.add_argument("--when-steps", type=int, default=None, help="override the when-to-cut steps (both variants)")
    ap.add_argument("--how-steps", type=int, default=None, help="override the how-to-cut steps")
    ap.add_argument("--train-concerts", type=int, default=None, help="override the number of training concerts")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()

    data = T.ConcertDataConfig()
    if args.train_concerts:
        data = replace(data, train_concerts=args.train_concerts)
    data.validate()
    t0 = time.perf_counter()
    train_set, val, test = (T.load_split(data, s) for s in ("train", "val", "test"))
    data_seconds = time.perf_counter() - t0
    shots = [x for c in train_set for x in c.shot_lengths]
    stats = T.shot_stats(train_set)
    enc = data.encoder()
    timing = {"data_s": round(data_seconds, 1)}

    when_over = {"steps": args.when_steps, "warmup_steps": max(1, args.when_steps // 20)} if args.when_steps else {}
    how_over = {"steps": args.how_steps, "warmup_steps": max(1, args.how_steps // 20)} if args.how_steps else {}
    results, records = {}, {}
    scores = {}
    for variant in ("audio", "multimodal"):
        mcfg = WhenToCutConfig(image_dim=enc.dim if variant == "multimodal" else 0)
        tcfg = T.default_train_config("when", **when_over)
        model, info = T.train_when(train_set, mcfg, tcfg)
        timing[f"when_{variant}_s"] = info["record"]["train_seconds"]
        v, t = (T.when_scores(s, model, info["shot_stats"], shots) for s in (val, test))
        scores[variant] = (v, t)
        res = T.evaluate_when(v, t, ["model"])["model"]
        results[f"when-to-cut, {variant}"] = res
        records[variant] = (model, info, tcfg, res)
        print(f"when {variant}: val F1 {res['val']['f1']:.3f}, test F1 {res['test']['f1']:.3f}", flush=True)
    v, t = scores["audio"]
    for name, res in T.evaluate_when(v, t, ["poisson", "exponential", "chance", "breath"]).items():
        results[{"poisson": "Poisson shot length", "exponential": "exponential shot length",
                 "chance": "chance (always cut)", "breath": "breath detector (diagnostic)"}[name]] = res

    hcfg = T.default_train_config("how", **how_over)
    how, how_info = T.train_how(train_set, HowToCutConfig(), hcfg)
    timing["how_s"] = how_info["record"]["train_seconds"]
    how_res = {"val": T.evaluate_how(val, how), "test": T.evaluate_how(test, how)}
    timing["total_s"] = round(time.perf_counter() - t_all, 1)

    baseline = max(results["Poisson shot length"]["test"]["f1"], results["exponential shot length"]["test"]["f1"])
    best_when = max(results["when-to-cut, audio"]["test"]["f1"], results["when-to-cut, multimodal"]["test"]["f1"])
    chance_r1 = how_res["test"]["chance"]["r1"]
    targets = {"when_f1_margin_points": round(100 * (best_when - baseline), 1),
               "when_target_met": best_when >= baseline + 0.10,
               "how_r1_over_chance": round(how_res["test"]["model"]["r1"] / chance_r1, 2),
               "how_target_met": how_res["test"]["model"]["r1"] >= 2 * chance_r1}
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
           "machine": platform.machine()}

    args.out.mkdir(parents=True, exist_ok=True)
    for variant, (model, info, tcfg, res) in records.items():
        record = {**info["record"], "train": tcfg.to_json(), "data": asdict(data), "eval": res, "env": env}
        save_concert_model(args.out, WHEN_FILES[variant], model, shot_stats=stats, image_encoder=enc.to_dict(),
                           record=record)
    save_concert_model(args.out, HOW_FILE, how, image_encoder=enc.to_dict(),
                       record={**how_info["record"], "train": hcfg.to_json(), "data": asdict(data),
                               "eval": how_res, "env": env})

    md = report(data, stats, results, how_res, timing, targets, env, records)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(md)
    print(md)
    print(json.dumps({"targets": targets, "timing": timing}, indent=1))
    return 0 if targets["when_target_met"] and targets["how_target_met"] else 1


def report(data, stats, results, how_res, timing, targets, env, records) -> str:
    from avlab.concert_edit import train as T

    def rng(split):
        s = data.seeds(split)
        return f"{s[0]}..{s[-1]} ({len(s)} concerts)"

    audio_cfg = records["audio"][0].config
    params = {v: r[1]["record"]["parameters"] for v, r in records.items()}
    lines = [
        "# Concert cutting on synthetic concerts (papers.md §3)", "",
        "Made by `python scripts/train_concert_models.py` (weights in `weights/concert/`). "
        f"torch {env['torch']}, CPU, {env['threads']} thread(s).", "",
        "## Data", "",
        f"* Synthetic concerts ({data.duration:g} s, {data.fps:g} fps, {data.width}×{data.height}, "
        f"{data.num_cameras} cameras = wide + one close-up per performer, {data.num_performers} performers, "
        f"phrases {data.min_phrase:g}–{data.max_phrase:g} s, inner breaths p={data.inner_breaths}, "
        f"lighting {data.lighting}; `avlab.synthetic.concert`).",
        f"* Seeds: train {rng('train')}, val {rng('val')} — every threshold is tuned here —, "
        f"test {rng('test')} held out (reported, never tuned on).",
        f"* Training shots: mean {stats.mean:.2f} s, std {stats.std:.2f} s ({stats.count} shots) — the "
        "time-since-cut normalisation and the baselines' fit.",
        "* When-to-cut: protocol segments (4 s every 2 s, label = a cut inside), ground-truth time since the "
        "last cut; thresholds maximise F1 on val. How-to-cut: every cut; candidates = the other "
        f"{how_res['test']['candidates']} cameras of the same concert at the cut frame "
        f"({how_res['val']['cuts']} val / {how_res['test']['cuts']} test cuts).", "",
        "## When to cut — test (held out)", "", *T.when_table(results, "test"), "",
        "## When to cut — val (thresholds tuned here)", "", *T.when_table(results, "val"), "",
        "Thresholds (val): " + ", ".join(f"{k} {v['threshold']:.3g}" for k, v in results.items()) + ".", "",
        "## How to cut (next camera)", "", *T.how_table(how_res), "",
        "## Targets (test)", "",
        f"* when-to-cut F1 ≥ better statistical baseline + 10 points: **{targets['when_f1_margin_points']:+.1f} "
        f"points** → {'met' if targets['when_target_met'] else 'NOT met'}",
        f"* how-to-cut Recall@1 ≥ 2 × chance: **{targets['how_r1_over_chance']:.2f} × chance** → "
        f"{'met' if targets['how_target_met'] else 'NOT met'}", "",
        "For reference, the paper (real concerts, CLIP features) reports a > 10-point F1 margin of the deep "
        "model over these baselines (audio-only best recall/F1, multimodal best precision) and Recall@1 28.49 % / "
        "Recall@3 51.97 % for the next camera. The synthetic lead is unambiguous once the spotlight's glow is "
        "compared across the cameras, so the how-to-cut numbers here show that the model learns that comparison "
        "(brightness alone is near chance), not a figure comparable with the paper's.", "",
        "## Models and training", "",
        f"* WhenToCut: {audio_cfg.conv_blocks} conv blocks (conv over frequency {audio_cfg.conv_channels} ch, kernel "
        f"{audio_cfg.conv_kernel}, stride {audio_cfg.conv_stride} → Linear {audio_cfg.d_model} → LayerNorm → SwiGLU "
        f"{audio_cfg.swiglu_hidden}), sinusoidal positions over 400 frames, pool {audio_cfg.time_pool} → "
        f"{audio_cfg.frames // audio_cfg.time_pool} tokens + CLS (time since cut, + image), Transformer "
        f"{audio_cfg.layers}×d{audio_cfg.d_model}/{audio_cfg.heads} heads; {params['audio']:,} parameters "
        f"(multimodal {params['multimodal']:,}). Multimodal: + the built-in colour-layout embedding "
        f"(stand-in for CLIP) of the wide camera's latest frame of the segment.",
        "* HowToCut: current shot (last frame before the cut) + candidates (frame at the cut), "
        "LayerNorm → Linear 64, Transformer 1×64, current-shot query · candidate keys.",
        "* Shared loop (`avlab.common.training`), AdamW, warm-up + cosine, EMA; seconds: " +
        ", ".join(f"{k} {v}" for k, v in timing.items()) + ".", "",
        "## Diagnostics (hardening)", "",
        "* Breath detector: the longest near-silent run in the segment; phrases also breathe inside "
        "(no cut), so silence alone does not find the cuts.",
        "* Brightest candidate: the candidate with the highest mean colour; every camera auto-exposes and "
        "a wash light glows on another performer, so brightness alone does not find the lead.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
