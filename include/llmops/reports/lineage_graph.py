"""A model version's lineage: a graph built from the ledger, checked against OpenLineage events.

The graph (sources -> raw snapshots -> validated + quarantine -> curated -> SFT dataset, base model
-> MLflow training run -> registered version) is built from the governance ledger, which is
hash-chained and therefore the record of authority. When the OpenLineage file transport is
configured, the events of the same Airflow runs are read back and matched to the graph's nodes
(by snapshot id, MLflow run id, model version, source location): each edge then says whether an
OpenLineage event reported it too, and datasets that OpenLineage reported but the ledger does not
know are listed. Without the file transport (e.g. events go to Marquez over HTTP) the graph is
the ledger's alone, and the report says so.

The diagram is an inline SVG drawn here, server-side: no script, no external resource.
"""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any

from llmops.reports.evidence import redact_credentials

# Column of each kind of node in the diagram, left to right.
COLUMNS = {
    "source": 0,
    "raw": 1,
    "validated": 2,
    "quarantine": 2,
    "curated": 3,
    "sft": 4,
    "base_model": 4,
    "training_run": 5,
    "model": 6,
}
KIND_TITLES = {
    "source": "source",
    "raw": "raw snapshot (encrypted)",
    "validated": "validated (encrypted)",
    "quarantine": "quarantine (encrypted)",
    "curated": "curated (PII handled)",
    "sft": "SFT dataset",
    "base_model": "base model",
    "training_run": "MLflow training run",
    "model": "registered model",
}
LAKE_KINDS = ("raw", "validated", "quarantine", "curated", "sft")
# Steps whose lineage OpenLineage is not expected to carry (see llmops.lineage): no confirmation asked.
NOT_IN_OPENLINEAGE = {"carry forward", "erasure rewrite"}
MAX_UNMATCHED_SHOWN = 50


class LineageGraph:
    """Nodes and edges of one model version's lineage, as JSON-able dicts (ids are stable strings)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: list[dict[str, Any]] = []

    def add_node(self, node_id: str, kind: str, label: str, detail: str | None = None, **match: Any) -> str:
        """Add a node once; ``match`` holds what OpenLineage datasets are matched on (ids, location)."""
        if kind not in COLUMNS:
            raise ValueError(f"unknown lineage node kind {kind!r}; known: {', '.join(COLUMNS)}")
        self.nodes.setdefault(
            node_id,
            {"id": node_id, "kind": kind, "label": label, "detail": detail, "openlineage": None, **match},
        )
        return node_id

    def add_edge(self, source: str, target: str, step: str, run_id: str | None) -> None:
        for end in (source, target):
            if end not in self.nodes:
                raise KeyError(f"lineage edge {source} -> {target}: no node {end}")
        edge = {
            "from": source,
            "to": target,
            "step": step,
            "run_id": run_id,
            "confirmed_by_openlineage": None,
        }
        if not any((e["from"], e["to"]) == (source, target) for e in self.edges):
            self.edges.append(edge)

    def to_dict(self, openlineage: dict[str, Any]) -> dict[str, Any]:
        checked = openlineage.get("events_matched", 0) > 0
        return {
            "source": "ledger, checked against OpenLineage events" if checked else "ledger",
            "openlineage": openlineage,
            "nodes": list(self.nodes.values()),
            "edges": self.edges,
        }


# ------------------------------------------------------------------------------- OpenLineage events


def transport_config() -> dict[str, Any] | None:
    """The OpenLineage provider's transport setting (``[openlineage] transport``), or None."""
    raw = os.environ.get("AIRFLOW__OPENLINEAGE__TRANSPORT")
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("openlineage", "transport", fallback="")
        except Exception:  # Airflow not importable or not configured: no transport to read
            raw = ""
    if not raw or not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return {"type": "unreadable"}
    return config if isinstance(config, dict) else {"type": "unreadable"}


def _event_files(config: dict[str, Any]) -> list[str]:
    """The files a file transport wrote: one JSON Lines file, or one file per event."""
    from llmops import storage

    path = str(config["log_file_path"]).removeprefix("file://")
    if config.get("append"):
        return [path] if storage.exists(path) else []
    folder, _, stem = path.rpartition("/")
    return storage.list_files(folder or ".", f"{stem}-*.json")


def read_events(pipeline: str, run_ids: set[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The llmops step events of ``run_ids`` (Airflow run ids) from the file transport, and a status.

    A line that is not JSON (one being written right now) is skipped and counted; so is any event
    without the ``llmops`` run facet of this pipeline.
    """
    from llmops import storage

    config = transport_config()
    status: dict[str, Any] = {
        "configured": False,
        "transport": (config or {}).get("type"),
        "files": 0,
        "events_matched": 0,
        "unreadable_lines": 0,
        "error": None,
    }
    if not config or config.get("type") != "file" or not config.get("log_file_path"):
        return [], status
    status["configured"] = True
    events: list[dict[str, Any]] = []
    try:
        files = _event_files(config)
        status["files"] = len(files)
        for uri in files:
            for line in storage.read_bytes(uri).decode("utf-8", errors="replace").splitlines():
                # Cheap filters first: most lines are other runs' events or the provider's own.
                if '"llmops"' not in line or not any(run_id in line for run_id in run_ids):
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    status["unreadable_lines"] += 1
                    continue
                facet = ((event.get("run") or {}).get("facets") or {}).get("llmops") or {}
                if facet.get("pipeline") == pipeline and (facet.get("airflow") or {}).get("runId") in run_ids:
                    events.append(event)
    except Exception as exc:  # the report is still written from the ledger
        status["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return [], status
    status["events_matched"] = len(events)
    return events, status


def _source_match(nodes: list[dict[str, Any]], namespace: str, name: str) -> str | None:
    """The one source node whose recorded location is this dataset: exactly, else as a qualified table."""
    full = f"{namespace.rstrip('/')}{'' if name.startswith('/') else '/'}{name}"
    sources = [n for n in nodes if n["kind"] == "source" and n.get("location")]
    for matches in (
        lambda loc: loc in (name, full),  # REST: base URL + endpoint; files: the URI; SQL: the table
        lambda loc: name.endswith(f".{loc}"),  # SQL: db.schema.table for a recorded table name
    ):
        found = [n["id"] for n in sources if matches(str(n["location"]).rstrip("/"))]
        if len(found) == 1:
            return found[0]
        if found:
            return None  # ambiguous: better unmatched than wrong
    return None


def _match(graph: LineageGraph, dataset: dict[str, Any], step: str, output: bool) -> str | None:
    """The graph node an OpenLineage dataset stands for, or None."""
    namespace, name = str(dataset.get("namespace") or ""), str(dataset.get("name") or "")
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    nodes = graph.nodes.values()
    if namespace.startswith("mlflow://"):
        for node in nodes:
            if node["kind"] == "training_run" and name == f"runs/{node.get('mlflow_run_id')}":
                return node["id"]
            if node["kind"] == "model" and name == f"models/{node.get('model_name')}/{node.get('version')}":
                return node["id"]
        return None
    for node in nodes:
        if node["kind"] in LAKE_KINDS and tail == node.get("snapshot_id"):
            return node["id"]
    if step == "train":
        if output:  # the adapter the training run wrote (its hash is on the training run)
            return next((n["id"] for n in nodes if n["kind"] == "training_run"), None)
        base = [n for n in nodes if n["kind"] == "base_model"]
        if base and tail == str(base[0].get("uri") or "").rstrip("/").rsplit("/", 1)[-1]:
            return base[0]["id"]
    if not output:
        return _source_match(list(nodes), namespace, name)
    return None


def check_against_openlineage(graph: LineageGraph, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark nodes and edges that OpenLineage events report too; return the datasets that match nothing."""
    reported: set[tuple[str, str]] = set()
    unmatched: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        step = str(((event.get("run") or {}).get("facets") or {}).get("llmops", {}).get("step") or "")
        ins, outs = [], []
        for key, output in (("inputs", False), ("outputs", True)):
            for dataset in event.get(key) or []:
                node_id = _match(graph, dataset, step, output)
                location = {"namespace": dataset.get("namespace"), "name": dataset.get("name")}
                if node_id is None:
                    unmatched.setdefault(
                        (str(location["namespace"]), str(location["name"])), {**location, "step": step}
                    )
                    continue
                node = graph.nodes[node_id]
                if node["openlineage"] is None and not (step == "train" and output):
                    node["openlineage"] = redact_credentials(location)
                (outs if output else ins).append(node_id)
        reported |= {(a, b) for a in ins for b in outs if a != b}
    if events:
        for edge in graph.edges:
            if edge["step"] not in NOT_IN_OPENLINEAGE:
                edge["confirmed_by_openlineage"] = (edge["from"], edge["to"]) in reported
    return redact_credentials(list(unmatched.values())[:MAX_UNMATCHED_SHOWN])


# ------------------------------------------------------------------------------------------ the SVG

_NODE_W, _NODE_H, _COL_GAP, _ROW_GAP, _PAD = 152, 50, 34, 18, 12
_FILL = {
    "source": "#eef3fb",
    "quarantine": "#fdf3e1",
    "model": "#e6f4ea",
    "base_model": "#f1f3f6",
    "training_run": "#f1f3f6",
}


def _text(value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def render_svg(lineage: dict[str, Any]) -> str:
    """The lineage as one ``<svg>`` element: columns by kind, one box per node, arrows for edges.

    Solid arrows were also reported by OpenLineage; dashed ones are known from the ledger only.
    Every text is escaped; the element references nothing outside itself.
    """
    nodes = lineage.get("nodes") or []
    if not nodes:
        return '<p class="warn">No lineage could be derived for this version.</p>'
    columns: dict[int, list[dict[str, Any]]] = {}
    for node in nodes:
        columns.setdefault(COLUMNS[node["kind"]], []).append(node)
    used = sorted(columns)
    position: dict[str, tuple[float, float]] = {}
    rows = max(len(c) for c in columns.values())
    height = _PAD * 2 + rows * _NODE_H + (rows - 1) * _ROW_GAP
    for x_index, column in enumerate(used):
        members = columns[column]
        offset = (height - (len(members) * _NODE_H + (len(members) - 1) * _ROW_GAP)) / 2
        for y_index, node in enumerate(members):
            position[node["id"]] = (
                _PAD + x_index * (_NODE_W + _COL_GAP),
                offset + y_index * (_NODE_H + _ROW_GAP),
            )
    width = _PAD * 2 + len(used) * _NODE_W + (len(used) - 1) * _COL_GAP
    parts = [
        f'<svg role="img" aria-label="Lineage of this model version" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px" font-family="system-ui, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6b7a90"/></marker></defs>',
    ]
    for edge in lineage.get("edges") or []:
        if edge["from"] not in position or edge["to"] not in position:
            continue
        (x1, y1), (x2, y2) = position[edge["from"]], position[edge["to"]]
        if x2 > x1:
            sx, sy, tx, ty = x1 + _NODE_W, y1 + _NODE_H / 2, x2, y2 + _NODE_H / 2
        else:  # same column (a carried-forward snapshot): leave from the bottom, enter at the top
            sx, sy, tx, ty = x1 + _NODE_W / 2, y1 + _NODE_H, x2 + _NODE_W / 2, y2
        mid = (sx + tx) / 2
        dash = "" if edge.get("confirmed_by_openlineage") else ' stroke-dasharray="5 4"'
        title = f"{edge['step']} ({edge.get('run_id') or 'no run'})"
        parts.append(
            f'<path d="M{sx:.1f},{sy:.1f} C{mid:.1f},{sy:.1f} {mid:.1f},{ty:.1f} {tx:.1f},{ty:.1f}" '
            f'fill="none" stroke="#6b7a90" stroke-width="1.4"{dash} marker-end="url(#arrow)">'
            f"<title>{_text(title, 300)}</title></path>"
        )
    for node in nodes:
        x, y = position[node["id"]]
        fill = _FILL.get(node["kind"], "#ffffff")
        stroke = (
            "#9fb3d1"
            if node.get("openlineage") or not lineage.get("openlineage", {}).get("configured")
            else "#c9ced8"
        )
        tooltip = " · ".join(str(v) for v in (node["label"], node.get("detail")) if v)
        parts.append(
            f"<g><title>{_text(tooltip, 400)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{_NODE_W}" height="{_NODE_H}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 8:.1f}" y="{y + 16:.1f}" font-size="9.5" fill="#42526e" '
            f'letter-spacing=".3">{_text(KIND_TITLES[node["kind"]].upper(), 30)}</text>'
            f'<text x="{x + 8:.1f}" y="{y + 31:.1f}" font-size="11.5" fill="#1d2330">{_text(node["label"], 22)}</text>'
            f'<text x="{x + 8:.1f}" y="{y + 44:.1f}" font-size="9.5" fill="#5f6675" '
            f'font-family="ui-monospace, monospace">{_text(node.get("detail"), 24)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
