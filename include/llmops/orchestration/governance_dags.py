"""DAGs that govern data and models over time, across every pipeline: retention, erasure requests,
rollback, and the weekly compliance report of every model version.

Imported by dags/governance.py; only the standard library, `airflow.sdk` and light llmops modules
at module level. Pipelines are read when the tasks run, so a new spec needs no change here.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from llmops.governance.roles import governance_access_control
from llmops.governance.sealed import PATTERN as SEALED_PATTERN
from llmops.orchestration.dag_support import GOVERNANCE_DEFAULT_ARGS, START_DATE, fail_fast
from llmops.orchestration.rollback import rollback_dag


def _pipelines(selected: str) -> list[str]:
    from llmops.governance.sweep import pipeline_names

    return pipeline_names(selected)  # broken specs too: their tasks fail, named, and the run with them


def retention_dag() -> DAG:
    @dag(
        dag_id="data_retention",
        access_control=governance_access_control("data_retention"),
        description="Delete snapshots past their retention period, in every pipeline.",
        doc_md="""
### Data retention

Daily. For each pipeline, deletes raw snapshots older than their source's `governance.retention_days`
and derived datasets older than the spec's `retention` block, except snapshots in the lineage of the
current champion and previous model when `retention.keep_model_lineage` is on. Every deletion and
every snapshot kept past its date is recorded in the governance ledger. Stale staging files of runs
that never committed are cleared too. Trigger with `dry_run` to see what would go.

A pipeline whose spec does not load, or a snapshot that cannot be read or deleted, fails that
pipeline's task after everything else is done, naming the file (and the ledger records it): the
run fails rather than skip data past its date.
""",
        schedule="@daily",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=GOVERNANCE_DEFAULT_ARGS,
        tags=["llmops", "governance"],
        params={
            "pipeline": Param(
                "", type="string", title="Pipeline", description="Only this pipeline ('' = all)."
            ),
            "dry_run": Param(False, type="boolean", title="Dry run", description="Report, delete nothing."),
        },
    )
    def data_retention() -> None:
        @task
        def pipelines() -> list[str]:
            with fail_fast():
                return _pipelines(get_current_context()["params"]["pipeline"])

        @task(map_index_template="{{ pipeline }}")
        def apply(pipeline: str) -> dict[str, Any]:
            with fail_fast():
                from llmops.governance.retention import apply_retention
                from llmops.governance.sweep import governed_spec
                from llmops.ledger.events import RetentionFailed

                context = get_current_context()
                now = context.get("data_interval_end") or context["dag_run"].run_after
                run_id = context["dag_run"].run_id
                spec = governed_spec(
                    pipeline, run_id, lambda f, e: RetentionFailed(files=f, errors=e), "retention"
                )
                summary = apply_retention(spec, now, run_id, dry_run=bool(context["params"]["dry_run"]))
                return {k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()}

        apply.expand(pipeline=pipelines())

    return data_retention()


def erasure_dag() -> DAG:
    @dag(
        dag_id="data_erasure_request",
        access_control=governance_access_control("data_erasure_request"),
        description="Erase a data subject from every snapshot and flag the models trained on them.",
        doc_md="""
### Data erasure request (GDPR Art. 17)

Trigger with the data subject's identifier (the value of the pipelines' `dataset.subject_column`,
e.g. an email address) and the request reference. For each pipeline: the subject's records are
removed from every raw, validated, quarantine, curated and training snapshot (new versions are
written, the old ones deleted, key files first), and every model version trained on an affected
snapshot is tagged `llmops.erasure_review` in the registry. Keyed hashes of the subject and of their
record keys go on the pipeline's suppression list, so later ingest runs drop their rows even where
a source still holds them. The ledger records the request under a keyed token of the subject, never
the identifier itself.

Every pipeline with a spec file is covered. One whose spec does not load, or a snapshot that cannot
be read or rewritten, fails that pipeline's task after every other snapshot and pipeline is done,
naming the file, and the ledger records the failure: the run fails, never leaving the subject
somewhere in silence. Fix the cause and clear the failed tasks (or trigger again): erasure is
idempotent, so what was done is found done.

The identifier is given sealed: run `llmops seal-subject` (it reads the identifier from standard
input) and paste what it prints. Airflow keeps a run's configuration in its database, so a plain
identifier would stay there; the form refuses one before any run exists, and only a worker with the
lake's keys can open the sealed value.
""",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=GOVERNANCE_DEFAULT_ARGS,  # erasure is idempotent: a retry finishes what remains
        tags=["llmops", "governance", "privacy"],
        params={
            "subject_id": Param(
                "",
                type="string",
                pattern=SEALED_PATTERN,
                title="Data subject identifier (sealed)",
                description="The value of the subject column (e.g. the customer's email address), sealed "
                "with `llmops seal-subject`: paste the sealed:v1:... string it prints.",
            ),
            "request_id": Param(
                "",
                type="string",
                minLength=3,
                maxLength=64,
                pattern=r"^[A-Za-z0-9_.:-]+$",
                title="Request reference",
                description="Your ticket or case number for this request.",
            ),
            "requested_by": Param(
                "",
                type="string",
                minLength=1,
                title="Requested by",
                description="Who handles the request (DPO).",
            ),
            "pipeline": Param(
                "", type="string", title="Pipeline", description="Only this pipeline ('' = all)."
            ),
        },
    )
    def data_erasure_request() -> None:
        @task
        def pipelines() -> list[str]:
            with fail_fast():
                from llmops.governance.sealed import unseal

                params = get_current_context()["params"]
                unseal(params["subject_id"])  # a value that cannot be opened fails once, here
                return _pipelines(params["pipeline"])

        @task(map_index_template="{{ pipeline }}")
        def erase(pipeline: str) -> dict[str, Any]:
            with fail_fast():
                from llmops.governance.erasure import erase_subject
                from llmops.governance.sealed import unseal
                from llmops.governance.sweep import governed_spec
                from llmops.ledger.events import ErasureFailed

                context = get_current_context()
                params = context["params"]
                request = params["request_id"]
                spec = governed_spec(
                    pipeline,
                    context["dag_run"].run_id,
                    lambda f, e: ErasureFailed(pipeline=pipeline, request_id=request, files=f, errors=e),
                    f"erasure/{request}",
                )
                if not spec.dataset.subject_column:
                    return {"pipeline": pipeline, "skipped": "no dataset.subject_column"}
                return erase_subject(
                    spec,
                    unseal(params["subject_id"]),
                    params["request_id"],
                    context["dag_run"].run_id,
                    params["requested_by"],
                )

        erase.expand(pipeline=pipelines())

    return data_erasure_request()


def compliance_report_dag() -> DAG:
    @dag(
        dag_id="compliance_audit_report",
        access_control=governance_access_control("compliance_audit_report"),
        description="Compliance report, model card and data card of every registered model version.",
        doc_md="""
### Compliance audit report

Weekly, and on demand. For each registered model version (of every pipeline, or of the one chosen),
writes `<reports_root>/<pipeline>/model-<name>-v<version>/` with `audit_report.json`,
`audit_report.html`, `model_card.md` and `data_card.md`: which data (sources, snapshots, row counts,
hashes, collection period), validated how, with what PII handling and encryption, trained and
evaluated how, approved by whom, deployed when, open erasure requests, and the ledger's
verification. Built from the governance ledger, the validation results in the lake, OpenLineage
events (file transport) and the MLflow registry. Each report is recorded in the ledger
(`report.generated`, with every file's SHA-256). The reports appear under **Compliance reports**.

Params: `pipeline` (empty: all), `model_version` (empty: every version of the pipeline's model),
`date_from` / `date_to` (ISO dates, inclusive: only versions registered and events recorded in that
period). The schema is described in docs/audit_reports.md.
""",
        schedule="@weekly",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=GOVERNANCE_DEFAULT_ARGS,
        tags=["llmops", "governance", "compliance"],
        params={
            "pipeline": Param(
                "",
                type="string",
                title="Pipeline",
                description="Only this pipeline (its spec name); empty = every pipeline.",
            ),
            "model_version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                title="Model version",
                description="Only this registered version of the pipeline's model (needs Pipeline); "
                "empty = every registered version.",
            ),
            "date_from": Param(
                None,
                type=["null", "string"],
                format="date",
                title="From (date)",
                description="ISO date YYYY-MM-DD: only versions registered and events recorded on or after it.",
            ),
            "date_to": Param(
                None,
                type=["null", "string"],
                format="date",
                title="To (date)",
                description="ISO date YYYY-MM-DD: only versions registered and events recorded on or before it.",
            ),
        },
    )
    def compliance_audit_report() -> None:
        @task(retries=0)
        def plan() -> list[dict[str, Any]]:
            """Check the Params and list the versions to report on (a bad Param fails here, named)."""
            with fail_fast():
                from llmops.orchestration import compliance

                params = get_current_context()["params"]
                return compliance.plan(
                    params.get("pipeline"),
                    params.get("model_version"),
                    params.get("date_from"),
                    params.get("date_to"),
                )

        @task(map_index_template="{{ item['model_name'] }} v{{ item['version'] }}", max_active_tis_per_dag=2)
        def report(item: dict[str, Any]) -> dict[str, Any]:
            """One version's report: four files written, `report.generated` recorded with their hashes."""
            with fail_fast():
                from llmops.orchestration import compliance

                return compliance.report_version(item, get_current_context()["dag_run"].run_id)

        report.expand(item=plan())

    return compliance_audit_report()


def build_governance_dags(namespace: dict[str, Any]) -> list[DAG]:
    dags = [retention_dag(), erasure_dag(), rollback_dag(), compliance_report_dag()]
    for built in dags:
        namespace[built.dag_id] = built
    return dags
