"""``python -m avlab``: the demo writes a playable mp4 with stereo audio; doctor reports the environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av

from avlab.cli import main


def test_demo_writes_scene_video_with_matching_stereo_audio(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--frames", "24", "--size", "64", "--fps", "12",
                 "--concert-seconds", "8", "--skip-lightcache"]) == 0
    with av.open(str(tmp_path / "scene.mp4")) as container:
        [video] = container.streams.video
        [audio] = container.streams.audio
        assert audio.codec_context.channels == 2
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(tmp_path / "scene.mp4")) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert frames == 24
    # AAC pads to whole 1024-sample frames: durations agree to one AAC frame
    assert abs(samples / audio.codec_context.sample_rate - 24 / 12) <= 1024 / audio.codec_context.sample_rate + 1e-9
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["synthetic scene"]["frames"] == 24
    labels = json.loads((tmp_path / "scene.json").read_text())
    assert labels["sentences"] and labels["config"]["fps"] == 12.0
    assert (tmp_path / "concert_program.mp4").is_file() and (tmp_path / "concert.json").is_file()


def test_module_entry_point_runs_doctor():
    result = subprocess.run([sys.executable, "-m", "avlab", "doctor"], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert "torch" in result.stdout and "codecs" in result.stdout and "ComfyUI" in result.stdout


def test_bad_demo_input_is_one_clear_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--fps", "0", "--skip-lightcache"]) == 1
    err = capsys.readouterr().err
    assert "fps" in err and "Traceback" not in err
