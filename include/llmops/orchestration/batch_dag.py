"""The `<pipeline>__batch_inference` DAG: score a database table with the champion.

Built by `factory.build_pipeline_dags` when the spec has `batch_inference`; imports only the
standard library, `airflow.sdk` and the factory's helpers at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, dag, task

from llmops.governance.roles import dag_access_control
from llmops.orchestration.dag_support import (
    START_DATE,
    current_run_id,
    default_args,
    fail_fast,
    reference_time,
)

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


def batch_inference_dag(spec: PipelineSpec) -> DAG:
    batch = spec.batch_inference
    assert batch is not None
    source = f"table `{batch.table}`" if batch.table else "the spec's query"
    target = ".".join(p for p in (batch.target_schema, batch.target_table) if p)

    @dag(
        dag_id=spec.batch_inference_dag_id,
        description=f"Score {batch.table or 'a query'} with the '{spec.registry.model_name}' champion.",
        doc_md=f"""
### {spec.name}: batch inference

Reads {source} from connection `{batch.conn_id}` in key order (`{batch.key_column}`), renders each
row's prompt with the spec's template, masks PII ({"on" if batch.redact_pii else "off"}), asks the
current `champion` of `{spec.registry.model_name}`, and upserts the answers into `{target}`
(connection `{batch.target_conn_id or batch.conn_id}`), keyed by (record key, model, version).
Rows this version already answered for the same prompt are not scored again: a rerun gives the
same rows, never duplicates. Ledger: `batch.scored`.
""",
        schedule=batch.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec),
        tags=["llmops", "batch-inference", *spec.tags],
        access_control=dag_access_control(spec, spec.batch_inference_dag_id),
    )
    def batch_inference() -> None:
        @task(max_active_tis_per_dag=1)
        def score() -> dict[str, Any]:
            with fail_fast():
                from airflow.sdk.exceptions import AirflowSkipException

                from llmops.orchestration import batch as steps

                try:
                    return steps.batch_score(spec.name, current_run_id(), scored_at=reference_time())
                except steps.NoChampionToScoreWith as exc:  # not yet a model to score with
                    raise AirflowSkipException(str(exc)) from None

        score()

    return batch_inference()
