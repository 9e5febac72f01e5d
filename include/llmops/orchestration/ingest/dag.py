"""The `<pipeline>__ingest` DAG: plan -> extract (mapped over partitions) -> commit -> validate -> curate.

Imported when DAG files are parsed: only the standard library, ``airflow.sdk`` and light llmops
modules at module level; each task imports its step module when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, dag, get_current_context, task

from llmops.governance.roles import dag_access_control
from llmops.orchestration.dag_support import (
    START_DATE,
    curated_asset,
    current_run_id,
    default_args,
    fail_fast,
    raw_assets,
    reference_time,
)

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


def ingest_dag(spec: PipelineSpec) -> DAG:
    asset = curated_asset(spec)
    raws = raw_assets(spec)
    source_names = [s.name for s in spec.sources]

    @dag(
        dag_id=spec.ingest_dag_id,
        description=f"Ingest, validate and protect the data of '{spec.name}'.",
        doc_md=f"""
### {spec.name}: ingest

{spec.description}

Plans the extraction of each source ({", ".join(source_names)}: watermark ranges and partitions), extracts
every partition in parallel into encrypted staged parts, commits one content-addressed raw snapshot per
source (published as `llmops://{spec.name}/raw/<source>`), normalises and validates with the Great
Expectations suite `{spec.validation.suite}` (failing rows are quarantined, blocking expectations fail the
run), applies the PII policy, and publishes the curated snapshot as `{asset.uri}`, which schedules
`{spec.finetune_dag_id}`. Watermarks of incremental sources advance only after that publication.
""",
        schedule=spec.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec),
        tags=["llmops", "ingest", *spec.tags],
        access_control=dag_access_control(spec, spec.ingest_dag_id),
    )
    def ingest() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            with fail_fast():
                from llmops.orchestration.ingest.extract import plan

                return plan(spec.name, current_run_id())

        @task(max_active_tis_per_dag=4, map_index_template="{{ item['source'] }}[{{ item['partition'] }}]")
        def extract(item: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.ingest.extract import extract_partition

                return extract_partition(spec.name, item, current_run_id())

        @task(outlets=list(raws.values()))
        def commit(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            with fail_fast():
                from llmops.orchestration.ingest.extract import commit_raw

                committed = commit_raw(spec.name, list(parts), current_run_id())
                events = get_current_context()["outlet_events"]
                for item in committed:
                    events[raws[item["source"]]].extra = {
                        "snapshot_id": item["snapshot_id"],
                        "rows": item["row_count"],
                    }
                return committed

        @task
        def validate(raw: list[dict[str, Any]]) -> dict[str, Any]:
            with fail_fast():
                from airflow.sdk.exceptions import AirflowSkipException

                from llmops.orchestration.ingest.validate import validate as validate_step

                result = validate_step(spec.name, list(raw), current_run_id(), now=reference_time())
                if result.get("no_new_data"):
                    raise AirflowSkipException(
                        "no new rows since the last committed watermark: nothing to publish"
                    )
                return result

        @task(outlets=[asset])
        def curate(validated: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.ingest.curate import curate as curate_step

                result = curate_step(spec.name, validated, current_run_id())
                get_current_context()["outlet_events"][asset].extra = {
                    "curated_snapshot_id": result["curated_snapshot_id"],
                    "row_count": result["row_count"],
                }
                return result

        curate(validate(commit(extract.expand(item=plan()))))

    return ingest()
