"""The lineage of one model version, as the ledger knows it: sources -> raw -> validated/quarantine ->
curated (with carry-forward and erasure rewrites) -> training dataset -> training run -> version,
checked edge by edge against the OpenLineage events the steps emitted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.reports import lineage_graph

if TYPE_CHECKING:
    from llmops.ledger import LedgerRecord
    from llmops.specs import PipelineSpec


def _add_sources(
    graph: lineage_graph.LineageGraph, sources: list[dict[str, Any]], validations: list[dict[str, Any]]
) -> None:
    """Each source and its raw snapshot; each validation's validated and quarantined snapshots."""
    for source in sources:
        source_node = graph.add_node(
            f"source:{source['name']}", "source", source["name"], source["kind"], location=source["location"]
        )
        raw_node = graph.add_node(
            f"raw:{source['name']}:{source['raw_snapshot_id']}",
            "raw",
            source["name"],
            source["raw_snapshot_id"],
            snapshot_id=source["raw_snapshot_id"],
        )
        graph.add_edge(source_node, raw_node, "commit", source["ingest_run_id"])
    for check in validations:
        validated = graph.add_node(
            f"validated:{check['validated_snapshot_id']}",
            "validated",
            f"{check['rows_accepted']} rows accepted",
            check["validated_snapshot_id"],
            snapshot_id=check["validated_snapshot_id"],
        )
        quarantine = graph.add_node(
            f"quarantine:{check['quarantine_snapshot_id']}",
            "quarantine",
            f"{check['rows_quarantined']} rows quarantined",
            check["quarantine_snapshot_id"],
            snapshot_id=check["quarantine_snapshot_id"],
        )
        for source in sources:
            if source["ingest_run_id"] == check["ingest_run_id"]:
                raw = f"raw:{source['name']}:{source['raw_snapshot_id']}"
                graph.add_edge(raw, validated, "validate", check["ingest_run_id"])
                graph.add_edge(raw, quarantine, "validate", check["ingest_run_id"])


def _add_curated_chain(
    graph: lineage_graph.LineageGraph, chain: list[dict[str, Any]], validations: list[dict[str, Any]]
) -> None:
    """The curated snapshots the version descends from: carried forward, rewritten by erasure."""
    validated_of = {v["ingest_run_id"]: v["validated_snapshot_id"] for v in validations}
    for entry in chain:
        written = graph.add_node(
            f"curated:{entry['written_as']}",
            "curated",
            "curated records",
            entry["written_as"],
            snapshot_id=entry["written_as"],
        )
        if entry["run_id"] in validated_of:
            graph.add_edge(f"validated:{validated_of[entry['run_id']]}", written, "curate", entry["run_id"])
        if entry["curated_snapshot_id"] != entry["written_as"]:  # rewritten by erasure request(s) since
            used = graph.add_node(
                f"curated:{entry['curated_snapshot_id']}",
                "curated",
                "after erasure",
                entry["curated_snapshot_id"],
                snapshot_id=entry["curated_snapshot_id"],
            )
            last_rewrite = entry["erasure_rewrites"][-1] if entry["erasure_rewrites"] else {}
            graph.add_edge(written, used, "erasure rewrite", None)
            graph.nodes[used]["erasure_request"] = last_rewrite.get("request_id")
    for newer, older in zip(chain, chain[1:], strict=False):
        graph.add_edge(
            f"curated:{older['curated_snapshot_id']}",
            f"curated:{newer['written_as']}",
            "carry forward",
            newer["run_id"],
        )


def _add_training(
    graph: lineage_graph.LineageGraph,
    model: str,
    sft: LedgerRecord | None,
    trained: LedgerRecord | None,
    registered: LedgerRecord,
) -> None:
    """Base model and training run -> the version, and the training dataset the run read."""
    run_node = None
    if trained is not None:
        payload = trained.payload
        base = graph.add_node(
            f"base:{payload.get('base_model')}",
            "base_model",
            str(payload.get("base_model")),
            ((payload.get("result") or {}).get("base_model_sha256") or "")[:16] or None,
            uri=payload.get("base_model"),
        )
        run_node = graph.add_node(
            f"run:{payload.get('mlflow_run_id')}",
            "training_run",
            f"{payload.get('method', 'sft')} · LoRA r={(payload.get('lora') or {}).get('r')}",
            payload.get("mlflow_run_id"),
            mlflow_run_id=payload.get("mlflow_run_id"),
        )
        graph.add_edge(base, run_node, "train", trained.run_id)
        graph.add_edge(run_node, model, "register", registered.run_id)
    if sft is not None:
        sft_id = sft.payload.get("sft_snapshot_id")
        sft_node = graph.add_node(
            f"sft:{sft_id}",
            "sft",
            f"{(sft.payload.get('stats') or {}).get('train', {}).get('rows')} train rows",
            sft_id,
            snapshot_id=sft_id,
        )
        curated = f"curated:{sft.payload.get('curated_snapshot_id')}"
        if curated in graph.nodes:
            graph.add_edge(curated, sft_node, "prepare_training_data", sft.run_id)
        if run_node is not None:
            graph.add_edge(sft_node, run_node, "train", trained.run_id if trained else None)


def lineage_section(
    spec: PipelineSpec,
    model_name: str,
    version: str,
    chain: list[dict[str, Any]],
    sources: list[dict[str, Any]],
    validations: list[dict[str, Any]],
    sft: LedgerRecord | None,
    trained: LedgerRecord | None,
    registered: LedgerRecord,
) -> dict[str, Any]:
    """The version's lineage graph, each edge marked confirmed (or not) by OpenLineage."""
    graph = lineage_graph.LineageGraph()
    _add_sources(graph, sources, validations)
    _add_curated_chain(graph, chain, validations)
    model = graph.add_node(
        f"model:{model_name}/{version}",
        "model",
        f"{model_name} v{version}",
        registered.payload.get("model_uri"),
        model_name=model_name,
        version=version,
    )
    _add_training(graph, model, sft, trained, registered)
    run_ids = {e["run_id"] for e in chain if e["run_id"]} | {registered.run_id}
    events, status = lineage_graph.read_events(spec.name, {r for r in run_ids if r})
    unmatched = lineage_graph.check_against_openlineage(graph, events)
    lineage = graph.to_dict({**status, "unmatched_datasets": unmatched})
    confirmed = [
        e["confirmed_by_openlineage"] for e in lineage["edges"] if e["confirmed_by_openlineage"] is not None
    ]
    lineage["edges_confirmed"] = sum(confirmed) if events else None
    lineage["edges_checked"] = len(confirmed) if events else None
    return lineage
