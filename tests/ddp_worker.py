"""Worker for tests/test_training.py: run under ``torchrun --nproc_per_node=2``; trains a toy model
with Dropout and a loss that draws random numbers on the shared loop (DDP over gloo), once
uninterrupted and once stopped at step 9 and resumed, and writes this rank's weights to
``<out>/rank<r>.pt``."""

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

from avlab.common.training import IndexedBatches, TrainConfig, rank_info, train  # noqa: E402


def _model():
    torch.manual_seed(0)  # identical init on every rank (DDP also broadcasts it)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1))


def _loss(net, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(net(x + 0.1 * torch.randn_like(x)), y)


def main(out: str) -> None:
    # one process group for the three runs (train() then neither creates nor destroys it)
    torch.distributed.init_process_group("gloo")
    rank = int(os.environ["RANK"])
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(100))
    data = IndexedBatches(x, x.sum(dim=1, keepdim=True), batch_size=8, seed=5)  # sharded by rank
    initial = {k: v.clone() for k, v in _model().state_dict().items()}
    cfg = dict(steps=20, lr=1e-2, device="cpu", progress=False, seed=11)
    result = train(_model(), _loss, data, TrainConfig(**cfg))
    run = Path(out) / "run"
    train(_model(), _loss, data, TrainConfig(out_dir=str(run), **cfg), callback=lambda s, m: s < 9)
    torch.manual_seed(1234 + rank)
    resumed = train(_model(), _loss, data, TrainConfig(out_dir=str(run), resume=True, **cfg))
    torch.save({"final": result.model.state_dict(), "initial": initial, "resumed": resumed.model.state_dict(),
                "world_size": rank_info().world_size}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
