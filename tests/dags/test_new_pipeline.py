"""`llmops new-pipeline`: the scaffolded DAG file is one Airflow loads, and the scaffolded spec has
its own names (model, batch-inference table, connections), so it cannot touch the demo's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from llmops.cli import main

PROJECT = Path(__file__).resolve().parents[2]
PIPELINES_DIR = PROJECT / "include" / "pipelines"
FAMILY = {"mybot__ingest", "mybot__finetune", "mybot__monitor", "mybot__batch_inference"}


def _old_dag_source(name: str) -> str:
    """What new-pipeline wrote before: no word "airflow" in it."""
    return (
        f'"""DAGs of the {name} pipeline, built from include/pipelines/{name}.yaml."""\n\n'
        "from llmops.orchestration.factory import build_pipeline_dags\n\n"
        f'build_pipeline_dags("{name}", globals())\n'
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding the demo specs and an empty dags/ folder."""
    shutil.copytree(PIPELINES_DIR, tmp_path / "include" / "pipelines")
    (tmp_path / "dags").mkdir()
    monkeypatch.setenv("LLMOPS_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("LLMOPS_PIPELINES_DIR", raising=False)
    return tmp_path


def test_scaffolded_dag_file_is_loaded_by_airflow_in_safe_mode(project: Path, monkeypatch, capsys):
    """Expect Airflow's default DAG discovery (safe mode on) to find the new pipeline's DAGs, where the
    file new-pipeline used to write was skipped without an import error."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import might_contain_dag

    monkeypatch.setenv("AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE", "True")
    assert main(["new-pipeline", "mybot"]) == 0
    dag_file = project / "dags" / "mybot.py"
    assert might_contain_dag(str(dag_file), safe_mode=True)

    bag = DagBag(dag_folder=str(project / "dags"), safe_mode=True)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == FAMILY
    assert bag.dags["mybot__finetune"].access_control  # built from the scaffolded spec

    # The old file: skipped by safe mode, silently (no DAG, no import error); it only loads without it.
    old = project / "old_dags"
    old.mkdir()
    (old / "mybot.py").write_text(_old_dag_source("mybot"))
    assert not might_contain_dag(str(old / "mybot.py"), safe_mode=True)
    skipped = DagBag(dag_folder=str(old), safe_mode=True)
    assert skipped.dag_ids == [] and skipped.import_errors == {}
    assert set(DagBag(dag_folder=str(old), safe_mode=False).dag_ids) == FAMILY


def test_scaffolded_spec_has_its_own_names(project: Path, capsys):
    """Expect the registered model, the batch-inference table and every connection renamed after the
    pipeline, nothing left named after support_bot, and the next steps printed."""
    from llmops.specs import load_spec
    from llmops.specs.checks import other_connections, source_connections
    from llmops.specs.collisions import cross_spec_problems

    assert main(["new-pipeline", "mybot"]) == 0
    out = capsys.readouterr().out
    pipelines = project / "include" / "pipelines"
    text = (pipelines / "mybot.yaml").read_text()
    body = text.split("\nname: mybot\n", 1)[1]  # below the header saying where it comes from
    assert "support_bot" not in body and "support_tickets_db" not in body
    spec = load_spec(pipelines / "mybot.yaml")
    demo = load_spec(pipelines / "support_bot.yaml")
    assert spec.registry.model_name == "mybot"
    assert spec.batch_inference is not None and spec.batch_inference.target_table == "mybot_answers"
    conns = {**source_connections(spec), **other_connections(spec)}
    demo_conns = {**source_connections(demo), **other_connections(demo)}
    assert conns and not set(conns.values()) & set(demo_conns.values())
    assert all(conn.startswith("mybot_") for conn in conns.values())
    assert "TODO" in spec.description and "demo" not in spec.tags
    assert cross_spec_problems({p: load_spec(p) for p in pipelines.glob("*.yaml")}) == {}
    # What to do next: the file to edit, the sections still the demo's, the connections to define.
    assert f"edit {pipelines / 'mybot.yaml'}" in out
    assert "sources:" in out and "AIRFLOW_CONN_MYBOT_DB" in out and "llmops validate-specs" in out
    assert "mybot__batch_inference" in out
    assert main(["validate-specs", "--offline"]) == 0


@pytest.mark.parametrize("name", ["MyBot", "my-bot", "my__bot", "mybot_", "1bot", "b", "my bot", "a" * 42])
def test_refuses_a_name_that_is_not_lower_snake_case(project: Path, capsys, name: str):
    assert main(["new-pipeline", name]) == 2
    assert "is not lower_snake_case" in capsys.readouterr().err
    assert sorted(p.name for p in (project / "dags").iterdir()) == []
    assert {p.stem for p in (project / "include" / "pipelines").iterdir()} == {
        p.stem for p in PIPELINES_DIR.glob("*.yaml")
    }


def test_refuses_an_existing_spec_or_dag_file(project: Path, capsys):
    """Expect a name taken by a spec, or by any DAG file (the governance DAGs' too), to be refused."""
    assert main(["new-pipeline", "support_bot"]) == 2
    assert "exists already" in capsys.readouterr().err
    (project / "dags" / "governance.py").write_text("# airflow dag\n")
    assert main(["new-pipeline", "governance"]) == 2
    assert f"exists already: {project / 'dags' / 'governance.py'}" in capsys.readouterr().err
    assert not (project / "include" / "pipelines" / "governance.yaml").exists()


def test_refuses_a_name_another_spec_registers(project: Path, capsys):
    """Expect no file written when another pipeline already registers a model of that name."""
    pipelines = project / "include" / "pipelines"
    raw = yaml.safe_load((pipelines / "support_replies.yaml").read_text())
    raw["registry"]["model_name"] = "mybot"
    (pipelines / "support_replies.yaml").write_text(yaml.safe_dump(raw))
    assert main(["new-pipeline", "mybot"]) == 2
    err = capsys.readouterr().err
    assert "registry.model_name: 'mybot' is also the registry.model_name of" in err
    assert str(pipelines / "support_replies.yaml") in err
    assert not (pipelines / "mybot.yaml").exists() and not (project / "dags" / "mybot.py").exists()


def test_every_argument_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["new-pipeline", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "lower_snake_case" in out and "registered model name" in out


def test_a_broken_demo_spec_is_reported_and_nothing_written(project: Path, capsys):
    pipelines = project / "include" / "pipelines"
    (pipelines / "support_bot.yaml").write_text("name: support_bot\n")
    assert main(["new-pipeline", "mybot"]) == 2
    err = capsys.readouterr().err
    assert f"the demo spec it copies ({pipelines / 'support_bot.yaml'}) is unusable" in err
    assert not (pipelines / "mybot.yaml").exists() and not (project / "dags" / "mybot.py").exists()
