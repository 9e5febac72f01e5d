"""The model registry against a real MLflow tracking server: versions, promotion, rollback, locks."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from llmops.registry import mlflow_registry as registry


@pytest.fixture
def model(mlflow_server, monkeypatch, tmp_path):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    name = f"registry-test-{uuid.uuid4().hex[:8]}"
    registry.configure()

    class EchoModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    experiment = registry.ensure_experiment(name)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=EchoModel(), pip_requirements=["mlflow"])
    for _ in range(4):
        mlflow.register_model(info.model_uri, name)
    return name


def test_promote_keeps_previous_and_rollback_restores_it(model):
    """Expect champion/previous to move on promotion and a rollback to restore the previous champion."""
    assert registry.alias_version(model, "champion") is None
    assert registry.promote(model, "1") == {"champion": "1", "previous": None}
    assert registry.promote(model, "2") == {"champion": "2", "previous": "1"}
    assert registry.promote(model, "2") == {"champion": "2", "previous": "1"}  # idempotent
    assert registry.rollback(model) == {"champion": "1", "rolled_back": "2"}
    assert registry.alias_version(model, "champion") == "1"
    assert registry.alias_version(model, "rolled_back") == "2"
    assert registry.alias_version(model, "previous") is None
    with pytest.raises(registry.PromotionError, match="has no 'previous' version to roll back to"):
        registry.rollback(model)


def test_concurrent_promotions_serialise(model):
    """Expect two racing promotions to leave one champion and `previous` on the other version."""
    registry.promote(model, "1")
    results: dict[str, dict] = {}

    def promote(version: str) -> None:
        results[version] = registry.promote(model, version)

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("3", "4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    champion = registry.alias_version(model, "champion")
    previous = registry.alias_version(model, "previous")
    assert {champion, previous} == {"3", "4"}
    assert results[champion]["previous"] == previous


def test_dead_server_fails_promptly_and_clearly(monkeypatch, tmp_path):
    """Expect an unreachable tracking server to raise RegistryUnavailable in seconds, not minutes."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    started = time.monotonic()
    with pytest.raises(registry.RegistryUnavailable, match="did not answer"):
        registry.alias_version("anything", "champion")
    assert time.monotonic() - started < 60
