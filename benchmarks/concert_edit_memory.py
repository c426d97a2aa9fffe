"""Concert edit memory (issue "Concert cutting", done-means): ``python -m avlab concert edit`` on three
10-minute camera files must stay under 2 GB of peak memory.

The three cameras are synthetic concerts (``avlab.synthetic.make_concert``) of ``--piece`` seconds
with different seeds, concatenated in time: each piece is rendered, its three views are handed to
three writer threads (one streamed ``media.write_video`` per camera, fed through small queues) and
its music is appended to the master wav, so neither the writer nor the edit ever sees a whole file.
Then the edit runs, each time in a fresh process:

* through the harness (``harness.run_isolated``: peak RSS of the edit call itself, ``VmHWM`` reset
  after the imports), and
* as the real command line ``python -m avlab concert edit ...`` in a subprocess (peak RSS of the
  whole process, imports included: the child's ``VmHWM``, polled).

    python benchmarks/concert_edit_memory.py [--minutes 10] [--fps 25] [--width 320 --height 180]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

from harness import Config, _import_avlab, _status_kib, run_isolated, write_results

LIMIT_MIB = 2048


def make_cameras(folder: Path, minutes: float, fps: float, width: int, height: int, piece: float) -> list[str]:
    """Write ``cam1..cam3.mp4`` and ``master.wav`` piece by piece (module docstring)."""
    _import_avlab()
    import torch

    from avlab.common import media
    from avlab.synthetic import ConcertConfig, make_concert

    torch.set_num_threads(1)
    paths = [folder / f"cam{k + 1}.mp4" for k in range(3)]
    queues: list[queue.Queue] = [queue.Queue(maxsize=2) for _ in paths]
    errors: list[BaseException] = []

    def writer(path: Path, q: queue.Queue) -> None:
        def chunks():
            while (item := q.get()) is not None:
                yield item
        try:
            media.write_video(path, chunks(), fps, preset="veryfast", crf=23)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            while q.get() is not None:
                pass

    threads = [threading.Thread(target=writer, args=(p, q), daemon=True) for p, q in zip(paths, queues)]
    for t in threads:
        t.start()
    n_pieces = max(1, round(minutes * 60 / piece))
    with wave.open(str(folder / "master.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        for i in range(n_pieces):
            c = make_concert(ConcertConfig(seed=1000 + i, num_cameras=3, duration=piece, fps=fps, height=height,
                                           width=width, sample_rate=16000))
            for k, q in enumerate(queues):
                for a in range(0, c.views.shape[1], 50):
                    q.put(c.views[k, a:a + 50].clone())
            wav.writeframes((c.audio[0].clamp(-1, 1).numpy() * 32767).astype("<i2").tobytes())
            del c
            print(f"[bench] piece {i + 1}/{n_pieces}", file=sys.stderr, flush=True)
            if errors:
                raise errors[0]
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [str(p) for p in paths]


def edit(cameras: list[str], audio: str, out: str) -> dict:
    """The measured call: the CLI's ``concert edit`` in this process."""
    from avlab.cli import main

    code = main(["concert", "edit", *cameras, "--audio", audio, "--out", out, "--otio"])
    if code != 0:
        raise RuntimeError(f"concert edit exited {code}")
    report = json.loads(Path(out).with_suffix(".json").read_text())
    return {"shots": len(report["shots"])}


def _vm_hwm_mib(pid: int) -> float | None:
    """The child's own peak RSS so far (None once it has exited)."""
    try:
        return _status_kib("VmHWM", pid) / 1024
    except (OSError, KeyError):
        return None


def cli_subprocess(cameras: list[str], audio: str, out: str) -> dict:
    """``python -m avlab concert edit`` in a child process: wall time and whole-process peak RSS.

    The peak is the child's own ``VmHWM`` (polled every 50 ms until it exits). ``ru_maxrss`` of a
    child would not do: Linux carries the parent's RSS at ``fork`` into the child's maximum."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "avlab", "concert", "edit", *cameras, "--audio", audio, "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm_mib(proc.pid) or 0.0)
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    return {"name": "python -m avlab concert edit (whole process)", "seconds": seconds, "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--piece", type=float, default=12.0, help="seconds per synthetic concert piece")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        cameras = make_cameras(folder, args.minutes, args.fps, args.width, args.height, args.piece)
        made = time.perf_counter() - t0
        audio = str(folder / "master.wav")
        rows = [run_isolated(Config("concert edit (harness: the edit call)", "concert_edit_memory:edit",
                                    {"cameras": cameras, "audio": audio, "out": str(folder / "edit.mp4")}),
                             warmup=0, repeats=1)]
        rows.append(cli_subprocess(cameras, audio, str(folder / "edit_cli.mp4")))
        _import_avlab()
        from avlab.common import media

        info = media.probe_video(folder / "edit_cli.mp4")
        sizes = [round(Path(c).stat().st_size / 2**20, 1) for c in cameras]
    lines = ["| run | seconds | peak RSS (MiB) | under 2 GiB |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{'yes' if r['peak_rss_mib'] < LIMIT_MIB else 'NO'} |")
    table = "\n".join(lines)
    setup = (f"Three {args.minutes:g}-minute synthetic camera files ({args.width}x{args.height}, {args.fps:g} fps, "
             f"h264; {', '.join(map(str, sizes))} MiB) + a 16 kHz mono master wav, written piece by piece "
             f"({args.piece:g} s concerts) in {made:.0f} s. Output: {info.num_frames} frames, "
             f"{info.duration:.1f} s, audio {'yes' if info.has_audio else 'no'}. Shots: {rows[0].get('shots')}. "
             f"The harness row's RSS at the start of the call (interpreter + torch): "
             f"{rows[0]['rss_at_start_mib']:.0f} MiB.")
    out = write_results("concert_edit_memory", "Concert edit: peak memory on three 10-minute cameras",
                        [("Setup", setup), ("Peak memory", table)],
                        f"python benchmarks/concert_edit_memory.py --minutes {args.minutes:g} --fps {args.fps:g} "
                        f"--width {args.width} --height {args.height}")
    print(setup)
    print(table)
    print(f"written {out}")


if __name__ == "__main__":
    main()
