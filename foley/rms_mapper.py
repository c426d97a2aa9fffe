"""The RMS mapper: a small network that predicts a sound's loudness envelope from the video alone
(papers.md §4: "at inference the envelope comes from the video (predicted)"; issue 10).

Per frame t it sees the frame and its difference to the previous frame (6 channels, resized to
``size``²), a 2D CNN pools each to a vector, and a non-causal temporal 1D CNN over the frame vectors
gives one non-negative value per frame (softplus). Output: an :class:`~avlab.foley.envelope.Envelope`
at the video's own fps, normalised to peak 1 (absolute loudness is not visible; the ControlNet uses
the envelope's shape). Trained by ``scripts/train_rms_mapper.py`` on the synthetic scenes: target =
the causal RMS envelope of the scene's soundtrack read at the frame times, peak-normalised.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .envelope import Envelope

META_KEY = "avlab_rms_mapper"
#: The pack's trained mapper (``scripts/train_rms_mapper.py``), the synthetic scenes it learns from and
#: the seeds of their splits (train / val / held-out test).
BUILTIN_MAPPER = Path(__file__).resolve().parents[1] / "weights" / "foley" / "rms_mapper.safetensors"
MAPPER_SCENE = dict(frames=48, height=64, width=64, fps=24.0, num_objects=3, sample_rate=16000)
MAPPER_SPLIT_SEEDS = {"train": 0, "val": 500_000, "test": 900_000}


@dataclass(frozen=True)
class RMSMapperConfig:
    size: int = 64
    width: int = 32
    temporal_kernel: int = 5
    temporal_layers: int = 3


class RMSMapper(nn.Module):
    def __init__(self, cfg: RMSMapperConfig = RMSMapperConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.frame_net = nn.Sequential(
            nn.Conv2d(6, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
        )
        layers = []
        for _ in range(cfg.temporal_layers):
            layers += [nn.Conv1d(4 * w, 4 * w, cfg.temporal_kernel, padding=cfg.temporal_kernel // 2), nn.GELU()]
        self.temporal = nn.Sequential(nn.Conv1d(2 * w * 2, 4 * w, 1), nn.GELU(), *layers, nn.Conv1d(4 * w, 1, 1))

    def inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, H, W, 3]`` 0..1 → ``[B, T, 6, S, S]`` (frame, difference to the previous frame)."""
        x = frames.float().movedim(-1, -3)                                     # [B,T,3,H,W]
        b, t = x.shape[:2]
        x = F.interpolate(x.reshape(b * t, 3, *x.shape[-2:]), size=(self.cfg.size, self.cfg.size),
                          mode="bilinear", align_corners=False, antialias=True).reshape(b, t, 3, self.cfg.size, self.cfg.size)
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        return torch.cat([x, diff], dim=2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, H, W, 3]`` → non-negative ``[B, T]``."""
        x = self.inputs(frames)
        b, t = x.shape[:2]
        f = self.frame_net(x.reshape(b * t, *x.shape[2:]))                     # [BT, 2w, s, s]
        f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)         # [BT, 4w]
        f = f.reshape(b, t, -1).transpose(1, 2)                                # [B, 4w, T]
        return F.softplus(self.temporal(f))[:, 0]

    @torch.no_grad()
    def envelope(self, frames: torch.Tensor, fps: float) -> Envelope:
        """One video ``[T, H, W, 3]`` → peak-normalised envelope at ``fps``."""
        if frames.dim() != 4 or frames.shape[0] == 0:
            raise ValueError(f"RMS mapper: frames must be [T, H, W, 3] with T ≥ 1, got {tuple(frames.shape)}")
        if not fps > 0:
            raise ValueError(f"RMS mapper: fps must be > 0, got {fps}")
        p = next(self.parameters())
        v = self(frames[None].to(p.device, p.dtype))[0].float().cpu()
        top = float(v.max())
        return Envelope(v / top if top > 0 else v, float(fps))

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        meta = {META_KEY: json.dumps(asdict(self.cfg)), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
        save_file({k: v.detach().half().contiguous() for k, v in self.state_dict().items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RMSMapper":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            if raw is None:
                raise ValueError(f"{os.path.basename(str(path))}: not an AVLab RMS mapper (no '{META_KEY}' metadata)")
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        model = cls(RMSMapperConfig(**json.loads(raw)))
        model.load_state_dict(state)
        return model.eval()


def target_envelope(audio: torch.Tensor, sample_rate: int, fps: float, frames: int) -> torch.Tensor:
    """The training target: causal RMS (0.1 s window, no smoothing) at the frame times, peak 1."""
    from .envelope import rms_envelope

    v = rms_envelope(audio, sample_rate, rate=fps, window_s=0.1, smooth_frames=1, length=frames).values
    top = float(v.max())
    return v / top if top > 0 else v


def envelope_scores(pred: torch.Tensor, true: torch.Tensor, fps: float) -> dict:
    """L1, Pearson r and onset error (ms) of a predicted envelope (peak-normalised here) against the
    true one, both at the frame times."""
    from .metrics import onset_error_ms, onset_times

    p = pred / pred.max() if float(pred.max()) > 0 else pred
    r = torch.corrcoef(torch.stack([p.float(), true.float()]))[0, 1]
    onset = onset_error_ms(onset_times(Envelope(p, fps)), onset_times(Envelope(true, fps)))
    return {"L1": float((p - true).abs().mean()), "r": float(torch.nan_to_num(r)), "onset_ms": onset}
