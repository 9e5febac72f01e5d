"""The finetune DAG's shape per launcher: the same jobs run as local tasks or as GPU pods.

Both launchers read the job config the prepare task wrote to the lake and run the same argv
(``llmops.launch.command.job_argv``); with a search, trials are mapped tasks whose failures
do not stop the search (``finish_search`` runs once all of them are done).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.launch.command import job_argv
from llmops.orchestration.finetune.dag import finetune_dag
from llmops.specs import parse_spec

PIPELINE = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_bot.yaml"

SEARCH = {
    "trials": 3,
    "parallelism": 2,
    "max_steps_per_trial": 20,
    "space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}},
}
KUBERNETES = {
    "image": "registry.example/llmops-trainer@sha256:" + "a" * 64,
    "gpus": 2,
    "node_selector": {"cloud.example/gpu-pool": "a100"},
    "secrets": [{"secret": "llmops-trainer-env"}],
}


def _spec(**training: Any) -> Any:
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["training"].update(training)
    raw["training"] = {k: v for k, v in raw["training"].items() if v is not None}
    return parse_spec(raw)


def _template(upstream: str) -> str:
    return "{{ ti.xcom_pull(task_ids='" + upstream + "')['config_uri'] }}"


def test_local_launcher_runs_jobs_as_tasks_between_prepare_and_collect() -> None:
    dag = finetune_dag(_spec(launcher="local"))
    for prepare, run, collect in (
        ("prepare_train", "run_train", "collect_train"),
        ("prepare_evaluate", "run_evaluate", "collect_evaluate"),
    ):
        task = dag.get_task(run)
        assert type(task).__name__ != "KubernetesPodOperator"
        assert task.upstream_task_ids == {prepare}
        assert dag.get_task(collect).upstream_task_ids >= {run}
    assert dag.get_task("run_train").retries == 1  # a retry resumes from the last checkpoint


def test_without_search_there_are_no_trial_tasks() -> None:
    spec = _spec(search=None)
    assert spec.training.search is None
    dag = finetune_dag(spec)
    assert not {"plan_search", "run_trial", "finish_search"} & set(dag.task_ids)


def test_local_search_maps_one_task_per_trial_and_tolerates_failed_trials() -> None:
    dag = finetune_dag(_spec(search=SEARCH))
    run_trial = dag.get_task("run_trial")
    assert type(run_trial).__name__.endswith("MappedOperator")
    assert run_trial.partial_kwargs["retries"] == 0
    assert run_trial.partial_kwargs["max_active_tis_per_dag"] == 2
    finish = dag.get_task("finish_search")
    assert finish.trigger_rule == "all_done"
    assert "run_trial" in finish.upstream_task_ids
    assert "finish_search" in dag.get_task("prepare_train").upstream_task_ids


def test_kubernetes_launcher_runs_the_same_argv_in_gpu_pods() -> None:
    from llmops.launch.kubernetes import pod_manifest

    spec = _spec(
        launcher="kubernetes",
        kubernetes=KUBERNETES,
        distributed={"strategy": "ddp", "processes_per_node": 2},
        search=SEARCH,
    )
    dag = finetune_dag(spec)
    train = dag.get_task("run_train")
    assert type(train).__name__ == "KubernetesPodOperator"
    assert [*train.cmds, *train.arguments] == job_argv(
        "llmops.training", _template("prepare_train"), spec.training.distributed
    )
    evaluate = dag.get_task("run_evaluate")
    # Evaluation is one process: no torchrun even when training is distributed.
    assert [*evaluate.cmds, *evaluate.arguments] == job_argv(
        "llmops.evaluation", _template("prepare_evaluate")
    )
    assert train.upstream_task_ids == {"prepare_train"}
    assert train.retries == 1

    pod = pod_manifest(train)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"cloud.example/gpu-pool": "a100"}
    assert container["envFrom"][0]["secretRef"]["name"] == "llmops-trainer-env"
    assert container["image"] == KUBERNETES["image"]

    trials = dag.get_task("run_trial")
    assert type(trials).__name__ == "MappedOperator"
    assert trials.operator_class.__name__ == "KubernetesPodOperator"
    assert trials.partial_kwargs["cmds"] == ["torchrun"]
    assert "arguments" in trials.expand_input.value
    assert dag.get_task("finish_search").trigger_rule == "all_done"


@pytest.mark.parametrize("launcher", ["local", "kubernetes"])
def test_both_launchers_have_the_same_task_graph(launcher: str) -> None:
    extra = {"kubernetes": KUBERNETES} if launcher == "kubernetes" else {}
    dag = finetune_dag(_spec(launcher=launcher, search=SEARCH, **extra))
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    reference = finetune_dag(_spec(launcher="local", search=SEARCH))
    assert edges == {(t.task_id, d) for t in reference.tasks for d in t.downstream_task_ids}


REPLIES = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_replies.yaml"


def _chained_spec(**training: Any) -> Any:
    raw = yaml.safe_load(REPLIES.read_text())
    raw["training"].update(training)
    return parse_spec(raw)


@pytest.mark.parametrize("launcher", ["local", "kubernetes"])
def test_chain_stages_run_in_order_before_the_final_training(launcher: str) -> None:
    extra = {"kubernetes": KUBERNETES} if launcher == "kubernetes" else {}
    spec = _chained_spec(launcher=launcher, **extra)
    dag = finetune_dag(spec)
    # One task group per stage: prepare -> run -> collect.
    assert dag.task_group_dict["stage_answer"].children.keys() == {
        "stage_answer.prepare",
        "stage_answer.run",
        "stage_answer.collect",
    }
    assert dag.get_task("stage_answer.prepare").upstream_task_ids == {"prepare_data"}
    assert dag.get_task("stage_answer.run").upstream_task_ids == {"stage_answer.prepare"}
    assert dag.get_task("stage_answer.collect").upstream_task_ids >= {"stage_answer.run"}
    # The final (preference) training starts from the stage's output.
    assert dag.get_task("prepare_train").upstream_task_ids == {"stage_answer.collect"}
    stage = dag.get_task("stage_answer.run")
    if launcher == "kubernetes":
        assert type(stage).__name__ == "KubernetesPodOperator"
        assert [*stage.cmds, *stage.arguments] == job_argv(
            "llmops.training", _template("stage_answer.prepare"), spec.training.distributed
        )
        assert stage.labels["llmops.io/stage"] == "stage_answer"
    else:
        assert type(stage).__name__ != "KubernetesPodOperator"
    assert stage.retries == 1
