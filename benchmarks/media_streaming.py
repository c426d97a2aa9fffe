"""Foundation benchmark (issue "Foundation", item 3): long videos are streamed, never decoded whole.

A 60 s synthetic scene (with its stereo soundtrack) is written once; then, each in its own process:
decode the whole file into one tensor (baseline, what a naive loader does), stream a 5 s segment
from the middle with :class:`avlab.common.media.VideoReader`, and stream the whole file chunk by
chunk reducing each chunk (a per-frame statistic) without holding the video.

    python benchmarks/media_streaming.py [--seconds 60] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness import Config, ratio_table, run_all, write_results


def make_video(path: str, seconds: float, size: int, fps: float = 24.0) -> None:
    import torch

    from avlab.common import media
    from avlab.synthetic import SceneConfig, make_scene

    # 6 s scenes tiled in time: memory stays small while writing
    def frames():
        for i in range(int(round(seconds / 6))):
            scene = make_scene(SceneConfig(seed=i, frames=int(6 * fps), height=size, width=size, fps=fps))
            audio_chunks.append(scene.audio)
            yield scene.frames

    audio_chunks: list = []
    chunks = list(frames())
    media.write_video(path, chunks, fps, audio=torch.cat(audio_chunks, 1), sample_rate=44100)


def decode_whole(path: str) -> dict:
    """Baseline: every frame of the file in one float32 tensor."""
    import av
    import numpy as np
    import torch

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = torch.from_numpy(np.stack(frames)).float() / 255
    return {"frames_read": int(video.shape[0])}


def stream_segment(path: str, start: float, seconds: float) -> dict:
    from avlab.common.media import VideoReader

    n = 0
    with VideoReader(path) as reader:
        for chunk in reader.iter_frames(start=start, end=start + seconds):
            n += chunk.shape[0]
    return {"frames_read": n}


def stream_reduce_all(path: str) -> dict:
    from avlab.common.media import VideoReader

    n, total = 0, 0.0
    with VideoReader(path) as reader:
        for chunk in reader.iter_frames():
            n += chunk.shape[0]
            total += float(chunk.mean(dim=(1, 2, 3)).sum())
    return {"frames_read": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "long.mp4")
        make_video(path, args.seconds, args.size)
        target = "media_streaming"
        configs = [Config("decode whole file", f"{target}:decode_whole", {"path": path}),
                   Config("stream 5 s segment", f"{target}:stream_segment",
                          {"path": path, "start": args.seconds / 2, "seconds": 5.0}),
                   Config("stream whole file, chunked reduce", f"{target}:stream_reduce_all", {"path": path})]
        rows = run_all(configs, warmup=1, repeats=1)
    table = ratio_table(rows, "decode whole file", extra=("rss_at_start_mib", "frames_read"))
    out = write_results("media_streaming", "Streaming vs whole-file decoding",
                        [(f"{args.seconds:.0f} s, {args.size}x{args.size}, 24 fps, stereo AAC", table)],
                        f"python benchmarks/media_streaming.py --seconds {args.seconds:g} --size {args.size}")
    print(table)
    print(f"written {out}")


if __name__ == "__main__":
    main()
