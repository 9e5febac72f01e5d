"""The `<pipeline>__finetune` DAG: data -> (chain stages) -> (search) -> train -> evaluate -> gates ->
register -> (approve) -> promote -> (deploy), with an audit report and notification at the end.

Imported when DAG files are parsed: only the standard library, ``airflow.sdk`` and light llmops
modules at module level; each task imports its step module when it runs.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, TriggerRule, dag, get_current_context, task

from llmops.governance.roles import dag_access_control
from llmops.orchestration.dag_support import (
    START_DATE,
    curated_asset,
    current_run_id,
    default_args,
    fail_fast,
)
from llmops.orchestration.params import FINETUNE_PARAMS

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


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
        default_args=default_args(spec),
        params=FINETUNE_PARAMS,
        tags=["llmops", "finetune", *spec.tags],
        access_control=dag_access_control(spec, spec.finetune_dag_id),
    )
    def finetune() -> None:
        _wire(spec)

    return finetune()


def _wire(spec: PipelineSpec) -> None:
    """The run: data -> stages -> search -> train -> evaluate -> gates -> register -> promote."""
    steps = _StepTasks(spec)
    started = steps.start()
    data = steps.prepare_data(started)
    for stage in spec.training.preceding_stages:
        data = _stage_group(spec, stage.name, data)
    search_summary = _search_tasks(spec, data) if spec.training.search is not None else None
    train_job = steps.prepare_train(data, search_summary)
    trained = _run_job(spec, "train", "llmops.training", train_job, steps.collect_train)
    eval_job = steps.prepare_evaluate(trained)
    evaluation = _run_job(spec, "evaluate", "llmops.evaluation", eval_job, steps.collect_evaluate)
    decision = steps.check_gates(evaluation, trained)
    registered = steps.register(trained, decision)
    if spec.registry.approval.required:
        approvals = _approval_tasks(spec)
        registered >> approvals[0]
        for earlier, later in itertools.pairwise(approvals):
            earlier >> later
        promoted = steps.promote(registered, [a.output for a in approvals])
    else:
        promoted = steps.promote(registered)
    last = steps.deploy(promoted) if spec.deployment.targets else promoted
    # A teardown does not decide the run's state: a run whose gates failed is still marked failed,
    # and still gets its audit report. ALL_DONE, not the teardown default (which needs `start` to
    # have succeeded): a run stopped at its first task is reported too.
    report = steps.audit_report().as_teardown(setups=started)
    report.operator.trigger_rule = TriggerRule.ALL_DONE
    last >> report
    if spec.integrations.webhook_conn_id:
        # After the report (its link works when the receiver follows it); as a teardown, it
        # runs on gate failures too, and a receiver that is down never changes the run's state.
        report >> steps.notify().as_teardown(setups=started)


class _StepTasks:
    """The run's tasks, each the body of one step function of this package (bound to the spec)."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec

    def start(self) -> Any:
        spec = self.spec

        @task
        def start() -> str:
            """Resolve which curated snapshot this run trains on and record the run's parameters."""
            with fail_fast():
                from llmops.orchestration.finetune import data as steps

                context = get_current_context()
                snapshot_id = context["params"]["curated_snapshot_id"]
                if snapshot_id == "latest":
                    snapshot_id = _triggering_snapshot(context, snapshot_id)
                return steps.start_finetune(spec.name, snapshot_id, dict(context["params"]), current_run_id())

        return start()

    def prepare_data(self, snapshot_id: Any) -> Any:
        spec = self.spec

        @task
        def prepare_data(snapshot_id: str) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import data as steps

                return steps.prepare_training_data(spec.name, snapshot_id, current_run_id())

        return prepare_data(snapshot_id)

    def prepare_train(self, data: Any, search: Any) -> Any:
        spec = self.spec

        @task
        def prepare_train(data: dict[str, Any], search: dict[str, Any] | None = None) -> dict[str, Any]:
            """Write the training job's config (the search's best parameters, then Params, win)."""
            with fail_fast():
                from llmops.orchestration.finetune import train as steps

                params = get_current_context()["params"]
                overrides = {k: params.get(k) for k in ("learning_rate", "epochs", "max_steps")}
                return steps.prepare_train(spec.name, data, current_run_id(), overrides, search)

        return prepare_train(data, search)

    def collect_train(self, job: Any) -> Any:
        spec = self.spec

        @task
        def collect_train(job: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import train as steps

                return steps.collect_train(spec.name, job, current_run_id())

        return collect_train(job)

    def prepare_evaluate(self, trained: Any) -> Any:
        spec = self.spec

        @task
        def prepare_evaluate(trained: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import evaluate as steps

                return steps.prepare_evaluate(spec.name, trained, current_run_id())

        return prepare_evaluate(trained)

    def collect_evaluate(self, job: Any) -> Any:
        spec = self.spec

        @task
        def collect_evaluate(job: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import evaluate as steps

                return steps.collect_evaluate(spec.name, job, current_run_id())

        return collect_evaluate(job)

    def check_gates(self, evaluation: Any, trained: Any) -> Any:
        spec = self.spec

        @task(retries=0)
        def check_gates(evaluation: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import evaluate as steps

                return steps.check_gates(spec.name, evaluation, trained, current_run_id())

        return check_gates(evaluation, trained)

    def register(self, trained: Any, decision: Any) -> Any:
        spec = self.spec

        @task
        def register(trained: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import release as steps

                return steps.register(spec.name, trained, decision, current_run_id())

        return register(trained, decision)

    def promote(self, registered: Any, approval: Any = None) -> Any:
        spec = self.spec

        @task(pool="default_pool", max_active_tis_per_dag=1)
        def promote(registered: dict[str, Any], approval: list[Any] | None = None) -> dict[str, Any]:
            """Move `champion` (one promotion per model at a time; the alias is checked after)."""
            with fail_fast():
                from llmops.orchestration.finetune import release as steps

                context = get_current_context()
                return steps.promote(
                    spec.name,
                    registered,
                    current_run_id(),
                    enabled=bool(context["params"]["promote"]),
                    approval=approval,
                    triggered_by=getattr(context["dag_run"], "triggering_user_name", None),
                )

        return promote(registered, approval)

    def audit_report(self) -> Any:
        spec = self.spec

        @task
        def audit_report() -> dict[str, Any]:
            with fail_fast():
                from llmops.orchestration.finetune import release as steps
                from llmops.orchestration.finetune.jobs import end_tracking_runs

                try:
                    return steps.audit_report(spec.name, current_run_id())
                finally:  # the last task: no MLflow run of this Airflow run stays RUNNING
                    end_tracking_runs(spec.name, current_run_id())

        return audit_report()

    def deploy(self, promoted: Any) -> Any:
        spec = self.spec

        @task(retries=1)
        def deploy(promoted: dict[str, Any]) -> dict[str, Any]:
            """Serve the new champion on each `deployment.targets` entry (smoke test, manifests)."""
            with fail_fast():
                from airflow.sdk.exceptions import AirflowSkipException

                from llmops.orchestration import deploy as steps

                if not promoted.get("promoted"):
                    raise AirflowSkipException("the champion did not change in this run: nothing to deploy")
                return steps.deploy(spec.name, current_run_id(), trigger="promotion")

        return deploy(promoted)

    def notify(self) -> Any:
        spec = self.spec

        @task
        def notify() -> dict[str, Any]:
            """Tell downstream systems what happened (promoted, gate_failed, deployment_failed)."""
            with fail_fast():
                from llmops.orchestration import deploy as steps

                return steps.notify_finetune(spec.name, current_run_id(), dag_id=spec.finetune_dag_id)

        return notify()


def _triggering_snapshot(context: Any, default: str) -> str:
    """The curated snapshot whose publication triggered this run (asset event extra), else `default`."""
    snapshot_id = default
    for asset_events in (context.get("triggering_asset_events") or {}).values():
        for event in asset_events:
            snapshot_id = (event.extra or {}).get("curated_snapshot_id", snapshot_id)
    return snapshot_id


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


def _approval_tasks(spec: PipelineSpec) -> list[Any]:
    """One approval request per required approver (``min_approvers``), one after the other."""
    return [_approval_task(spec, n) for n in range(1, spec.registry.approval.min_approvers + 1)]


def _approval_task(spec: PipelineSpec, n: int = 1) -> Any:
    """A human decision in the Airflow UI (Required actions) before the champion alias moves.

    The options are Approve and Reject; no answer before ``registry.approval.timeout_hours``
    resolves to Reject. The task itself never skips or fails on Reject: `promote` reads the
    decisions, records them with the responders' identities, and leaves the champion alone unless
    enough distinct approvers, none of them the run's triggering user, approved.
    """
    from airflow.providers.standard.operators.hitl import HITLOperator

    approval = spec.registry.approval
    return HITLOperator(
        task_id="approve" if n == 1 else f"approve_{n}",
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


def _run_job(
    spec: PipelineSpec,
    name: str,
    module: str,
    job: Any,
    collect: Any,
    *,
    task_id: str | None = None,
    retries: int = 1,
) -> Any:
    """`job` (what a prepare task wrote) -> run_<name> -> collect: the job runs as a local process,
    or as a pod on a GPU node. Either way it reads its config from the lake and writes its result
    there, where `collect` reads it; a retry of a training job resumes from its last checkpoint.
    Returns what `collect` returns. `name` labels the pod (``run_<name>`` is the default task id)."""
    task_id = task_id or f"run_{name}"
    if spec.training.launcher == "kubernetes":
        from llmops.launch.kubernetes import pod_labels, training_pod_operator

        assert spec.training.kubernetes is not None
        ran = training_pod_operator(
            task_id=task_id,
            spec=spec.training.kubernetes,
            module=module,
            # A pod's arguments are templates: the prepare task's XCom, by its (group-qualified) id.
            config_uri=_job_template(job.operator.task_id, "config_uri"),
            distributed=spec.training.distributed if module == "llmops.training" else None,
            name=f"{spec.name}-run_{name}",
            labels=pod_labels(spec.name, name),
            retries=retries,
        )
        job >> ran
    else:

        @task(task_id=task_id, retries=retries)
        def run_locally(job: dict[str, Any]) -> None:
            with fail_fast():
                from llmops.orchestration.finetune import jobs as steps

                steps.run_job(spec.name, module, job["config_uri"], current_run_id())

        ran = run_locally(job)
    collected = collect(job)
    ran >> collected
    return collected


def _stage_group(spec: PipelineSpec, name: str, data: Any) -> Any:
    """Task group `stage_<name>`: prepare -> run_stage -> collect for one chain stage.

    The stage trains on its own dataset snapshot with its own MLflow run; its merged model is
    the base of what comes next. A stage gate that is not met stops the chain (no retries).
    """
    from airflow.sdk import TaskGroup

    @task(task_id="prepare")
    def prepare_stage(data: dict[str, Any]) -> dict[str, Any]:
        with fail_fast():
            from llmops.orchestration.finetune import train as steps

            max_steps = get_current_context()["params"].get("max_steps")
            return steps.prepare_stage(spec.name, data, name, current_run_id(), max_steps)

    @task(task_id="collect")
    def collect_stage(job: dict[str, Any]) -> dict[str, Any]:
        with fail_fast():
            from llmops.orchestration.finetune import train as steps

            return steps.collect_stage(spec.name, job, current_run_id())

    with TaskGroup(group_id=f"stage_{name}", tooltip=f"chain stage {name}: prepare, train, check its gates"):
        job = prepare_stage(data)
        return _run_job(spec, f"stage_{name}", "llmops.training", job, collect_stage, task_id="run")


def _search_tasks(spec: PipelineSpec, data: Any) -> Any:
    """plan_search -> run_trial (mapped, one per trial) -> finish_search; returns the summary.

    A failed trial fails only its own mapped task: finish_search runs once every trial is done,
    records the failure in the study, and the final training goes on with the best parameters.
    """
    search = spec.training.search
    assert search is not None

    @task
    def plan_search(data: dict[str, Any]) -> list[dict[str, Any]]:
        with fail_fast():
            from llmops.orchestration.finetune import search as steps

            return steps.plan_search(spec.name, data, current_run_id(), dict(get_current_context()["params"]))

    @task(trigger_rule="all_done")
    def finish_search(data: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
        with fail_fast():
            from llmops.orchestration.finetune import search as steps

            return steps.finish_search(spec.name, data, trials, current_run_id())

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
        def run_trial(trial: dict[str, Any], trials: list[dict[str, Any]]) -> None:
            """One search trial; pruned by the study's median pruner, failure recorded, not fatal."""
            with fail_fast():
                from llmops.orchestration.finetune import jobs as steps

                _skip_over_budget(spec, trial, trials, get_current_context())
                steps.run_job(spec.name, "llmops.training", trial["config_uri"], current_run_id())

        ran = run_trial.partial(trials=trials).expand(trial=trials)
    summary = finish_search(data, trials)
    ran >> summary
    return summary


def _skip_over_budget(
    spec: PipelineSpec, trial: dict[str, Any] | None, trials: list[dict[str, Any]] | None, context: Any
) -> None:
    """Skip a search trial (recorded) when this run's trials have spent `cost.budget`."""
    if spec.cost is None or spec.cost.budget is None:
        return
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.orchestration.finetune import search as steps

    if trials is None:  # a pod's pre_execute hook: the plan is read by its task id
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
        with fail_fast():
            _skip_over_budget(spec, None, None, context)

    return guard
