"""What every DAG of a pipeline shares: defaults, failure handling, run context, access, assets.

Imported by DAG files (through the DAG builders), so only the standard library, pendulum,
``airflow.sdk`` and the spec schema at module level.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Asset, get_current_context

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmops.specs import PipelineSpec


START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# The DAGs that govern every pipeline (retention, erasure, rollback, reports) belong to no pipeline owner.
GOVERNANCE_DEFAULT_ARGS = {"owner": "data-governance", "retries": 1, "retry_delay": timedelta(minutes=1)}


def record_failure(pipeline: str) -> Any:
    """A task failure callback that writes the failure into the governance ledger."""

    def callback(context: Any) -> None:
        with fail_fast():  # Airflow logs a failing callback's traceback
            from llmops.orchestration.failures import record_task_failure

            ti = context["ti"]
            record_task_failure(
                pipeline,
                run_id=context["dag_run"].run_id,
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                map_index=getattr(ti, "map_index", -1),
                try_number=getattr(ti, "try_number", None),
                error=context.get("exception"),
            )

    return callback


def default_args(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "on_failure_callback": record_failure(spec.name),
    }


def _control_flow() -> tuple[type[BaseException], ...]:
    """Airflow's own signals (skip, fail, defer, reschedule, timeout) pass a task boundary untouched."""
    from airflow.sdk import exceptions as ex

    return (
        ex.AirflowSkipException,
        ex.AirflowFailException,
        ex.AirflowRescheduleException,
        ex.AirflowTaskTimeout,
        ex.AirflowSensorTimeout,
        ex.TaskDeferred,
        ex.DagRunTriggerException,
    )


def _drop_foreign_causes(exc: BaseException) -> None:
    """Cut third-party exceptions out of an error's chain: tracebacks print every link's message."""
    from llmops.errors import is_own_error

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__cause__ is not None and not is_own_error(current.__cause__):
            current.__cause__ = None
        if current.__context__ is not None and not is_own_error(current.__context__):
            current.__context__ = None
            current.__suppress_context__ = True
        current = current.__cause__ or current.__context__


@contextmanager
def fail_fast() -> Iterator[None]:
    """The task boundary: fail at once, without retries, when retrying cannot help (bad data,
    spec, gate), and let no third-party error text through to the task log, the ledger or the
    OpenLineage FAIL event (the provider records the task's exception and its stack trace).

    A third-party exception leaves as `ExternalError` (its type and codes only), still retried.
    """
    from llmops.errors import ExternalError, PermanentError, is_own_error, safe_error_text

    try:
        yield
    except PermanentError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        _drop_foreign_causes(exc)
        # The cause stays linked (the failure callback records its type) but without its stack: a
        # permanent error's message says what is wrong, and the log shows one traceback, not two.
        exc.__traceback__ = None
        raise AirflowFailException(f"{type(exc).__name__}: {safe_error_text(exc)}") from exc
    except Exception as exc:
        if isinstance(exc, _control_flow()):
            _drop_foreign_causes(exc)  # a skip or fail raised from a third-party error
            raise
        if is_own_error(exc):
            _drop_foreign_causes(exc)
            raise
        import logging
        import traceback

        # Where it was raised (file, line, code), never its message: enough to debug from.
        logging.getLogger(__name__).warning(
            "%s; raised at:\n%s", safe_error_text(exc), "".join(traceback.format_tb(exc.__traceback__))
        )
        raise ExternalError.of(exc) from None


def reference_time() -> str:
    """The run's point in time (data interval end, else when it was due): stable across re-runs."""
    context = get_current_context()
    moment = context.get("data_interval_end") or context["dag_run"].run_after
    return moment.isoformat()


def current_run_id() -> str:
    return get_current_context()["dag_run"].run_id


def curated_asset(spec: PipelineSpec) -> Asset:
    return Asset(name=f"{spec.name}.curated", uri=spec.curated_asset_uri, group="llmops")


def raw_assets(spec: PipelineSpec) -> dict[str, Asset]:
    return {
        s.name: Asset(
            name=f"{spec.name}.raw.{s.name}", uri=f"llmops://{spec.name}/raw/{s.name}", group="llmops"
        )
        for s in spec.sources
    }
