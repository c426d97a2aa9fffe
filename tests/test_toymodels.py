"""Toy video diffusion models (avlab.toymodels): configs, shapes, training, committed weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from avlab.common.errors import NodeInputError  # noqa: E402
from avlab.toymodels import (KINDS, UNET, WAN, WEIGHTS_DIR, ToyLatentCodec, ToyVideoModel,  # noqa: E402
                             default_config, heldout_loss, synthetic_clips, train_toy)


def _small(kind, **kw):
    return default_config(kind, frames=4, **kw)


def _smooth_latents(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, cfg.latent_channels, 1, cfg.latent_size, cfg.latent_size, generator=g)
    drift = torch.linspace(0, 1, cfg.frames).view(1, 1, -1, 1, 1)
    return base + 0.3 * drift * torch.randn(n, cfg.latent_channels, 1, 1, 1, generator=g)


@pytest.mark.parametrize("kind,cls", [(UNET, "UNetMotionModel"), (WAN, "WanTransformer3DModel")])
def test_default_config_builds_the_diffusers_model(kind, cls):
    toy = ToyVideoModel(default_config(kind))
    assert type(toy.model).__name__ == cls


def test_wan_config_uses_head_dim_128_and_text_dim_4096_for_comfyui():
    model = ToyVideoModel(default_config(WAN)).model
    assert model.config.attention_head_dim == 128
    assert model.config.text_dim == 4096


@pytest.mark.parametrize("kind", KINDS)
def test_prediction_has_the_latent_shape(kind):
    cfg = _small(kind)
    toy = ToyVideoModel(cfg)
    x = torch.randn(cfg.latent_shape(2))
    with torch.no_grad():
        out = toy.predict(x, torch.tensor([10, 500]), toy.context(torch.tensor([0, cfg.num_classes])))
    assert out.shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_training_steps_lower_the_loss(kind):
    cfg = _small(kind, steps=12, batch_size=2, warmup=2, lr=2e-3, ema_decay=0.0)
    lat = _smooth_latents(cfg, 4)
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(cfg.seed)
    before = heldout_loss(ToyVideoModel(cfg), lat, labels, repeats=3)
    trained, record = train_toy(cfg, lat, labels)
    after = heldout_loss(trained, lat, labels, repeats=3)
    assert record["steps"] == 12
    assert after < before


def test_codec_reconstructs_patchwise_flat_frames_exactly():
    # every 4x4 patch one colour: the patches span 3 dimensions, well inside 16 channels
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(6, 3, 4, 4, 3, generator=g)                  # [N,T,h,w,3]
    frames = colours.repeat_interleave(4, 2).repeat_interleave(4, 3)  # [N,T,16,16,3]
    codec = ToyLatentCodec.fit(frames)
    lat = codec.encode(frames)
    assert lat.shape == (6, 16, 3, 4, 4)
    assert torch.allclose(codec.decode(lat), frames, atol=1e-4)


def test_codec_latent_has_unit_variance_overall_on_its_data():
    frames = torch.rand(4, 2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    lat = ToyLatentCodec.fit(frames).encode(frames)
    assert abs(float(lat.pow(2).mean()) - 1.0) < 1e-2


def test_unknown_objective_is_rejected():
    with pytest.raises(NodeInputError, match="objective"):
        default_config(UNET, objective="eps")


def test_out_of_range_class_label_is_rejected():
    toy = ToyVideoModel(_small(WAN))
    with pytest.raises(NodeInputError, match="labels"):
        toy.context(torch.tensor([toy.config.num_classes + 1]))


def test_missing_weights_name_the_script(tmp_path):
    with pytest.raises(NodeInputError, match="train_toy_video_models"):
        ToyVideoModel.load(UNET, tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_committed_weights_load_and_sample_finite_video(kind):
    toy = ToyVideoModel.load(kind, WEIGHTS_DIR)
    latents = toy.sample([0], seed=0, steps=2)
    assert latents.shape == toy.config.latent_shape(1)
    assert torch.isfinite(latents).all()
    frames = toy.decode(latents)
    assert frames.shape == (1, toy.config.frames, toy.config.size, toy.config.size, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_committed_weights_beat_their_untrained_init_on_unseen_clips(kind):
    """Runs the committed model: on synthetic clips from seeds used neither for training (1000+)
    nor for the recorded held-out loss (2000+), its loss is far below the same architecture's init."""
    trained = ToyVideoModel.load(kind, WEIGHTS_DIR)
    cfg = trained.config
    frames, labels = synthetic_clips(6, cfg.frames, cfg.size, seed=7000)
    latents = trained.codec.encode(frames)
    torch.manual_seed(cfg.seed)
    untrained = ToyVideoModel(cfg)
    after = heldout_loss(trained, latents, labels, repeats=1, batch=6)
    before = heldout_loss(untrained, latents, labels, repeats=1, batch=6)
    assert after < 0.8 * before, (after, before)


def test_toy_training_resumes_exactly_on_the_shared_loop(tmp_path):
    cfg = _small(WAN, steps=6, batch_size=2, warmup=2, lr=2e-3, ema_decay=0.9)
    lat, labels = _smooth_latents(cfg, 4), torch.tensor([0, 1, 2, 0])
    full, _ = train_toy(cfg, lat, labels)
    run = str(tmp_path / "run")
    train_toy(cfg, lat, labels, out_dir=run, callback=lambda step, m: step < 3)  # stopped at 3 of 6
    resumed, record = train_toy(cfg, lat, labels, out_dir=run, resume=True)
    assert record["steps"] == 6 and record["trainer"] == "avlab.common.training"
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
