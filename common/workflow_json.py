"""ComfyUI workflow files: build UI-format graphs from a compact spec, convert UI → API prompts.

AVLab ships workflows in ``workflows/`` in the *UI* format (what the ComfyUI editor saves and
opens). They are generated from compact Python specs by ``scripts/make_workflows.py`` using the
node definitions a running ComfyUI reports at ``/object_info``, so the widget order always matches
the host. The host test tier converts them back to the *API* format and runs them through
``POST /prompt``, which proves every shipped workflow loads and executes.

The format follows what ComfyUI's front end (1.2x) writes:

* ``nodes[]``: ``id, type, pos, size, flags, order, mode, inputs, outputs, properties,
  widgets_values`` (+ ``title``, ``color``, ``bgcolor``). ``inputs`` lists the socket inputs and
  those widget inputs that are linked ("converted widgets", with ``"widget": {"name"}``), in the
  node definition's order; optional sockets carry ``"shape": 7``. ``widgets_values`` holds every
  widget's value in definition order, linked or not, plus the front end's extra widgets: a
  "control after generate" value after inputs flagged ``control_after_generate`` (or, without the
  flag, INT inputs named ``seed``/``noise_seed``), ``"image"`` after an image/video upload combo,
  two ``null`` after an audio upload combo. Loader nodes may list their official weight files in
  ``properties.models`` (``name, url, directory``): the editor offers them for download.
* ``links[]``: ``[id, from_node, from_slot, to_node, to_slot, type]`` where ``to_slot`` indexes the
  target's ``inputs`` list.
* ``last_node_id, last_link_id, groups, config, extra, version`` (0.4).

Pure JSON manipulation: no ComfyUI import.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

#: Input types that become widgets (unless ``forceInput``); a list type is a legacy COMBO.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: The front end adds a "control after generate" widget to INT inputs with these names when the
#: definition does not say ``control_after_generate`` either way.
SEED_NAMES = frozenset({"seed", "noise_seed"})
#: Values of the "control after generate" widget.
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
#: Editor-only node types: never sent to the server.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
#: Node modes: 0 always, 2 never (muted), 4 bypass.
MODE_NEVER, MODE_BYPASS = 2, 4
#: Slot shape the editor gives optional sockets (LiteGraph ``HollowCircle``).
OPTIONAL_SHAPE = 7

_NOTE_COLOR, _NOTE_BGCOLOR = "#432", "#653"


class WorkflowError(ValueError):
    """A workflow spec or file does not fit the host's node definitions (message names node and input)."""


@dataclass(frozen=True)
class ModelFile:
    """An official weight file a loader widget names (written to ``properties.models``).

    Args:
        name: file name as the loader lists it (``"wan_2.1_vae.safetensors"``).
        url: official download address.
        directory: ComfyUI model folder it goes into (``"vae"``, ``"checkpoints"``...).
    """

    name: str
    url: str
    directory: str

    def as_json(self) -> dict:
        return {"name": self.name, "url": self.url, "directory": self.directory}


@dataclass
class Node:
    """One node of a compact workflow spec.

    Args:
        type: the node class id (``"KSampler"``, ``"AVLabLightCache"``...).
        widgets: widget input values by name (missing ones take the host default).
        links: inputs by name → ``(source_node_key, output_index)``; a widget input may be linked
            too (the editor shows it as a converted widget).
        title: optional title shown in the editor.
        pos: editor position ``(x, y)``; default: laid out by graph depth.
        size: editor size ``(w, h)``; default: estimated from the slots and widgets.
        models: loader widgets → the official :class:`ModelFile` they name. Sets the widget value
            and ``properties.models``; the value need not be one of the host's files.
        free: other COMBO widgets whose value need not be among the host's options (user files
            such as a ``LoadImage`` image).
        controls: "control after generate" values by input name (default ``"fixed"``).
        color, bgcolor: optional editor colours.
    """

    type: str
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, int]] = field(default_factory=dict)
    title: str | None = None
    pos: tuple[float, float] | None = None
    size: tuple[float, float] | None = None
    models: dict[str, ModelFile] = field(default_factory=dict)
    free: tuple[str, ...] = ()
    controls: dict[str, str] = field(default_factory=dict)
    color: str | None = None
    bgcolor: str | None = None


@dataclass
class Note:
    """A ``Note`` (plain text) or ``MarkdownNote`` node of the editor (never executed)."""

    text: str
    title: str | None = None
    pos: tuple[float, float] | None = None
    size: tuple[float, float] = (440.0, 260.0)
    markdown: bool = False


# ------------------------------------------------------------------------------------------------
# node definitions (/object_info entries)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node type, as the editor sees it."""

    name: str
    type: str  # "COMBO" for legacy list types
    options: dict
    optional: bool
    combo_options: tuple | None  # the allowed values of a COMBO, if known

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """Whether the editor adds a "control after generate" widget after this one."""
        flag = self.options.get("control_after_generate")
        if flag is not None:
            return bool(flag)
        return self.type == "INT" and self.name in SEED_NAMES

    def helper_values(self, control: str = "fixed") -> list:
        """Serialised values of the editor's helper widgets that follow this widget."""
        extra: list = [control] if self.is_widget and self.has_control else []
        if self.options.get("image_upload") or self.options.get("video_upload") \
                or self.options.get("animated_image_upload"):
            extra.append("image")  # the upload button serialises as "image"
        elif self.options.get("audio_upload"):
            extra.extend([None, None])  # audio player + upload button
        return extra


def _node_info(object_info: dict, node_type: str, where: str) -> dict:
    try:
        return object_info[node_type]
    except KeyError:
        raise WorkflowError(f"{where}: unknown node type {node_type!r} (the host does not define it; "
                            f"is its node pack installed?)") from None


def input_specs(info: dict) -> list[InputSpec]:
    """Declared inputs of one ``/object_info`` entry in definition order (required, then optional)."""
    out = []
    order = info.get("input_order") or {}
    declared_all = info.get("input") or {}
    for section, optional in (("required", False), ("optional", True)):
        declared = declared_all.get(section) or {}
        for name in order.get(section) or list(declared):
            spec = declared[name]
            raw = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(raw, list):  # legacy COMBO: the list of options itself
                typ, choices = "COMBO", tuple(raw)
            else:
                typ = raw
                choices = tuple(opts["options"]) if typ == "COMBO" and "options" in opts else None
            out.append(InputSpec(name, typ, opts, optional, choices))
    return out


def output_types(info: dict) -> list[str]:
    return ["COMBO" if isinstance(t, list) else t for t in info.get("output") or []]


def types_match(out_type: str, in_type: str) -> bool:
    """ComfyUI's socket compatibility: equal, ``*`` on either side, or overlapping ``A,B`` lists."""
    if out_type == in_type or "*" in (out_type, in_type):
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


def _default(spec: InputSpec) -> Any:
    if "default" in spec.options:
        return spec.options["default"]
    if spec.type == "COMBO":
        return spec.combo_options[0] if spec.combo_options else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type)


def _check_value(where: str, spec: InputSpec, value: Any, free: bool) -> None:
    """Raise :class:`WorkflowError` unless ``value`` fits the widget's definition."""
    def bad(expected: str):
        raise WorkflowError(f"{where}: input {spec.name!r} expected {expected}, got {value!r}")

    opts = spec.options
    if spec.type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (spec.type == "INT" and not isinstance(value, int)):
            bad("an integer" if spec.type == "INT" else "a number")
        lo, hi = opts.get("min"), opts.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bad(f"a value in [{lo}, {hi}]")
    elif spec.type == "BOOLEAN" and not isinstance(value, bool):
        bad("true or false")
    elif spec.type == "STRING" and not isinstance(value, str):
        bad("a string")
    elif spec.type == "COMBO" and not free and spec.combo_options is not None \
            and value not in spec.combo_options:
        bad(f"one of {list(spec.combo_options)}")


# ------------------------------------------------------------------------------------------------
# compact spec → UI format
# ------------------------------------------------------------------------------------------------

def _topological(keys: list[str], deps: dict[str, set[str]]) -> list[str]:
    """Kahn's order, stable in ``keys`` order (the editor's ``order`` field)."""
    remaining = {k: set(d) for k, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [k for k in keys if k in remaining and not remaining[k]]
        if not ready:
            raise WorkflowError(f"the graph has a cycle through {sorted(remaining)}")
        for k in ready:
            order.append(k)
            del remaining[k]
        for d in remaining.values():
            d.difference_update(ready)
    return order


def _estimate_size(info: dict, n_sockets: int, n_widgets: int, multiline: int) -> list[float]:
    rows = max(n_sockets, len(info.get("output") or []))
    height = 30 + 22 * rows + 26 * n_widgets + 70 * multiline
    if info.get("output_node") or any(s.options.get("image_upload") for s in input_specs(info)):
        height += 260  # room for the preview the editor draws
    return [340.0, float(height)]


def build_ui_workflow(nodes: dict[str, Node], object_info: dict, notes: Iterable[str | Note] = (),
                      workflow_id: str | None = None, extra: dict | None = None) -> dict:
    """Build a UI-format workflow (what the editor saves) from a compact spec.

    Args:
        nodes: node key → :class:`Node`; ids are given in insertion order (1, 2, ...).
        object_info: the host's ``/object_info`` answer (at least the node types used).
        notes: texts (or :class:`Note`) for note nodes; placed above the graph unless positioned.
        workflow_id: a stable name; the workflow's ``id`` is a UUID derived from it.
        extra: merged into the workflow's ``extra`` dict.

    Raises:
        WorkflowError: an unknown node type, input name, link source or output slot; a widget
            value outside its definition; a link between incompatible types; an unlinked required
            socket; a cycle.
    """
    keys = list(nodes)
    ids = {key: i + 1 for i, key in enumerate(keys)}
    infos = {key: _node_info(object_info, n.type, f"node {key!r}") for key, n in nodes.items()}

    # --- validate the spec and resolve every link ------------------------------------------------
    resolved: dict[str, list[tuple[InputSpec, tuple[str, int] | None]]] = {}
    deps: dict[str, set[str]] = {}
    for key, node in nodes.items():
        where = f"node {key!r} ({node.type})"
        specs = input_specs(infos[key])
        by_name = {s.name: s for s in specs}
        for name in [*node.widgets, *node.links, *node.models, *node.free, *node.controls]:
            if name not in by_name:
                raise WorkflowError(f"{where}: no input named {name!r}; it has {sorted(by_name)}")
        for name in [*node.widgets, *node.models]:
            if not by_name[name].is_widget:
                raise WorkflowError(f"{where}: input {name!r} is a {by_name[name].type} socket, not a "
                                    f"widget: link it instead")
        for name, value in node.controls.items():
            if not by_name[name].has_control:
                raise WorkflowError(f"{where}: input {name!r} has no control_after_generate widget")
            if value not in CONTROL_VALUES:
                raise WorkflowError(f"{where}: control of {name!r} expected one of {CONTROL_VALUES}, "
                                    f"got {value!r}")
        for name, model in node.models.items():
            if name in node.widgets and node.widgets[name] != model.name:
                raise WorkflowError(f"{where}: input {name!r} has both a widget value and a model file")
        entries = []
        deps[key] = set()
        for spec in specs:
            link = node.links.get(spec.name)
            if link is not None:
                src_key, slot = link
                if src_key not in nodes:
                    raise WorkflowError(f"{where}: input {spec.name!r} links to unknown node {src_key!r}")
                outs = output_types(infos[src_key])
                if not 0 <= slot < len(outs):
                    raise WorkflowError(f"{where}: input {spec.name!r} links to output {slot} of "
                                        f"{src_key!r} ({nodes[src_key].type}), which has {len(outs)} outputs")
                if not types_match(outs[slot], spec.type):
                    raise WorkflowError(f"{where}: input {spec.name!r} ({spec.type}) cannot take output "
                                        f"{slot} of {src_key!r} ({outs[slot]})")
                deps[key].add(src_key)
            elif not spec.is_widget and not spec.optional:
                raise WorkflowError(f"{where}: required input {spec.name!r} ({spec.type}) is not linked")
            if spec.is_widget:
                value = _widget_value(node, spec)
                _check_value(where, spec, value, free=spec.name in node.models or spec.name in node.free)
            entries.append((spec, link))
        resolved[key] = entries

    order = {key: i for i, key in enumerate(_topological(keys, deps))}

    # --- nodes and links --------------------------------------------------------------------------
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes = []
    for key, node in nodes.items():
        info = infos[key]
        inputs, widgets_values, multiline = [], [], 0
        for spec, link in resolved[key]:
            if spec.is_widget:
                widgets_values.append(_widget_value(node, spec))
                widgets_values.extend(spec.helper_values(node.controls.get(spec.name, "fixed")))
                multiline += int(bool(spec.options.get("multiline")))
            if link is None and spec.is_widget:
                continue  # unlinked widget inputs are not serialised as slots
            entry: dict[str, Any] = {"name": spec.name}
            if spec.optional and not spec.is_widget:
                entry["shape"] = OPTIONAL_SHAPE
            entry["type"] = spec.type
            if spec.is_widget:
                entry["widget"] = {"name": spec.name}
            entry["link"] = None
            if link is not None:
                src_key, slot = link
                link_id = len(links) + 1
                link_type = output_types(infos[src_key])[slot]
                links.append([link_id, ids[src_key], slot, ids[key], len(inputs), link_type])
                out_links.setdefault((ids[src_key], slot), []).append(link_id)
                entry["link"] = link_id
            inputs.append(entry)
        properties: dict[str, Any] = {"Node name for S&R": node.type}
        if node.models:
            properties["models"] = [m.as_json() for m in node.models.values()]
        ui = {
            "id": ids[key],
            "type": node.type,
            "pos": [float(v) for v in node.pos] if node.pos else None,
            "size": [float(v) for v in node.size] if node.size else
            _estimate_size(info, len(inputs), len(widgets_values), multiline),
            "flags": {},
            "order": order[key],
            "mode": 0,
            "inputs": inputs,
            "outputs": [],
            "properties": properties,
            "widgets_values": widgets_values,
        }
        if node.title:
            ui["title"] = node.title
        if node.color:
            ui["color"] = node.color
        if node.bgcolor:
            ui["bgcolor"] = node.bgcolor
        ui_nodes.append(ui)

    for ui, key in zip(ui_nodes, keys):
        info = infos[key]
        names = info.get("output_name") or []
        ui["outputs"] = [
            {"name": names[slot] if slot < len(names) and names[slot] else typ, "type": typ,
             "links": out_links.get((ui["id"], slot)) or None, "slot_index": slot}
            for slot, typ in enumerate(output_types(info))
        ]

    _layout(ui_nodes, keys, deps)

    # --- notes ------------------------------------------------------------------------------------
    next_id = len(ui_nodes) + 1
    x = 0.0
    for i, note in enumerate(notes or ()):
        note = note if isinstance(note, Note) else Note(text=note)
        ui = {
            "id": next_id + i, "type": "MarkdownNote" if note.markdown else "Note",
            "pos": [float(v) for v in note.pos] if note.pos else [x, -float(note.size[1]) - 60.0],
            "size": [float(v) for v in note.size], "flags": {}, "order": len(ui_nodes), "mode": 0,
            "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note.text],
            "color": _NOTE_COLOR, "bgcolor": _NOTE_BGCOLOR,
        }
        if note.title:
            ui["title"] = note.title
        x += note.size[0] + 40.0
        ui_nodes.append(ui)

    workflow = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"avlab:workflow:{workflow_id}")) if workflow_id
        else str(uuid.uuid4()),
        "revision": 0,
        "last_node_id": max((n["id"] for n in ui_nodes), default=0),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [60.0, 400.0]}, **(extra or {})},
        "version": 0.4,
    }
    return workflow


def _widget_value(node: Node, spec: InputSpec) -> Any:
    if spec.name in node.models:
        return node.models[spec.name].name
    return node.widgets.get(spec.name, _default(spec))


def _layout(ui_nodes: list[dict], keys: list[str], deps: dict[str, set[str]]) -> None:
    """Place nodes without a position in columns by graph depth (sources left), rows in spec order."""
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((level(d) for d in deps[key]), default=-1)
        return depth[key]

    column_y: dict[int, float] = {}
    for ui, key in zip(ui_nodes, keys):
        if ui["pos"] is not None:
            continue
        col = level(key)
        y = column_y.get(col, 0.0)
        ui["pos"] = [col * 400.0, y]
        column_y[col] = y + ui["size"][1] + 60.0


# ------------------------------------------------------------------------------------------------
# UI format → API prompt
# ------------------------------------------------------------------------------------------------

def widget_values_by_name(ui_node: dict, object_info: dict) -> dict[str, Any]:
    """Map a UI node's ``widgets_values`` to its widget inputs by name (skipping helper widgets).

    Raises:
        WorkflowError: unknown node type, or a ``widgets_values`` list of the wrong length (the
            workflow was saved for another version of the node).
    """
    where = f"node {ui_node.get('id')} ({ui_node.get('type')})"
    info = _node_info(object_info, ui_node["type"], where)
    values = ui_node.get("widgets_values")
    specs = [s for s in input_specs(info) if s.is_widget]
    if isinstance(values, dict):  # some packs save widgets by name
        return {s.name: values[s.name] for s in specs if s.name in values}
    values = list(values or [])
    out, cursor = {}, 0
    for spec in specs:
        if cursor < len(values):
            out[spec.name] = values[cursor]
        cursor += 1 + len(spec.helper_values())
    if cursor != len(values):
        raise WorkflowError(f"{where}: widgets_values has {len(values)} values, the host's definition "
                            f"expects {cursor} ({[s.name for s in specs]} + editor helper widgets); "
                            f"the workflow was saved for another version of this node")
    return out


def ui_to_api(workflow: dict, object_info: dict, overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """Convert a UI-format workflow to an API prompt (``{node_id: {class_type, inputs, _meta}}``).

    Follows the editor's own rules: notes are dropped, muted nodes (mode 2) are dropped with the
    inputs they fed, bypassed nodes (mode 4) pass the input of the same type through, ``Reroute``
    nodes are followed, and inputs fed by a ``PrimitiveNode`` take the value stored in the target's
    own widget.

    Args:
        workflow: UI-format JSON (as saved by the editor or by :func:`build_ui_workflow`).
        object_info: the host's ``/object_info``.
        overrides: ``{node_type or node_id: {input: value}}`` applied after conversion (a value may
            be a link ``[node_id, slot]``) — the host tests use it to swap the official model file
            names for tiny test checkpoints and to shrink sizes.

    Raises:
        WorkflowError: an unknown node type, a stale ``widgets_values`` list, or an override naming
            an input the node does not have.
    """
    overrides = dict(overrides or {})
    links = {link[0]: link for link in workflow.get("links") or []}
    by_id = {node["id"]: node for node in workflow["nodes"]}

    def source(link_id: int, want_type: str, seen: frozenset = frozenset()):
        """The real ``(node_id, slot)`` behind a link, ``"widget"`` for a primitive, or None."""
        link = links.get(link_id)
        if link is None or link_id in seen:
            return None
        seen = seen | {link_id}
        src = by_id.get(link[1])
        if src is None:
            return None
        if src["type"] == "PrimitiveNode":
            return "widget"
        if src["type"] == "Reroute":
            upstream = next((i.get("link") for i in src.get("inputs") or [] if i.get("link") is not None), None)
            return None if upstream is None else source(upstream, want_type, seen)
        mode = src.get("mode", 0)
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            ins = src.get("inputs") or []
            same = [i for i in ins if i.get("link") is not None and types_match(str(i.get("type")), want_type)]
            slot = link[2]
            pick = ins[slot] if slot < len(ins) and ins[slot] in same else (same[0] if same else None)
            return None if pick is None else source(pick["link"], want_type, seen)
        return str(src["id"]), link[2]

    prompt: dict[str, dict] = {}
    used_overrides: set[str] = set()
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        where = f"node {node['id']} ({node['type']})"
        info = _node_info(object_info, node["type"], where)
        specs = input_specs(info)
        known = {s.name: s for s in specs}
        inputs = dict(widget_values_by_name(node, object_info))
        for slot in node.get("inputs") or []:
            name = slot.get("name")
            if slot.get("link") is None or name not in known:
                continue
            src = source(slot["link"], known[name].type)
            if src == "widget":
                continue  # the primitive's value is already in this node's widget
            if src is None:
                inputs.pop(name, None)
            else:
                inputs[name] = [src[0], src[1]]
        for key in (node["type"], str(node["id"])):
            if key in overrides:
                used_overrides.add(key)
                for name, value in overrides[key].items():
                    if name not in known:
                        raise WorkflowError(f"{where}: override names unknown input {name!r}; "
                                            f"it has {sorted(known)}")
                    inputs[name] = value
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    unused = set(overrides) - used_overrides
    if unused:
        raise WorkflowError(f"overrides for {sorted(unused)} match no node of the workflow")
    return prompt


def node_types(workflow: dict, include_virtual: bool = False) -> set[str]:
    """Node types a UI workflow uses (without the editor-only ones unless asked)."""
    return {n["type"] for n in workflow["nodes"] if include_virtual or n["type"] not in VIRTUAL_NODES}


def model_files(workflow: dict) -> list[dict]:
    """Every ``properties.models`` entry of a UI workflow (the official weight files it names)."""
    return [m for n in workflow["nodes"] for m in (n.get("properties") or {}).get("models", [])]


def trim_object_info(object_info: dict, types: Iterable[str]) -> dict:
    """The ``/object_info`` entries of ``types`` only (for small recorded fixtures)."""
    missing = sorted(t for t in set(types) if t not in object_info)
    if missing:
        raise WorkflowError(f"unknown node types {missing}")
    return {t: object_info[t] for t in sorted(set(types))}
