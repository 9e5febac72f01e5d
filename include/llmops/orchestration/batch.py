"""Task body of the `<pipeline>__batch_inference` DAG: score a table with the champion.

See `llmops.deployment.batch` for how rows are read, redacted, scored and upserted.
"""

from __future__ import annotations

import logging
from typing import Any

from llmops.ledger import record
from llmops.ledger.events import BatchScored
from llmops.specs.pinned import run_spec

log = logging.getLogger(__name__)


class NoChampionToScoreWith(LookupError):
    """The model has no champion yet (the task skips)."""


def load_predictor(model_name: str, version: str, max_new_tokens: int | None) -> Any:
    """The registered version as a function prompts -> answers (loaded once per task)."""
    import mlflow
    import pandas as pd

    from llmops.registry import mlflow_registry

    mlflow_registry.configure()
    config = {"max_new_tokens": max_new_tokens} if max_new_tokens else None
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}", model_config=config)

    def predict(prompts: list[str]) -> list[str]:
        return [str(a) for a in model.predict(pd.DataFrame({"prompt": prompts}))]

    return predict


def batch_score(pipeline: str, run_id: str, scored_at: str) -> dict[str, Any]:
    """Score the spec's batch table with the current champion; record `batch.scored`."""
    from llmops.deployment.batch import score_table
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    batch = spec.batch_inference
    if batch is None:
        return {"scored": False, "reason": "no batch_inference in the spec"}
    name = spec.registry.model_name
    version = mlflow_registry.alias_version(name, mlflow_registry.CHAMPION)
    if version is None:
        raise NoChampionToScoreWith(f"{name} has no champion yet: nothing to score with")
    from llmops.connections import engine_for

    source = engine_for(batch.conn_id)
    target = engine_for(batch.target_conn_id) if batch.target_conn_id else source
    try:
        summary = score_table(
            spec,
            source=source,
            target=target,
            predict=load_predictor(name, version, batch.max_new_tokens),
            model_name=name,
            model_version=version,
            run_id=run_id,
            scored_at=scored_at,
        )
    finally:
        source.dispose()
        target.dispose()
    payload = {
        "model_name": name,
        "model_version": version,
        "source": {"conn_id": batch.conn_id, "table": batch.table, "query": batch.query is not None},
        "target_conn_id": batch.target_conn_id or batch.conn_id,
        **summary,
    }
    record(spec, BatchScored(**payload), f"table/{summary['target_table']}/{name}/{version}", run_id)
    log.info(
        "%s v%s: %d rows read, %d scored, %d unchanged -> %s",
        name,
        version,
        summary["rows_read"],
        summary["rows_scored"],
        summary["rows_unchanged"],
        summary["target_table"],
    )
    return {k: v for k, v in payload.items() if k != "source"}
