"""Build the Airflow DAG family for one pipeline spec.

Imported by the thin files in dags/, so only the standard library, pendulum, ``airflow.sdk`` and the
spec loader are imported at module level; every task imports its heavy dependencies when it runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Asset, Param, dag, get_current_context, task

from llmops.specs import PipelineSpec, load_pipeline

if TYPE_CHECKING:
    from collections.abc import Iterator

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def _record_failure(pipeline: str) -> Any:
    """A task failure callback that writes the failure into the governance ledger."""

    def callback(context: Any) -> None:
        from llmops.orchestration.common import record_task_failure

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


def _default_args(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "on_failure_callback": _record_failure(spec.name),
    }


@contextmanager
def _fail_fast() -> Iterator[None]:
    """Fail a task at once, without retries, when retrying cannot help (bad data, spec, gate)."""
    from llmops.errors import PermanentError

    try:
        yield
    except PermanentError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _reference_time() -> str:
    """The run's point in time (data interval end, else when it was due): stable across re-runs."""
    context = get_current_context()
    moment = context.get("data_interval_end") or context["dag_run"].run_after
    return moment.isoformat()


def _run_id() -> str:
    return get_current_context()["dag_run"].run_id


_ACCESS_LEVELS = {
    "read": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
    "trigger": {"DAGs": {"can_read"}, "DAG Runs": {"can_read", "can_create"}},
    "edit": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create", "can_edit"}},
}


def access_control(roles: dict[str, str]) -> dict[str, dict[str, set[str]]] | None:
    """A DAG's ``access_control`` from the spec's role levels (None: no per-DAG rules)."""
    return {
        role: {k: set(v) for k, v in _ACCESS_LEVELS[level].items()} for role, level in roles.items()
    } or None


def curated_asset(spec: PipelineSpec) -> Asset:
    return Asset(name=f"{spec.name}.curated", uri=spec.curated_asset_uri, group="llmops")


def raw_assets(spec: PipelineSpec) -> dict[str, Asset]:
    return {
        s.name: Asset(
            name=f"{spec.name}.raw.{s.name}", uri=f"llmops://{spec.name}/raw/{s.name}", group="llmops"
        )
        for s in spec.sources
    }


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
        default_args=_default_args(spec),
        tags=["llmops", "ingest", *spec.tags],
        access_control=access_control(spec.access.ingest),
    )
    def ingest() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            from llmops.orchestration import ingest as steps

            with _fail_fast():
                return steps.plan(spec.name, _run_id())

        @task(max_active_tis_per_dag=4, map_index_template="{{ item['source'] }}[{{ item['partition'] }}]")
        def extract(item: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import ingest as steps

            with _fail_fast():
                return steps.extract_partition(spec.name, item, _run_id())

        @task(outlets=list(raws.values()))
        def commit(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            from llmops.orchestration import ingest as steps

            with _fail_fast():
                committed = steps.commit_raw(spec.name, list(parts), _run_id())
            events = get_current_context()["outlet_events"]
            for item in committed:
                events[raws[item["source"]]].extra = {
                    "snapshot_id": item["snapshot_id"],
                    "rows": item["row_count"],
                }
            return committed

        @task
        def validate(raw: list[dict[str, Any]]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from llmops.orchestration import ingest as steps

            with _fail_fast():
                result = steps.validate(spec.name, list(raw), _run_id(), now=_reference_time())
            if result.get("no_new_data"):
                raise AirflowSkipException(
                    "no new rows since the last committed watermark: nothing to publish"
                )
            return result

        @task(outlets=[asset])
        def curate(validated: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import ingest as steps

            with _fail_fast():
                result = steps.curate(spec.name, validated, _run_id())
            get_current_context()["outlet_events"][asset].extra = {
                "curated_snapshot_id": result["curated_snapshot_id"],
                "row_count": result["row_count"],
            }
            return result

        curate(validate(commit(extract.expand(item=plan()))))

    return ingest()


FINETUNE_PARAMS = {
    "curated_snapshot_id": Param(
        "latest",
        type="string",
        title="Curated snapshot",
        description="Snapshot id to train on; 'latest' takes the newest curated snapshot "
        "(or the one whose publication triggered this run).",
        pattern=r"^(latest|[0-9a-f]{20})$",
    ),
    "learning_rate": Param(
        None,
        type=["null", "number"],
        title="Learning rate",
        description="Override the spec's learning rate.",
        exclusiveMinimum=0,
        maximum=1,
    ),
    "epochs": Param(
        None,
        type=["null", "number"],
        title="Epochs",
        description="Override the spec's number of epochs.",
        exclusiveMinimum=0,
        maximum=100,
    ),
    "max_steps": Param(
        None,
        type=["null", "integer"],
        title="Max steps",
        description="Stop after this many optimizer steps (smoke runs).",
        minimum=1,
    ),
    "promote": Param(
        True,
        type="boolean",
        title="Promote if gates pass",
        description="Move the 'champion' alias to the new version when every gate passes.",
    ),
}


def finetune_dag(spec: PipelineSpec) -> DAG:
    asset = curated_asset(spec)

    @dag(
        dag_id=spec.finetune_dag_id,
        description=f"Fine-tune, evaluate, gate, register and promote '{spec.registry.model_name}'.",
        doc_md=f"""
### {spec.name}: fine-tune

Runs when a new curated snapshot of `{spec.name}` is published, or from the trigger form.
Builds the training dataset of each stage ({" -> ".join(spec.training.methods)}), trains a LoRA
adapter per stage on `{spec.training.base_model.uri}` (each stage on the previous stage's merged model;
{spec.training.launcher} launcher), evaluates the final one, applies the gates
({", ".join(f"{g.metric}" for g in spec.gates)}), registers it in MLflow as `{spec.registry.model_name}`
and moves the `champion` alias. An audit report is written at the end of every run, pass or fail.
""",
        schedule=[asset],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(spec),
        params=FINETUNE_PARAMS,
        tags=["llmops", "finetune", *spec.tags],
        access_control=access_control(spec.access.finetune),
    )
    def finetune() -> None:
        @task
        def start() -> str:
            """Resolve which curated snapshot this run trains on and record the run's parameters."""
            from llmops.orchestration import finetune as steps

            context = get_current_context()
            snapshot_id = context["params"]["curated_snapshot_id"]
            if snapshot_id == "latest":
                events = context.get("triggering_asset_events") or {}
                for asset_events in events.values():
                    for event in asset_events:
                        snapshot_id = (event.extra or {}).get("curated_snapshot_id", snapshot_id)
            with _fail_fast():
                return steps.start_finetune(spec.name, snapshot_id, dict(context["params"]), _run_id())

        @task
        def prepare_data(snapshot_id: str) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.prepare_training_data(spec.name, snapshot_id, _run_id())

        @task
        def prepare_train(data: dict[str, Any], search: dict[str, Any] | None = None) -> dict[str, Any]:
            """Write the training job's config (the search's best parameters, then Params, win)."""
            from llmops.orchestration import finetune as steps

            params = get_current_context()["params"]
            overrides = {k: params.get(k) for k in ("learning_rate", "epochs", "max_steps")}
            with _fail_fast():
                return steps.prepare_train(spec.name, data, _run_id(), overrides, search)

        @task
        def collect_train(job: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.collect_train(spec.name, job, _run_id())

        @task
        def prepare_evaluate(trained: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.prepare_evaluate(spec.name, trained, _run_id())

        @task
        def collect_evaluate(job: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.collect_evaluate(spec.name, job, _run_id())

        @task(retries=0)
        def check_gates(evaluation: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.check_gates(spec.name, evaluation, trained, _run_id())

        @task
        def register(trained: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.register(spec.name, trained, decision, _run_id())

        @task(pool="default_pool", max_active_tis_per_dag=1)
        def promote(registered: dict[str, Any]) -> dict[str, Any]:
            """Move `champion` (one promotion per model at a time; the alias is checked after)."""
            from llmops.orchestration import finetune as steps

            context = get_current_context()
            enabled = bool(context["params"]["promote"])
            approval = None
            if spec.registry.approval.required:
                approval = context["ti"].xcom_pull(task_ids="approve")
            with _fail_fast():
                return steps.promote(spec.name, registered, _run_id(), enabled=enabled, approval=approval)

        @task
        def audit_report() -> dict[str, Any]:
            from llmops.orchestration import finetune as steps

            with _fail_fast():
                return steps.audit_report(spec.name, _run_id())

        @task(retries=1)
        def deploy(promoted: dict[str, Any]) -> dict[str, Any]:
            """Serve the new champion on each `deployment.targets` entry (smoke test, manifests)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from llmops.orchestration import deploy as steps

            if not promoted.get("promoted"):
                raise AirflowSkipException("the champion did not change in this run: nothing to deploy")
            with _fail_fast():
                return steps.deploy(spec.name, _run_id(), trigger="promotion")

        @task
        def notify() -> dict[str, Any]:
            """Tell downstream systems what happened (promoted, gate_failed, deployment_failed)."""
            from llmops.orchestration import deploy as steps

            with _fail_fast():
                return steps.notify_finetune(spec.name, _run_id(), dag_id=spec.finetune_dag_id)

        started = start()
        data = prepare_data(started)
        for stage in spec.training.preceding_stages:
            data = _stage_tasks(spec, stage.name, data)
        search_summary = None
        if spec.training.search is not None:
            search_summary = _search_tasks(spec, data)
        train_job = prepare_train(data, search_summary)
        ran_train = _job_task(spec, "run_train", "llmops.training", "prepare_train", retries=1)
        trained = collect_train(train_job)
        train_job >> ran_train >> trained
        eval_job = prepare_evaluate(trained)
        ran_eval = _job_task(spec, "run_evaluate", "llmops.evaluation", "prepare_evaluate", retries=1)
        evaluation = collect_evaluate(eval_job)
        eval_job >> ran_eval >> evaluation
        decision = check_gates(evaluation, trained)
        registered = register(trained, decision)
        promoted = promote(registered)
        if spec.registry.approval.required:
            registered >> _approval_task(spec) >> promoted
        last = deploy(promoted) if spec.deployment.targets else promoted
        # A teardown runs whatever happened after `start`, and does not decide the run's state:
        # a run whose gates failed is still marked failed, and still gets its audit report.
        report = audit_report().as_teardown(setups=started)
        last >> report
        if spec.integrations.webhook_conn_id:
            # After the report (its link works when the receiver follows it); as a teardown, it
            # runs on gate failures too, and a receiver that is down never changes the run's state.
            report >> notify().as_teardown(setups=started)

    return finetune()


APPROVAL_BODY = """\
**{{ ti.xcom_pull(task_ids='register')['model_name'] }} version
{{ ti.xcom_pull(task_ids='register')['version'] }}** passed its gates and waits for approval to
become `champion`.

| Gate | Observed | Bound | Champion | Passed |
|---|---|---|---|---|
{% for g in ti.xcom_pull(task_ids='check_gates')['gates'] -%}
| {{ g.metric }} | {{ g.observed }} | {{ g.reason }} | {{ g.champion if g.champion is not none else '' }} \
| {{ 'yes' if g.passed else 'NO' }} |
{% endfor %}
Training data: curated snapshot `{{ ti.xcom_pull(task_ids='collect_train')['curated_snapshot_id'] }}`,
SFT snapshot `{{ ti.xcom_pull(task_ids='collect_train')['sft_snapshot_id'] }}`. The run's audit report
(Compliance reports) holds the full evidence. No answer within the deadline counts as **Reject**.
"""


def _approval_task(spec: PipelineSpec) -> Any:
    """A human decision in the Airflow UI (Required actions) before the champion alias moves.

    The options are Approve and Reject; no answer before ``registry.approval.timeout_hours``
    resolves to Reject. The task itself never skips or fails on Reject: `promote` reads the
    decision, records it with the responder's identity, and leaves the champion alone.
    """
    from airflow.providers.standard.operators.hitl import HITLOperator

    approval = spec.registry.approval
    return HITLOperator(
        task_id="approve",
        subject=f"Promote {spec.registry.model_name} to champion?",
        body=APPROVAL_BODY,
        options=["Approve", "Reject"],
        defaults=["Reject"],
        multiple=False,
        response_timeout=timedelta(hours=approval.timeout_hours),
        assigned_users=[{"id": user, "name": user} for user in approval.approvers] or None,
        retries=0,
    )


def _job_template(upstream: str, key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='" + upstream + "')['" + key + "'] }}"


def _job_task(spec: PipelineSpec, task_id: str, module: str, upstream: str, *, retries: int) -> Any:
    """The task that runs the job `upstream` wrote: a local subprocess, or a pod on a GPU node.

    Either way the job reads its config from the lake and writes its result there, and the next
    task reads it from there; a retry of a training job resumes from its last checkpoint.
    """
    if spec.training.launcher == "kubernetes":
        from llmops.launch.kubernetes import pod_labels, training_pod_operator

        assert spec.training.kubernetes is not None
        return training_pod_operator(
            task_id=task_id,
            spec=spec.training.kubernetes,
            module=module,
            config_uri=_job_template(upstream, "config_uri"),
            distributed=spec.training.distributed if module == "llmops.training" else None,
            name=f"{spec.name}-{task_id}",
            labels=pod_labels(spec.name, task_id.removeprefix("run_")),
            retries=retries,
        )

    @task(task_id=task_id, retries=retries)
    def run_locally() -> None:
        from llmops.orchestration import finetune as steps

        job = get_current_context()["ti"].xcom_pull(task_ids=upstream)
        steps.run_job(spec.name, module, job["config_uri"], _run_id())

    return run_locally()


def _stage_tasks(spec: PipelineSpec, name: str, data: Any) -> Any:
    """prepare_stage_<name> -> run_stage_<name> -> collect_stage_<name> for one chain stage.

    The stage trains on its own dataset snapshot with its own MLflow run; its merged model is
    the base of what comes next. A stage gate that is not met stops the chain (no retries).
    """

    @task(task_id=f"prepare_stage_{name}")
    def prepare_stage(data: dict[str, Any]) -> dict[str, Any]:
        from llmops.orchestration import finetune as steps

        max_steps = get_current_context()["params"].get("max_steps")
        with _fail_fast():
            return steps.prepare_stage(spec.name, data, name, _run_id(), max_steps)

    @task(task_id=f"collect_stage_{name}")
    def collect_stage(job: dict[str, Any]) -> dict[str, Any]:
        from llmops.orchestration import finetune as steps

        with _fail_fast():
            return steps.collect_stage(spec.name, job, _run_id())

    job = prepare_stage(data)
    ran = _job_task(spec, f"run_stage_{name}", "llmops.training", f"prepare_stage_{name}", retries=1)
    collected = collect_stage(job)
    job >> ran >> collected
    return collected


def _search_tasks(spec: PipelineSpec, data: Any) -> Any:
    """plan_search -> run_trial (mapped, one per trial) -> finish_search; returns the summary.

    A failed trial fails only its own mapped task: finish_search runs once every trial is done,
    records the failure in the study, and the final training goes on with the best parameters.
    """
    search = spec.training.search
    assert search is not None

    @task
    def plan_search(data: dict[str, Any]) -> list[dict[str, Any]]:
        from llmops.orchestration import finetune as steps

        with _fail_fast():
            return steps.plan_search(spec.name, data, _run_id(), dict(get_current_context()["params"]))

    @task(trigger_rule="all_done")
    def finish_search(data: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
        from llmops.orchestration import finetune as steps

        with _fail_fast():
            return steps.finish_search(spec.name, data, trials, _run_id())

    trials = plan_search(data)
    if spec.training.launcher == "kubernetes":
        from llmops.launch.kubernetes import mapped_training_pods, pod_labels

        assert spec.training.kubernetes is not None
        ran = mapped_training_pods(
            arguments=trials.map(lambda trial: trial["arguments"]),
            task_id="run_trial",
            spec=spec.training.kubernetes,
            config_uri="{{ ti.xcom_pull(task_ids='plan_search')[ti.map_index]['config_uri'] }}",
            distributed=spec.training.distributed,
            name=f"{spec.name}-trial",
            labels=pod_labels(spec.name, "trial"),
            retries=0,
            max_active_tis_per_dag=search.parallelism,
            pre_execute=_trial_budget_guard(spec),
        )
    else:

        @task(
            retries=0,
            max_active_tis_per_dag=search.parallelism,
            map_index_template="trial {{ trial['number'] }}",
        )
        def run_trial(trial: dict[str, Any]) -> None:
            """One search trial; pruned by the study's median pruner, failure recorded, not fatal."""
            from llmops.orchestration import finetune as steps

            _skip_over_budget(spec, trial, get_current_context())
            steps.run_job(spec.name, "llmops.training", trial["config_uri"])

        ran = run_trial.expand(trial=trials)
    summary = finish_search(data, trials)
    ran >> summary
    return summary


def _skip_over_budget(spec: PipelineSpec, trial: dict[str, Any] | None, context: Any) -> None:
    """Skip a search trial (recorded) when this run's trials have spent `cost.budget`."""
    if spec.cost is None or spec.cost.budget is None:
        return
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.orchestration import finetune as steps

    trials = list(context["ti"].xcom_pull(task_ids="plan_search") or [])
    if trial is None:  # a pod: its trial is the plan's entry at its map index
        index = context["ti"].map_index
        if not 0 <= index < len(trials):
            return
        trial = trials[index]
    try:
        steps.check_trial_budget(spec.name, trial, trials, context["dag_run"].run_id)
    except steps.BudgetExceeded as exc:
        raise AirflowSkipException(str(exc)) from None


def _trial_budget_guard(spec: PipelineSpec) -> Any:
    """The budget check as a pod operator's pre_execute hook: no pod starts over budget."""
    if spec.cost is None or spec.cost.budget is None:
        return None

    def guard(context: Any) -> None:
        _skip_over_budget(spec, None, context)

    return guard


def build_pipeline_dags(name: str, namespace: dict[str, Any]) -> list[DAG]:
    """Load the spec `name` and put its DAGs into the calling DAG file's globals.

    A broken spec raises here, so Airflow shows it as an import error of that pipeline's file only.
    """
    spec = load_pipeline(name)
    dags = [ingest_dag(spec), finetune_dag(spec)]
    from llmops.orchestration.monitor_dag import monitor_dag  # it imports this module's helpers

    dags.append(monitor_dag(spec))
    if spec.batch_inference is not None:
        from llmops.orchestration.batch_dag import batch_inference_dag

        dags.append(batch_inference_dag(spec))
    for built in dags:
        namespace[built.dag_id.replace("-", "_")] = built
    return dags
