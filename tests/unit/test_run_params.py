"""Run parameters of the finetune DAG: a misspelt override stops the run instead of being ignored."""

from __future__ import annotations

import pytest

from llmops.errors import PermanentError
from llmops.orchestration.finetune import data
from llmops.orchestration.params import FINETUNE_PARAMS

DEFAULTS = {name: param.value for name, param in FINETUNE_PARAMS.items()}


def test_unknown_parameter_is_named_with_the_known_ones() -> None:
    with pytest.raises(PermanentError) as raised:
        data.start_finetune("support_bot", "latest", {**DEFAULTS, "learning_rat": 0.1}, "manual__x")
    message = str(raised.value)
    assert "'learning_rat'" in message
    assert "learning_rate" in message and "max_steps" in message


def test_known_parameters_pass_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expect the check to let the declared parameters through (the spec loader is reached next)."""

    def reached(name: str, run_id: str) -> None:
        raise LookupError(f"spec {name} reached")

    monkeypatch.setattr(data, "pin_spec", reached)
    with pytest.raises(LookupError, match="spec support_bot reached"):
        data.start_finetune("support_bot", "latest", dict(DEFAULTS), "manual__x")
