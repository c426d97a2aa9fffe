"""The built-in synthetic domain: determinism, geometry, audio ground truth, concerts, datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.synthetic import (
    ConcertConfig,
    SceneConfig,
    concert_dataset,
    make_concert,
    make_scene,
    scene_dataset,
    shard_indices,
)

SMALL = SceneConfig(seed=3, frames=24, height=64, width=64, fps=12.0, sample_rate=16000, num_objects=3)


@pytest.fixture(scope="module")
def scene():
    return make_scene(SMALL)


@pytest.fixture(scope="module")
def concert():
    return make_concert(ConcertConfig(seed=5, duration=20.0, fps=4.0, height=36, width=64, sample_rate=8000))


def test_scene_is_deterministic_from_seed():
    a, b, c = make_scene(SMALL), make_scene(SMALL), make_scene(SMALL, seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio)
    assert a.labels() == b.labels()
    assert not torch.equal(a.frames, c.frames)


def test_scene_shapes_and_ranges(scene):
    T, H, W, N = 24, 64, 64, 3
    assert scene.frames.shape == (T, H, W, 3) and scene.frames.dtype == torch.float32
    assert 0.0 <= float(scene.frames.min()) and float(scene.frames.max()) <= 1.0
    assert scene.masks.shape == (N, T, H, W) and scene.boxes.shape == (N, T, 4)
    assert scene.depth.shape == (T, H, W) and 0 <= float(scene.depth.min()) <= float(scene.depth.max()) <= 1
    assert set(torch.unique(scene.masks).tolist()) <= {0.0, 1.0}


def test_audio_length_matches_frames_and_fps(scene):
    assert scene.audio.shape == (2, round(24 / 12.0 * 16000))
    assert float(scene.audio.abs().max()) <= 0.9 + 1e-6


def test_masks_do_not_overlap_and_pixels_carry_object_depth(scene):
    assert float(scene.masks.sum(0).max()) <= 1.0
    for k, obj in enumerate(scene.objects):
        on = scene.masks[k] > 0
        if on.any():
            assert torch.allclose(scene.depth[on], torch.tensor(obj["depth"]), atol=1e-6)


def test_boxes_are_tight_around_masks(scene):
    for k in range(scene.masks.shape[0]):
        for t in range(scene.masks.shape[1]):
            m = scene.masks[k, t]
            if not scene.visible[k, t]:
                assert m.sum() == 0 and scene.boxes[k, t].abs().sum() == 0
                continue
            x0, y0, x1, y1 = scene.boxes[k, t].long().tolist()
            assert m[y0:y1, x0:x1].sum() == m.sum()
            assert m[y0, x0:x1].any() and m[y1 - 1, x0:x1].any() and m[y0:y1, x0].any() and m[y0:y1, x1 - 1].any()


def test_object_roles_and_unique_sentences(scene):
    assert scene.objects[0]["motion"] == "bounce" and scene.objects[1]["motion"] == "cross"
    assert len(set(scene.sentences)) == len(scene.sentences)
    for obj, sentence in zip(scene.objects, scene.sentences):
        assert sentence.startswith(f"the {obj['color']} {obj['shape']}")


def test_crossing_object_enters_and_leaves_the_frame():
    s = make_scene(SceneConfig(seed=11, frames=48, height=48, width=64, fps=12.0, sample_rate=8000))
    vis = s.visible[1]
    assert not vis[0] and vis.any() and not vis[-1]


def test_impacts_are_heard_at_their_time():
    """Each impact starts a burst: energy just after the impact ≫ energy just before (when isolated)."""
    s = make_scene(SceneConfig(seed=2, frames=48, height=64, width=64, fps=12.0, sample_rate=16000, num_objects=1))
    assert s.impacts, "object 0 always bounces"
    sr, mono = s.sample_rate, s.audio.pow(2).sum(0)
    times = [e["time"] for e in s.impacts]
    checked = 0
    for t in times:
        if any(0 < t - u < 0.25 for u in times):
            continue                     # a previous impact is still ringing
        i = int(t * sr)
        before = mono[max(0, i - 800):i].mean()
        after = mono[i:i + 800].mean()
        assert after > 20 * before + 1e-9
        checked += 1
    assert checked >= 1


def test_impact_frames_and_positions_match_the_track():
    s = make_scene(SceneConfig(seed=7, frames=48, height=64, width=64, fps=12.0, sample_rate=8000, num_objects=1))
    xs = np.array(s.objects[0]["track_x"]) / 64
    for e in s.impacts:
        assert e["frame"] - 1e-3 <= e["time"] * 12.0 <= e["frame"] + 1 + 1e-3
        assert abs(e["x"] - xs[e["frame"]]) < 0.2
        assert e["material"] == s.objects[0]["material"]


def test_moving_source_is_panned_by_its_x_position():
    """The crosser's hum alone (no impacts): left/right balance follows its x on every frame."""
    from avlab.synthetic.scene import _soundtrack

    cfg = SceneConfig(frames=24, height=64, width=64, fps=12.0, sample_rate=8000, num_objects=1)
    obj = {"motion": "cross", "depth": 0.3, "hum_hz": 220.0, "material": "wood", "size": 0.1}
    xs = np.linspace(2.0, 62.0, 24)                       # left edge → right edge, always on screen
    centres = np.stack([xs, np.full(24, 40.0)], -1)[None]
    audio = torch.from_numpy(_soundtrack(cfg, [obj], centres, [], np.random.default_rng(0)))
    bounds = (np.arange(25) * 8000 / 12).astype(int)
    balance = []
    for t in range(24):
        e = audio[:, bounds[t]:bounds[t + 1]].pow(2).sum(1)
        balance.append(float(e[1] / e.sum()))
    expected = np.sin(np.clip(xs / 64, 0, 1) * np.pi / 2) ** 2      # constant-power pan law
    assert np.abs(np.array(balance) - expected)[1:-1].max() < 0.05
    assert balance[0] < 0.1 and balance[-1] > 0.9


def test_materials_differ_in_timbre():
    """Pitch: rubber < wood < metal < glass; ringing: metal and glass ring long, wood and rubber are damped."""
    from avlab.synthetic.audio import impact

    rng = np.random.default_rng(0)
    peak, ring = {}, {}
    for material in ("rubber", "wood", "metal", "glass"):
        x = impact(material, 0.08, 1.0, 16000, rng)
        spec = np.abs(np.fft.rfft(x, 16000))
        peak[material] = float(np.argmax(spec))                      # Hz (1 Hz bins)
        energy = x.astype(np.float64) ** 2
        ring[material] = float(energy[1600:].sum() / energy.sum())   # fraction after 0.1 s
    assert peak["rubber"] < peak["wood"] < peak["metal"] < peak["glass"]
    assert min(ring["metal"], ring["glass"]) > 0.3 > 0.05 > max(ring["wood"], ring["rubber"])


@pytest.mark.parametrize("field,value", [("fps", 0.0), ("fps", -24.0), ("fps", float("nan")), ("frames", 0),
                                         ("num_objects", 0), ("num_objects", 9), ("width", 8)])
def test_bad_scene_config_names_the_field(field, value):
    with pytest.raises(NodeInputError) as err:
        make_scene(SMALL, **{field: value})
    assert field in str(err.value)


def test_concert_views_audio_and_shots_are_consistent(concert):
    cfg = concert.config
    T = round(cfg.duration * cfg.fps)
    assert concert.views.shape == (cfg.num_cameras, T, cfg.height, cfg.width, 3)
    assert concert.audio.shape == (1, round(cfg.duration * cfg.sample_rate))
    shots = concert.shots
    assert shots[0][0] == 0.0 and shots[-1][1] == cfg.duration and shots[0][2] == 0
    for (a0, a1, ca), (b0, b1, cb) in zip(shots, shots[1:]):
        assert a1 == b0 and ca != cb
    assert concert.cut_times == [s[0] for s in shots[1:]]
    for ph in concert.phrases[:-1]:
        assert cfg.min_phrase - 1e-6 <= ph["end"] - ph["start"] <= cfg.max_phrase + 1e-6


def test_concert_cuts_to_a_camera_showing_the_new_lead(concert):
    for phrase, (_, _, cam) in zip(concert.phrases, concert.shots):
        assert phrase["lead"] in concert.cameras[cam]["performers"]


def test_concert_phrase_boundaries_are_audible_breaths(concert):
    """The last BREATH seconds of each phrase are much quieter than the phrase body."""
    from avlab.synthetic.concert import BREATH

    sr, wav = concert.sample_rate, concert.audio[0]
    for ph in concert.phrases:
        a, b = int(ph["start"] * sr), int(ph["end"] * sr)
        gap = wav[b - int(0.8 * BREATH * sr):b].pow(2).mean()
        body = wav[a:b - int(BREATH * sr)].pow(2).mean()
        assert gap < 0.05 * body


def test_concert_segment_labels_follow_the_paper_protocol(concert):
    segs = concert.segment_labels(4.0, 2.0)
    assert [s["start"] for s in segs] == [2.0 * i for i in range(len(segs))]
    assert segs[-1]["end"] <= concert.config.duration
    for s in segs:
        inside = any(s["start"] < c < s["end"] for c in concert.cut_times)
        assert s["label"] == int(inside)
    assert {s["label"] for s in segs} == {0, 1}


def test_program_follows_the_camera_on_air(concert):
    program, cams = concert.program(), concert.camera_per_frame()
    for t in (0, len(cams) // 2, len(cams) - 1):
        assert torch.equal(program[t], concert.views[cams[t], t])


def test_concert_bad_config_names_the_field():
    with pytest.raises(NodeInputError, match="num_cameras"):
        make_concert(ConcertConfig(num_cameras=9))
    with pytest.raises(NodeInputError, match="duration"):
        make_concert(ConcertConfig(duration=1.0))


def test_datasets_are_seeded_and_sharded():
    ds = scene_dataset(5, base_seed=100, config=SceneConfig(frames=4, height=32, width=32, sample_rate=8000))
    assert len(ds) == 5 and ds[2].config.seed == 102
    assert torch.equal(ds[2].frames, make_scene(ds.config, seed=102).frames)
    shards = [ds.shard(r, 2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(5)) and not set(shards[0]) & set(shards[1])
    small = ConcertConfig(duration=4.0, fps=2.0, height=18, width=32, sample_rate=8000)
    assert concert_dataset(3, base_seed=7, config=small)[1].config.seed == 8
    with pytest.raises(ValueError):
        shard_indices(4, rank=2, world_size=2)
