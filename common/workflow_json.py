"""ComfyUI workflow files: build UI-format graphs from a compact spec, convert UI → API prompts.

AVLab ships workflows in ``workflows/`` in the *UI* format (what the ComfyUI editor saves and
opens). They are generated from compact Python specs by ``scripts/make_workflows.py`` using the
node definitions a running ComfyUI reports at ``/object_info``, so the widget order always matches
the host. The host test tier converts them back to the *API* format and runs them through
``POST /prompt``, which proves every shipped workflow loads and executes.

Pure JSON manipulation: no ComfyUI import.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

#: Input types that are sockets, never widgets.
_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: ComfyUI's front end adds a "control after generate" widget after these inputs.
_SEED_NAMES = {"seed", "noise_seed"}


@dataclass
class Node:
    """One node of a compact workflow spec.

    Args:
        type: the node class id (``"KSampler"``, ``"AVLabLightCache"``...).
        widgets: widget input values by name (missing ones take the host default).
        links: socket inputs by name → ``(source_node_key, output_index)``.
        title: optional title shown in the editor.
        pos: editor position ``(x, y)``.
    """

    type: str
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, int]] = field(default_factory=dict)
    title: str | None = None
    pos: tuple[float, float] | None = None


def _input_specs(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) for each declared input in definition order."""
    out = []
    order = info.get("input_order", {})
    for section, optional in (("required", False), ("optional", True)):
        declared = info.get("input", {}).get(section, {}) or {}
        names = order.get(section, list(declared))
        for name in names:
            spec = declared[name]
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, typ, opts, optional))
    return out


def _is_widget(typ: Any, opts: dict) -> bool:
    if isinstance(typ, list):  # legacy COMBO: list of options
        return True
    return typ in _WIDGET_TYPES and not opts.get("forceInput", False)


def _has_control_widget(name: str, typ: Any, opts: dict) -> bool:
    return bool(opts.get("control_after_generate")) or (typ == "INT" and name in _SEED_NAMES)


def _default(typ: Any, opts: dict) -> Any:
    if "default" in opts:
        return opts["default"]
    if isinstance(typ, list):
        return typ[0] if typ else ""
    if typ == "COMBO":
        options = opts.get("options") or []
        return options[0] if options else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(typ)


def build_ui_workflow(nodes: dict[str, Node], object_info: dict, notes: list[str] | None = None) -> dict:
    """Build a UI-format workflow (litegraph JSON) from a compact spec.

    Args:
        nodes: node key → :class:`Node`; insertion order is the layout order.
        object_info: the host's ``/object_info`` answer (at least for the node types used).
        notes: texts for ``Note`` nodes placed above the graph (e.g. which weights to use).

    Raises:
        KeyError: a node type unknown to the host, or a link to an unknown node/output.
        ValueError: a widget name the node does not have.
    """
    ids = {key: i + 1 for i, key in enumerate(nodes)}
    ui_nodes, links = [], []
    link_id = 0
    out_links: dict[tuple[int, int], list[int]] = {}
    pending_inputs: dict[int, list[dict]] = {}

    for col, (key, node) in enumerate(nodes.items()):
        info = object_info[node.type]
        widgets_values = []
        inputs = []
        known = set()
        for name, typ, opts, _optional in _input_specs(info):
            known.add(name)
            if name in node.links:
                src_key, src_slot = node.links[name]
                src_id = ids[src_key]
                src_info = object_info[nodes[src_key].type]
                link_type = src_info["output"][src_slot]
                link_id += 1
                links.append([link_id, src_id, src_slot, ids[key], len(inputs), link_type])
                out_links.setdefault((src_id, src_slot), []).append(link_id)
                entry = {"name": name, "type": link_type if not isinstance(link_type, list) else "COMBO",
                         "link": link_id}
                if _is_widget(typ, opts):
                    entry["widget"] = {"name": name}
                    widgets_values.append(_default(typ, opts))
                    if _has_control_widget(name, typ, opts):
                        widgets_values.append("fixed")
                inputs.append(entry)
            elif _is_widget(typ, opts):
                widgets_values.append(node.widgets.get(name, _default(typ, opts)))
                if _has_control_widget(name, typ, opts):
                    widgets_values.append("fixed")
            else:
                inputs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": None})
        unknown = set(node.widgets) - known
        if unknown:
            raise ValueError(f"{node.type}: no inputs named {sorted(unknown)}")
        missing_links = set(node.links) - known
        if missing_links:
            raise ValueError(f"{node.type}: no inputs named {sorted(missing_links)}")
        pending_inputs[ids[key]] = inputs
        ui = {
            "id": ids[key],
            "type": node.type,
            "pos": list(node.pos) if node.pos else [60 + 340 * col, 200 + 40 * (col % 3)],
            "size": [315, 60 + 26 * (len(widgets_values) + len(inputs))],
            "flags": {},
            "order": col,
            "mode": 0,
            "inputs": inputs,
            "outputs": [],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widgets_values,
        }
        if node.title:
            ui["title"] = node.title
        ui_nodes.append(ui)

    for ui in ui_nodes:
        info = object_info[ui["type"]]
        names = info.get("output_name") or info["output"]
        ui["outputs"] = [
            {"name": names[slot], "type": typ if isinstance(typ, str) else "COMBO",
             "links": out_links.get((ui["id"], slot), []), "slot_index": slot}
            for slot, typ in enumerate(info["output"])
        ]

    next_id = len(ui_nodes) + 1
    for i, text in enumerate(notes or []):
        ui_nodes.append({
            "id": next_id + i, "type": "Note", "pos": [60 + 420 * i, -220], "size": [400, 180],
            "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [],
            "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653",
        })

    return {
        "last_node_id": max(n["id"] for n in ui_nodes),
        "last_link_id": link_id,
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"avlab": {"generated_by": "scripts/make_workflows.py"}},
        "version": 0.4,
    }


_VIRTUAL_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}


def ui_to_api(workflow: dict, object_info: dict, overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """Convert a UI-format workflow to an API prompt (``{node_id: {class_type, inputs}}``).

    Args:
        workflow: UI-format JSON (as saved by the editor or by :func:`build_ui_workflow`).
        object_info: the host's ``/object_info``.
        overrides: ``{node_type: {input: value}}`` applied to every node of that type — the host
            tests use it to swap real model file names for the tiny test checkpoints.
    """
    overrides = overrides or {}
    links = {l[0]: l for l in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in _VIRTUAL_NODES or node.get("mode", 0) in (2, 4):
            continue
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {inp["name"]: inp["link"] for inp in node.get("inputs", []) if inp.get("link") is not None}
        inputs: dict[str, Any] = {}
        cursor = 0
        for name, typ, opts, _optional in _input_specs(info):
            if _is_widget(typ, opts):
                if cursor < len(values):
                    inputs[name] = values[cursor]
                cursor += 1
                if _has_control_widget(name, typ, opts):
                    cursor += 1
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        inputs.update(overrides.get(node["type"], {}))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
