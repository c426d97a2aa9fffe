#!/usr/bin/env python
"""Train the pack's tiny Stable-Audio-family generator and its envelope ControlNet on the synthetic
Foley domain, then report E-L1 and onset error with vs without the ControlNet on held-out clips
(papers.md §4; issue 10). Writes ``weights/foley/{oobleck_tiny,stable_audio_tiny,
envelope_controlnet_tiny}.safetensors`` (fp16) and ``benchmarks/results/foley_controlnet_synthetic.{md,json}``
(+ a few example wavs under the work folder).

    python scripts/train_foley_generator.py [--work runs/foley_generator] [--seed 0] [--skip-trained]

Stages (``python -m avlab train ...``, all seeded by ``--seed``): ``foley-audio-ae`` → ``foley-base`` →
``foley-controlnet``. The recipe was checked on the val split (seen attribute combinations, other
seeds); the report is on the test split (held-out colour/shape/material/motion combinations).
Training never runs in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from _pack import import_pack  # noqa: E402

import_pack()
import torch  # noqa: E402

from avlab.foley import generator_train as G  # noqa: E402

STAGES = (("foley-audio-ae", "oobleck.safetensors", G.BUILTIN_AUDIO_AE),
          ("foley-base", "stable_audio.safetensors", G.BUILTIN_BASE),
          ("foley-controlnet", "envelope_controlnet.safetensors", G.BUILTIN_CONTROLNET))
#: The ControlNet at the issue's lr 1e-4 learned nothing in 1500 steps here (val: onset error 230 ms with
#: vs 217 ms without, E-L1 ratio 1.00: its zero-initialised convs in and out need each other to move
#: first); 1e-3 for this CPU-sized budget.
LR = {"foley-controlnet": {"lr": 1e-3, "steps": 3000}}
TRAIN = {"foley-audio-ae": G.train_audio_ae, "foley-base": G.train_base, "foley-controlnet": G.train_controlnet}


def _table(report: dict) -> str:
    lines = ["| generation | E-L1 ↓ | RMS-envelope L1 ↓ | onset error (ms) ↓ | clips without an onset |",
             "|---|---|---|---|---|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['e_l1']:.4f} | {r['rms_envelope_l1']:.4f} | {r['onset_error_ms']:.1f} | "
                     f"{r['clips_without_onsets']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "foley_generator"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-trained", action="store_true", help="reuse stages whose output already exists")
    ap.add_argument("--eval-clips", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50, help="sampling steps of the evaluation")
    ap.add_argument("--eval-only", action="store_true", help="only evaluate the files in weights/foley")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.work)
    produced = {}
    for system, name, target in ([] if args.eval_only else STAGES):
        out = work / system
        config = {"train": {"seed": args.seed, "progress": False, "log_every": 50, **LR.get(system, {})}}
        if system != "foley-audio-ae":
            config["vae"] = str(produced["foley-audio-ae"])
        if system == "foley-controlnet":
            config["base"] = str(produced["foley-base"])
        if not (args.skip_trained and (out / name).exists()):
            t0 = time.time()
            result = TRAIN[system](config, out)
            print(system, json.dumps({k: v for k, v in result.items() if k != "config"}, default=str)[:2000],
                  f"{time.time() - t0:.0f} s", flush=True)
        produced[system] = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / name, target)

    from avlab.foley.oobleck import load_oobleck
    from avlab.foley.rms_mapper import BUILTIN_MAPPER, RMSMapper

    vae = load_oobleck(G.BUILTIN_AUDIO_AE)
    base = G.load_base(G.BUILTIN_BASE)
    net, projection = G.load_controlnet(G.BUILTIN_CONTROLNET, base)
    data = G.FoleyAudioData()
    report = G.evaluate_generation(base, net, projection, vae, data, split="test", count=args.eval_clips,
                                   steps=args.steps, seed=args.seed, mapper=RMSMapper.load(BUILTIN_MAPPER))
    audio = report.pop("audio")
    examples = work / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    import wave as wavfile

    def save_wav(path, x, rate):
        pcm = (x.float().clamp(-1, 1).T.contiguous() * 32767).round().to(torch.int16).numpy().tobytes()
        with wavfile.open(str(path), "wb") as f:
            f.setnchannels(x.shape[0])
            f.setsampwidth(2)
            f.setframerate(rate)
            f.writeframes(pcm)

    for run, wave in audio.items():
        slug = run.split(",")[0].split(" (")[0].replace(" ", "_")
        if "predicted" in run:
            slug += "_mapper"
        for i in range(3):
            save_wav(examples / f"{i}_{slug}.wav", wave[i], data.sample_rate)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "foley_controlnet_synthetic.json").write_text(json.dumps(report, indent=2))
    md = [f"# FoleyGRAM envelope ControlNet on the synthetic domain (seed {args.seed})", "",
          f"Held-out test split ({report['clips']} clips of unseen colour/shape/material combinations, motion "
          f"{', '.join(report['motions'])}), generated from the video alone (GRAM video token), {report['steps']} "
          f"DDIM steps, CFG {report['cfg']}, the same noise for every row. One latent frame = "
          f"{report['latent_frame_ms']} ms.", "", _table(report), "",
          f"With / without the ControlNet (real-sound envelope): E-L1 **{report['e_l1_ratio_with_vs_without']}**, "
          f"RMS-envelope L1 **{report['rms_envelope_l1_ratio_with_vs_without']}**", ""]
    (results / "foley_controlnet_synthetic.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
