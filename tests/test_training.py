"""The shared training loop (common/training.py): learning, clipping, EMA, resume, stop, DDP."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avlab.common.training import (IndexedBatches, TrainConfig, ema_decay, ema_update, iter_batches,
                                   load_weights, train)


def _toy_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    while True:
        x = torch.randn(16, 3, generator=gen)
        yield x, x @ w + 0.3


def _mse(net, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(net(x), y)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def test_loss_goes_down_on_a_toy_regression():
    res = train(_model(), _mse, _toy_data(), TrainConfig(steps=150, lr=5e-2, log_every=10, progress=False))
    assert res.history[-1]["loss"] < 0.05 * res.history[0]["loss"]


def test_grad_clip_caps_the_norm_that_reaches_the_optimizer():
    norms = []

    def loss_fn(net, batch):
        return 1e4 * _mse(net, batch)

    def spy(step, metrics):
        model = holder["model"]
        norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))

    holder = {"model": _model()}
    train(holder["model"], loss_fn, _toy_data(), TrainConfig(steps=5, lr=1e-6, grad_clip=0.5, progress=False),
          callback=spy)
    assert max(norms) <= 0.5 + 1e-4


def test_ema_follows_the_formula_on_one_parameter():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        model.weight.fill_(3.0)
    ema_update(ema, model, 0.9)
    assert ema.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)


def test_ema_model_differs_from_raw_weights_after_training():
    res = train(_model(), _mse, _toy_data(), TrainConfig(steps=30, lr=5e-2, ema=0.9, progress=False))
    assert not torch.allclose(res.ema_model.weight, res.model.weight)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = dict(lr=5e-2, ema=0.95, warmup_steps=3, cosine=True, progress=False)
    full = train(_model(), _mse, _toy_data(), TrainConfig(steps=20, **cfg)).model
    part_dir = tmp_path / "run"
    # the first run is interrupted at step 12 (callback), leaving a checkpoint behind
    train(_model(), _mse, _toy_data(), TrainConfig(steps=20, out_dir=str(part_dir), **cfg),
          callback=lambda step, m: step < 12)
    state = json.loads((part_dir / "trainer_state.json").read_text())
    assert state["step"] == 12
    resumed = train(_model(seed=123), _mse, _toy_data(),
                    TrainConfig(steps=20, out_dir=str(part_dir), resume=True, **cfg)).model
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)
    reloaded = load_weights(_model(seed=5), part_dir)
    torch.testing.assert_close(reloaded.weight, resumed.weight)


def _dropout_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Dropout(0.3), torch.nn.Tanh(),
                               torch.nn.Linear(32, 1))


def _noisy_mse(net, batch):
    """A loss that draws from the global RNG (like diffusion noise) on a model with Dropout."""
    x, y = batch
    return torch.nn.functional.mse_loss(net(x + 0.1 * torch.randn_like(x)), y)


def _regression_tensors(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    return x, x @ torch.tensor([[1.5], [-2.0], [0.5]])


@pytest.mark.parametrize("source", ["iterator", "seekable"])
def test_resume_with_random_loss_and_dropout_is_bit_identical(tmp_path, source):
    def data():
        return _toy_data() if source == "iterator" else IndexedBatches(*_regression_tensors(), batch_size=8, seed=3)

    cfg = dict(lr=2e-2, ema=0.9, ema_warmup=True, warmup_steps=3, cosine=True, progress=False, seed=7)
    full = train(_dropout_model(), _noisy_mse, data(), TrainConfig(steps=20, **cfg))
    run = tmp_path / "run"
    train(_dropout_model(), _noisy_mse, data(), TrainConfig(steps=20, out_dir=str(run), **cfg),
          callback=lambda step, m: step < 9)
    torch.manual_seed(999)  # whatever happens in the process between the two runs must not matter
    resumed = train(_dropout_model(seed=1), _noisy_mse, data(),
                    TrainConfig(steps=20, out_dir=str(run), resume=True, **cfg))
    assert resumed.step == 20
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_seekable_data_is_not_replayed_on_resume(tmp_path):
    produced = []

    class Counting(IndexedBatches):
        def batch(self, step):
            produced.append(step)
            return super().batch(step)

    data = Counting(*_regression_tensors(), batch_size=8)
    run = tmp_path / "run"
    train(_model(), _mse, data, TrainConfig(steps=10, out_dir=str(run), progress=False),
          callback=lambda step, m: step < 6)
    produced.clear()
    train(_model(), _mse, data, TrainConfig(steps=10, out_dir=str(run), resume=True, progress=False))
    assert produced == [6, 7, 8, 9]


def test_indexed_batches_are_a_function_of_seed_rank_and_step():
    x, y = _regression_tensors()
    a = IndexedBatches(x, y, batch_size=8, seed=1, rank=0)
    assert torch.equal(a.batch(5)[0], next(a.iter_from(5))[0])
    assert torch.equal(a.batch(5)[0], IndexedBatches(x, y, batch_size=8, seed=1, rank=0).batch(5)[0])
    assert not torch.equal(a.batch(5)[0], IndexedBatches(x, y, batch_size=8, seed=1, rank=1).batch(5)[0])
    assert not torch.equal(a.batch(5)[0], a.batch(6)[0])
    idx_rows = a.batch(5)[0]
    assert len({tuple(r.tolist()) for r in idx_rows}) == 8  # no repeats inside one batch


def test_a_sequence_is_indexed_by_step_and_cycles():
    assert list(itertools.islice(iter_batches(["a", "b", "c"], 4), 3)) == ["b", "c", "a"]


def test_ema_warmup_decay_grows_towards_the_configured_value():
    cfg = TrainConfig(ema=0.99, ema_warmup=True)
    assert ema_decay(cfg, 0) == pytest.approx(0.1)
    assert ema_decay(cfg, 10_000) == 0.99
    assert ema_decay(TrainConfig(ema=0.99), 0) == 0.99


def test_callback_returning_false_stops_early():
    res = train(_model(), _mse, _toy_data(), TrainConfig(steps=50, progress=False),
                callback=lambda step, m: step < 7)
    assert res.step == 7 and res.stopped_early


def test_training_works_inside_comfyui_inference_mode():
    with torch.inference_mode():
        res = train(_model(), _mse, _toy_data(), TrainConfig(steps=20, lr=5e-2, log_every=5, progress=False))
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_empty_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no batch"):
        train(_model(), _mse, [], TrainConfig(steps=3, progress=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_identical_and_resume_exactly(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    for k in r0["final"]:
        torch.testing.assert_close(r0["final"][k], r1["final"][k], rtol=0, atol=0)
        assert not torch.equal(r0["final"][k], r0["initial"][k])
        # stopped at step 9 and resumed under DDP: bit-identical to the uninterrupted DDP run
        assert torch.equal(r0["resumed"][k], r0["final"][k])
        assert torch.equal(r1["resumed"][k], r1["final"][k])
