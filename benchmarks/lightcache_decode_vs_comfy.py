"""AVLab Sliced VAE Decode against ComfyUI's own ``VAE.decode`` (paper 1 "Sliced decoding"; LightCache
part 2, item 7): peak memory and time of decoding 16 video frames with an SD-family VAE inside ComfyUI.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/lightcache_decode_vs_comfy.py

ComfyUI's ``VAE.decode`` already splits the batch — by the free memory of the device it decodes on
(``memory_used_decode`` × frames against ``get_free_memory``) — so it only slices when memory is
short; the AVLab node bounds the decoder's working set by ``frames_per_slice`` whatever the free
memory. Each configuration runs in its own process (``benchmarks/harness.py``: peak resident memory of
the measured calls after a warm-up; the VAE and latent are built before the measurement, so *working
memory* = peak − resident memory at the start of the measured calls). The VAE is ComfyUI's
``AutoencoderKL`` at SD widths (128–512, seeded random weights) wrapped by ``comfy.sd.VAE``; the
latent is 16 frames × 4 × 16² (128² px). On this CPU-only machine ComfyUI sees the free *RAM* (many
GB), so it decodes all 16 frames at once; on a GPU its split depends on free VRAM at that moment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

FRAMES, LATENT = 16, 16
_STATE: dict = {}


def _setup():
    """ComfyUI in-process, the VAE and the latent (built once per worker process, before measuring)."""
    if _STATE:
        return _STATE
    import torch

    harness.import_comfy(os.environ["COMFYUI_PATH"])
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(0)
    ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                    ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    model = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    with torch.no_grad():   # ComfyUI's layers skip their own init: seeded normal weights, unit norms
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, 0.02)
    vae = comfy.sd.VAE(sd=model.state_dict())
    latent = torch.randn(FRAMES, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    _STATE.update(vae=vae, latent=latent)
    return _STATE


def comfy_decode() -> dict:
    """ComfyUI's own ``VAE.decode`` (its free-memory batching)."""
    import torch

    st = _setup()
    with torch.inference_mode():   # as ComfyUI's executor runs every node
        out = st["vae"].decode(st["latent"])
    return {"frames": int(out.shape[0])}


def avlab_sliced(frames_per_slice: int) -> dict:
    """The AVLab Sliced VAE Decode node's code path (``nodes/lightcache_decode.sliced_vae_decode``)."""
    import torch

    st = _setup()
    from avlab.nodes.lightcache_decode import sliced_vae_decode

    with torch.inference_mode():
        out = sliced_vae_decode(st["vae"], st["latent"], frames_per_slice, 0)
    return {"frames": int(out.shape[0])}


def max_abs_difference() -> float:
    """Sliced (2 frames) vs ComfyUI's decode: the same pixels up to float rounding?"""
    import torch

    st = _setup()
    from avlab.nodes.lightcache_decode import sliced_vae_decode

    with torch.inference_mode():
        a = st["vae"].decode(st["latent"]).float()
        b = sliced_vae_decode(st["vae"], st["latent"], 2, 0).float()
    return float((a.reshape(b.shape) - b).abs().max())


def main() -> int:
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("set COMFYUI_PATH to a ComfyUI 0.3.64 checkout")
    # large tensors mmapped and returned to the OS when freed: RSS follows live tensor memory, and the
    # warm-up's freed heap cannot hide the measured calls' peak (as in lightcache_memory.py)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    configs = [harness.Config("ComfyUI VAE.decode", "lightcache_decode_vs_comfy:comfy_decode")]
    configs += [harness.Config(f"AVLab Sliced VAE Decode, {k} frames/slice", "lightcache_decode_vs_comfy:avlab_sliced",
                               {"frames_per_slice": k}) for k in (1, 2, 4, 8)]
    rows = harness.run_all(configs, warmup=1, repeats=2)
    for r in rows:
        r["working_mib"] = r["peak_rss_mib"] - r["rss_at_start_mib"]
    table = harness.ratio_table(rows, "ComfyUI VAE.decode", metrics=("seconds", "peak_rss_mib", "working_mib"))
    diff = max_abs_difference()
    note = (f"Output: sliced (2 frames/slice) vs `VAE.decode`, max abs difference {diff:.2e} (IMAGE 0..1; "
            "a per-frame VAE, so slicing is exact up to the convolution kernels chosen per batch size). "
            "`working_mib` = peak RSS − RSS at the start of the measured calls (VAE + latent already resident); "
            "glibc's mmap threshold is fixed at 64 KiB so RSS follows live tensors.")
    path = harness.write_results(
        "lightcache_decode_vs_comfy", "AVLab Sliced VAE Decode vs ComfyUI VAE.decode (SD VAE, 16 frames, 128² px)",
        [("Peak memory and time", table), ("Notes", note + "\n\n" + __doc__.split("\n\n")[1].replace("\n", " "))],
        "COMFYUI_PATH=... python benchmarks/lightcache_decode_vs_comfy.py")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
