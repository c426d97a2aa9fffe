"""A preview image of a GRAM volume matrix (rows = queries, columns = candidates; darker = smaller
volume = better aligned; the best candidate of each row is outlined). numpy + PIL only."""

from __future__ import annotations

import numpy as np
import torch


def volume_heatmap(volume: torch.Tensor, rows: list[str], cols: list[str], cell: int = 48) -> torch.Tensor:
    """``[R, C]`` volumes → IMAGE ``[1, H, W, 3]`` (0..1) with the value in each cell and labels."""
    from PIL import Image, ImageDraw

    v = volume.detach().float().cpu().numpy()
    R, C = v.shape
    label_w, label_h = 160, 18
    W, H = label_w + C * cell, label_h + R * cell
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else 1.0
    best = v.argmin(axis=1)
    for r in range(R):
        draw.text((2, label_h + r * cell + cell // 2 - 6), rows[r][:26], fill=(0, 0, 0))
        for c in range(C):
            shade = int(40 + 200 * (v[r, c] - lo) / span)
            x0, y0 = label_w + c * cell, label_h + r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255))
            draw.text((x0 + 4, y0 + cell // 2 - 6), f"{v[r, c]:.2f}", fill=(0, 0, 0) if shade > 120 else (255, 255, 255))
            if c == best[r]:
                draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(255, 140, 0), width=3)
    for c in range(C):
        draw.text((label_w + c * cell + 2, 3), cols[c][:7], fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
