"""The llmops command: scaffolding and spec checks."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmops.cli import main

PROJECT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "include" / "pipelines").mkdir(parents=True)
    (tmp_path / "dags").mkdir()
    shutil.copy(PROJECT / "include" / "pipelines" / "support_bot.yaml", tmp_path / "include" / "pipelines")
    monkeypatch.setenv("LLMOPS_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("LLMOPS_PIPELINES_DIR", raising=False)
    # The demo's connections, as a deployment defines them.
    monkeypatch.setenv(
        "AIRFLOW_CONN_SUPPORT_TICKETS_DB", '{"conn_type": "sqlite", "host": "/tmp/tickets.db"}'
    )
    monkeypatch.setenv("AIRFLOW_CONN_SUPPORT_TICKETS_API", '{"conn_type": "http", "host": "127.0.0.1"}')
    return tmp_path


def test_new_pipeline_scaffolds_a_valid_spec_and_dag_file(tmp_path, monkeypatch, capsys):
    """Expect `llmops new-pipeline` to write a spec that validates once its own connections exist,
    and its thin DAG file."""
    root = _project(tmp_path, monkeypatch)
    assert main(["new-pipeline", "contracts_bot"]) == 0
    assert (
        'build_pipeline_dags("contracts_bot", globals())' in (root / "dags" / "contracts_bot.py").read_text()
    )
    assert main(["validate-specs"]) == 1  # its connections are its own, not yet defined
    assert "Airflow connection 'contracts_bot_db' is not defined" in capsys.readouterr().out
    monkeypatch.setenv("AIRFLOW_CONN_CONTRACTS_BOT_DB", '{"conn_type": "sqlite", "host": "/tmp/c.db"}')
    monkeypatch.setenv("AIRFLOW_CONN_CONTRACTS_BOT_API", '{"conn_type": "http", "host": "127.0.0.1"}')
    assert main(["validate-specs"]) == 0
    assert "ok   contracts_bot.yaml" in capsys.readouterr().out
    assert main(["new-pipeline", "contracts_bot"]) == 2  # never overwrites


def test_validate_specs_reports_broken_spec(tmp_path, monkeypatch, capsys):
    root = _project(tmp_path, monkeypatch)
    (root / "include" / "pipelines" / "bad.yaml").write_text("name: bad\n")
    assert main(["validate-specs"]) == 1
    out = capsys.readouterr().out
    assert "FAIL invalid pipeline spec" in out and "sources: required field is missing" in out


def test_validate_specs_names_a_missing_connection(tmp_path, monkeypatch, capsys):
    """A spec that parses but names a connection this deployment lacks fails, naming the field;
    --offline skips the lookup."""
    _project(tmp_path, monkeypatch)
    monkeypatch.delenv("AIRFLOW_CONN_SUPPORT_TICKETS_API")
    assert main(["validate-specs"]) == 1
    out = capsys.readouterr().out
    assert "sources[1].conn_id: Airflow connection 'support_tickets_api' is not defined" in out
    assert "sources[0].conn_id" not in out
    assert main(["validate-specs", "--offline"]) == 0


def test_validate_specs_checks_every_spec_past_an_unreadable_one(tmp_path, monkeypatch, capsys):
    """A non-UTF-8 file and an alias bomb are reported with their path; the good spec is still checked."""
    root = _project(tmp_path, monkeypatch)
    pipelines = root / "include" / "pipelines"
    (pipelines / "aaa_latin1.yaml").write_bytes("name: aaa_latin1\ndescription: caf\xe9\n".encode("latin-1"))
    layers = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        layers.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (pipelines / "aab_bomb.yaml").write_text("\n".join(layers) + "\n")
    assert main(["validate-specs"]) == 1
    out = capsys.readouterr().out
    assert f"{pipelines / 'aaa_latin1.yaml'}:\n  - not UTF-8 text: byte 0xe9 at line 2" in out
    assert "aab_bomb.yaml" in out and "the aliases expand to" in out
    assert "ok   support_bot.yaml" in out


def test_every_cli_argument_has_help():
    """Expect `llmops <command> --help` to explain every argument it lists."""
    import argparse

    from llmops import cli

    captured: dict[str, argparse.ArgumentParser] = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        try:
            cli.main([])
        except SystemExit:
            pass
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    parser = captured["parser"]
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.dest}"
        for name, sub in subparsers.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert len(subparsers.choices) >= 10 and missing == []
