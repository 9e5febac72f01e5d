"""The `model_rollback` DAG and its step: the previous champion becomes the champion again.

Only the standard library and ``airflow.sdk`` at module level; the step imports the registry,
the ledger and the deploy step when it runs.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from llmops.governance.roles import governance_access_control
from llmops.orchestration.dag_support import GOVERNANCE_DEFAULT_ARGS, START_DATE, fail_fast


def rollback_dag() -> DAG:
    @dag(
        dag_id="model_rollback",
        access_control=governance_access_control("model_rollback"),
        description="Make a model's previous champion the champion again, in one step.",
        doc_md="""
### Model rollback

Trigger with the registered model's name and a reason. The version that was champion before the
last promotion (alias `previous`) becomes `champion` again; the version being replaced keeps the
alias `rolled_back`. The rollback, its reason and who triggered it are recorded in the governance
ledger. Fails with a clear message when the model has no previous version. Then `deploy` serves the
restored version on the pipeline's `deployment.targets` (`model.deployed`), and `notify` sends
`rolled_back` to its `integrations.webhook_conn_id`.
""",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={**GOVERNANCE_DEFAULT_ARGS, "retries": 0},
        tags=["llmops", "governance", "registry"],
        params={
            "model_name": Param(
                "", type="string", minLength=1, title="Model", description="Registered model name in MLflow."
            ),
            "reason": Param(
                "",
                type="string",
                minLength=3,
                title="Reason",
                description="Why (incident, ticket id): kept in the ledger and the audit report.",
            ),
        },
    )
    def model_rollback() -> None:
        @task(pool="default_pool")
        def rollback() -> dict[str, Any]:
            with fail_fast():
                from airflow.sdk.exceptions import AirflowFailException

                from llmops.registry.mlflow_registry import PromotionError

                context = get_current_context()
                params = context["params"]
                run = context["dag_run"]
                requested_by = getattr(run, "triggering_user_name", None)
                try:
                    return rollback_champion(params["model_name"], params["reason"], run.run_id, requested_by)
                except PromotionError as exc:  # a permanent error fails at once through fail_fast
                    raise AirflowFailException(str(exc)) from exc

        @task(retries=1)
        def deploy(moved: dict[str, Any]) -> dict[str, Any]:
            """Deploy the restored champion to the model's `deployment.targets` (none: nothing to do)."""
            with fail_fast():
                from llmops.orchestration import deploy as steps

                context = get_current_context()
                return steps.deploy_after_rollback(context["params"]["model_name"], context["dag_run"].run_id)

        @task(retries=2)
        def notify() -> dict[str, Any]:
            """Send `rolled_back` (and `deployment_failed`) to the model's integrations webhook."""
            with fail_fast():
                from llmops.orchestration import deploy as steps

                context = get_current_context()
                return steps.notify_rollback(
                    context["params"]["model_name"], context["dag_run"].run_id, dag_id="model_rollback"
                )

        # A teardown without setups: it runs after deploy whatever happened, and never decides the
        # run's state (a failed rollback or deployment still fails the run).
        deploy(rollback()) >> notify().as_teardown()

    return model_rollback()


def rollback_champion(model_name: str, reason: str, run_id: str, requested_by: str | None) -> dict[str, Any]:
    """Restore the previous champion of `model_name` and record who asked and why."""
    from llmops.ledger import record
    from llmops.ledger.events import ModelRolledBack
    from llmops.orchestration.deploy import ensure_registry_webhook
    from llmops.registry import mlflow_registry
    from llmops.specs.loader import pipeline_of_model

    spec = pipeline_of_model(model_name)
    ensure_registry_webhook(spec)
    moved = mlflow_registry.rollback(model_name)
    record(
        spec,
        ModelRolledBack(model_name=model_name, **moved, reason=reason, requested_by=requested_by),
        f"model/{model_name}/{moved['champion']}",
        run_id,
    )
    return moved
