"""FlowRVS official-weight loading (flowrvs/weights.py) on tiny checkpoints with the official
key names and nesting: ``{'model': sd, 'args': Namespace}`` DiT, ``vae.``-prefixed mask VAE."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.flowrvs.weights import (
    convert_flowrvs_to_safetensors,
    flowrvs_dit_to_comfy,
    load_flowrvs_dit,
    load_flowrvs_mask_vae,
)

diffusers = pytest.importorskip("diffusers")

DIT_KW = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16,
          "out_channels": 16, "text_dim": 32, "freq_dim": 16, "ffn_dim": 64, "num_layers": 1}


class Arbitrary:
    """A class a weights-only unpickler must refuse."""

    def __init__(self):
        self.payload = 1


def _dit(in_channels=16, seed=0):
    torch.manual_seed(seed)
    return diffusers.WanTransformer3DModel(in_channels=in_channels, **DIT_KW)


def _args():
    return argparse.Namespace(num_heads=2, lr=5e-5, special_freq=0.5, dataset="mevis")


def _save_dit(tmp_path, in_channels=16, ema=None, prefix="", name="FlowRVS_dit_mevis.pth"):
    sd = {prefix + k: v for k, v in _dit(in_channels).state_dict().items()}
    ckpt = {"model": sd, "args": _args(), "epoch": 3}
    if ema is not None:
        ckpt[ema] = {prefix + k: v + 1.0 for k, v in _dit(in_channels).state_dict().items()}
    path = tmp_path / name
    torch.save(ckpt, path)
    return path, sd


@pytest.mark.parametrize("in_channels", [16, 32])
def test_dit_loads_with_inferred_config(tmp_path, in_channels):
    path, sd = _save_dit(tmp_path, in_channels)
    out, config, info = load_flowrvs_dit(str(path))
    assert config["in_channels"] == in_channels and config["num_layers"] == 1
    assert config["num_attention_heads"] == 2 and config["attention_head_dim"] == 16
    assert config["ffn_dim"] == 64 and config["text_dim"] == 32 and config["freq_dim"] == 16
    assert config["patch_size"] == [1, 2, 2] and config["out_channels"] == 16
    assert info["ema_used"] is False and info["dvi"] is (in_channels == 32)
    assert info["args"]["dataset"] == "mevis"
    assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
    model = diffusers.WanTransformer3DModel(**config)
    model.load_state_dict(out, strict=True)


@pytest.mark.parametrize("ema", ["model_ema", "ema"])
def test_dit_prefers_ema_and_strips_module_prefix(tmp_path, ema):
    path, sd = _save_dit(tmp_path, ema=ema, prefix="module.")
    out, _config, info = load_flowrvs_dit(str(path))
    assert info["ema_used"] is True and info["ema_key"] == ema
    assert not any(k.startswith("module.") for k in out)
    k = "patch_embedding.weight"
    assert torch.equal(out[k], sd["module." + k] + 1.0)


def test_module_prefix_without_ema(tmp_path):
    path, _sd = _save_dit(tmp_path, prefix="module.")
    out, _c, info = load_flowrvs_dit(str(path))
    assert not info["ema_used"] and "scale_shift_table" in out


def test_arbitrary_pickle_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _dit().state_dict(), "extra": Arbitrary()}, path)
    with pytest.raises(NodeInputError, match=r"evil\.pth.*cannot be loaded safely.*Arbitrary"):
        load_flowrvs_dit(str(path))


def test_not_a_dit_refused(tmp_path):
    p1 = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3, 3)}, "args": _args()}, p1)
    with pytest.raises(NodeInputError, match=r"other\.pth.*missing"):
        load_flowrvs_dit(str(p1))
    p2 = tmp_path / "notensors.pth"
    torch.save({"args": _args(), "epoch": 1}, p2)
    with pytest.raises(NodeInputError, match=r"notensors\.pth.*no tensors"):
        load_flowrvs_dit(str(p2))
    p3 = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], p3)
    with pytest.raises(NodeInputError, match=r"list\.pth.*list"):
        load_flowrvs_dit(str(p3))
    with pytest.raises(NodeInputError, match="existing checkpoint"):
        load_flowrvs_dit(str(tmp_path / "absent.pth"))


def _vae_sd(out_channels=1):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16, out_channels=out_channels,
                                     num_res_blocks=1, dim_mult=[1, 1, 1, 1])
    return vae.state_dict()


def test_mask_vae_loads(tmp_path):
    sd = _vae_sd(1)
    path = tmp_path / "tuned_vae.pth"
    torch.save({"vae." + k: v for k, v in sd.items()}, path)
    out, config = load_flowrvs_mask_vae(str(path))
    assert set(out) == set(sd) and out["decoder.conv_out.weight"].shape[0] == 1
    assert config == {"base_dim": 8, "decoder_base_dim": None, "z_dim": 16, "in_channels": 3,
                      "out_channels": 1}
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16, out_channels=1, num_res_blocks=1,
                                     dim_mult=[1, 1, 1, 1])
    vae.load_state_dict(out, strict=True)


def test_rgb_vae_head_refused(tmp_path):
    path = tmp_path / "wan_vae.pth"
    torch.save({"vae." + k: v for k, v in _vae_sd(3).items()}, path)
    with pytest.raises(NodeInputError, match=r"wan_vae\.pth.*3-channel head"):
        load_flowrvs_mask_vae(str(path))
    p2 = tmp_path / "dit_as_vae.pth"
    torch.save({"model": _dit().state_dict()}, p2)
    with pytest.raises(NodeInputError, match=r"dit_as_vae\.pth.*missing"):
        load_flowrvs_mask_vae(str(p2))


@pytest.mark.parametrize("fp16", [False, True])
def test_dit_safetensors_round_trip(tmp_path, fp16):
    path, _sd = _save_dit(tmp_path, in_channels=32, ema="model_ema")
    ref, ref_cfg, _ = load_flowrvs_dit(str(path))
    dst = tmp_path / "out" / "flowrvs_dit.safetensors"
    meta = convert_flowrvs_to_safetensors(str(path), str(dst), fp16=fp16)
    assert meta["kind"] == "flowrvs_dit" and meta["ema_used"] and meta["dvi"]
    assert json.loads((tmp_path / "out" / "flowrvs_dit.json").read_text())["config"] == ref_cfg
    out, cfg, info = load_flowrvs_dit(str(dst))
    assert cfg == ref_cfg and info["ema_used"] and info["dvi"]
    assert set(out) == set(ref)
    for k in ref:
        if fp16:
            assert out[k].dtype == torch.float16 and torch.equal(out[k], ref[k].half())
        else:
            assert torch.equal(out[k], ref[k])


def test_vae_safetensors_round_trip(tmp_path):
    src = tmp_path / "tuned_vae.pth"
    torch.save({"vae." + k: v for k, v in _vae_sd(1).items()}, src)
    ref, ref_cfg = load_flowrvs_mask_vae(str(src))
    dst = tmp_path / "mask_vae.safetensors"
    assert convert_flowrvs_to_safetensors(str(src), str(dst))["kind"] == "flowrvs_mask_vae"
    out, cfg = load_flowrvs_mask_vae(str(dst))
    assert cfg == ref_cfg and set(out) == set(ref)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("in_channels", [16, 32])
def test_comfy_conversion(tmp_path, in_channels):
    path, _ = _save_dit(tmp_path, in_channels, prefix="module.")
    sd, _config, _ = load_flowrvs_dit(str(path))
    comfy = flowrvs_dit_to_comfy(sd)
    assert comfy["patch_embedding.weight"].shape[1] == in_channels
    assert tuple(comfy["head.modulation"].shape) == (1, 2, 32)
    assert "blocks.0.self_attn.q.weight" in comfy and "blocks.0.modulation" in comfy
    assert "scale_shift_table" not in comfy and len(comfy) == len(sd)
