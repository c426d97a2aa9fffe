"""Train the LightCache benchmark zoo (``benchmarks/lightcache_zoo_models.py``) → ``weights/lightcache_zoo/``.

    COMFYUI_PATH=/path/to/ComfyUI python scripts/train_lightcache_zoo.py            # all six
    COMFYUI_PATH=... python scripts/train_lightcache_zoo.py --only wan_6x128 --steps 20 --out /tmp/zoo

Reproducible from each model's seed (init, batches, noise). Never run in CI. CPU, one thread per
process by default: 2–15 minutes per model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lightcache_zoo_models as zoo  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--only", nargs="*", default=None, help="zoo model names (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="override the training length (smoke runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=zoo.ZOO_DIR)
    ap.add_argument("--skip-trained", action="store_true")
    args = ap.parse_args(argv)
    if not args.comfyui:
        raise SystemExit("set COMFYUI_PATH (or --comfyui) to a ComfyUI 0.3.64 checkout")
    torch.set_num_threads(args.threads)
    comfy = zoo.import_comfy(args.comfyui)
    specs = [zoo.by_name(n) for n in args.only] if args.only else list(zoo.ZOO)
    for spec in specs:
        if args.skip_trained and (args.out / f"{spec.name}.safetensors").is_file():
            print(f"{spec.name}: already trained, skipped", flush=True)
            continue
        if args.steps:
            from dataclasses import replace
            spec = replace(spec, steps=args.steps)
        print(f"{spec.name}: {zoo.describe(spec)}", flush=True)
        model, record = zoo.train(comfy, spec, on_log=lambda e, n=spec.name: print(f"  {n} {e}", flush=True))
        record["parameters"] = zoo.param_count(model)
        path = zoo.save(model, spec, record, args.out)
        print(f"{spec.name}: held-out loss {record['heldout_loss_untrained']} -> {record['heldout_loss_trained']}, "
              f"{record['train_seconds']} s -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
