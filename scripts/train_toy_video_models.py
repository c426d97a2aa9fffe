"""Train the toy video diffusion models on the synthetic domain and write ``weights/toy/``.

    python scripts/train_toy_video_models.py                 # both models, committed recipe
    python scripts/train_toy_video_models.py --kind wan_dit --steps 50 --out /tmp/toy

Reproducible from the seeds in each model's config: the synthetic clips (data seeds below), the
PCA codec fitted on them, the model init (``config.seed``) and the training draws. Writes per
model ``<name>.safetensors`` (diffusers state dict, fp16), ``<name>.json`` (config + record:
held-out loss untrained vs trained, training time, sample statistics) and ``<name>_samples.png``
(decoded samples, one row per class), plus the shared ``toy_codec.safetensors``.
CPU, one thread by default (the machine is shared): about 10–15 minutes per model (U-Net 2400 steps, Wan 600, batch 8).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

TRAIN_DATA_SEED = 1000
HELDOUT_DATA_SEED = 2000


def sample_stats(toy, latents: torch.Tensor) -> dict:
    """Cheap domain statistics of decoded videos: pixel mean/std, frame-to-frame change."""
    frames = toy.decode(latents)                                  # [B,T,H,W,3]
    return {"pixel_mean": round(float(frames.mean()), 4),
            "pixel_std": round(float(frames.std()), 4),
            "temporal_diff": round(float((frames[:, 1:] - frames[:, :-1]).abs().mean()), 4),
            "spatial_diff": round(float((frames[:, :, 1:] - frames[:, :, :-1]).abs().mean()), 4)}


def save_grid(frames: torch.Tensor, path: Path) -> None:
    """Frames ``[B,T,H,W,3]`` → one PNG, a row per video (every frame)."""
    import numpy as np
    from PIL import Image

    b, t, h, w, _ = frames.shape
    grid = frames.permute(0, 2, 1, 3, 4).reshape(b * h, t * w, 3)
    img = Image.fromarray((grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(path)


def main(argv=None) -> int:
    from avlab.toymodels import (KINDS, ToyLatentCodec, ToyVideoModel, default_config, heldout_loss,
                                 synthetic_clips, train_toy)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=[*KINDS, "all"], default="all")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "weights" / "toy")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's training steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    kinds = KINDS if args.kind == "all" else (args.kind,)
    base = default_config(kinds[0])
    t0 = time.time()
    frames, labels = synthetic_clips(base.train_clips, base.frames, base.size, seed=TRAIN_DATA_SEED)
    h_frames, h_labels = synthetic_clips(base.heldout_clips, base.frames, base.size, seed=HELDOUT_DATA_SEED)
    codec = ToyLatentCodec.fit(frames)
    latents, h_latents = codec.encode(frames), codec.encode(h_frames)
    codec_mse = float((codec.decode(h_latents) - h_frames).pow(2).mean())
    print(f"data: {len(frames)} train / {len(h_frames)} held-out clips {tuple(frames.shape[1:])}, "
          f"codec held-out MSE {codec_mse:.5f}, {time.time() - t0:.0f} s", flush=True)

    for kind in kinds:
        config = default_config(kind, **({"steps": args.steps} if args.steps else {}))
        torch.manual_seed(config.seed)
        untrained = ToyVideoModel(config, codec=codec)             # the init training starts from
        loss_untrained = heldout_loss(untrained, h_latents, h_labels)
        toy, record = train_toy(config, latents, labels,
                                on_log=lambda e: print(f"  {kind} {e}", flush=True))
        toy.codec = codec
        loss_trained = heldout_loss(toy, h_latents, h_labels)
        classes = torch.arange(config.num_classes)
        samples = toy.sample(classes, seed=0)
        untrained.model.eval()
        record.update({
            "heldout_loss_untrained": round(loss_untrained, 5),
            "heldout_loss_trained": round(loss_trained, 5),
            "train_data_seed": TRAIN_DATA_SEED, "heldout_data_seed": HELDOUT_DATA_SEED,
            "train_clips": len(frames), "heldout_clips": len(h_frames), "codec_heldout_mse": round(codec_mse, 6),
            "stats_heldout_data": sample_stats(toy, h_latents),
            "stats_samples_trained": sample_stats(toy, samples),
            "stats_samples_untrained": sample_stats(untrained, untrained.sample(classes, seed=0, steps=10)),
            "params": sum(p.numel() for p in toy.model.parameters()),
            "torch": torch.__version__, "python": platform.python_version(),
        })
        path = toy.save(args.out, record)
        save_grid(toy.decode(samples), args.out / f"{toy.name}_samples.png")
        print(f"{kind}: held-out loss untrained {loss_untrained:.4f} -> trained {loss_trained:.4f}, "
              f"{record['train_seconds']:.0f} s, wrote {path}", flush=True)
        print(json.dumps({k: record[k] for k in record if k.startswith("stats_")}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
