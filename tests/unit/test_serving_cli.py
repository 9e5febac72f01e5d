"""`llmops serve`: the champion (or a version) behind MLflow's scoring server, as the docs say."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmops import cli
from llmops.deployment.serving import serve_command


def test_serve_runs_mlflow_models_serve_for_the_champion(monkeypatch, tmp_path):
    """Expect `llmops serve support_bot` to exec `mlflow models serve -m models:/support_bot@champion`
    with the local environment manager, the tracking URI and the package importable."""
    seen = {}

    def fake_execve(path, argv, env):
        seen.update(path=path, argv=argv, env=env)
        raise SystemExit(0)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # `.venv/bin/llmops serve`, venv not activated
    monkeypatch.setattr(cli.os, "execve", fake_execve)
    with pytest.raises(SystemExit):
        cli.main(["serve", "support_bot", "--port", "5009"])
    argv = seen["argv"]
    assert argv[1:6] == ["-m", "mlflow", "models", "serve", "-m"]
    assert argv[6] == "models:/support_bot@champion"
    assert argv[argv.index("--env-manager") + 1] == "local"
    assert argv[argv.index("-p") + 1] == "5009" and argv[argv.index("-h") + 1] == "127.0.0.1"
    assert seen["env"]["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
    assert seen["env"]["PYTHONPATH"].split(":")[0].endswith("include")
    # mlflow starts uvicorn by name: the interpreter's own scripts come first on PATH
    assert seen["env"]["PATH"].split(":") == [str(Path(sys.executable).parent), "/usr/bin", "/bin"]

    seen.clear()
    with pytest.raises(SystemExit):
        cli.main(["serve", "support_bot", "--version", "3"])
    assert "models:/support_bot/3" in seen["argv"]


def test_serve_command_flags():
    argv = serve_command("models:/m/1", host="0.0.0.0", port=8080, workers=2, timeout=90)
    assert argv[argv.index("-w") + 1] == "2" and argv[argv.index("-t") + 1] == "90"
    assert argv[argv.index("-h") + 1] == "0.0.0.0"
