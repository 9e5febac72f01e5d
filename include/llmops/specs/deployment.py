"""After the champion moves: serving targets, integrations, batch inference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from llmops.specs.base import ConnId, Identifier, StrictModel, check_read_only_query
from llmops.specs.sources import ScalarParam
from llmops.specs.training import SecretEnv, Toleration, template_fields

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


DeployTarget = Literal["mlflow", "kserve", "vllm"]


KUBERNETES_TARGETS = frozenset({"kserve", "vllm"})


class MlflowServing(StrictModel):
    """Target `mlflow`: the champion answers a real request through MLflow's scoring server.

    The deploy step starts `mlflow models serve -m models:/<model>@champion --env-manager local` on
    the worker's loopback, sends one /invocations request, records answer and latency, and stops it.
    """

    smoke_prompt: str | None = Field(
        default=None,
        description="Prompt of the smoke request; default: the first prompt of the version's eval split.",
    )
    startup_timeout_seconds: float = Field(default=300, gt=0, le=3600)
    request_timeout_seconds: float = Field(default=120, gt=0, le=3600)
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="Fail the deployment when the smoke request takes longer."
    )


class ServingKubernetes(StrictModel):
    """Targets `vllm` / `kserve`: a vLLM OpenAI-compatible server with the base model and the LoRA
    adapter, fetched from the registry version by an init container."""

    namespace: str = Field(default="llmops", pattern=DNS_LABEL)
    image: str = Field(
        default="vllm/vllm-openai:v0.11.0", description="The vLLM server image (pin it by digest)."
    )
    fetch_image: str | None = Field(
        default=None,
        description="Image of the init container that downloads the version (has llmops + MLflow); "
        "default: training.kubernetes.image (the trainer image).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = []
    service_account: str | None = Field(default=None, pattern=DNS_LABEL)
    replicas: int = Field(default=1, ge=1, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100, description="KServe autoscaling bound.")
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "32Gi"
    model_volume_size: str = Field(default="50Gi", description="emptyDir the model is fetched into.")
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = [Toleration(key="nvidia.com/gpu")]
    secrets: list[SecretEnv] = Field(
        default=[],
        description="Credentials of the fetch container (artifact store, MLflow): by reference only.",
    )
    max_model_len: int | None = Field(default=None, gt=0)
    extra_args: list[str] = Field(default=[], description="More `vllm serve` arguments.")
    port: int = Field(default=8000, ge=1024, le=65535)

    @model_validator(mode="after")
    def _replicas(self) -> ServingKubernetes:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError("max_replicas cannot be below replicas")
        return self


class DeploymentSpec(StrictModel):
    """What happens after `champion` moves (promotion or rollback): off unless targets are listed."""

    targets: list[DeployTarget] = Field(
        default=[],
        description="mlflow: smoke-test the MLflow scoring server; vllm: Deployment + Service manifest; "
        "kserve: InferenceService manifest. Empty: no deploy step.",
    )
    mlflow: MlflowServing = MlflowServing()
    kubernetes: ServingKubernetes = ServingKubernetes()

    @field_validator("targets")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"targets must be unique; repeated: {', '.join(repeated)}")
        return value


IntegrationEvent = Literal["promoted", "rolled_back", "gate_failed", "deployment_failed"]


class IntegrationsSpec(StrictModel):
    """Downstream systems told about model events through a signed webhook (an HTTP connection)."""

    webhook_conn_id: ConnId | None = Field(
        default=None,
        description="HTTP connection of the receiver; its password is the HMAC signing secret.",
    )
    events: list[IntegrationEvent] = ["promoted", "rolled_back", "gate_failed", "deployment_failed"]
    mlflow_registry_webhook: bool = Field(
        default=False,
        description="Also register an MLflow registry webhook (alias and version events) at the same URL "
        "and secret: needs an MLflow tracking server.",
    )

    @model_validator(mode="after")
    def _needs_connection(self) -> IntegrationsSpec:
        if self.mlflow_registry_webhook and not self.webhook_conn_id:
            raise ValueError("mlflow_registry_webhook needs webhook_conn_id (the URL and secret to register)")
        return self


class BatchInferenceSpec(StrictModel):
    """The `<pipeline>__batch_inference` DAG: score a table with the champion, upsert the answers."""

    conn_id: ConnId = Field(description="Airflow connection of the database holding the rows to score.")
    table: Identifier | None = None
    db_schema: Identifier | None = None
    query: str | None = Field(
        default=None,
        description="A SELECT with named bind parameters instead of a table; values in `params`.",
    )
    params: dict[Identifier, ScalarParam] = {}
    key_column: Identifier = Field(description="Identifies a row; the results are keyed by it.")
    prompt_template: str | None = Field(
        default=None,
        description="Python format string over the row's columns; default: training.prompt_template.",
    )
    target_table: Identifier
    target_schema: Identifier | None = None
    target_conn_id: ConnId | None = Field(default=None, description="Default: conn_id.")
    chunk_rows: int = Field(default=64, ge=1, le=10_000, description="Rows scored and committed at a time.")
    max_rows: int | None = Field(default=None, gt=0)
    max_new_tokens: int | None = Field(default=None, gt=0, le=4096)
    redact_pii: bool = Field(
        default=True,
        description="Mask the privacy.free_text PII types in prompts and answers (the model was trained on "
        "redacted text; raw PII never reaches it or the results table).",
    )
    schedule: str | None = Field(default=None, description="Cron or preset; none: triggered only.")

    @model_validator(mode="after")
    def _table_or_query(self) -> BatchInferenceSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None:
            check_read_only_query(self.query)
        elif self.params:
            raise ValueError("params are only used with 'query'")
        return self

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value
