"""FoleyGRAM part 1 nodes (category ``AVLab/FoleyGRAM``, papers.md §4; issue 9): GRAM encoders,
volume similarity and Stable Audio conditioning.

* ``AVLab GRAM Loader``: a GRAM checkpoint from ``models/avlab/gram`` (the official
  ``model_step_N.pt`` + a ``bert-base-uncased`` folder for its tokenizer, or the pack's
  ``.safetensors``), or the pack's built-in synthetic GRAM → ``AVLAB_GRAM``.
* ``AVLab GRAM Encode``: IMAGE + fps / STRING (one caption per line) / AUDIO, any subset →
  ``AVLAB_GRAM_EMBEDS`` (``{"video"|"text"|"audio": [N, 512] unit vectors, "labels": {...}}``).
* ``AVLab GRAM Similarity``: embeds × embeds → the volume matrix as a preview IMAGE + top-k STRING.
* ``AVLab GRAM Conditioning``: embeds + the GRAM→token projection (trained with the envelope
  ControlNet, ``models/avlab/controlnet``) → positive / negative CONDITIONING for ComfyUI's native
  Stable Audio model (cross-attention tokens + seconds_start / seconds_total), for the native KSampler.
"""

from __future__ import annotations

import logging
import os

import torch
from comfy_api.latest import io

from ..common.errors import NodeInputError
from ..foley.conditioning import load_projection
from ..foley.gram import gram_volume
from ..foley.preview import volume_heatmap
from ..foley.rms_mapper import BUILTIN_MAPPER as BUILTIN_MAPPER_PATH
from ..foley.weights import BUILTIN_GRAM
from . import paths

logger = logging.getLogger(__name__)

GRAM = io.Custom("AVLAB_GRAM")
EMBEDS = io.Custom("AVLAB_GRAM_EMBEDS")
LOADER, ENCODE, SIMILARITY, CONDITIONING = ("AVLab GRAM Loader", "AVLab GRAM Encode", "AVLab GRAM Similarity",
                                            "AVLab GRAM Conditioning")
BUILTIN = "AVLab built-in: synthetic tiny GRAM"
NO_TEXT_FOLDER = "none"
MODALITIES = ("video", "text", "audio")
CANDIDATES = ("text", "video", "audio", "video+audio")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _folder_files(folder: str) -> list[str]:
    import folder_paths

    if folder not in folder_paths.folder_names_and_paths:
        paths.register_model_folders()
    return folder_paths.get_filename_list(folder)


def _gram_files() -> list[str]:
    return ([BUILTIN] if BUILTIN_GRAM.is_file() else []) + [f for f in _folder_files(paths.GRAM)]


def _text_folders() -> list[str]:
    return [NO_TEXT_FOLDER] + paths.model_subfolders(paths.GRAM, "vocab.txt")


_HEADER_CACHE: dict[tuple, frozenset] = {}


def _metadata_keys(path: str) -> frozenset:
    """The metadata keys of a safetensors header, read once per file version (path, mtime, size): the
    three lists of the controlnet folder (projections, ControlNets, mappers) share one read."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _HEADER_CACHE:
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                _HEADER_CACHE[key] = frozenset(f.metadata() or {})
        except Exception:  # noqa: BLE001 - an unreadable file has no usable metadata
            _HEADER_CACHE[key] = frozenset()
    return _HEADER_CACHE[key]


def _files_with_metadata(folder: str, key: str) -> list[str]:
    """The ``.safetensors`` files of a model folder whose header metadata has ``key`` (headers only,
    cached: listing a folder of large ControlNets stays cheap)."""
    return [name for name in _folder_files(folder)
            if name.endswith(".safetensors") and key in _metadata_keys(paths.model_file(LOADER, folder, name))]


def _projection_files() -> list[str]:
    from ..foley.conditioning import META_KEY

    return _builtin_controlnet() + _files_with_metadata(paths.CONTROLNET, META_KEY)


def _dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class AVLabGramLoader(io.ComfyNode):
    """GRAM towers + projection heads as one handle."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabGramLoader", display_name=LOADER, category="AVLab/FoleyGRAM",
            description="Loads GRAM (video EVA-CLIP ViT-g/14, text BERT-base, audio BEATs, 512-d heads) from "
            "models/avlab/gram: the official GRAM checkpoint (model_step_N.pt) with a bert-base-uncased folder "
            "for its tokenizer, or an AVLab .safetensors. Nothing is downloaded.",
            inputs=[
                io.Combo.Input("gram_name", options=_gram_files(),
                               tooltip="GRAM weights in models/avlab/gram (official .pt or AVLab .safetensors), or "
                               "the pack's built-in synthetic model."),
                io.Combo.Input("text_folder", options=_text_folders(), default=NO_TEXT_FOLDER,
                               tooltip="A folder in models/avlab/gram holding bert-base-uncased's config.json + "
                               "vocab.txt (needed by the official .pt; AVLab files carry their tokenizer)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto = fp16 on CUDA, fp32 on CPU."),
            ],
            outputs=[GRAM.Output(display_name="gram", tooltip="GRAM towers + heads under ComfyUI's memory "
                                 "management (loaded on the GPU while encoding, offloaded when memory is needed).")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, gram_name, text_folder=NO_TEXT_FOLDER, precision="auto") -> io.NodeOutput:
        import comfy.model_management as mm

        from ..foley.weights import load_gram

        if precision not in PRECISIONS:
            raise NodeInputError(LOADER, "precision", f"one of {list(PRECISIONS)}", precision)
        if gram_name == BUILTIN:
            path = str(BUILTIN_GRAM)
        else:
            try:
                path = paths.model_file(LOADER, paths.GRAM, gram_name)
            except NodeInputError as exc:
                raise NodeInputError(LOADER, "gram_name", exc.expected) from None
        folder = None
        if text_folder and text_folder != NO_TEXT_FOLDER:
            folder = paths.model_subfolder(LOADER, paths.GRAM, text_folder)
        elif not path.endswith(".safetensors"):
            raise NodeInputError(LOADER, "text_folder", "a bert-base-uncased folder (config.json + vocab.txt) in "
                                 "models/avlab/gram: the official GRAM checkpoint has no tokenizer", text_folder)
        import comfy.model_patcher

        device, offload = mm.get_torch_device(), mm.unet_offload_device()
        try:
            model = load_gram(path, text_folder=folder, device=offload, dtype=_dtype(precision, device))
        except (ValueError, FileNotFoundError) as exc:
            raise NodeInputError(LOADER, "gram_name", f"GRAM weights this loader understands ({exc})",
                                 os.path.basename(path)) from None
        # ComfyUI's memory management owns the towers: loaded on the GPU when Encode runs, offloaded
        # (like any other model) when something else needs the memory.
        return io.NodeOutput(comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload))


def _check_video(node: str, images, fps) -> None:
    if images.dim() != 4 or images.shape[0] == 0:
        raise NodeInputError(node, "images", "video frames [T,H,W,3] with T ≥ 1", tuple(images.shape))
    if not (fps and fps > 0):
        raise NodeInputError(node, "fps", "the video's frame rate (> 0)", fps)


def _audio_items(audio: dict) -> list[tuple[torch.Tensor, int]]:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise NodeInputError(ENCODE, "audio", "an AUDIO ({'waveform': [B,C,S], 'sample_rate': sr})",
                             type(audio).__name__)
    wave, sr = audio["waveform"], audio["sample_rate"]
    if wave.dim() != 3 or wave.shape[0] == 0:
        raise NodeInputError(ENCODE, "audio", "a waveform [batch, channels, samples] with ≥ 1 clip", tuple(wave.shape))
    if wave.shape[-1] == 0:
        raise NodeInputError(ENCODE, "audio", "audio with at least one sample", "0 samples")
    if not (isinstance(sr, (int, float)) and sr > 0):
        raise NodeInputError(ENCODE, "audio", "a sample rate > 0", sr)
    return [(wave[i], int(sr)) for i in range(wave.shape[0])]


class AVLabGramEncode(io.ComfyNode):
    """Any subset of video / text / audio → GRAM embeddings."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabGramEncode", display_name=ENCODE, category="AVLab/FoleyGRAM",
            description="GRAM embeddings (512-d, unit length) of a video (frames sampled by time from its real fps), "
            "captions (one per line) and/or audio clips (each batch item one clip). Give at least one.",
            inputs=[
                GRAM.Input("gram", tooltip="GRAM from AVLab GRAM Loader."),
                io.Image.Input("images", optional=True, tooltip="Video frames [T,H,W,3] (one video)."),
                io.Float.Input("fps", default=24.0, min=0.0, max=240.0, step=0.001,
                               tooltip="The video's real frame rate (frames are sampled by time, not by index)."),
                io.String.Input("text", multiline=True, default="", optional=True,
                                tooltip="Captions, one per line; empty = no text."),
                io.Audio.Input("audio", optional=True, tooltip="Audio; each batch item is one clip (any rate, "
                               "resampled to 16 kHz mono)."),
            ],
            outputs=[EMBEDS.Output(display_name="embeds")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, gram, images=None, fps=24.0, text="", audio=None) -> io.NodeOutput:
        import comfy.model_management as mm

        mm.load_models_gpu([gram])          # the GRAM ModelPatcher from the loader
        gram = gram.model
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if images is None and audio is None and not lines:
            raise NodeInputError(ENCODE, "text", "a non-empty caption, or images or audio to encode",
                                 "empty text and no images or audio")
        embeds: dict = {"labels": {}}
        try:
            if images is not None:
                _check_video(ENCODE, images, fps)
                embeds["video"] = gram.embed_video(images, fps)[None].cpu()
                embeds["labels"]["video"] = [f"video ({images.shape[0]} frames)"]
            if lines:
                embeds["text"] = gram.embed_text(lines).cpu()
                embeds["labels"]["text"] = lines
            if audio is not None:
                items = _audio_items(audio)
                embeds["audio"] = torch.stack([gram.embed_audio(w, sr) for w, sr in items]).cpu()
                embeds["labels"]["audio"] = [f"audio {i}" for i in range(len(items))]
        except NodeInputError:
            raise
        except ValueError as exc:
            raise NodeInputError(ENCODE, "gram", f"inputs this GRAM model can encode ({exc})") from None
        return io.NodeOutput(embeds)


def _modality(embeds: dict, name: str, node: str, input_name: str) -> torch.Tensor:
    if not isinstance(embeds, dict) or name not in embeds:
        have = [m for m in MODALITIES if isinstance(embeds, dict) and m in embeds]
        raise NodeInputError(node, input_name, f"embeds holding {name} (connect it to AVLab GRAM Encode's {name})",
                             f"embeds with {have or 'nothing'}")
    return embeds[name]


class AVLabGramSimilarity(io.ComfyNode):
    """Volume matrix of queries × candidates, as a picture and a ranked list."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabGramSimilarity", display_name=SIMILARITY, category="AVLab/FoleyGRAM",
            description="Ranks candidates for each query by GRAM volume (smaller = better aligned): e.g. which caption "
            "fits a video, which sound fits it, or which (video, audio) pair fits a caption.",
            inputs=[
                EMBEDS.Input("queries", tooltip="Embeddings whose items are the queries (rows)."),
                io.Combo.Input("query_modality", options=list(MODALITIES), default="text",
                               tooltip="Which modality of the queries' embeds to rank for."),
                EMBEDS.Input("candidates", tooltip="Embeddings whose items are the candidates (columns); may be "
                             "the same embeds as the queries."),
                io.Combo.Input("candidate_modality", options=list(CANDIDATES), default="video",
                               tooltip="video+audio = the 3-way volume with each candidate's own video and audio."),
                io.Int.Input("top_k", default=3, min=1, max=100, tooltip="Candidates listed per query."),
            ],
            outputs=[io.Image.Output(display_name="preview"), io.String.Output(display_name="ranking"),
                     io.Int.Output(display_name="best_index", tooltip="Best candidate of the first query.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, queries, query_modality, candidates, candidate_modality, top_k=3) -> io.NodeOutput:
        q = _modality(queries, query_modality, SIMILARITY, "queries")
        names = candidate_modality.split("+")
        items = [_modality(candidates, n, SIMILARITY, "candidates") for n in names]
        for n, t in zip(names, items):
            if t.shape[-1] != q.shape[-1]:
                raise NodeInputError(SIMILARITY, "candidates", f"{q.shape[-1]}-d embeddings like the queries "
                                     "(both from the same GRAM model)", f"{n} of {t.shape[-1]} dimensions")
        if len({t.shape[0] for t in items}) > 1:
            raise NodeInputError(SIMILARITY, "candidates", "as many videos as audio clips for video+audio",
                                 [t.shape[0] for t in items])
        volume = gram_volume(q.float(), *(t.float() for t in items))
        qlab = queries["labels"].get(query_modality, [f"{query_modality} {i}" for i in range(q.shape[0])])
        clab = candidates["labels"].get(names[0], [f"{names[0]} {j}" for j in range(items[0].shape[0])])
        lines = []
        for i in range(volume.shape[0]):
            order = volume[i].argsort()[:top_k].tolist()
            lines.append(f"{qlab[i]}: " + ", ".join(f"#{j} {clab[j]} (volume {float(volume[i, j]):.3f})" for j in order))
        return io.NodeOutput(volume_heatmap(volume, qlab, clab), "\n".join(lines), int(volume[0].argmin()))


class AVLabGramConditioning(io.ComfyNode):
    """GRAM embeddings → native Stable Audio conditioning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabGramConditioning", display_name=CONDITIONING, category="AVLab/FoleyGRAM",
            description="Turns GRAM embeddings into Stable Audio Open cross-attention tokens (one Linear 512→768 "
            "token per modality: video, text, audio) plus seconds_start/seconds_total, for the native KSampler. "
            "The projection is trained with the FoleyGRAM envelope ControlNet (models/avlab/controlnet).",
            inputs=[
                EMBEDS.Input("embeds", tooltip="GRAM embeddings (AVLab GRAM Encode): one token per modality."),
                io.Combo.Input("projection", options=_projection_files(),
                               tooltip="A .safetensors in models/avlab/controlnet holding the GRAM→token projection."),
                io.Float.Input("seconds_start", default=0.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="Stable Audio's timing conditioning: where the clip starts (s)."),
                io.Float.Input("seconds_total", default=10.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="Stable Audio's timing conditioning: the length to generate (s); match "
                               "EmptyLatentAudio's seconds."),
                io.Int.Input("item", default=0, min=0, max=4096,
                             tooltip="Which caption / audio clip to use when the embeds hold several."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative", tooltip="Zero tokens (CFG's null input).")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, embeds, projection, seconds_start=0.0, seconds_total=10.0, item=0) -> io.NodeOutput:
        path = _controlnet_path(CONDITIONING, "projection", projection)
        try:
            proj = load_projection(path)
            present = {k: v for k, v in embeds.items() if k in MODALITIES}
            unused = [m for m in present if m not in proj.modalities]
            if unused and len(unused) < len(present):
                logger.warning("%s: the projection was trained on %s; the %s embedding(s) are not used", CONDITIONING,
                               list(proj.modalities), unused)
                present = {k: v for k, v in present.items() if k in proj.modalities}
            tokens = proj.tokens(present, item).detach().float().cpu()
        except ValueError as exc:
            raise NodeInputError(CONDITIONING, "embeds", f"embeddings matching the projection ({exc})") from None
        extra = {"seconds_start": float(seconds_start), "seconds_total": float(seconds_total)}
        return io.NodeOutput([[tokens, dict(extra)]], [[torch.zeros_like(tokens), dict(extra)]])


ENVELOPE = io.Custom("AVLAB_ENVELOPE")
AUDIO_ENVELOPE, VIDEO_ENVELOPE = "AVLab Audio Envelope", "AVLab Video Envelope"


def _envelope_outputs() -> list:
    return [ENVELOPE.Output(display_name="envelope", tooltip="Envelope values with their own rate (Hz)."),
            io.Image.Output(display_name="preview", tooltip="The envelope over time, onsets marked.")]


def _rate_input() -> io.Float.Input:
    return io.Float.Input("rate", default=round(44100 / 2048, 4), min=0.0, max=1000.0, step=0.0001,
                          tooltip="Envelope values per second; default = Stable Audio Open's latent rate "
                          "(44100 / 2048 ≈ 21.53 Hz). 0 = the source's own rate.")


class AVLabAudioEnvelope(io.ComfyNode):
    """AUDIO → loudness envelope (causal moving RMS) at a chosen rate."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabAudioEnvelope", display_name=AUDIO_ENVELOPE, category="AVLab/FoleyGRAM",
            description="The loudness envelope of a sound, as FoleyGRAM's timing control uses it (Stable-V2A): a "
            "causal moving RMS over ~0.23 s read at the chosen rate, lightly smoothed.",
            inputs=[
                io.Audio.Input("audio", tooltip="Any AUDIO; stereo is averaged; the first clip of a batch is used."),
                _rate_input(),
                io.Float.Input("window_s", default=0.23, min=0.001, max=5.0, step=0.001,
                               tooltip="RMS window in seconds (0.23 s ≈ 10240 samples at 44.1 kHz)."),
                io.Int.Input("smooth_frames", default=3, min=1, max=99,
                             tooltip="Centred Hann smoothing over this many envelope values (1 = none)."),
            ],
            outputs=_envelope_outputs(),
            is_experimental=True,
        )

    @classmethod
    def execute(cls, audio, rate, window_s=0.23, smooth_frames=3) -> io.NodeOutput:
        from ..foley.envelope import STABLE_AUDIO_RATE, rms_envelope
        from ..foley.metrics import onset_times
        from ..foley.preview import envelope_plot

        if not isinstance(audio, dict) or "waveform" not in audio:
            raise NodeInputError(AUDIO_ENVELOPE, "audio", "an AUDIO", type(audio).__name__)
        wave, sr = audio["waveform"], audio.get("sample_rate")
        if wave.dim() != 3 or wave.shape[0] == 0 or wave.shape[-1] == 0:
            raise NodeInputError(AUDIO_ENVELOPE, "audio", "audio with at least one sample", tuple(wave.shape))
        env = rms_envelope(wave[0].cpu(), int(sr), rate=rate or STABLE_AUDIO_RATE, window_s=window_s,
                           smooth_frames=smooth_frames)
        if float(env.values.abs().max()) == 0.0:
            logger.warning("%s: the audio is silent: the envelope is all zeros", AUDIO_ENVELOPE)
        return io.NodeOutput(env, envelope_plot(env.values, env.rate, onsets=onset_times(env)))


MOTION = "motion energy (no weights)"
BUILTIN_MAPPER = "AVLab built-in: synthetic RMS mapper"


def _mapper_files() -> list[str]:
    from ..foley.rms_mapper import META_KEY

    return _files_with_metadata(paths.CONTROLNET, META_KEY)


def _mapper_options() -> list[str]:
    return [MOTION] + ([BUILTIN_MAPPER] if BUILTIN_MAPPER_PATH.is_file() else []) + _mapper_files()


def _load_mapper(name: str):
    from ..foley.rms_mapper import RMSMapper

    if name == BUILTIN_MAPPER:
        path = str(BUILTIN_MAPPER_PATH)
    else:
        try:
            path = paths.model_file(VIDEO_ENVELOPE, paths.CONTROLNET, name)
        except NodeInputError as exc:
            raise NodeInputError(VIDEO_ENVELOPE, "mapper", exc.expected) from None
    try:
        return RMSMapper.load(path)
    except ValueError as exc:
        raise NodeInputError(VIDEO_ENVELOPE, "mapper", f"an AVLab RMS mapper file ({exc})", name) from None


class AVLabVideoEnvelope(io.ComfyNode):
    """IMAGE + fps → an envelope predicted from the picture (motion energy; no weights)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabVideoEnvelope", display_name=VIDEO_ENVELOPE, category="AVLab/FoleyGRAM",
            description="An envelope from the video itself, for when there is no reference sound: the motion energy "
            "(mean change between consecutive frames; no weights) or a trained RMS mapper (a small video network "
            "predicting the sound's loudness), peak 1, at the video's real fps, resampled to the chosen rate.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames [T,H,W,3]."),
                io.Float.Input("fps", default=24.0, min=0.0, max=240.0, step=0.001,
                               tooltip="The video's real frame rate."),
                _rate_input(),
                io.Combo.Input("mapper", options=_mapper_options(), default=MOTION, optional=True,
                               tooltip="How the envelope is read off the picture: motion energy (no weights), the "
                               "pack's RMS mapper trained on its synthetic scenes, or a mapper file in "
                               "models/avlab/controlnet."),
            ],
            outputs=_envelope_outputs() + [io.Float.Output(
                display_name="seconds", tooltip="The video's duration (frames / fps): wire it to EmptyLatentAudio "
                "and AVLab GRAM Conditioning's seconds_total so the sound is as long as the picture.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, images, fps, rate, mapper=None) -> io.NodeOutput:
        from ..foley.envelope import motion_envelope
        from ..foley.metrics import onset_times
        from ..foley.preview import envelope_plot

        _check_video(VIDEO_ENVELOPE, images, fps)
        if mapper in (None, MOTION):
            env = motion_envelope(images.cpu(), float(fps))
        else:
            env = _load_mapper(mapper).envelope(images.cpu(), float(fps))
        seconds = images.shape[0] / float(fps)
        if rate:
            env = env.resample(rate)
        return io.NodeOutput(env, envelope_plot(env.values, env.rate, onsets=onset_times(env)), seconds)


CONTROLNET = io.Custom("AVLAB_ENVELOPE_CONTROLNET")
CN_LOADER, CN_APPLY = "AVLab Envelope ControlNet Loader", "AVLab Envelope ControlNet Apply"


BUILTIN_CN = "AVLab built-in: synthetic tiny ControlNet (for AVLab Tiny Stable Audio)"


def _builtin_controlnet() -> list[str]:
    from ..foley.generator_train import BUILTIN_CONTROLNET

    return [BUILTIN_CN] if BUILTIN_CONTROLNET.is_file() else []


def _controlnet_path(node: str, input_name: str, name: str) -> str:
    """A file of models/avlab/controlnet, or the pack's built-in tiny ControlNet (+ projection)."""
    if name == BUILTIN_CN:
        from ..foley.generator_train import BUILTIN_CONTROLNET

        return str(BUILTIN_CONTROLNET)
    try:
        return paths.model_file(node, paths.CONTROLNET, name)
    except NodeInputError as exc:
        raise NodeInputError(node, input_name, exc.expected) from None


def _controlnet_files() -> list[str]:
    from ..foley.controlnet import META_KEY

    return _builtin_controlnet() + _files_with_metadata(paths.CONTROLNET, META_KEY)


class AVLabEnvelopeControlNetLoader(io.ComfyNode):
    """An envelope ControlNet file (its blocks are rebuilt on the model it is applied to)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabEnvelopeControlNetLoader", display_name=CN_LOADER, category="AVLab/FoleyGRAM",
            description="Loads a FoleyGRAM envelope ControlNet (.safetensors in models/avlab/controlnet): trained "
            "copies of the first 20% of Stable Audio's DiT blocks with zero-initialised 1x1 convs in and out.",
            inputs=[io.Combo.Input("controlnet_name", options=_controlnet_files(),
                                   tooltip="An AVLab envelope ControlNet in models/avlab/controlnet.")],
            outputs=[CONTROLNET.Output(display_name="controlnet")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, controlnet_name) -> io.NodeOutput:
        from ..foley.controlnet import read_controlnet_file

        path = _controlnet_path(CN_LOADER, "controlnet_name", controlnet_name)
        try:
            meta, _ = read_controlnet_file(path, tensors=False)   # Apply reads the weights, once
        except ValueError as exc:
            raise NodeInputError(CN_LOADER, "controlnet_name", f"an AVLab envelope ControlNet ({exc})") from None
        return io.NodeOutput({"path": path, "meta": meta})


class AVLabEnvelopeControlNetApply(io.ComfyNode):
    """MODEL + ControlNet + envelope → MODEL whose first DiT blocks receive the ControlNet residuals."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabEnvelopeControlNetApply", display_name=CN_APPLY, category="AVLab/FoleyGRAM",
            description="Puts FoleyGRAM's timing control on ComfyUI's native Stable Audio model: the ControlNet reads "
            "the envelope and adds a residual before each of the DiT's first blocks (patches_replace, chained with "
            "other patches such as AVLab LightCache). The input model is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="Stable Audio Open (ComfyUI's checkpoint loader)."),
                CONTROLNET.Input("controlnet", tooltip="From AVLab Envelope ControlNet Loader."),
                ENVELOPE.Input("envelope", tooltip="AVLab Audio Envelope or AVLab Video Envelope; resampled to the "
                               "latent's frames when its rate or length differs."),
                io.Float.Input("strength", default=1.0, min=0.0, max=5.0, step=0.01,
                               tooltip="Scale of the ControlNet residuals (0 = the base model)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control stops."),
            ],
            outputs=[io.Model.Output(display_name="model")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model, controlnet, envelope, strength=1.0, start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        from ..foley.controlnet import controlnet_for_base
        from ..foley.controlnet_glue import apply_envelope_controlnet, stable_audio_parts

        if start_percent > end_percent:
            raise NodeInputError(CN_APPLY, "end_percent", f"a value ≥ start_percent ({start_percent})", end_percent)
        try:
            _, transformer = stable_audio_parts(model)
        except ValueError as exc:
            raise NodeInputError(CN_APPLY, "model", f"a Stable Audio model ({exc})") from None
        try:
            net = controlnet_for_base(controlnet["path"], transformer.layers, int(transformer.dim))
        except ValueError as exc:
            raise NodeInputError(CN_APPLY, "controlnet", f"a ControlNet made for this model ({exc})") from None
        if float(envelope.values.abs().max()) == 0.0:
            logger.warning("%s: the envelope is all zeros (silent audio or a still video)", CN_APPLY)
        return io.NodeOutput(apply_envelope_controlnet(model, net, envelope, strength, start_percent, end_percent))


TINY_STABLE_AUDIO = "AVLab Tiny Stable Audio (built-in)"


def build_tiny_stable_audio(base_path, vae_path):
    """ComfyUI's own ``StableAudio1`` (→ ``AudioDiffusionTransformer``) and audio ``VAE`` with the
    pack's tiny trained weights, built in process: ComfyUI detects Stable Audio only at full size. The
    files are the stable-audio-tools single-file layout and ComfyUI's Oobleck keys, so nothing is
    converted; only the widths come from the files' metadata."""
    import functools
    import json

    import comfy.ldm.audio.autoencoder as autoencoder
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    from safetensors import safe_open

    from ..foley.generator_train import BASE_META
    from ..foley.oobleck import META_KEY as VAE_META, OobleckConfig
    from ..foley.stable_audio import StableAudioDiTConfig

    def read(path):                              # tensors (fp32) and header metadata, one read per file
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k).float() for k in f.keys()}, f.metadata() or {}

    sd, meta = read(base_path)
    dit_cfg = StableAudioDiTConfig.from_dict(json.loads(meta[BASE_META])["dit"])
    config = comfy.supported_models.StableAudio(dit_cfg.comfy_unet_config())
    config.set_inference_dtype(torch.float32, None)

    def seconds(name):
        prefix = f"conditioner.conditioners.{name}."
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    model = comfy.model_base.StableAudio1(config, seconds_start_embedder_weights=seconds("seconds_start"),
                                          seconds_total_embedder_weights=seconds("seconds_total"),
                                          device=torch.device("cpu"))
    prefix = "model.diffusion_model."
    model.diffusion_model.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    vae_sd, vae_meta = read(vae_path)
    vae_cfg = OobleckConfig.from_dict(json.loads(vae_meta[VAE_META]))
    small = functools.partial(autoencoder.AudioOobleckVAE, in_channels=vae_cfg.in_channels, channels=vae_cfg.channels,
                              latent_dim=vae_cfg.latent_dim, c_mults=list(vae_cfg.c_mults), strides=list(vae_cfg.strides),
                              use_snake=vae_cfg.use_snake)
    marker = "decoder.layers.1.layers.0.beta"     # how comfy.sd.VAE recognises an audio VAE (a Snake parameter)
    if marker not in vae_sd:                      # an ELU Oobleck has none: ComfyUI logs this one key as unused
        vae_sd[marker] = torch.zeros(1)
    original = comfy.sd.AudioOobleckVAE
    comfy.sd.AudioOobleckVAE = small          # only while this VAE is built (restored even on errors)
    try:
        vae = comfy.sd.VAE(sd=vae_sd)
    finally:
        comfy.sd.AudioOobleckVAE = original
    return patcher, vae


class AVLabTinyStableAudio(io.ComfyNode):
    """The pack's tiny Stable-Audio-family generator (synthetic domain) as native MODEL + VAE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabTinyStableAudio", display_name=TINY_STABLE_AUDIO, category="AVLab/FoleyGRAM",
            description="A tiny Stable Audio Open (ComfyUI's own DiT and Oobleck VAE classes, 64-channel latents at "
            "44100/2048 Hz) trained by AVLab on its synthetic Foley domain (impacts, friction, whooshes of coloured "
            "objects), with its envelope ControlNet ('AVLab built-in' in the ControlNet loader): try FoleyGRAM "
            "workflows without downloading Stable Audio Open. For real videos use Stable Audio Open.",
            inputs=[],
            outputs=[io.Model.Output(display_name="model"), io.Vae.Output(display_name="vae")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from ..foley.generator_train import BUILTIN_AUDIO_AE, BUILTIN_BASE

        missing = [p.name for p in (BUILTIN_BASE, BUILTIN_AUDIO_AE) if not p.is_file()]
        if missing:
            raise NodeInputError(TINY_STABLE_AUDIO, "weights", f"the pack's files {missing} in {BUILTIN_BASE.parent} "
                                 "(reinstall the pack, or run scripts/train_foley_generator.py)")
        return io.NodeOutput(*build_tiny_stable_audio(BUILTIN_BASE, BUILTIN_AUDIO_AE))


NODES = [AVLabGramLoader, AVLabGramEncode, AVLabGramSimilarity, AVLabGramConditioning, AVLabAudioEnvelope,
         AVLabVideoEnvelope, AVLabEnvelopeControlNetLoader, AVLabEnvelopeControlNetApply, AVLabTinyStableAudio]
