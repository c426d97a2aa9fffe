"""FlowRVS inference cost and quality on the pack's trained tiny model (papers.md §2; issue 8).

Each configuration segments the same held-out synthetic test clips (``weights/flowrvs``, 9 frames of
96×96) in its own process (:mod:`harness`): the paper's 1 Euler step (baseline), 4 steps with the
shifted schedule, and 4 steps with LightCache block caching on the DiT (uniform interval 2: steps 0 and 2 run
every block, steps 1 and 3 reuse the cached middle blocks). The function returns the J&F of its
masks, so speed and quality come from the same run. Not a test.

    python benchmarks/flowrvs.py [--clips 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys

from harness import Config, _import_avlab, ratio_table, run_all, write_results


def segment(clips: int = 16, steps: int = 1, lightcache: dict | None = None) -> dict:
    """Segment ``clips`` held-out clips; returns their J&F (DAVIS) and the flow's share of the time."""
    _import_avlab()
    import torch
    from avlab.flowrvs import train as T
    from avlab.flowrvs.tiny import TinyFlowRVS

    key = ("model",)
    cache = segment.__dict__.setdefault("cache", {})
    if key not in cache:
        cache[key] = (TinyFlowRVS.load(), T.render_clips("test", clips, T.DataConfig()))
    tiny, data = cache[key]
    with torch.inference_mode():
        r = T.evaluate(tiny, data, steps=steps, lightcache=lightcache)
    return {"J&F": r["J&F"], "J": r["J"], "F": r["F"], "flow_seconds": r["flow_seconds"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    target = "flowrvs:segment"
    configs = [
        Config("1 step (paper)", target, {"clips": args.clips, "steps": 1}),
        Config("4 steps", target, {"clips": args.clips, "steps": 4}),
        Config("4 steps + LightCache interval 2", target,
               {"clips": args.clips, "steps": 4, "lightcache": {"cache_interval": 2, "schedule": "uniform"}}),
    ]
    rows = run_all(configs, warmup=1, repeats=args.repeats, threads=1)
    table = ratio_table(rows, "1 step (paper)", extra=("J&F", "J", "F", "flow_seconds"))
    path = write_results("flowrvs_speed", "FlowRVS (tiny, synthetic): steps, LightCache, J&F", [
        (f"{args.clips} held-out test clips, 1 thread", table +
         "\n\n`seconds`: the whole segmentation of all clips (text, VAE encode, flow, mask decode; median of "
         f"{args.repeats} after a warm-up); `flow_seconds`: the Euler steps alone (last call). J&F of the same "
         "masks."),
    ], command="python benchmarks/flowrvs.py")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
