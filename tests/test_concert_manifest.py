"""Training the when-to-cut model on a pseudo-label manifest of edited concert videos (papers.md §3)."""

from __future__ import annotations

import json

import pytest
import torch

from avlab.common import media
from avlab.common.errors import NodeInputError
from avlab.concert_edit import pseudolabels
from avlab.concert_edit import train as T
from avlab.synthetic import ConcertConfig, make_concert

TINY_WHEN = dict(conv_channels=2, conv_blocks=1, d_model=16, swiglu_hidden=16, heads=2, layers=1, ff=16, time_pool=8)


class _InBetween(pseudolabels.HistogramEncoder):
    """Every candidate's similarity falls between the thresholds: the verifier decides them all."""

    def calibrate(self, cos):
        return torch.full_like(cos, 0.88)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("manifest")
    videos = []
    for seed in (1, 2, 3):
        c = make_concert(ConcertConfig(seed=seed, duration=16.0, fps=10.0, width=64, height=36, num_cameras=3,
                                       min_phrase=3.0, max_phrase=6.0))
        videos.append(d / f"program_{seed}.mp4")
        media.write_video(videos[-1], c.program(), c.fps, audio=c.audio, sample_rate=c.sample_rate)
    calls = []

    def verifier(before, after):             # every third candidate stays ambiguous (label null)
        calls.append(1)
        return None if len(calls) % 3 == 1 else True

    m = pseudolabels.label_videos(videos, detectors=("content",), encoder=_InBetween(), verifier=verifier)
    for v in m["videos"]:                     # paths relative to the manifest's folder
        v["path"] = v["path"].rsplit("/", 1)[-1]
    path = pseudolabels.write_manifest(m, d / "labels.json")
    assert m["totals"]["excluded"] > 0 and m["totals"]["positive"] > 0
    return path, m


def _config(path, **data):
    return {"data": {"manifest": str(path), "val_fraction": 0.34, "frame_side": 32, "chunk_size": 7, **data},
            "model": TINY_WHEN, "train": {"log_every": 0}}


def test_when_model_trains_on_a_manifest_and_keeps_null_segments_out(tmp_path, manifest):
    path, m = manifest
    res = T.train_from_config("concert-when", {**_config(path), "variant": "multimodal"}, tmp_path / "run", steps=3)
    out = tmp_path / "run"
    assert (out / "when_multimodal.safetensors").is_file() and (out / "when_multimodal_eval.md").is_file()
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    counts = res["manifest"]
    assert len(counts["train"]["videos"]) == 2 and len(counts["val"]["videos"]) == 1 and "test" not in counts
    by_path = {v["path"]: v["counts"] for v in m["videos"]}
    for split in ("train", "val"):            # the manifest's null segments are exactly the excluded ones
        c = counts[split]
        assert c["segments_excluded"] == sum(by_path[p]["excluded"] for p in c["videos"])
        assert c["segments"] == sum(by_path[p]["positive"] + by_path[p]["negative"] for p in c["videos"])
    assert counts["train"]["windows_excluded"] > 0
    assert "test" not in res["when"]["model"] and 0 <= res["when"]["model"]["val"]["f1"] <= 1

    # the split is deterministic and does not depend on the manifest's order
    videos, _ = T.read_manifest(path)
    assert T.split_manifest(videos, 0.34) == T.split_manifest(videos[::-1], 0.34)

    # excluded windows never reach a training batch
    feats = [T.video_features(v, path.parent, T.ManifestDataConfig(str(path)), images=False) for v in videos]
    table = T.window_table(feats)
    kept = T.valid_windows(table)
    assert len(kept["label"]) == int(table["mask"].sum()) < len(table["label"])
    for c, lf in zip(kept["concert"].tolist(), kept["last_frame"].tolist()):
        first = lf - round(4.0 * feats[c].fps) + 1
        if not any(first < f <= lf for f in feats[c].cut_frames):
            assert not any(first < a <= lf for a in feats[c].ambiguous_frames)


def test_audio_variant_with_a_test_manifest(tmp_path, manifest):
    path, _ = manifest
    res = T.train_from_config("concert-when", _config(path, test_manifest=str(path)), tmp_path / "run", steps=2)
    assert (tmp_path / "run" / "when_audio.safetensors").is_file()
    assert "test" in res["when"]["model"] and len(res["manifest"]["test"]["videos"]) == 3


def test_bad_manifests_name_the_config_key(tmp_path, manifest):
    path, m = manifest
    with pytest.raises(NodeInputError, match=r"'data\.manifest'.*no file"):
        T.train_from_config("concert-when", _config(tmp_path / "nowhere.json"), tmp_path / "a")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NodeInputError, match=r"'data\.manifest'"):
        T.train_from_config("concert-when", _config(bad), tmp_path / "a")
    bad.write_text(json.dumps({**m, "format": "something else"}))
    with pytest.raises(NodeInputError, match=r"'data\.manifest'.*format"):
        T.train_from_config("concert-when", _config(bad), tmp_path / "a")
    others = [{**v, "path": str(path.parent / v["path"])} for v in m["videos"][1:]]
    bad.write_text(json.dumps({**m, "videos": [{**m["videos"][0], "path": "gone.mp4"}, *others]}))
    with pytest.raises(NodeInputError, match=r"'data\.manifest'.*gone\.mp4"):
        T.train_from_config("concert-when", _config(bad), tmp_path / "a")
    with pytest.raises(NodeInputError, match=r"'data\.val_fraction'"):
        T.train_from_config("concert-when", _config(path, val_fraction=1.5), tmp_path / "a")
    with pytest.raises(NodeInputError, match=r"'data\.manifest'.*camera identities"):
        T.train_from_config("concert-how", _config(path), tmp_path / "a")
