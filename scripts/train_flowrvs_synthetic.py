#!/usr/bin/env python
"""Train the pack's tiny FlowRVS on the synthetic referring clips and measure the paper's ablations
(papers.md §2; issue 8). Writes ``weights/flowrvs/`` (fp16 safetensors + ``flowrvs_tiny.json``) and
``benchmarks/results/flowrvs_synthetic.md``.

    python scripts/train_flowrvs_synthetic.py [--work runs/flowrvs] [--seed 0] [--only full,no_bbs,...]

Stages (each on the shared loop, stage outputs cached in ``--work`` so an interrupted run continues):
1. tiny Wan VAE on frames + masks (``flowrvs-vae``), 2. mask decoder (encoder frozen, BCE + Dice),
3. the flow network (DiT + umT5-family text encoder) for each variant: ``full`` (BBS + SPA + DVI),
``no_bbs`` (uniform t), ``no_dvi``, ``no_spa``. Every variant uses the same seed, data and steps.
4. ``full_t1``: the trained ``full`` flow continued on the one-step map only (BBS p(t=1) = 1,
``T.REFINE_FLOW``, ``T.REFINE_STEPS`` at ``T.REFINE_LR``, seed + 1 so it does not replay the first batches).
``full`` and ``full_t1`` also get a mask decoder adapted to their own one-step latents; the one of them
(with or without its adapted decoder) that scores best on val is written to ``weights/``.
Evaluation: J&F on the val split (used to check the run, nothing is tuned on it) and on the held-out
test split (colour/shape/motion triples never seen in training), 1 and 4 Euler steps, and 4 steps with
LightCache (cache interval 2). Training never runs in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


from _pack import import_pack  # noqa: E402  (scripts/ is on sys.path when a script runs)

import_pack()
from avlab.common.training import TrainConfig  # noqa: E402
from avlab.flowrvs import train as T  # noqa: E402
from avlab.flowrvs.tiny import SYNTHETIC_DIT, TINY_DIT, TINY_VAE, TinyFlowRVS, build_vae, load_fp16, save_fp16  # noqa: E402
from avlab.synthetic.referring import heldout_triples  # noqa: E402

VARIANTS = {
    "full": T.FlowConfig(),
    "no_bbs": T.FlowConfig(bbs_special_freq=0.0),
    "no_dvi": T.FlowConfig(dvi=False),
    "no_spa": T.FlowConfig(spa_scale=0.0),
}
#: refined variant -> the variant it continues from (module docstring, step 4)
REFINED = {"full_t1": "full"}
VAE_STEPS, MASK_STEPS, FLOW_STEPS = 1200, 2000, 8000
FLOW_LR = 1e-3
#: LightCache on the 4-step flow (the adaptive default needs two full calls to estimate and reuses none of 4)
LIGHTCACHE_4STEP = {"cache_interval": 2, "schedule": "uniform"}


def tc(steps: int, out: Path, lr: float, seed: int, wd: float = 0.0, fresh: bool = True) -> TrainConfig:
    """The stages' schedule; ``fresh=False`` (a continued model): the EMA starts at the start weights, short warm-up."""
    return TrainConfig(steps=steps, lr=lr, weight_decay=wd, ema=0.999, ema_warmup=fresh,
                       warmup_steps=200 if fresh else 100, cosine=True, min_lr_ratio=0.05, grad_clip=1.0, seed=seed,
                       out_dir=str(out), resume=True,
                       progress=False, log_every=100, save_every=500)


def load_or_train(path: Path, build, train_fn):
    """The stage's fp16 file when it exists, else train, save it and reload it (evaluate what is committed)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_fp16(train_fn(), path)
    return load_fp16(build(), path).eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "runs" / "flowrvs"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(["full", *REFINED, *[n for n in VARIANTS if n != "full"]]))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flow-steps", type=int, default=FLOW_STEPS, help="flow-stage steps of every variant")
    ap.add_argument("--dit", default="{}", help="JSON DiT overrides for every variant, e.g. "
                    "'{\"patch_size\": [1, 1, 1]}' (FlowConfig.dit)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = T.DataConfig()
    t_all = time.perf_counter()
    train_clips = T.render_clips("train", data.train_clips, data)
    val = T.render_clips("val", data.val_clips, data)
    test = T.render_clips("test", data.test_clips, data)
    # the first training clips with their own target sentence: how well the seen data is fitted
    train_targets = T.render_clips("train", data.test_clips, replace(data, all_objects=False))
    timings = {}

    t0 = time.perf_counter()
    vae = load_or_train(work / "vae.safetensors", lambda: build_vae(TINY_VAE),
                        lambda: T.run_vae_stage(train_clips, T.VAEStageConfig(),
                                                tc(VAE_STEPS, work / "vae_ckpt", 1e-3, args.seed), args.seed)[0])
    timings["vae_s"] = round(time.perf_counter() - t0, 1)
    lat = cached_latents(work, vae, train_clips, data)
    stats = T.latent_statistics(lat["video_mean"])
    t0 = time.perf_counter()
    mask_vae = load_or_train(work / "mask_vae.safetensors", lambda: T.prepare_mask_decoder(vae),
                             lambda: T.run_mask_decoder_stage(vae, lat, train_clips["masks"], T.MaskDecoderConfig(),
                                                              tc(MASK_STEPS, work / "mask_ckpt", 1e-3, args.seed),
                                                              args.seed)[0])
    timings["mask_decoder_s"] = round(time.perf_counter() - t0, 1)
    ceiling = {"val": T.mask_reconstruction(vae, mask_vae, val), "test": T.mask_reconstruction(vae, mask_vae, test)}
    logging.info("mask VAE round trip (ceiling): %s", ceiling)
    tokens = T._tokens(train_clips["sentences"])

    dit = json.loads(args.dit)
    for name in [n for n in args.only.split(",") if n]:
        base = REFINED.get(name)
        flow = replace(T.REFINE_FLOW if base else VARIANTS[name], dit={**VARIANTS[base or name].dit, **dit})
        path = work / f"dit_{name}"
        t0 = time.perf_counter()
        cached = (path / "flowrvs_tiny.json").is_file()
        if cached:
            tiny = TinyFlowRVS.load(path)
        else:
            start, steps, lr, seed = None, args.flow_steps, FLOW_LR, args.seed
            if base:
                if not (work / f"dit_{base}" / "flowrvs_tiny.json").is_file():
                    raise SystemExit(f"{name} continues {base}: train it first (--only {base},{name})")
                start = TinyFlowRVS.load(work / f"dit_{base}").system
                steps, lr, seed = T.REFINE_STEPS, T.REFINE_LR, args.seed + 1
            tok, system, res = T.run_flow_stage(lat, tokens, stats, flow,
                                                tc(steps, work / f"flow_ckpt_{name}", lr, seed, wd=5e-4,
                                                   fresh=start is None), seed, start=start)
            tiny = TinyFlowRVS(tok, system, vae, mask_vae, *stats)
            tiny.save(path, {"variant": name, "flow": asdict(flow), "final_loss": res.metrics.get("loss"),
                             **({"continued_from": base} if base else {})})
            tiny = TinyFlowRVS.load(path)            # evaluate the fp16 files
        result_file = work / f"result_{name}.json"
        train_s = round(time.perf_counter() - t0, 1)
        if cached and result_file.is_file():                # a cached variant keeps the time it took to train
            train_s = json.loads(result_file.read_text()).get("train_s", train_s)
        steps = args.flow_steps
        if base:
            base_steps = json.loads((work / f"result_{base}.json").read_text()).get("flow_steps", FLOW_STEPS)
            steps = f"{base_steps} + {T.REFINE_STEPS}"
        row = {"flow": asdict(flow), "flow_steps": steps, "train_s": train_s,
               "train_targets_1step": T.evaluate(tiny, train_targets, steps=1)}
        for split, clips in (("val", val), ("test", test)):
            row[f"{split}_1step"] = T.evaluate(tiny, clips, steps=1)
            row[f"{split}_4step"] = T.evaluate(tiny, clips, steps=4)
        # uniform interval 2 (steps 0 and 2 run the cached blocks): the adaptive default reuses none of 4 steps
        row["test_4step_lightcache2"] = T.evaluate(tiny, test, steps=4, lightcache=LIGHTCACHE_4STEP)
        if name in ("full", *REFINED):     # shipping candidates: the mask decoder also adapted to their own latents
            adapted = adapted_decoder(work, name, tiny, lat, tokens, train_clips["masks"], args.seed)
            for split, clips in (("val", val), ("test", test)):
                row[f"{split}_1step_adapted"] = T.evaluate(adapted, clips, steps=1)
            row["adapted_decoder_ships"] = row["val_1step_adapted"]["J&F"] > row["val_1step"]["J&F"]   # chosen on val
        logging.info("%s: %s", name, json.dumps(row))
        result_file.write_text(json.dumps(row, indent=1))
    # every variant's result so far (variants may run in parallel processes, each writing its own file)
    results = collect_results(work)

    old = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    for key, value in old.get("timings", {}).items():     # a cached stage keeps the time it took to train
        if timings.get(key, 0) < 60:
            timings[key] = value
    meta = {"seed": args.seed, "data": asdict(data), "train_examples": len(train_clips["sentences"]), "steps": {"vae": VAE_STEPS, "mask_decoder": MASK_STEPS, "mask_adaptation": T.ADAPT_STEPS,
            "flow": args.flow_steps, "flow_lr": FLOW_LR}, "heldout_triples": sorted(map(list, heldout_triples())), "ceiling": ceiling,
            "timings": timings, "threads": args.threads}
    (work / "meta.json").write_text(json.dumps(meta, indent=1))
    shipped = shipped_variant(results)
    if shipped:
        weights = ROOT / "weights" / "flowrvs"
        best = results[shipped]
        tiny = TinyFlowRVS.load(work / f"dit_{shipped}")
        adapted = best.get("adapted_decoder_ships", False)
        if adapted:
            tiny = adapted_decoder(work, shipped, tiny, lat, tokens, train_clips["masks"], args.seed)   # cached file
        tiny.save(weights, {"variant": shipped, "mask_decoder": "flow-adapted" if adapted else "ground-truth latents",
                            "val_jf_1step": shipped_score(best, "val"), "test_jf_1step": shipped_score(best, "test"),
                            "script": "scripts/train_flowrvs_synthetic.py", "seed": args.seed})
    write_table(results, meta, shipped)
    logging.info("total %.1f s", time.perf_counter() - t_all)
    return 0


def adapted_decoder(work: Path, name: str, tiny: TinyFlowRVS, lat: dict, tokens: tuple, masks,
                    seed: int) -> TinyFlowRVS:
    """``tiny`` (variant ``name``) with its mask decoder fine-tuned on the flow's one-step latents
    (:func:`T.run_mask_adaptation_stage`, cached as ``mask_vae_adapted_<name>.safetensors``)."""
    mask_vae = load_or_train(work / f"mask_vae_adapted_{name}.safetensors", lambda: T.prepare_mask_decoder(tiny.vae),
                             lambda: T.run_mask_adaptation_stage(tiny, lat, tokens, masks, T.ADAPT_DECODER,
                                                                 tc(T.ADAPT_STEPS, work / f"mask_adapt_ckpt_{name}",
                                                                    T.ADAPT_LR, seed), seed)[0])
    return tiny.with_mask_decoder(mask_vae)


def shipped_score(result: dict, split: str) -> float:
    """A shipping candidate's J&F (1 step) on ``split``, with its adapted mask decoder when that one is better on val."""
    return result[f"{split}_1step_adapted" if result.get("adapted_decoder_ships") else f"{split}_1step"]["J&F"]


def shipped_variant(results: dict) -> str | None:
    """The candidate (``full`` or a refinement of it) that goes to ``weights/``: the best on val."""
    candidates = [n for n in ("full", *REFINED) if n in results]
    return max(candidates, key=lambda n: shipped_score(results[n], "val")) if candidates else None


def cached_latents(work: Path, vae, clips: dict, data) -> dict:
    """:func:`T.encode_latents` of the training examples, cached in ``work`` (parallel variant processes
    and reruns share it; keyed by the data config and the VAE file)."""
    path = work / "latents_train.pt"
    vae_sha = hashlib.sha256((work / "vae.safetensors").read_bytes()).hexdigest()   # retrained fp16 files keep their size
    key = json.dumps({"data": asdict(data), "vae_sha256": vae_sha}, sort_keys=True)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.get("key") == key:
            return cached["latents"]
    lat = T.encode_latents(vae, clips)
    torch.save({"key": key, "latents": lat}, path)
    return lat


def collect_results(work: Path) -> dict:
    """Every ``result_<name>.json`` in ``work``: this script's variants first, then earlier runs kept for
    comparison (copied in by hand, e.g. ``result_full_192x8.json``; each names its own DiT and steps)."""
    files = {p.stem[len("result_"):]: p for p in sorted(work.glob("result_*.json"))}
    ours = list(dict.fromkeys(["full", *REFINED, *VARIANTS]))
    order = [n for n in ours if n in files] + [n for n in files if n not in ours]
    return {n: json.loads(files[n].read_text()) for n in order}


def dit_size(result: dict) -> str:
    """"dim × layers, patch t×h×w" of a result's DiT (results from before ``FlowConfig.dit`` trained TINY_DIT)."""
    if "dit" not in result["flow"]:
        cfg = TINY_DIT
    else:
        cfg = {**SYNTHETIC_DIT, **result["flow"]["dit"]}
    return (f"{cfg['num_attention_heads'] * cfg['attention_head_dim']} × {cfg['num_layers']}, "
            f"patch {'×'.join(map(str, cfg['patch_size']))}")


def adapted_cell(result: dict, shipped: bool) -> str:
    """The flow-adapted decoder's val / test J&F; ``shipped``: the row of the model written to weights/."""
    if "test_1step_adapted" not in result:
        return ""
    cell = f"{result['val_1step_adapted']['J&F']:.3f} / {result['test_1step_adapted']['J&F']:.3f}"
    if not result.get("adapted_decoder_ships"):
        return cell
    return cell + (" (shipped: best on val)" if shipped else " (better on val than without)")


def write_table(results: dict, meta: dict, shipped: str | None) -> None:
    out = ROOT / "benchmarks" / "results" / "flowrvs_synthetic.md"
    lines = ["# FlowRVS on the synthetic referring clips (tiny model, CPU)", "",
             "`python scripts/train_flowrvs_synthetic.py` (seed %d). Train: %d clips, %s; val: %d, test: %d clips "
             "whose target is one of %d held-out colour/shape/motion triples (never rendered in training); a "
             "same-colour, same-shape twin moving another way in 60%% of clips. %d×%d px, %d frames. DAVIS J&F "
             "(bound_th 0.008), threshold at logit 0. Nothing is tuned on test; val only decides which of `full` / `full_t1` "
             "ships and whether with its flow-adapted mask decoder; `full_t1` = `full` continued on the one-step map "
             "only (BBS p(t=1) = 1) from its trained weights; \"train\" = the first %d "
             "training clips with their target sentence (how well seen data is fitted)." % (
                 meta["seed"], meta["data"]["train_clips"],
                 ("%d examples (every object a sentence names uniquely)" % meta["train_examples"])
                 if meta["data"].get("all_objects") else "one target sentence each",
                 meta["data"]["val_clips"], meta["data"]["test_clips"], len(meta["heldout_triples"]),
                 meta["data"]["size"], meta["data"]["size"], meta["data"]["frames"], meta["data"]["test_clips"]), "",
             "| variant | DiT | flow steps | BBS p(t=1) | SPA scale | DVI | train J&F 1 step | val J&F 1 step | **test J&F 1 step** | "
             "test J | test F | test J&F 4 steps | test 4 steps + LightCache (uniform interval 2) | "
             "val / test J&F 1 step, flow-adapted mask decoder |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        f = r["flow"]
        fit = r.get("train_targets_1step", {}).get("J&F")
        steps = r.get("flow_steps", meta["steps"]["flow"])
        lines.append(f"| {name} | {dit_size(r)} | {steps} | {f['bbs_special_freq']} | {f['spa_scale']} | {'on' if f['dvi'] else 'off'} | "
                     f"{'' if fit is None else f'{fit:.3f}'} | "
                     f"{r['val_1step']['J&F']:.3f} | **{r['test_1step']['J&F']:.3f}** | {r['test_1step']['J']:.3f} | "
                     f"{r['test_1step']['F']:.3f} | {r['test_4step']['J&F']:.3f} | "
                     f"{r['test_4step_lightcache2']['J&F']:.3f} | {adapted_cell(r, name == shipped)} |")
    c = meta["ceiling"]["test"]
    lines += ["", f"Ceiling (ground-truth mask → VAE encoder → mask decoder, test): J&F {c['J&F']:.3f} "
              f"(J {c['J']:.3f}, F {c['F']:.3f}).",
              f"Steps: VAE {meta['steps']['vae']}, mask decoder {meta['steps']['mask_decoder']}, flow "
              f"{meta['steps']['flow']} (this run's variants); timings {meta['timings']} ({meta['threads']} threads)."]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
