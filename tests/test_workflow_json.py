"""CI tier: ComfyUI workflow files (``avlab.common.workflow_json``) and the shipped ``workflows/``.

Node definitions come from ``tests/data/object_info_workflows.json``: the ``/object_info`` entries a
real ComfyUI 0.3.64 with AVLab reported for the node types the workflows use, recorded by
``scripts/make_workflows.py``. A few edge cases no recorded node has (a flag-less ``seed``, an
explicit ``control_after_generate: false``, ``forceInput``, an audio upload combo) use small
hand-written definitions in the same format.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import uuid
from pathlib import Path

import pytest

from avlab.common.workflow_json import (ModelFile, Node, Note, WorkflowError, build_ui_workflow, input_specs,
                                        model_files, node_types, ui_to_api)

ROOT = Path(__file__).resolve().parents[1]
INFO = json.loads((ROOT / "tests" / "data" / "object_info_workflows.json").read_text())
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


def _make_workflows():
    spec = importlib.util.spec_from_file_location("avlab_make_workflows", ROOT / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SD = ModelFile("v1-5-pruned-emaonly-fp16.safetensors", "https://example.org/sd15.safetensors", "checkpoints")


def _txt2img(**sampler) -> dict[str, Node]:
    widgets = dict(seed=7, steps=12, cfg=5.5, sampler_name="dpmpp_2m", scheduler="karras", denoise=0.8)
    widgets.update(sampler)
    return {
        "ckpt": Node("CheckpointLoaderSimple", models={"ckpt_name": SD}),
        "pos": Node("CLIPTextEncode", widgets={"text": "a cat"}, links={"clip": ("ckpt", 1)}),
        "neg": Node("CLIPTextEncode", widgets={"text": "blurry"}, links={"clip": ("ckpt", 1)}),
        "latent": Node("EmptyLatentImage", widgets={"width": 256, "height": 128, "batch_size": 4}),
        "sample": Node("KSampler", widgets=widgets, links={"model": ("ckpt", 0), "positive": ("pos", 0),
                                                           "negative": ("neg", 0), "latent_image": ("latent", 0)}),
        "decode": Node("AVLabSlicedVAEDecode", links={"vae": ("ckpt", 2), "samples": ("sample", 0)}),
        "video": Node("CreateVideo", widgets={"fps": 12.0}, links={"images": ("decode", 0)}),
        "save": Node("SaveVideo", widgets={"filename_prefix": "t/x"}, links={"video": ("video", 0)}),
    }


def _by_type(workflow: dict, node_type: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == node_type]


# ------------------------------------------------------------------------------------------------
# build → API
# ------------------------------------------------------------------------------------------------

def test_build_then_ui_to_api_gives_every_widget_value_and_link():
    api = ui_to_api(build_ui_workflow(_txt2img(), INFO), INFO)
    assert {k: (v["class_type"], v["inputs"]) for k, v in api.items()} == {
        "1": ("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}),
        "2": ("CLIPTextEncode", {"text": "a cat", "clip": ["1", 1]}),
        "3": ("CLIPTextEncode", {"text": "blurry", "clip": ["1", 1]}),
        "4": ("EmptyLatentImage", {"width": 256, "height": 128, "batch_size": 4}),
        "5": ("KSampler", {"seed": 7, "steps": 12, "cfg": 5.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                           "denoise": 0.8, "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                           "latent_image": ["4", 0]}),
        "6": ("AVLabSlicedVAEDecode", {"frames_per_slice": 8, "overlap": 2, "vae": ["1", 2], "samples": ["5", 0]}),
        "7": ("CreateVideo", {"fps": 12.0, "images": ["6", 0]}),
        "8": ("SaveVideo", {"filename_prefix": "t/x", "format": "auto", "codec": "auto", "video": ["7", 0]}),
    }


def test_api_nodes_carry_the_title_the_editor_sends():
    nodes = _txt2img()
    nodes["pos"].title = "Prompt"
    api = ui_to_api(build_ui_workflow(nodes, INFO), INFO)
    assert api["2"]["_meta"] == {"title": "Prompt"}
    assert api["4"]["_meta"] == {"title": "Empty Latent Image"}  # the display name otherwise


def test_links_are_id_source_slot_target_input_index_type():
    wf = build_ui_workflow(_txt2img(), INFO)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(wf["links"]) == 10 and wf["last_link_id"] == 10
    assert [link[0] for link in wf["links"]] == list(range(1, 11))
    for link_id, src, slot, dst, dst_slot, typ in wf["links"]:
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert link_id in nodes[src]["outputs"][slot]["links"]
        assert nodes[src]["outputs"][slot]["type"] == typ
    ksampler = nodes[5]
    assert [i["name"] for i in ksampler["inputs"]] == ["model", "positive", "negative", "latent_image"]
    clip_links = nodes[1]["outputs"][1]["links"]
    assert len(clip_links) == 2  # one output feeding two nodes
    assert nodes[4]["outputs"][0]["slot_index"] == 0


def test_unlinked_outputs_have_null_links_and_output_nodes_no_outputs():
    nodes = {"img": Node("LoadImage", widgets={"image": "cat.png"}, free=("image",)),
             "show": Node("PreviewImage", links={"images": ("img", 0)})}
    wf = build_ui_workflow(nodes, INFO)
    assert wf["nodes"][0]["outputs"] == [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
                                         {"name": "MASK", "type": "MASK", "links": None, "slot_index": 1}]
    assert wf["nodes"][1]["outputs"] == []


def test_order_is_a_topological_execution_order():
    wf = build_ui_workflow(_txt2img(), INFO)
    order = {n["id"]: n["order"] for n in wf["nodes"]}
    assert sorted(order.values()) == list(range(len(order)))
    for _link_id, src, _slot, dst, _dst_slot, _typ in wf["links"]:
        assert order[src] < order[dst]


def test_seed_is_followed_by_its_control_after_generate_value():
    wf = build_ui_workflow(_txt2img(seed=123), INFO)
    assert _by_type(wf, "KSampler")[0]["widgets_values"] == [123, "fixed", 12, 5.5, "dpmpp_2m", "karras", 0.8]
    nodes = _txt2img()
    nodes["sample"].controls = {"seed": "randomize"}
    wf = build_ui_workflow(nodes, INFO)
    assert _by_type(wf, "KSampler")[0]["widgets_values"][:2] == [7, "randomize"]
    assert ui_to_api(wf, INFO)["5"]["inputs"]["steps"] == 12  # the control value is never sent


def test_control_value_must_be_one_the_editor_knows():
    nodes = _txt2img()
    nodes["sample"].controls = {"seed": "sometimes"}
    with pytest.raises(WorkflowError, match="seed"):
        build_ui_workflow(nodes, INFO)


# Hand-written definitions (same format as /object_info) for rules no recorded node exercises.
EDGE = {
    "EdgeSeeds": {
        "input": {"required": {
            "seed": ["INT", {"default": 3, "min": 0, "max": 100}],           # no flag: the name decides
            "noise_seed": ["INT", {"default": 4, "control_after_generate": False}],  # explicit no
            "strength": ["FLOAT", {"default": 0.5, "control_after_generate": True}],  # flag on a float
            "count": ["INT", {"default": 5, "forceInput": True}],             # a socket, not a widget
            "clip": ["COMBO", {"options": ["a.wav", "b.wav"], "audio_upload": True}],  # + player, button
        }},
        "input_order": {"required": ["seed", "noise_seed", "strength", "count", "clip"]},
        "output": ["INT"], "output_name": ["INT"], "name": "EdgeSeeds", "display_name": "Edge seeds",
    },
    "EdgeSource": {
        "input": {"required": {}}, "output": ["INT"], "output_name": ["value"], "name": "EdgeSource",
    },
}


def test_editor_widget_rules_for_seed_names_flags_force_input_and_audio_upload():
    nodes = {"src": Node("EdgeSource"), "edge": Node("EdgeSeeds", links={"count": ("src", 0)},
                                                        widgets={"clip": "b.wav"})}
    wf = build_ui_workflow(nodes, EDGE)
    edge = wf["nodes"][1]
    assert edge["widgets_values"] == [3, "fixed", 4, 0.5, "fixed", "b.wav", None, None]
    assert edge["inputs"] == [{"name": "count", "type": "INT", "link": 1}]  # forceInput: no "widget"
    assert ui_to_api(wf, EDGE)["2"]["inputs"] == {"seed": 3, "noise_seed": 4, "strength": 0.5, "clip": "b.wav",
                                                   "count": ["1", 0]}


def test_force_input_cannot_be_given_a_widget_value():
    with pytest.raises(WorkflowError, match="count"):
        build_ui_workflow({"edge": Node("EdgeSeeds", widgets={"count": 2})}, EDGE)


def test_linked_widget_is_listed_as_a_converted_input_and_keeps_its_value():
    nodes = {
        "scene": Node("AVLabSyntheticScene", widgets={"fps": 12.0}),
        "video": Node("CreateVideo", widgets={"fps": 12.0},
                      links={"images": ("scene", 0), "fps": ("scene", 3), "audio": ("scene", 2)}),
    }
    wf = build_ui_workflow(nodes, INFO)
    video = wf["nodes"][1]
    assert video["inputs"] == [
        {"name": "images", "type": "IMAGE", "link": 1},
        {"name": "fps", "type": "FLOAT", "widget": {"name": "fps"}, "link": 2},
        {"name": "audio", "shape": 7, "type": "AUDIO", "link": 3},
    ]
    assert video["widgets_values"] == [12.0]
    assert wf["links"][1] == [2, 1, 3, 2, 1, "FLOAT"]
    assert ui_to_api(wf, INFO)["2"]["inputs"] == {"fps": ["1", 3], "images": ["1", 0], "audio": ["1", 2]}


def test_unlinked_optional_socket_is_listed_with_the_hollow_shape():
    wf = build_ui_workflow(_txt2img(), INFO)
    video = _by_type(wf, "CreateVideo")[0]
    assert video["inputs"][1] == {"name": "audio", "shape": 7, "type": "AUDIO", "link": None}
    assert "audio" not in ui_to_api(wf, INFO)["7"]["inputs"]


def test_image_upload_combo_is_followed_by_the_upload_widget():
    wf = build_ui_workflow({"img": Node("LoadImage", widgets={"image": "cat.png"}, free=("image",))}, INFO)
    assert wf["nodes"][0]["widgets_values"] == ["cat.png", "image"]
    assert ui_to_api(wf, INFO)["1"]["inputs"] == {"image": "cat.png"}


def test_optional_widget_with_advanced_flag_is_serialised():
    wf = build_ui_workflow({"clip": Node("CLIPLoader", widgets={"clip_name": "t5.safetensors", "type": "wan"},
                                         free=("clip_name",))}, INFO)
    assert wf["nodes"][0]["widgets_values"] == ["t5.safetensors", "wan", "default"]


def test_model_files_set_the_widget_and_the_download_property():
    wf = build_ui_workflow(_txt2img(), INFO)
    ckpt = wf["nodes"][0]
    assert ckpt["widgets_values"] == [SD.name]
    assert ckpt["properties"] == {"Node name for S&R": "CheckpointLoaderSimple", "models": [SD.as_json()]}
    assert model_files(wf) == [SD.as_json()]


def test_notes_are_note_nodes_that_never_reach_the_api():
    notes = ["plain text", Note("# Title\nmarkdown", title="Read me", markdown=True)]
    wf = build_ui_workflow(_txt2img(), INFO, notes=notes)
    plain, md = _by_type(wf, "Note")[0], _by_type(wf, "MarkdownNote")[0]
    assert plain["widgets_values"] == ["plain text"] and md["widgets_values"] == ["# Title\nmarkdown"]
    assert md["title"] == "Read me" and plain["properties"] == {}
    assert {plain["id"], md["id"]} == {9, 10} and wf["last_node_id"] == 10
    assert set(ui_to_api(wf, INFO)) == {str(i) for i in range(1, 9)}


def test_workflow_id_is_a_stable_uuid():
    a = build_ui_workflow(_txt2img(), INFO, workflow_id="demo")
    b = build_ui_workflow(_txt2img(), INFO, workflow_id="demo")
    assert a == b and uuid.UUID(a["id"]).version == 5


def test_nodes_without_position_are_laid_out_left_to_right_by_depth():
    wf = build_ui_workflow(_txt2img(), INFO)
    x = {n["id"]: n["pos"][0] for n in wf["nodes"]}
    for _link_id, src, _slot, dst, _dst_slot, _typ in wf["links"]:
        assert x[src] < x[dst]


# ------------------------------------------------------------------------------------------------
# spec errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (lambda n: n.update(x=Node("NoSuchNode")), "unknown node type 'NoSuchNode'"),
    (lambda n: n["sample"].widgets.update(stepz=3), "no input named 'stepz'"),
    (lambda n: n["sample"].links.update(modle=("ckpt", 0)), "no input named 'modle'"),
    (lambda n: n["sample"].widgets.update(model="x"), "'model' is a MODEL socket"),
    (lambda n: n["sample"].widgets.update(steps=0), r"'steps' expected a value in \[1, 10000\]"),
    (lambda n: n["sample"].widgets.update(steps=2.5), "'steps' expected an integer"),
    (lambda n: n["sample"].widgets.update(sampler_name="eulr"), "'sampler_name' expected one of"),
    (lambda n: n["save"].widgets.update(format="avi"), "'format' expected one of"),
    (lambda n: n["latent"].widgets.update(width="256"), "'width' expected an integer"),
    (lambda n: n["sample"].links.update(positive=("latent", 0)), "'positive' \\(CONDITIONING\\) cannot take"),
    (lambda n: n["sample"].links.update(positive=("nowhere", 0)), "unknown node 'nowhere'"),
    (lambda n: n["sample"].links.update(positive=("pos", 3)), "output 3 of 'pos'"),
    (lambda n: n["sample"].links.pop("negative"), "required input 'negative'"),
    (lambda n: n["pos"].links.update(clip=("sample", 0)) or n["sample"].links.update(positive=("pos", 0)),
     "cannot take"),
])
def test_bad_specs_raise_errors_naming_node_and_input(change, match):
    nodes = _txt2img()
    change(nodes)
    with pytest.raises(WorkflowError, match=match):
        build_ui_workflow(nodes, INFO)


def test_a_cycle_is_an_error():
    nodes = {"a": Node("AVLabLightCache", links={"model": ("b", 0)}),
             "b": Node("AVLabLightCache", links={"model": ("a", 0)})}
    with pytest.raises(WorkflowError, match="cycle"):
        build_ui_workflow(nodes, INFO)


def test_widget_and_model_file_for_the_same_input_is_an_error():
    nodes = _txt2img()
    nodes["ckpt"].widgets = {"ckpt_name": "other.safetensors"}
    with pytest.raises(WorkflowError, match="ckpt_name"):
        build_ui_workflow(nodes, INFO)


# ------------------------------------------------------------------------------------------------
# UI → API: errors and the editor's special nodes
# ------------------------------------------------------------------------------------------------

def test_ui_to_api_rejects_an_unknown_node_type():
    wf = build_ui_workflow(_txt2img(), INFO)
    wf["nodes"][3]["type"] = "EmptyLatentImageXL"
    with pytest.raises(WorkflowError, match="node 4 .*unknown node type 'EmptyLatentImageXL'"):
        ui_to_api(wf, INFO)


def test_ui_to_api_rejects_widgets_values_of_another_node_version():
    wf = build_ui_workflow(_txt2img(), INFO)
    _by_type(wf, "KSampler")[0]["widgets_values"].pop(1)  # saved without the control value
    with pytest.raises(WorkflowError, match="node 5 \\(KSampler\\): widgets_values has 6 values.*expects 7"):
        ui_to_api(wf, INFO)


def test_overrides_by_type_and_by_id_replace_inputs():
    wf = build_ui_workflow(_txt2img(), INFO)
    api = ui_to_api(wf, INFO, overrides={"CLIPTextEncode": {"text": "x"}, "3": {"text": "y"},
                                         "KSampler": {"steps": 2, "positive": ["3", 0]}})
    assert api["2"]["inputs"]["text"] == "x" and api["3"]["inputs"]["text"] == "y"
    assert api["5"]["inputs"]["steps"] == 2 and api["5"]["inputs"]["positive"] == ["3", 0]


def test_override_of_an_unknown_input_or_absent_node_is_an_error():
    wf = build_ui_workflow(_txt2img(), INFO)
    with pytest.raises(WorkflowError, match="KSampler.*unknown input 'stepz'"):
        ui_to_api(wf, INFO, overrides={"KSampler": {"stepz": 2}})
    with pytest.raises(WorkflowError, match="UNETLoader"):
        ui_to_api(wf, INFO, overrides={"UNETLoader": {"unet_name": "x"}})


def _lightcache_chain() -> dict:
    nodes = _txt2img()
    nodes["lightcache"] = Node("AVLabLightCache", links={"model": ("ckpt", 0)})
    nodes["sample"].links["model"] = ("lightcache", 0)
    return build_ui_workflow(nodes, INFO)


def test_bypassed_node_passes_its_input_of_the_same_type_through():
    wf = _lightcache_chain()
    lightcache = _by_type(wf, "AVLabLightCache")[0]
    assert ui_to_api(wf, INFO)["5"]["inputs"]["model"] == [str(lightcache["id"]), 0]
    lightcache["mode"] = 4
    api = ui_to_api(wf, INFO)
    assert str(lightcache["id"]) not in api
    assert api["5"]["inputs"]["model"] == ["1", 0]


def test_muted_node_is_dropped_with_the_inputs_it_fed():
    wf = _lightcache_chain()
    lightcache = _by_type(wf, "AVLabLightCache")[0]
    lightcache["mode"] = 2
    api = ui_to_api(wf, INFO)
    assert str(lightcache["id"]) not in api and "model" not in api["5"]["inputs"]


def test_reroute_nodes_are_followed():
    wf = build_ui_workflow(_txt2img(), INFO)
    # editor-style reroute on the MODEL wire: ckpt -> reroute (id 50) -> KSampler
    model_link = next(link for link in wf["links"] if link[3] == 5 and link[4] == 0)
    wf["nodes"].append({"id": 50, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "flags": {}, "order": 0,
                        "mode": 0, "inputs": [{"name": "", "type": "*", "link": model_link[0]}],
                        "outputs": [{"name": "", "type": "MODEL", "links": [99]}], "properties": {}})
    model_link[3], model_link[4] = 50, 0
    wf["links"].append([99, 50, 0, 5, 0, "MODEL"])
    _by_type(wf, "KSampler")[0]["inputs"][0]["link"] = 99
    api = ui_to_api(wf, INFO)
    assert "50" not in api and api["5"]["inputs"]["model"] == ["1", 0]


def test_primitive_node_value_is_taken_from_the_target_widget():
    wf = build_ui_workflow(_txt2img(steps=9), INFO)
    wf["nodes"].append({"id": 60, "type": "PrimitiveNode", "pos": [0, 0], "size": [210, 82], "flags": {},
                        "order": 0, "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [70],
                                     "widget": {"name": "steps"}}],
                        "properties": {"Run widget replace on values": False}, "widgets_values": [9, "fixed"]})
    wf["links"].append([70, 60, 0, 5, 4, "INT"])
    _by_type(wf, "KSampler")[0]["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"},
                                                  "link": 70})
    api = ui_to_api(wf, INFO)
    assert "60" not in api and api["5"]["inputs"]["steps"] == 9


# ------------------------------------------------------------------------------------------------
# the shipped workflows
# ------------------------------------------------------------------------------------------------

def _check_editor_schema(wf: dict) -> None:
    """The fields and types the editor's workflow schema (version 0.4) requires."""
    assert wf["version"] == 0.4 and uuid.UUID(wf["id"])
    assert isinstance(wf["last_node_id"], int) and isinstance(wf["last_link_id"], int)
    ids = [n["id"] for n in wf["nodes"]]
    assert len(set(ids)) == len(ids) and max(ids) == wf["last_node_id"]
    for n in wf["nodes"]:
        assert isinstance(n["type"], str) and isinstance(n["order"], int) and n["mode"] in (0, 2, 4)
        for vec in (n["pos"], n["size"]):
            assert len(vec) == 2 and all(isinstance(v, (int, float)) for v in vec)
        assert isinstance(n["flags"], dict) and isinstance(n["properties"], dict)
        assert isinstance(n["widgets_values"], list)
        for slot in n["inputs"]:
            assert isinstance(slot["name"], str) and isinstance(slot["type"], str)
            assert slot["link"] is None or isinstance(slot["link"], int)
        for slot in n["outputs"]:
            assert isinstance(slot["name"], str) and isinstance(slot["type"], str)
            assert slot["links"] is None or all(isinstance(i, int) for i in slot["links"])
        for model in n["properties"].get("models", []):
            assert set(model) == {"name", "url", "directory"} and model["url"].startswith("https://")
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(link_ids)) == len(link_ids) and max(link_ids, default=0) == wf["last_link_id"]
    for link in wf["links"]:
        assert len(link) == 6 and all(isinstance(v, int) for v in link[:5]) and isinstance(link[5], str)


def test_workflows_directory_has_the_shipped_workflows():
    assert [p.name for p in WORKFLOWS] == ["concert_multicam_edit.json", "flowrvs_referring_segmentation.json",
                                           "flowrvs_synthetic_builtin.json", "foleygram_synthetic_builtin.json",
                                           "foleygram_video_to_audio.json",
                                           "gram_similarity.json",
                                           "gram_synthetic_builtin.json", "lightcache_animatediff_sd15.json",
                                           "lightcache_svd_img2vid.json", "lightcache_wan21_t2v.json",
                                           "synthetic_scene_preview.json"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_fits_the_editor_schema(path):
    _check_editor_schema(json.loads(path.read_text()))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_is_what_make_workflows_builds(path):
    make = _make_workflows()
    assert make.dumps(make.WORKFLOWS[path.name](INFO)) == path.read_text(), \
        "stale: run scripts/make_workflows.py --comfyui <ComfyUI> (it rewrites workflows/ and tests/data/)"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_converts_to_an_api_prompt_with_valid_values(path):
    wf = json.loads(path.read_text())
    api = ui_to_api(wf, INFO)
    assert set(api) == {str(n["id"]) for n in wf["nodes"] if n["type"] not in ("Note", "MarkdownNote")}
    # user files: an input image / video, and weights in a pack folder that ComfyUI cannot download
    free = {m["name"] for m in model_files(wf)} | {"example.png", "video.mp4", "FlowRVS_dit_mevis.pth", "tuned_vae.pth",
                                                   "model_step_150000.pt", "bert-base-uncased",
                                                   "foleygram_envelope_controlnet.safetensors"}
    for node in api.values():
        for spec in input_specs(INFO[node["class_type"]]):
            value = node["inputs"].get(spec.name)
            if spec.is_widget and not isinstance(value, list) and value not in free:
                if spec.combo_options is not None:
                    assert value in spec.combo_options, (node["class_type"], spec.name, value)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_note_names_every_weight_file_and_its_folder(path):
    wf = json.loads(path.read_text())
    text = "\n".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    assert text
    for model in model_files(wf):
        assert model["name"] in text and f"models/{model['directory']}/" in text and model["url"] in text


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_uses_avlab_nodes_and_saves_a_file(path):
    types = node_types(json.loads(path.read_text()))
    assert any(t.startswith("AVLab") for t in types) and {"SaveVideo", "SaveImage", "AVLabSaveVideoWithAudio"} & types


def _templates_dir() -> Path | None:
    spec = importlib.util.find_spec("comfyui_workflow_templates")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "templates"
    return path if path.is_dir() else None


@pytest.mark.parametrize("name", ["image_to_video.json", "text_to_video_wan.json"])
def test_editor_saved_core_templates_convert_without_shifting_widgets(name):
    """Workflows the real ComfyUI editor saved (ComfyUI's template package, read where installed)."""
    templates = _templates_dir()
    if templates is None or not (templates / name).is_file():
        pytest.skip("comfyui_workflow_templates (a ComfyUI requirement) is not installed")
    wf = json.loads((templates / name).read_text())
    before = copy.deepcopy(wf)
    api = ui_to_api(wf, INFO)
    assert wf == before  # conversion leaves its input alone
    ksampler = next(n for n in api.values() if n["class_type"] == "KSampler")
    assert isinstance(ksampler["inputs"]["seed"], int) and isinstance(ksampler["inputs"]["steps"], int)
    for node in api.values():
        for spec in input_specs(INFO[node["class_type"]]):
            value = node["inputs"].get(spec.name)
            if spec.is_widget and spec.type == "COMBO" and spec.combo_options and not isinstance(value, list) \
                    and spec.name not in ("ckpt_name", "unet_name", "clip_name", "vae_name", "image"):
                assert value in spec.combo_options, (node["class_type"], spec.name, value)
            if spec.type in ("INT", "FLOAT") and spec.is_widget and not isinstance(value, list):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (spec.name, value)
