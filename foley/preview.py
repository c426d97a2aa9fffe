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


def envelope_plot(values: torch.Tensor, rate: float, width: int = 512, height: int = 160,
                  onsets: list[float] | None = None) -> torch.Tensor:
    """An envelope as a line plot IMAGE ``[1, H, W, 3]``: time on x (seconds ticks), value on y
    (scaled to the peak), optional onset markers."""
    from PIL import Image, ImageDraw

    v = values.detach().float().reshape(-1).cpu().numpy()
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    top = float(v.max()) if v.size and v.max() > 0 else 1.0
    n = max(len(v), 2)
    duration = len(v) / rate
    margin = 14
    xs = [margin + (width - 2 * margin) * i / (n - 1) for i in range(len(v))]
    ys = [height - margin - (height - 2 * margin) * float(x) / top for x in v]
    for s in range(int(duration) + 1):
        x = margin + (width - 2 * margin) * (s * rate) / (n - 1)
        draw.line([(x, height - margin), (x, height - margin + 4)], fill=(0, 0, 0))
        draw.text((x + 2, height - margin), f"{s}s", fill=(0, 0, 0))
    for t in onsets or []:
        x = margin + (width - 2 * margin) * (t * rate) / (n - 1)
        draw.line([(x, margin), (x, height - margin)], fill=(255, 140, 0))
    if len(v) > 1:
        draw.line(list(zip(xs, ys)), fill=(30, 60, 220), width=2)
    draw.text((margin, 1), f"peak {top:.3f} @ {rate:.2f} Hz", fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
