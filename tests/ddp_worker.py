"""Worker for tests/test_training.py: run under ``torchrun --nproc_per_node=2``; trains a toy model
with the shared loop (DDP over gloo) and writes this rank's final weights to ``<out>/rank<r>.pt``."""

import importlib.util
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("avlab") is None:  # not installed: load the repo root as `avlab`
    spec = importlib.util.spec_from_file_location("avlab", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["avlab"] = mod
    spec.loader.exec_module(mod)

from avlab.common.training import TrainConfig, rank_info, train  # noqa: E402


def main(out: str) -> None:
    torch.manual_seed(0)  # identical init on every rank (DDP also broadcasts it)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    rank = int(os.environ["RANK"])
    gen = torch.Generator().manual_seed(100 + rank)  # each rank sees different data

    def data():
        while True:
            x = torch.randn(8, 4, generator=gen)
            yield x, x.sum(dim=1, keepdim=True)

    def loss_fn(net, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x), y)

    result = train(model, loss_fn, data(), TrainConfig(steps=20, lr=1e-2, device="cpu", progress=False))
    torch.save({"final": result.model.state_dict(), "initial": initial,
                "world_size": rank_info().world_size}, Path(out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
