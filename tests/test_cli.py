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


def test_doctor_exits_nonzero_and_names_a_missing_codec(monkeypatch, capsys):
    real = av.codec.Codec

    def no_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", no_x264)
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert "libx264:w MISSING" in captured.out
    assert "MISSING (required): codec libx264 (encoder)" in captured.err


def test_doctor_exits_nonzero_when_a_required_module_is_missing(monkeypatch, capsys):
    import avlab.cli as cli

    monkeypatch.setattr(cli, "REQUIRED_MODULES", (*cli.REQUIRED_MODULES, "avlab_no_such_module"))
    assert main(["doctor"]) == 1
    assert "avlab_no_such_module" in capsys.readouterr().err


def test_bad_option_is_reported_under_the_flag_the_user_typed(tmp_path, capsys):
    assert main(["scene", "--out", str(tmp_path), "--size", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("avlab scene: option --size expected"), err
    assert "SceneConfig" not in err and "'height'" not in err and err.endswith("got 0")


def test_help_is_plain_text_and_every_option_has_help(capsys):
    import pytest

    from avlab.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "demo" in top and "doctor" in top
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        for action in sp._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
