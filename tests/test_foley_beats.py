"""BEATs iter3+ AS2M encoder (papers.md §4, FoleyGRAM: BEATs iter3+ AS2M audio encoder): official key
layout, Kaldi front end, padding masks, safe loading, safetensors round trip, input validation."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from avlab.foley.beats import (
    BEATs,
    BEATsConfig,
    FBANK_MEAN,
    FBANK_STD,
    TINY_BEATS,
    beats_fbank,
    kaldi_fbank,
    load_beats,
    min_num_samples,
    num_beats_tokens,
    num_fbank_frames,
    padding_mask_from_lengths,
    relative_position_buckets,
    save_beats_safetensors,
)

# The tiny config as an official checkpoint 'cfg' would spell it, with training-only keys that the
# loader must ignore.
TINY_CFG = {
    "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4, "activation_fn": "gelu", "embed_dim": 32, "input_patch_size": 16,
    "conv_bias": False, "layer_norm_first": False, "deep_norm": True, "conv_pos": 16,
    "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
    "gru_rel_pos": True, "finetuned_model": False,
    "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.05,
    "dropout_input": 0.0, "layer_wise_gradient_decay_ratio": 0.6, "predictor_dropout": 0.1,
}

# Official key -> shape for TINY_CFG, written out by hand from microsoft/unilm beats/{BEATs,backbone}.py.
# D=64 model width, C=32 patch channels, F=128 FFN, H=4 heads (head dim 16), conv_pos 16 in 4 groups.
_GLOBAL_KEYS = {
    "post_extract_proj.weight": (64, 32),
    "post_extract_proj.bias": (64,),
    "patch_embedding.weight": (32, 1, 16, 16),  # conv_bias=False: no patch_embedding.bias
    "encoder.pos_conv.0.weight_g": (1, 1, 16),  # weight norm over dim=2: one magnitude per tap
    "encoder.pos_conv.0.weight_v": (64, 16, 16),
    "encoder.pos_conv.0.bias": (64,),
    "encoder.layer_norm.weight": (64,),
    "encoder.layer_norm.bias": (64,),
    "layer_norm.weight": (32,),
    "layer_norm.bias": (32,),
}
_LAYER_KEYS = {
    "self_attn.k_proj.weight": (64, 64),
    "self_attn.k_proj.bias": (64,),
    "self_attn.v_proj.weight": (64, 64),
    "self_attn.v_proj.bias": (64,),
    "self_attn.q_proj.weight": (64, 64),
    "self_attn.q_proj.bias": (64,),
    "self_attn.out_proj.weight": (64, 64),
    "self_attn.out_proj.bias": (64,),
    "self_attn.relative_attention_bias.weight": (320, 4),  # aliased: present in every layer
    "self_attn.grep_linear.weight": (8, 16),
    "self_attn.grep_linear.bias": (8,),
    "self_attn.grep_a": (1, 4, 1, 1),
    "self_attn_layer_norm.weight": (64,),
    "self_attn_layer_norm.bias": (64,),
    "fc1.weight": (128, 64),
    "fc1.bias": (128,),
    "fc2.weight": (64, 128),
    "fc2.bias": (64,),
    "final_layer_norm.weight": (64,),
    "final_layer_norm.bias": (64,),
}


# Pooled output (first 6 dims) of the official microsoft/unilm beats code (beats/ at commit 732d834d)
# loaded with tiny_state_dict() and fed tone(1.0, batch=2).
GOLDEN_POOLED = torch.tensor([
    [0.459001, -1.917622, -0.868752, -1.068100, 0.645282, -0.511645],
    [0.420992, -1.911622, -0.816730, -1.076286, 0.611809, -0.509190],
])


def tiny_key_shapes(layers: int = 2) -> dict[str, tuple[int, ...]]:
    table = dict(_GLOBAL_KEYS)
    for i in range(layers):
        table.update({f"encoder.layers.{i}.{k}": s for k, s in _LAYER_KEYS.items()})
    return table


def tiny_state_dict(layers: int = 2) -> OrderedDict[str, torch.Tensor]:
    """Deterministic (RNG-free) weights in the official layout; the shared bias table has the same
    values under every layer, as in an official checkpoint."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for idx, (key, shape) in enumerate(sorted(tiny_key_shapes(layers).items())):
        n = math.prod(shape)
        seed = 0 if key.endswith("relative_attention_bias.weight") else idx
        wave = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7318 + seed * 1.37).float()
        if key.endswith("layer_norm.weight") or key.endswith("weight_g") or key.endswith("grep_a"):
            value = 1.0 + 0.1 * wave
        elif key == "patch_embedding.weight":
            value = 0.06 * wave
        elif key.endswith("relative_attention_bias.weight"):
            value = 0.5 * wave
        else:
            value = 0.15 * wave
        state[key] = value.reshape(shape)
    return state


def tone(seconds: float, freq: float = 440.0, batch: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000), dtype=torch.float64) / 16000
    rows = [0.4 * torch.sin(2 * math.pi * freq * (k + 1) * t) + 0.1 * torch.sin(2 * math.pi * 97.0 * t)
            for k in range(batch)]
    return torch.stack(rows).float()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("beats") / "BEATs_tiny.pt"
    torch.save({"cfg": dict(TINY_CFG), "model": tiny_state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt) -> BEATs:
    return load_beats(tiny_ckpt)


# (1) official layout -------------------------------------------------------------------------------


def test_official_checkpoint_loads_strictly(tiny_ckpt, tiny_model):
    sd = tiny_model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == tiny_key_shapes()
    ref = tiny_state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    assert tiny_model.cfg == TINY_BEATS and not tiny_model.training
    attn0, attn1 = (layer.self_attn for layer in tiny_model.encoder.layers)
    assert attn1.relative_attention_bias is attn0.relative_attention_bias  # one table, every layer
    with torch.no_grad():
        tokens, mask = tiny_model(tone(1.0, batch=2))
        pooled = tiny_model.pooled(tone(1.0, batch=2))
    assert tokens.shape == (2, num_beats_tokens(16000, TINY_BEATS), 64) == (2, 48, 64)
    assert mask is None and pooled.shape == (2, 64) and torch.isfinite(tokens).all()


def test_matches_official_implementation_values(tiny_model):
    """Same numbers as the reference implementation (see GOLDEN_POOLED)."""
    with torch.no_grad():
        pooled = tiny_model.pooled(tone(1.0, batch=2))
    assert torch.allclose(pooled[:, :6], GOLDEN_POOLED, atol=1e-4)


def test_strict_load_reports_bad_keys(tmp_path):
    state = tiny_state_dict()
    del state["encoder.layers.1.fc2.bias"]
    state["encoder.layers.0.self_attn.bias_k"] = torch.zeros(1, 1, 64)
    state["fc1.weight"] = state.pop("encoder.layers.0.fc1.weight")
    path = tmp_path / "bad.pt"
    torch.save({"cfg": TINY_CFG, "model": state}, path)
    with pytest.raises(ValueError) as err:
        load_beats(path)
    msg = str(err.value)
    assert "bad.pt" in msg and "missing" in msg and "unexpected" in msg
    assert "encoder.layers.1.fc2.bias" in msg and "encoder.layers.0.fc1.weight" in msg
    assert "encoder.layers.0.self_attn.bias_k" in msg

    state = tiny_state_dict()
    state["encoder.layers.0.fc1.weight"] = torch.zeros(100, 64)
    with pytest.raises(ValueError, match=r"wrong shape.*encoder\.layers\.0\.fc1\.weight"):
        load_beats({"cfg": TINY_CFG, "model": state})


def test_deduplicated_shared_bias_still_loads():
    state = tiny_state_dict()
    del state["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    model = load_beats({"cfg": TINY_CFG, "model": state})
    assert torch.equal(model.encoder.layers[1].self_attn.relative_attention_bias.weight,
                       state["encoder.layers.0.self_attn.relative_attention_bias.weight"])


def test_config_from_official_dict():
    assert BEATsConfig.from_dict(TINY_CFG) == TINY_BEATS
    default = BEATsConfig()
    assert (default.encoder_layers, default.encoder_embed_dim, default.encoder_attention_heads,
            default.embed_dim, default.input_patch_size, default.num_buckets, default.max_distance,
            default.deep_norm, default.gru_rel_pos, default.layer_norm_first) == (
        12, 768, 12, 512, 16, 320, 800, True, True, False)
    with pytest.raises(ValueError, match="encoder_attention_heads"):
        BEATsConfig.from_dict({"encoder_embed_dim": 64, "encoder_attention_heads": 5})
    with pytest.raises(ValueError, match="input_patch_size"):
        BEATsConfig.from_dict({"input_patch_size": -1})


def test_relative_buckets():
    b = relative_position_buckets(1, 2000, 320, 800)[0]
    assert b[:80].tolist() == [0] + list(range(161, 240))  # exact quarter, positive side offset by 160
    assert b[800:].eq(319).all() and b.max() == 319
    back = relative_position_buckets(2000, 1, 320, 800)[:, 0]
    assert back[:80].tolist() == list(range(80)) and back.max() == 159


# (2) front end -------------------------------------------------------------------------------------


def test_fbank_matches_torchaudio_kaldi():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wave = tone(0.5, batch=2)
    mine = kaldi_fbank(wave * 2**15)
    for row in range(2):
        ref = kaldi.fbank(wave[row: row + 1] * 2**15, num_mel_bins=128, sample_frequency=16000,
                          frame_length=25, frame_shift=10)
        assert mine[row].shape == ref.shape == (48, 128)
        assert torch.allclose(mine[row], ref, atol=2e-3, rtol=1e-4)
        norm = (ref - FBANK_MEAN) / (2 * FBANK_STD)
        assert torch.allclose(beats_fbank(wave)[row], norm, atol=2e-4)


@pytest.mark.parametrize(("samples", "frames", "tokens"), [
    (400, 1, 0), (2799, 15, 0), (2800, 16, 8), (16000, 98, 48), (160000, 998, 496), (24000, 148, 72),
])
def test_frame_and_token_counts(samples, frames, tokens):
    assert num_fbank_frames(samples) == frames == kaldi_fbank(torch.zeros(1, samples)).shape[1]
    assert num_beats_tokens(samples) == tokens


def test_token_count_of_model(tiny_model):
    with torch.no_grad():
        for s in (2800, 5000, 24000):
            assert tiny_model(torch.zeros(1, s))[0].shape[1] == num_beats_tokens(s, TINY_BEATS)


# (3) padding mask ----------------------------------------------------------------------------------


def test_padding_exact_rule_matches_unpadded(tiny_model):
    clips = [tone(1.0)[0], tone(0.63, freq=300.0)[0], tone(0.3, freq=700.0)[0]]
    width = 20000
    batch = torch.stack([torch.cat([c, torch.zeros(width - len(c))]) for c in clips])
    mask = padding_mask_from_lengths([len(c) for c in clips], width)
    with torch.no_grad():
        pooled = tiny_model.pooled(batch, mask, mask_rule="exact")
        _, token_mask = tiny_model(batch, mask, mask_rule="exact")
        for i, clip in enumerate(clips):
            alone = tiny_model.pooled(clip[None])
            assert torch.allclose(pooled[i], alone[0], atol=2e-5)
            assert int((~token_mask[i]).sum()) == num_beats_tokens(len(clip))


def test_padding_official_rule(tiny_model):
    # 5360 samples = 32 frames = 2 time patches = 16 tokens. Padded to 8079 samples the official
    # even-fold lands exactly on the patch boundary, so the pooled output is unchanged.
    clip = tone(0.335)[:, :5360]
    padded = torch.cat([clip, torch.zeros(1, 8079 - 5360)], dim=1)
    mask = padding_mask_from_lengths([5360], 8079)
    with torch.no_grad():
        _, token_mask = tiny_model(padded, mask)
        assert token_mask.tolist() == [[False] * 16 + [True] * 8]
        assert torch.allclose(tiny_model.pooled(padded, mask), tiny_model.pooled(clip), atol=2e-5)
        # Padded to 16000 the official fold lets the first token of the partly padded third patch through
        # (17 real tokens); the exact rule keeps 16.
        long_pad = torch.cat([clip, torch.zeros(1, 16000 - 5360)], dim=1)
        long_mask = padding_mask_from_lengths([5360], 16000)
        assert int((~tiny_model(long_pad, long_mask)[1]).sum()) == 17
        assert int((~tiny_model(long_pad, long_mask, mask_rule="exact")[1]).sum()) == 16


def test_all_padded_clip_is_refused(tiny_model):
    batch = torch.zeros(2, 8000)
    mask = padding_mask_from_lengths([8000, 0], 8000)
    with pytest.raises(ValueError, match=r"no real tokens in clip\(s\) \[1\]"):
        tiny_model.pooled(batch, mask)
    short = padding_mask_from_lengths([8000, 100], 8000)  # 100 real samples: under one patch
    with pytest.raises(ValueError, match="no real tokens"):
        tiny_model.pooled(batch, short, mask_rule="exact")
    with pytest.raises(ValueError, match="padding_mask"):
        tiny_model(batch, mask[:, :100])


# (4) refusing what is not a BEATs checkpoint ------------------------------------------------------

_EXECUTED: list[str] = []


def _side_effect() -> dict:
    _EXECUTED.append("ran")
    return {}


class _NotATensor:
    def __reduce__(self):
        return (_side_effect, ())


def test_refuses_non_checkpoints(tmp_path):
    cases = {
        "tensor.pt": torch.zeros(3),
        "no_model.pt": {"cfg": TINY_CFG, "state_dict": tiny_state_dict()},
        "no_cfg.pt": {"model": tiny_state_dict()},
        "bare_state.pt": tiny_state_dict(),
    }
    for name, obj in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(ValueError, match=r"\{'cfg'.*'model'") as err:
            load_beats(path)
        assert name in str(err.value)
    with pytest.raises(ValueError, match="existing"):
        load_beats(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt"):
        load_beats(junk)


def test_weights_only_refuses_custom_pickles(tmp_path, monkeypatch):
    path = tmp_path / "evil.pt"
    torch.save({"cfg": TINY_CFG, "model": tiny_state_dict(), "extra": _NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only") as err:
        load_beats(path)
    assert "evil.pt" in str(err.value) and _EXECUTED == []

    seen: list[dict] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    good = tmp_path / "good.pt"
    torch.save({"cfg": TINY_CFG, "model": tiny_state_dict()}, good)
    load_beats(good)
    assert seen and all(kw.get("weights_only") is True and kw.get("map_location") == "cpu" for kw in seen)


# (5) safetensors -----------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path, tiny_model):
    from safetensors import safe_open

    path = tmp_path / "beats_tiny.safetensors"
    save_beats_safetensors(tiny_model, path)
    with safe_open(str(path), framework="pt") as fh:
        assert set(fh.keys()) == set(tiny_key_shapes())
    again = load_beats(path)
    assert again.cfg == tiny_model.cfg
    wave = tone(0.8, batch=2)
    mask = padding_mask_from_lengths([12800, 9000], 12800)
    with torch.no_grad():
        a, am = tiny_model(wave, mask)
        b, bm = again(wave, mask)
    assert torch.equal(a, b) and torch.equal(am, bm)


def test_safetensors_without_config_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="save_beats_safetensors") as err:
        load_beats(path)
    assert "plain.safetensors" in str(err.value)


# (6) input validation ------------------------------------------------------------------------------


def test_zero_sample_audio_raises(tiny_model):
    with pytest.raises(ValueError, match="0-sample"):
        tiny_model(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="0-sample"):
        tiny_model.pooled(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="0-sample"):
        tiny_model(torch.zeros(0, 16000))


def test_other_bad_inputs(tiny_model):
    assert min_num_samples(TINY_BEATS) == 2800
    with pytest.raises(ValueError, match="at least 2800 samples"):
        tiny_model(torch.zeros(1, 2799))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        tiny_model(torch.zeros(16000))
    with pytest.raises(ValueError, match="floating-point"):
        tiny_model(torch.zeros(1, 16000, dtype=torch.int16))
    with pytest.raises(ValueError, match="mask_rule"):
        tiny_model(torch.zeros(1, 16000), mask_rule="nearest")
