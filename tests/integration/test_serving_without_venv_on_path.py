"""The scoring server starts from the interpreter's own environment, whatever PATH says.

`mlflow models serve` starts ``uvicorn`` by name through a shell. `.venv/bin/llmops demo` run
without activating the venv has no venv on PATH: the deploy step's smoke test must still start the
server (a real one, around a tiny pyfunc model saved in the test).
"""

from __future__ import annotations

import os
import textwrap

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_CODE = textwrap.dedent(
    """
    import mlflow.pyfunc
    from mlflow.models import set_model

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [f"echo: {p}" for p in model_input["prompt"]]

    set_model(Echo())
    """
)


def test_scoring_server_starts_with_no_venv_on_path(tmp_path, monkeypatch):
    """Expect the server to answer with PATH=/usr/bin:/bin (no uvicorn there): the old code, which
    left uvicorn to PATH, failed with the server exiting before /ping answered."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    from llmops.deployment.serving import invoke, scoring_server

    assert not any(os.access(os.path.join(d, "uvicorn"), os.X_OK) for d in ("/usr/bin", "/bin"))
    code = tmp_path / "echo_model.py"
    code.write_text(MODEL_CODE)
    model_dir = tmp_path / "echo"
    mlflow.pyfunc.save_model(
        str(model_dir),
        python_model=str(code),
        signature=infer_signature(pd.DataFrame({"prompt": ["hi"]}), ["echo: hi"]),
    )
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with scoring_server(
        str(model_dir), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", startup_timeout=120
    ) as server:
        answered = invoke(server.url, ["parcel late"])
    assert answered["status"] == 200, answered
    assert answered["body"]["predictions"] == ["echo: parcel late"]
