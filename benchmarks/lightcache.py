"""LightCache benchmarks, one command (issue "LightCache", Benchmarks; papers.md §1).

Runs, each writing its own table under ``benchmarks/results/``, then gathers them into
``benchmarks/results/lightcache.md``:

1. ``lightcache_speed.py`` — wall-clock speed-up, peak RSS (each configuration in its own process,
   ratios to the uncached baseline of the same run) and PSNR/SSIM against uncached sampling over
   ``cache_interval`` 2–6 × depth, on the trained toy video U-Net and toy Wan DiT (``weights/toy/``).
2. ``lightcache_memory.py`` — chunked vs unchunked and sliced vs full decode peak memory, each
   configuration in its own process.
3. ``lightcache_vs_easycache.py`` — only with ``COMFYUI_PATH``: LightCache vs ComfyUI's EasyCache on
   the toy Wan model loaded by ComfyUI's own loader (speed-up at equal PSNR).

    python benchmarks/lightcache.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = (("lightcache_speed", "Speed and quality"), ("lightcache_memory", "Peak memory: chunking and sliced decode"),
         ("lightcache_vs_easycache", "LightCache vs EasyCache (inside ComfyUI)"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="speed part: toy U-Net only, one timed run per configuration")
    args = ap.parse_args(argv)
    runs = {"lightcache_speed": ["--repeats", "1", "--models", "toy_unet"] if args.quick else [],
            "lightcache_memory": [], "lightcache_vs_easycache": []}
    done = []
    for name, title in PARTS:
        if name == "lightcache_vs_easycache" and not os.environ.get("COMFYUI_PATH"):
            print(f"[lightcache] skip {name}: COMFYUI_PATH is not set", flush=True)
            continue
        print(f"[lightcache] {name} ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *runs[name]], cwd=HERE.parent)
        if proc.returncode != 0:
            print(f"[lightcache] {name} failed (exit {proc.returncode})", flush=True)
            return proc.returncode
        done.append((name, title, time.perf_counter() - t0))
    lines = ["# LightCache benchmarks", "", "Gathered by `python benchmarks/lightcache.py`; each part below is also "
             "in its own file in this folder.", ""]
    for name, title, seconds in done:
        body = (RESULTS / f"{name}.md").read_text().split("\n", 1)[1]      # drop the part's own title
        lines += [f"## {title} ({name}.md, {seconds:.0f} s)", body.replace("\n## ", "\n### "), ""]
    (RESULTS / "lightcache.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'lightcache.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
