"""Spec fields of issue 9: deployment targets, integrations, batch inference and cost.

Good values load with their defaults (off where they cost time); broken ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.specs import SpecError, load_spec, parse_spec

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"


@pytest.fixture
def demo_raw() -> dict:
    return yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())


def _minimal(raw: dict) -> dict:
    for key in ("deployment", "integrations", "batch_inference", "cost"):
        raw.pop(key, None)
    return raw


def test_new_blocks_are_off_by_default(demo_raw):
    """Expect that a spec without the new blocks deploys nowhere, notifies nobody and prices nothing."""
    spec = parse_spec(_minimal(demo_raw))
    assert spec.deployment.targets == []
    assert spec.integrations.webhook_conn_id is None and not spec.integrations.mlflow_registry_webhook
    assert spec.batch_inference is None and spec.cost is None


def test_demo_spec_uses_every_new_block():
    """Expect the demo to show each feature: three targets, batch inference and prices with a budget."""
    spec = load_spec(PIPELINES / "support_bot.yaml")
    assert spec.deployment.targets == ["mlflow", "vllm", "kserve"]
    assert spec.batch_inference is not None and spec.batch_inference.key_column == "ticket_id"
    assert spec.cost is not None and spec.cost.budget == 20.0 and spec.cost.currency == "EUR"


def test_price_keys_are_normalised(demo_raw):
    """Expect price keys in any spelling to become device keys ('NVIDIA H100' -> 'nvidia-h100')."""
    demo_raw["cost"] = {"prices_per_hour": {"NVIDIA H100": 4, "CPU": 0.1}}
    spec = parse_spec(demo_raw)
    assert spec.cost.prices_per_hour == {"nvidia-h100": 4.0, "cpu": 0.1}


BATCH = {"conn_id": "db", "table": "tickets", "key_column": "ticket_id", "target_table": "answers"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["deployment"].update(targets=["mlflow", "sagemaker"]),
            "deployment.targets[1]: Input should be 'mlflow', 'kserve' or 'vllm' (got 'sagemaker')",
        ),
        (
            lambda r: r["deployment"].update(targets=["vllm", "vllm"]),
            "deployment.targets: Value error, targets must be unique; repeated: vllm",
        ),
        (
            lambda r: r["deployment"]["kubernetes"].pop("fetch_image"),
            "deployment.kubernetes.fetch_image is needed by target(s) kserve, vllm",
        ),
        (
            lambda r: r["deployment"]["kubernetes"].update(namespace="Support_Team"),
            "deployment.kubernetes.namespace: String should match pattern",
        ),
        (
            lambda r: r["deployment"]["kubernetes"].update(replicas=3, max_replicas=2),
            "deployment.kubernetes: max_replicas cannot be below replicas",
        ),
        (
            lambda r: r["deployment"].update(mlflow={"max_latency_ms": 0}),
            "deployment.mlflow.max_latency_ms: Input should be greater than 0 (got 0)",
        ),
        (
            lambda r: r["deployment"].update(target="mlflow"),
            "deployment.target: unknown field",
        ),
        (
            lambda r: r.update(integrations={"mlflow_registry_webhook": True}),
            "integrations: mlflow_registry_webhook needs webhook_conn_id",
        ),
        (
            lambda r: r.update(integrations={"webhook_conn_id": "hooks", "events": ["promoted", "trained"]}),
            "integrations.events[1]: Input should be 'promoted', 'rolled_back', 'gate_failed' or "
            "'deployment_failed' (got 'trained')",
        ),
        (
            lambda r: r.update(batch_inference={**BATCH, "query": "SELECT * FROM tickets"}),
            "batch_inference: give exactly one of 'table' or 'query'",
        ),
        (
            lambda r: r.update(batch_inference={**BATCH, "table": None, "query": "DELETE FROM tickets"}),
            "batch_inference: query must be a single SELECT",
        ),
        (
            lambda r: r.update(batch_inference={**BATCH, "target_table": "answers; DROP TABLE x"}),
            "batch_inference.target_table: String should match pattern",
        ),
        (
            lambda r: r.update(batch_inference={**BATCH, "prompt_template": "{body.upper}"}),
            "batch_inference.prompt_template: Value error, prompt_template field {body.upper} is not a plain "
            "column name",
        ),
        (
            lambda r: r.update(batch_inference={**BATCH, "chunk_rows": 0}),
            "batch_inference.chunk_rows: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            lambda r: r["cost"].update(prices_per_hour={}),
            "cost.prices_per_hour: Dictionary should have at least 1 item",
        ),
        (
            lambda r: r["cost"].update(prices_per_hour={"cpu": -1}),
            "cost.prices_per_hour: price of 'cpu' must be a number >= 0 (got -1.0)",
        ),
        (
            lambda r: r["cost"].update(prices_per_hour={"nvidia h100": 4, "NVIDIA-H100": 5}),
            "name the same device (nvidia-h100)",
        ),
        (lambda r: r["cost"].update(budget=0), "cost.budget: Input should be greater than 0 (got 0)"),
        (lambda r: r["cost"].update(currency="euro"), "cost.currency: String should match pattern"),
    ],
)
def test_broken_new_fields_name_the_field(tmp_path, demo_raw, mutate, expected):
    """Expect a wrong deployment / integrations / batch / cost field to be refused, field named."""
    mutate(demo_raw)
    path = tmp_path / "support_bot.yaml"
    path.write_text(yaml.safe_dump(demo_raw))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert expected in str(info.value), str(info.value)


def test_training_image_is_the_default_fetch_image(demo_raw):
    """Expect kubernetes targets to accept the trainer image as the fetch image."""
    demo_raw["deployment"]["kubernetes"].pop("fetch_image")
    demo_raw["training"].update(launcher="kubernetes", kubernetes={"image": "registry.example/trainer:1"})
    assert parse_spec(demo_raw).deployment.targets == ["mlflow", "vllm", "kserve"]
