"""The envelope ControlNet on ComfyUI's own Stable Audio DiT (papers.md §4; issue 10), in process:
zero-initialised = bit-identical to the base, a trained-looking one changes the output while the
base model stays untouched, chaining with an existing ``("double_block", i)`` patch in both orders,
the file round trip and the refusals."""

from __future__ import annotations

import pytest
import torch

from tiny_stable_audio import apply_once, build_tiny_stable_audio

DEPTH = 10          # round(0.2 · 10) = 2 copied blocks


def _inputs(seed=0, frames=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 64, frames, generator=g), torch.randn(1, 4, 768, generator=g)


def _net(patcher):
    from avlab.foley.controlnet import EnvelopeControlNet

    transformer = patcher.model.diffusion_model.transformer
    return EnvelopeControlNet.from_base(transformer.layers, transformer.dim)


def _apply(patcher, net, values=None, frames=12, **kw):
    from avlab.foley.controlnet_glue import apply_envelope_controlnet
    from avlab.foley.envelope import STABLE_AUDIO_RATE, Envelope

    env = Envelope(values if values is not None else torch.linspace(0, 1, frames), STABLE_AUDIO_RATE)
    return apply_envelope_controlnet(patcher, net, env, **kw)


def _run(patcher, x, ctx, seconds=1):
    return apply_once(patcher, x, sigma=1.0, cross_attn=ctx,
                      transformer_options=patcher.model_options.get("transformer_options", {}),
                      seconds_total=seconds)


def _randomise(net, seed=3):
    g = torch.Generator().manual_seed(seed)
    for conv in [net.envelope_in, *net.zero_convs]:
        conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.05


def test_zero_initialised_controlnet_is_bit_identical(comfy_inprocess):
    base = build_tiny_stable_audio(depth=DEPTH)
    net = _net(base)
    assert net.copied == 2
    x, ctx = _inputs()
    reference = _run(base, x, ctx)
    patched = _apply(base, net)
    assert set(patched.model_options["transformer_options"]["patches_replace"]["dit"]) == {
        ("double_block", 0), ("double_block", 1)}
    assert torch.equal(_run(patched, x, ctx), reference)


def test_controlnet_changes_the_output_and_the_base_stays_untouched(comfy_inprocess):
    base = build_tiny_stable_audio(depth=DEPTH)
    net = _net(base)
    _randomise(net)
    x, ctx = _inputs()
    reference = _run(base, x, ctx)
    patched = _apply(base, net, strength=1.0)
    changed = _run(patched, x, ctx)
    assert not torch.allclose(changed, reference)
    # strength 0 and a window that excludes the step are both the base model again
    assert torch.equal(_run(_apply(base, net, strength=0.0), x, ctx), reference)
    assert "patches_replace" not in base.model_options.get("transformer_options", {})
    assert torch.equal(_run(base, x, ctx), reference)                 # removal = the untouched base
    # a different envelope gives a different output (the control reaches the model)
    other = _run(_apply(base, net, values=torch.linspace(1, 0, 12)), x, ctx)
    assert not torch.allclose(other, changed)


@pytest.mark.parametrize("order", ["controlnet_after", "controlnet_before"])
def test_chains_with_another_dit_patch_in_both_orders(comfy_inprocess, order):
    base = build_tiny_stable_audio(depth=DEPTH)
    net = _net(base)
    _randomise(net)
    x, ctx = _inputs()
    calls = []

    def recorder(previous=None):
        def patch(args, extra):
            calls.append(float(args["img"].abs().sum()))
            return previous(args, extra) if previous else extra["original_block"](args)
        return patch

    def add_recorder(m):
        m = m.clone()
        existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        m.set_model_patch_replace(recorder(existing.get(("double_block", 0))), "dit", "double_block", 0)
        return m

    if order == "controlnet_after":
        m = _apply(add_recorder(base), net)
    else:
        m = add_recorder(_apply(base, net))
    out = _run(m, x, ctx)
    assert len(calls) == 1                                             # the other patch still runs
    assert torch.allclose(out, _run(_apply(base, net), x, ctx), atol=1e-6)   # and so does the ControlNet


def test_file_round_trip_and_refusals(comfy_inprocess, tmp_path):
    from avlab.foley.controlnet import controlnet_for_base

    base = build_tiny_stable_audio(depth=DEPTH)
    net = _net(base)
    _randomise(net)
    path = tmp_path / "envelope_controlnet.safetensors"
    net.save(path)
    layers = base.model.diffusion_model.transformer.layers
    back = controlnet_for_base(path, layers, 128)
    x, ctx = _inputs()
    assert torch.equal(_run(_apply(base, back), x, ctx), _run(_apply(base, net), x, ctx))
    with pytest.raises(ValueError, match="width 128"):
        controlnet_for_base(path, layers, 256)
    wide = build_tiny_stable_audio(depth=DEPTH, embed_dim=256, num_heads=4)
    with pytest.raises(ValueError, match="width 128"):
        _apply(wide, net)
    with pytest.raises(ValueError, match="not a Stable Audio DiT"):
        from avlab.foley.controlnet_glue import stable_audio_parts

        class Fake:
            def get_model_object(self, name):
                return torch.nn.Linear(2, 2)
        stable_audio_parts(Fake())


def test_envelope_of_another_rate_is_resampled_with_a_notice(comfy_inprocess, caplog):
    from avlab.foley.controlnet_glue import envelope_for_latent
    from avlab.foley.envelope import Envelope

    with caplog.at_level("INFO"):
        out = envelope_for_latent(Envelope(torch.tensor([0.0, 1.0, 0.0, 1.0]), rate=8.0), 11)
    assert out.shape == (1, 1, 11) and "resampled" in caplog.text
