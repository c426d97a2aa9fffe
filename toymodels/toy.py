"""A toy video model bundle: config + diffusers model + latent codec + fixed toy text encoder.

:class:`ToyVideoModel` gives the calls the training script, the tests and the LightCache benchmarks
need — ``predict`` (one denoiser call), ``loss`` (training objective), ``sample`` (latent video from
class labels), ``decode`` — and saves/loads the committed weights: ``<name>.safetensors`` (the
diffusers state dict, fp16), ``<name>.json`` (config, seed, training record) and the shared
``toy_codec.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..common.errors import NodeInputError
from .codec import ToyLatentCodec
from .diffusion import ddpm_v_loss, flow_loss, sample_ddim, sample_euler_flow
from .models import UNET, V_PRED, ToyModelConfig, build_model, cond_table

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "toy"
CODEC_FILE = "toy_codec.safetensors"
NAMES = {UNET: "toy_unet_motion", "wan_dit": "toy_wan_dit"}


class ToyVideoModel:
    """Toy video diffusion model (see :mod:`.models`)."""

    def __init__(self, config: ToyModelConfig, model: torch.nn.Module | None = None,
                 codec: ToyLatentCodec | None = None):
        self.config = config
        self.model = build_model(config) if model is None else model
        self.codec = codec
        self.table = cond_table(config)

    @property
    def name(self) -> str:
        return NAMES[self.config.kind]

    # -- model calls -------------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                model: torch.nn.Module | None = None) -> torch.Tensor:
        """One denoiser call: ``x`` ``[B,C,T,h,w]``, ``timestep`` ``[B]``, ``context`` ``[B,L,W]``.
        ``model`` overrides ``self.model`` (e.g. its DDP wrapper during training)."""
        net = self.model if model is None else model
        if self.config.kind == UNET:
            ctx = context.repeat_interleave(x.shape[2], dim=0)  # one prompt per frame (AnimateDiff)
            return net(x, timestep, encoder_hidden_states=ctx).sample
        return net(x, timestep, context, return_dict=False)[0]

    def context(self, labels: torch.Tensor) -> torch.Tensor:
        """Class ids (``num_classes`` = null prompt) → context ``[B, tokens, width]``."""
        labels = torch.as_tensor(labels).long().flatten()
        if labels.numel() and (labels.min() < 0 or labels.max() > self.config.num_classes):
            raise NodeInputError("AVLab toy models", "labels",
                                 f"class ids in 0..{self.config.num_classes} (last = null)", labels.tolist())
        return self.table.to(next(self.model.parameters()).device)[labels]

    def loss(self, latents: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None = None, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Training objective on clean latents ``[B,C,T,h,w]`` and class ids ``[B]``."""
        fn = ddpm_v_loss if self.config.objective == V_PRED else flow_loss
        predict = self.predict if model is None else (lambda x, t, c: self.predict(x, t, c, model=model))
        return fn(predict, latents, self.context(labels), generator=generator)

    @torch.no_grad()
    def sample(self, labels, seed: int = 0, steps: int | None = None, guidance: float | None = None,
               callback: Callable | None = None) -> torch.Tensor:
        """Latent videos ``[B,C,T,h,w]`` for class ids ``labels`` (deterministic given ``seed``)."""
        cfg = self.config
        labels = torch.as_tensor(labels).long().flatten()
        steps = cfg.sample_steps if steps is None else steps
        guidance = cfg.guidance if guidance is None else guidance
        device = next(self.model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(cfg.latent_shape(len(labels)), generator=g).to(device)
        ctx = self.context(labels)
        unc = self.context(torch.full_like(labels, cfg.num_classes))
        if cfg.objective == V_PRED:
            return sample_ddim(self.predict, x, ctx, steps, uncond=unc, guidance=guidance, callback=callback)
        return sample_euler_flow(self.predict, x, ctx, steps, shift=cfg.flow_shift, uncond=unc,
                                 guidance=guidance, callback=callback)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent ``[B,C,T,h,w]`` → frames ``[B,T,H,W,3]`` in 0..1."""
        if self.codec is None:
            raise NodeInputError("AVLab toy models", "codec", "a fitted ToyLatentCodec", None)
        return self.codec.decode(latents)

    # -- files -------------------------------------------------------------------------------------
    def save(self, directory: Path | str = WEIGHTS_DIR, record: dict | None = None) -> Path:
        """Write ``<name>.safetensors`` (fp16), ``<name>.json`` and the codec into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().to(torch.float16).contiguous() for k, v in self.model.state_dict().items()}
        save_file(sd, str(directory / f"{self.name}.safetensors"), metadata={"format": "diffusers"})
        meta = {"config": json.loads(self.config.to_json()), "record": record or {}}
        (directory / f"{self.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        if self.codec is not None:
            save_file({k: v.contiguous() for k, v in self.codec.state_dict().items()},
                      str(directory / CODEC_FILE))
        return directory / f"{self.name}.safetensors"

    @classmethod
    def load(cls, kind_or_name: str, directory: Path | str = WEIGHTS_DIR,
             dtype: torch.dtype = torch.float32) -> "ToyVideoModel":
        """Load committed weights (``"unet_motion"``/``"wan_dit"`` or a file stem) from ``directory``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        stem = NAMES.get(kind_or_name, kind_or_name)
        meta_path, weights = directory / f"{stem}.json", directory / f"{stem}.safetensors"
        if not meta_path.is_file() or not weights.is_file():
            raise NodeInputError("AVLab toy models", "weights",
                                 f"{stem}.safetensors and {stem}.json in {directory} "
                                 "(made by scripts/train_toy_video_models.py)", "missing")
        config = ToyModelConfig.from_dict(json.loads(meta_path.read_text())["config"])
        model = build_model(config)
        model.load_state_dict({k: v.to(dtype) for k, v in load_file(str(weights)).items()}, strict=True)
        model.to(dtype).eval()
        codec = None
        if (directory / CODEC_FILE).is_file():
            codec = ToyLatentCodec.from_state_dict(load_file(str(directory / CODEC_FILE)))
        return cls(config, model, codec)

    @staticmethod
    def record(kind_or_name: str, directory: Path | str = WEIGHTS_DIR) -> dict:
        """The training record stored beside the weights (losses, time, seed)."""
        stem = NAMES.get(kind_or_name, kind_or_name)
        return json.loads((Path(directory) / f"{stem}.json").read_text())
