"""MLflow tracking and model registry: runs, registered versions, aliases.

The alias ``champion`` is what serving loads; promotion moves it and keeps the one it replaced as
``previous`` so a rollback is one alias move. The client is configured with short HTTP timeouts
and few retries, so a dead tracking server fails a task in seconds rather than minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmops.errors import without_url_credentials

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ROLLED_BACK = "rolled_back"


# A row per model; promotions hold its lock (imported only inside tasks: sqlalchemy is cheap here).
_LOCKS = sa.Table("llmops_locks", sa.MetaData(), sa.Column("name", sa.String(200), primary_key=True))


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
    settings = get_settings()
    artifact_location = None
    remote = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    if not remote or os.environ.get("LLMOPS_MLFLOW_ARTIFACT_ROOT"):
        root = settings.mlflow_artifact_root
        location = root if "://" in root else Path(root).resolve().as_uri()
        artifact_location = f"{location.rstrip('/')}/{name}"
    # With a tracking server and no explicit root, the server's artifact store (proxied) is used.
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
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


def end_open_runs(experiment_id: str, airflow_run_id: str, *, failed: bool) -> dict[str, int]:
    """End every run still RUNNING that this Airflow run opened (search parent, trials, chain
    stages, the final run). A trial or stage ends with its own job's outcome (``JOB_STATUS_TAG``):
    a trial that trained well stays FINISHED when the Airflow run fails later. Every other run is
    FAILED if its job or the Airflow run failed, FINISHED if not. Called once the run's last task
    is done, so no run stays RUNNING in the MLflow UI; a retried call finds nothing left to end."""
    from mlflow import MlflowClient

    from llmops.jobs.runtime import JOB_STATUS_TAG

    client = MlflowClient()
    open_runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`llmops.airflow_run_id` = '{airflow_run_id}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    ended = {"FINISHED": 0, "FAILED": 0}
    for run in open_runs:
        job = run.data.tags.get(JOB_STATUS_TAG)
        own_outcome = run.data.tags.get("llmops.stage", "").startswith(("trial-", "stage-")) and job
        status = "FAILED" if job == "FAILED" or (failed and not own_outcome) else "FINISHED"
        client.set_terminated(run.info.run_id, status=status)
        ended[status] += 1
    return ended


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
    # Registering through the run URI lets MLflow link the version to both the run and the logged
    # model; a tracking server refuses a bare `models:/m-...` source without that link.
    version = mlflow.register_model(f"runs:/{run_id}/model", model_name, tags=tags)
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


class RegistryUnavailable(RuntimeError):
    """The tracking server did not answer (down, unreachable, timing out)."""


class PromotionError(RuntimeError):
    """A promotion or rollback could not be carried out as asked."""


class ChampionChanged(PromotionError):
    """The champion moved since the candidate was gated against it: its evidence no longer holds."""

    def __init__(self, model_name: str, version: str, expected: str | None, current: str | None) -> None:
        self.expected, self.current = expected, current
        then = f"v{expected}" if expected is not None else "no champion"
        super().__init__(
            f"{model_name} v{version} was gated against {then}, but the champion is now "
            f"{'v' + current if current is not None else 'none'}: not compared with it, so not promoted"
        )


UNCHECKED: Any = object()  # `promote(expected_champion=...)` left out: no check of the champion


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _unavailable(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        s in text
        for s in ("connection", "max retries", "timed out", "timeout", "refused", "unreachable", "503")
    )


def alias_version(model_name: str, alias: str) -> str | None:
    """The version an alias points at; None when the alias (or the model) does not exist.

    Any other failure is raised: a registry that cannot be read must never look like one with no
    champion, or a promotion would act on a false picture.
    """
    from mlflow import MlflowClient

    uri = configure()
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except Exception as exc:
        if _not_found(exc):
            return None
        if _unavailable(exc):
            raise RegistryUnavailable(
                f"MLflow at {without_url_credentials(uri)} did not answer ({type(exc).__name__})"
            ) from None
        raise


@contextlib.contextmanager
def promotion_lock(model_name: str) -> Iterator[None]:
    """Serialise alias moves of one model across workers: a row lock in the ledger's database.

    Two promotions of the same model racing would otherwise both read the old champion, and the
    `previous` alias would end up on the wrong version. (The DAG also runs one promote task at a
    time; this lock also covers rollbacks and promotions from other DAGs or processes.)
    """
    from llmops.ledger import get_ledger

    engine = get_ledger().engine
    _LOCKS.create(engine, checkfirst=True)
    name = f"promotion:{model_name}"
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (the ledger engine's setting) serialises
        try:
            with conn.begin_nested():
                conn.execute(_LOCKS.insert().values(name=name))
        except sa.exc.IntegrityError:
            pass
        conn.execute(sa.select(_LOCKS.c.name).where(_LOCKS.c.name == name).with_for_update()).first()
        yield


def _move(model_name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model_name, alias, version)


def promote(model_name: str, version: str, expected_champion: Any = UNCHECKED) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the replaced champion keeps alias ``previous``.

    ``expected_champion``: the champion version (None: none) the candidate was gated against. It
    is compared with the current champion under the lock, so a concurrent promotion cannot slip
    in between; a mismatch raises `ChampionChanged` and leaves the aliases alone.
    """
    from mlflow import MlflowClient

    configure()
    with promotion_lock(model_name):
        before = alias_version(model_name, CHAMPION)
        if before == version:  # a retry after the alias moved
            return {"champion": version, "previous": alias_version(model_name, PREVIOUS)}
        if expected_champion is not UNCHECKED and before != (
            None if expected_champion is None else str(expected_champion)
        ):
            raise ChampionChanged(model_name, version, expected_champion, before)
        if before is not None:
            _move(model_name, PREVIOUS, before)
        _move(model_name, CHAMPION, version)
        after = alias_version(model_name, CHAMPION)
        if after != version:
            raise PromotionError(
                f"alias {CHAMPION} of {model_name} points at {after} after promoting {version}"
            )
        MlflowClient().set_model_version_tag(model_name, version, "llmops.promoted", "true")
    return {"champion": version, "previous": before}


def rollback(model_name: str) -> dict[str, str | None]:
    """Make the `previous` version champion again; the rolled-back version keeps alias `rolled_back`."""
    from mlflow import MlflowClient

    configure()
    with promotion_lock(model_name):
        current = alias_version(model_name, CHAMPION)
        previous = alias_version(model_name, PREVIOUS)
        if previous is None:
            raise PromotionError(f"{model_name} has no '{PREVIOUS}' version to roll back to")
        if current is not None:
            _move(model_name, ROLLED_BACK, current)
        _move(model_name, CHAMPION, previous)
        client = MlflowClient()
        client.delete_registered_model_alias(model_name, PREVIOUS)
        if alias_version(model_name, CHAMPION) != previous:
            raise PromotionError(f"alias {CHAMPION} of {model_name} did not move to {previous}")
        if current is not None:
            client.set_model_version_tag(model_name, current, "llmops.rolled_back", "true")
    return {"champion": previous, "rolled_back": current}


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
