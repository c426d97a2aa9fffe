#!/usr/bin/env python
"""Where the tiny FlowRVS loses J&F (README "The pack's tiny FlowRVS"): the flow's one-step mask latent
against the ground-truth mask's encoder latent, near the object (latent cells within one cell of an
object pixel's 8×8 × 1|4-frame footprint) and everywhere else; then J&F with the ground truth put back
in either region. A diagnosis of the committed model on the val split, nothing is trained.

    python scripts/flowrvs_latent_error_probe.py [--model weights/flowrvs] [--split val]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
import torch.nn.functional as F

from _pack import import_pack  # noqa: E402  (scripts/ is on sys.path when a script runs)

import_pack()
from avlab.flowrvs import train as T  # noqa: E402
from avlab.flowrvs.metrics import mean_j_and_f  # noqa: E402
from avlab.flowrvs.sampler import flowrvs_sigmas, sample  # noqa: E402
from avlab.flowrvs.tiny import TinyFlowRVS, posterior  # noqa: E402


def near_object(masks: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
    """``[N,T,H,W]`` masks → bool ``latent_shape`` (``[N,C,T',h,w]``): latent cells whose footprint (first
    frame alone, then groups of 4 frames; 8×8 pixels) holds object pixels, dilated by one cell."""
    n, t, h, w = masks.shape
    m = masks.float()
    groups = [m[:, :1]] + ([m[:, 1:].reshape(n, (t - 1) // 4, 4, h, w).amax(2)] if t > 1 else [])
    occupied = F.max_pool2d(torch.cat(groups, 1), 8)
    return (F.max_pool2d(occupied, 3, 1, 1) > 0)[:, None].expand(latent_shape)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a tiny FlowRVS folder (default: the committed weights/flowrvs)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--clips", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tiny = TinyFlowRVS.load(args.model)
    clips = T.render_clips(args.split, args.clips, replace(T.DataConfig(), all_objects=False))
    gt = clips["masks"]
    with torch.no_grad():
        video = torch.cat([tiny.video_latent(f) for f in clips["frames"]])
        pred = sample(tiny.velocity_fn(tiny.encode_text(clips["sentences"]), video), video, flowrvs_sigmas(1))
        true = posterior(tiny.vae, T.to_vae_images(masks=gt))[0]
    near = near_object(gt, pred.shape)
    err = (pred - true).square()
    print(f"{args.split}, {len(gt)} clips: mask-latent MSE near the object {err[near].mean():.3f}, elsewhere "
          f"{err[~near].mean():.3f} (near = {near.float().mean():.1%} of the latent)")
    for name, z in (("flow", pred), ("ground truth (round trip)", true),
                    ("flow, ground truth near the object", torch.where(near, true, pred)),
                    ("flow, ground truth elsewhere", torch.where(near, pred, true))):
        with torch.no_grad():
            logits = tiny.decode_mask(z)
        r = mean_j_and_f(T.logits_j_and_f(logits, gt))
        print(f"  {name:36s} J&F {r['J&F']:.3f}  J {r['J']:.3f}  F {r['F']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
