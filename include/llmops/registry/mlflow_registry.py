"""MLflow tracking and model registry: runs, registered versions, aliases.

The alias ``champion`` is what serving loads; promotion moves it and keeps the one it replaced as
``previous`` so a rollback is one alias move. The client is configured with short HTTP timeouts
and few retries, so a dead tracking server fails a task in seconds rather than minutes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"


def configure() -> str:
    """Point MLflow at the deployment's tracking store; return the tracking URI."""
    import mlflow

    from llmops.settings import get_settings

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it with the deployment's artifact root when new."""
    import mlflow

    from llmops.settings import get_settings

    configure()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = get_settings().mlflow_artifact_root
    location = root if "://" in root else Path(root).resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=f"{location.rstrip('/')}/{name}")
    except Exception:
        experiment = mlflow.get_experiment_by_name(name)  # created concurrently by another task
        if experiment is None:
            raise
        return experiment.experiment_id


def find_or_create_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Reuse the run tagged with this Airflow run and stage, so a retried task logs into one run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    key_filter = " and ".join(
        f"tags.`{k}` = '{v}'" for k, v in tags.items() if k in ("llmops.airflow_run_id", "llmops.stage")
    )
    existing = client.search_runs([experiment_id], filter_string=key_filter, max_results=1)
    if existing:
        return existing[0].info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def log_params_and_metrics(run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    import time

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, int | float)],
        params=fresh,
    )


def log_and_register_model(
    *,
    run_id: str,
    model_name: str,
    base_model_dir: Path,
    adapter_dir: Path,
    tags: dict[str, str],
    max_new_tokens: int,
    input_example: str,
) -> dict[str, Any]:
    """Log the adapter + base model as a pyfunc in the run and register it as a new version."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from llmops.registry import pyfunc_model

    configure()
    package_dir = Path(pyfunc_model.__file__).resolve().parents[1]
    signature = infer_signature(pd.DataFrame({"prompt": [input_example]}), ["generated answer"])
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc_model.AdapterTextGenerator(),
            artifacts={"base_model": str(base_model_dir), "adapter": str(adapter_dir)},
            code_paths=[str(package_dir)],
            signature=signature,
            model_config={"max_new_tokens": max_new_tokens},
            pip_requirements=_serving_requirements(),
        )
    client = MlflowClient()
    try:
        client.create_registered_model(model_name, description="Fine-tuned by llmops; see audit reports.")
    except Exception as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = client.create_model_version(model_name, source=info.model_uri, run_id=run_id, tags=tags)
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    log.info("registered %s version %s (alias %s)", model_name, version.version, CHALLENGER)
    return {"model_name": model_name, "version": str(version.version), "model_uri": info.model_uri}


def _serving_requirements() -> list[str]:
    from importlib.metadata import version

    names = ("torch", "transformers", "peft", "mlflow", "pandas", "accelerate")
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except Exception:
            out.append(name)
    return out


def alias_version(model_name: str, alias: str) -> str | None:
    from mlflow import MlflowClient

    configure()
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except Exception:
        return None


def promote(model_name: str, version: str) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the replaced champion keeps alias ``previous``."""
    from mlflow import MlflowClient

    configure()
    client = MlflowClient()
    before = alias_version(model_name, CHAMPION)
    if before == version:
        return {"champion": version, "previous": alias_version(model_name, PREVIOUS)}
    if before is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, before)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    after = alias_version(model_name, CHAMPION)
    if after != version:
        raise RuntimeError(f"alias {CHAMPION} of {model_name} points at {after} after promoting {version}")
    client.set_model_version_tag(model_name, version, "llmops.promoted", "true")
    return {"champion": version, "previous": before}


def model_version_info(model_name: str, version: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    configure()
    mv = MlflowClient().get_model_version(model_name, version)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "status": mv.status,
        "aliases": list(mv.aliases or []),
        "tags": dict(mv.tags or {}),
    }
