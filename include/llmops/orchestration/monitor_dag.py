"""The `<pipeline>__monitor` DAG: drift and quality of the champion, alerts, retraining.

Built by `factory.build_pipeline_dags` with the pipeline's other DAGs; like the factory it imports
only the standard library, pendulum, `airflow.sdk` and the spec loader at module level (the
trigger operator is imported when the DAG is built; each task imports its heavy modules when it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, dag, get_current_context, task

from llmops.governance.roles import dag_access_control
from llmops.orchestration.dag_support import (
    START_DATE,
    current_run_id,
    default_args,
    fail_fast,
)

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


def monitor_dag(spec: PipelineSpec) -> DAG:
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    monitoring = spec.monitoring
    limits = monitoring.thresholds
    columns = monitoring.text_columns or spec.training.prompt_columns
    category = (
        f" and of the categories in `{monitoring.category_column}` (share of new categories, PSI)"
        if monitoring.category_column
        else ""
    )
    quality = (
        f"Scores the champion (token F1) on up to {monitoring.quality_samples} fresh labelled rows "
        f"(keys it was not trained on) against `min_token_f1` {limits.min_token_f1}."
        if limits.min_token_f1 is not None
        else "Champion quality on fresh rows is not scored (no `min_token_f1` in the spec)."
    )
    webhook = (
        f" and posts it to the webhook of connection `{monitoring.alert_conn_id}`"
        if monitoring.alert_conn_id
        else " (no `alert_conn_id`: no webhook)"
    )
    retrain = (
        f"`trigger_retrain` starts `{spec.finetune_dag_id}` on the current snapshot "
        f"(`monitoring.retrain_triggered`)."
        if monitoring.retrain_on_drift
        else f"`trigger_retrain` ({spec.finetune_dag_id}) stays skipped: `retrain_on_drift` is off."
    )

    @dag(
        dag_id=f"{spec.name}__monitor",
        description=f"Drift and quality monitoring of the '{spec.registry.model_name}' champion.",
        doc_md=f"""
### {spec.name}: monitor

`measure` compares the latest curated snapshot of `{spec.name}` with the one the `champion` of
`{spec.registry.model_name}` was trained on (read from its registry tags): drift of the text in
{", ".join(f"`{c}`" for c in columns)} (length and token-count PSI and KS, vocabulary PSI,
out-of-vocabulary rate){category}, against the spec's thresholds (PSI {limits.psi}, KS {limits.ks},
OOV rate {limits.oov_rate}, new categories {limits.new_category_share}). {quality} Every number goes
to the `llmops_monitoring_metrics` time series and the ledger (`monitoring.measured`).

When a threshold is crossed, `alert` logs it{webhook} (`monitoring.alerted`); {retrain}
Steps that do not apply show as skipped.
""",
        schedule=monitoring.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec),
        tags=["llmops", "monitoring", *spec.tags],
        access_control=dag_access_control(spec, f"{spec.name}__monitor"),
    )
    def monitor() -> None:
        @task
        def measure() -> dict[str, Any]:
            """Drift and quality of the latest curated data against the champion's training data."""
            with fail_fast():
                from airflow.sdk.exceptions import AirflowSkipException

                from llmops.orchestration import monitor as steps

                summary = steps.measure(spec.name, current_run_id())
                if summary.get("skipped"):
                    raise AirflowSkipException(summary["reason"])
                return summary

        @task.branch
        def decide(summary: dict[str, Any]) -> list[str]:
            """Alert when a threshold is crossed; also retrain when the spec asks for it."""
            with fail_fast():
                follow = []
                if summary["breaches"]:
                    follow.append("alert")
                    if summary.get("retrain"):
                        follow.append("trigger_retrain")
                return follow

        @task
        def alert(summary: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration import monitor as steps

                context = get_current_context()
                ti = context["ti"]
                try:
                    log_url = ti.log_url
                except Exception:
                    log_url = None
                return steps.alert(spec.name, summary, current_run_id(), dag_id=ti.dag_id, log_url=log_url)

        trigger = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=spec.finetune_dag_id,
            trigger_run_id="monitor_retrain__{{ run_id }}",
            conf={"curated_snapshot_id": "{{ ti.xcom_pull(task_ids='measure')['current_snapshot_id'] }}"},
            skip_when_already_exists=True,  # a retried trigger finds its run: no second training
            wait_for_completion=False,
            retries=1,
        )

        @task
        def record_retrain(summary: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration import monitor as steps

                triggered = get_current_context()["ti"].xcom_pull(
                    task_ids="trigger_retrain", key="trigger_run_id"
                )
                return steps.record_retrain(spec.name, summary, current_run_id(), triggered)

        summary = measure()
        decision = decide(summary)
        decision >> alert(summary)
        decision >> trigger >> record_retrain(summary)

    return monitor()
