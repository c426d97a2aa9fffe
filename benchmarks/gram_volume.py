"""GRAM volume matrix: the pack's closed form vs the straightforward ``det`` definition (papers.md §4; issue 9).

Both compute the ``[B_anchor × B_items]`` matrix of 3-way volumes (text anchor; video and audio
items) of 512-d unit vectors, forward and forward+backward, each configuration in its own process
(:mod:`harness`), 1 thread. The ``det`` reference stacks ``[A, B, 3, 512]``, forms the 3×3 Gram
matrices with a batched matmul and calls ``torch.det``. Not a test.

    python benchmarks/gram_volume.py [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys

from harness import Config, _import_avlab, ratio_table, run_all, write_results


def volume(method: str = "closed", batch: int = 256, dim: int = 512, backward: bool = False, k: int = 3) -> dict:
    """One volume matrix of ``batch × batch`` pairs; returns the max deviation from fp64 ``det``
    (computed on the first, warm-up call only, so the timed calls hold just the method)."""
    _import_avlab()
    import torch
    import torch.nn.functional as F
    from avlab.foley.gram import gram_volume, gram_volume_det

    g = torch.Generator().manual_seed(0)
    vecs = [F.normalize(torch.randn(batch, dim, generator=g), dim=-1) for _ in range(k)]
    if backward:
        vecs = [v.requires_grad_(True) for v in vecs]
    fn = gram_volume if method == "closed" else gram_volume_det
    vol = fn(*vecs)
    if backward:
        vol.sum().backward()
    errors = volume.__dict__.setdefault("errors", {})
    if method not in errors:
        ref = gram_volume_det(*(v.detach().double() for v in vecs))
        errors[method] = float((vol.detach().double() - ref).abs().max())
    return {"max_abs_error_vs_fp64": f"{errors[method]:.1e}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    sections = []
    for backward in (False, True):
        configs = [Config(f"{m}{' fwd+bwd' if backward else ''}", "gram_volume:volume",
                          {"method": m, "batch": args.batch, "backward": backward})
                   for m in ("det", "closed")]
        rows = run_all(configs, warmup=1, repeats=args.repeats, threads=1)
        table = ratio_table(rows, configs[0].name, extra=("max_abs_error_vs_fp64",))
        sections.append((f"{args.batch} anchors × {args.batch} items, k = 3, D = 512, fp32, "
                         f"{'forward + backward' if backward else 'forward'}", table))
    sections.append(("Reading", "`det`: stack + batched matmul + `torch.det` (the definition); `closed`: "
                     "`avlab.foley.gram.gram_volume` (three matmuls and the 3×3 determinant's closed form). "
                     "Seconds are the median of the repeats after a warm-up; the error column compares each "
                     "result with the fp64 `det` definition."))
    path = write_results("gram_volume", "GRAM volume: closed form vs det", sections,
                         command="python benchmarks/gram_volume.py")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
