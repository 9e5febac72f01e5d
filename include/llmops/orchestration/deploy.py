"""Task bodies after the champion moves: deploy it, and tell downstream systems.

`deploy` runs after `promote` in the finetune DAG and after `rollback` in the `model_rollback`
DAG: whatever version `champion` points at now is what it deploys, so a rollback deploys the
restored version. Per target in ``deployment.targets``:

- ``mlflow``: the champion is served by MLflow's scoring server
  (``mlflow models serve -m models:/<model>@champion``) on the worker's loopback and answers one
  real ``/invocations`` request (answer and latency recorded), then the server stops;
- ``vllm`` / ``kserve``: the serving manifests for the version are rendered, validated against the
  Kubernetes API models, and written to
  ``<reports>/<pipeline>/deployments/<run>/<target>.yaml`` (apply them with ``kubectl apply -f``
  or let GitOps pick them up).

Each target records ``model.deployed`` (target, version, endpoint or manifest URI, smoke test) or
``model.deployment_failed``; ``<reports>/<pipeline>/deployments/CURRENT.json`` says what is
deployed now. A retried task redoes only the targets not yet deployed in this run.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import TYPE_CHECKING, Any

from llmops import storage
from llmops.errors import PermanentError, safe_error_text
from llmops.ledger import get_ledger, record
from llmops.ledger.events import (
    ModelDeployed,
    ModelDeploymentFailed,
    ModelEvaluated,
    ModelGated,
    ModelPromoted,
    ModelRegistered,
    ModelRolledBack,
)
from llmops.settings import get_settings
from llmops.specs.pinned import run_spec
from llmops.storage import safe_run_id

if TYPE_CHECKING:
    from llmops.ledger import LedgerRecord
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

DEFAULT_SMOKE_PROMPT = "Hello, I need help with my order.\nAnswer:"


class DeploymentFailed(RuntimeError):
    """A deployment target failed (the others were still deployed and recorded)."""


class NoChampion(PermanentError, LookupError):
    """There is no champion to deploy."""


def deployments_root(spec: PipelineSpec) -> str:
    return storage.join(get_settings().reports_root, spec.name, "deployments")


def _last(records: list[LedgerRecord], event_type: str) -> LedgerRecord | None:
    matches = [r for r in records if r.event_type == event_type]
    return matches[-1] if matches else None


def smoke_prompt(spec: PipelineSpec, tags: dict[str, str]) -> str:
    """The spec's smoke prompt, else the first prompt of the version's eval split (already redacted)."""
    if spec.deployment.mlflow.smoke_prompt:
        return spec.deployment.mlflow.smoke_prompt
    sft_id = tags.get("llmops.sft_snapshot_id")
    if sft_id:
        try:
            from llmops.orchestration.finetune.data import example_prompt

            return example_prompt(spec, sft_id)
        except Exception as exc:  # a snapshot past retention: the default prompt still proves serving
            log.info("no eval prompt for the smoke test (%s): using the default", type(exc).__name__)
    return DEFAULT_SMOKE_PROMPT


def lora_rank(run_id: str | None, tags: dict[str, str]) -> tuple[int, list[str]]:
    """The adapter's LoRA rank: from the training run's params, else the adapter's config."""
    warnings: list[str] = []
    if run_id:
        try:
            from mlflow import MlflowClient

            value = MlflowClient().get_run(run_id).data.params.get("lora.r")
            if value:
                return int(value), warnings
        except Exception as exc:
            warnings.append(f"training run params unreadable ({type(exc).__name__})")
    adapter = tags.get("llmops.adapter_uri")
    if adapter:
        try:
            config = json.loads(storage.read_bytes(storage.join(adapter, "adapter_config.json")))
            return int(config["r"]), warnings
        except Exception as exc:
            warnings.append(f"adapter config unreadable ({type(exc).__name__})")
    warnings.append("LoRA rank unknown: --max-lora-rank set to 64")
    return 64, warnings


def _deploy_mlflow(spec: PipelineSpec, name: str, version: str, tags: dict[str, str]) -> dict[str, Any]:
    from llmops.deployment.serving import serve_command, smoke_test
    from llmops.registry import mlflow_registry

    settings = spec.deployment.mlflow
    model_uri = f"models:/{name}@{mlflow_registry.CHAMPION}"
    smoke = smoke_test(
        model_uri,
        smoke_prompt(spec, tags),
        tracking_uri=mlflow_registry.configure(),
        startup_timeout=settings.startup_timeout_seconds,
        request_timeout=settings.request_timeout_seconds,
        max_latency_ms=settings.max_latency_ms,
    )
    if mlflow_registry.alias_version(name, mlflow_registry.CHAMPION) != version:
        smoke.update(passed=False, problems=[*smoke["problems"], "champion moved during the smoke test"])
    command = serve_command(model_uri, host="0.0.0.0", port=5001)
    return {
        "passed": smoke["passed"],
        "endpoint": {
            "model_uri": model_uri,
            "api": 'POST /invocations {"dataframe_records": [{"prompt": "..."}]} -> {"predictions": [...]}',
            "serve_command": " ".join(["mlflow", *command[3:]]),
        },
        "smoke_test": smoke,
    }


def _deploy_manifest(
    spec: PipelineSpec, target: str, name: str, info: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from llmops.deployment import manifests
    from llmops.registry import mlflow_registry

    tracking_uri = mlflow_registry.configure()
    rank, warnings = lora_rank(info.get("run_id"), info["tags"])
    if not tracking_uri.startswith(("http://", "https://")):
        warnings.append(
            f"MLflow tracking URI is not a server ({tracking_uri.split(':', 1)[0]}): the fetch container "
            "cannot reach it; set MLFLOW_TRACKING_URI to the tracking server for cluster deployments"
        )
    version = manifests.ServingVersion(
        model_name=name,
        version=info["version"],
        tracking_uri=tracking_uri,
        lora_rank=rank,
        pipeline=spec.name,
        warnings=warnings,
    )
    docs = manifests.build(spec, target, version)
    uri = storage.join(deployments_root(spec), safe_run_id(run_id), f"{target}.yaml")
    storage.write_bytes(uri, manifests.to_yaml(docs).encode())
    k8s = spec.deployment.kubernetes
    service = manifests.resource_name(name)
    return {
        "passed": True,
        "manifest_uri": uri,
        "objects": [f"{d['kind']}/{d['metadata']['name']}" for d in docs],
        "namespace": k8s.namespace,
        "image": k8s.image,
        "model_uri": version.model_uri,
        "lora_rank": rank,
        "endpoint": {
            "in_cluster": f"http://{service}.{k8s.namespace}.svc.cluster.local"
            + ("/v1/completions" if target == "vllm" else ""),
            "openai_model": name,
            "note": "vllm: Service port 80; kserve: the InferenceService's status.url",
        },
        "validated_against": "kubernetes client models "
        + (
            "(V1Deployment, V1Service)"
            if target == "vllm"
            else "(V1PodSpec, V1ObjectMeta) + InferenceService fields"
        ),
        "warnings": warnings,
    }


def deploy(pipeline: str, run_id: str, trigger: str = "promotion") -> dict[str, Any]:
    """Deploy the current champion to every target of the spec; record each outcome."""
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    targets = list(spec.deployment.targets)
    if not targets:
        return {"deployed": False, "reason": "no deployment.targets in the spec"}
    name = spec.registry.model_name
    version = mlflow_registry.alias_version(name, mlflow_registry.CHAMPION)
    if version is None:
        raise NoChampion(f"{name} has no '{mlflow_registry.CHAMPION}' version to deploy")
    info = mlflow_registry.model_version_info(name, version)
    done = {
        r.payload.get("target"): r.payload
        for r in get_ledger().records(pipeline=spec.name, event_type=ModelDeployed.name, run_id=run_id)
        if r.payload.get("version") == version
    }
    outcomes: dict[str, dict[str, Any]] = {}
    failed = []
    for target in targets:
        if target in done:  # a retry: this target was deployed by an earlier attempt
            outcomes[target] = done[target]
            continue
        try:
            if target == "mlflow":
                outcome = _deploy_mlflow(spec, name, version, info["tags"])
            else:
                outcome = _deploy_manifest(spec, target, name, info, run_id)
        except Exception as exc:
            # Recorded in the ledger and logged by type and place: a client's text can quote a credential.
            log.warning(
                "deployment of %s v%s to %s failed: %s; raised at:\n%s",
                name,
                version,
                target,
                safe_error_text(exc),
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            outcome = {"passed": False, "error": safe_error_text(exc)}
        payload = {
            "model_name": name,
            "version": version,
            "target": target,
            "trigger": trigger,
            **outcome,
        }
        event = ModelDeployed if outcome["passed"] else ModelDeploymentFailed
        record(spec, event(**payload), f"model/{name}/{version}/{target}", run_id)
        outcomes[target] = payload
        if not outcome["passed"]:
            failed.append(target)
    current = {
        "model_name": name,
        "version": version,
        "run_id": run_id,
        "trigger": trigger,
        "targets": {t: o for t, o in outcomes.items() if o.get("passed")},
    }
    storage.write_json(storage.join(deployments_root(spec), "CURRENT.json"), current)
    if failed:
        problems = "; ".join(
            f"{t}: {outcomes[t].get('error') or ', '.join(outcomes[t].get('smoke_test', {}).get('problems', []))}"
            for t in failed
        )
        raise DeploymentFailed(f"{name} v{version} failed to deploy to {', '.join(failed)}: {problems}")
    summary = {
        "deployed": True,
        "model_name": name,
        "version": version,
        "targets": targets,
    }
    smoke = (outcomes.get("mlflow") or {}).get("smoke_test")
    if smoke:
        summary["smoke_latency_ms"] = smoke.get("latency_ms")
    return summary


def deploy_after_rollback(model_name: str, run_id: str) -> dict[str, Any]:
    from llmops.specs.loader import pipeline_of_model

    return deploy(pipeline_of_model(model_name).name, run_id, trigger="rollback")


# -- notifications --------------------------------------------------------------------------------


def _report_link(spec: PipelineSpec, run_id: str | None) -> str | None:
    if not run_id:
        return None
    html = storage.join(get_settings().reports_root, spec.name, safe_run_id(run_id), "audit_report.html")
    try:
        return html if storage.exists(html) else None
    except Exception:  # a link is a convenience: never fail a notification for it
        return None


def _metrics_of_run(spec: PipelineSpec, run_id: str | None) -> dict[str, float]:
    from llmops.evaluation.gates import flat_metrics

    if not run_id:
        return {}
    evaluated = _last(
        get_ledger().records(pipeline=spec.name, event_type=ModelEvaluated.name, run_id=run_id),
        ModelEvaluated.name,
    )
    return flat_metrics((evaluated.payload.get("metrics") or {}) if evaluated else {})


def _deployments(records: list[LedgerRecord]) -> list[dict[str, Any]]:
    keep = ("target", "version", "manifest_uri", "endpoint", "smoke_test", "error")
    return [
        {k: r.payload.get(k) for k in keep if r.payload.get(k) is not None}
        | {"passed": r.event_type == ModelDeployed.name}
        for r in records
        if r.event_type in (ModelDeployed.name, ModelDeploymentFailed.name)
    ]


def notify_finetune(pipeline: str, run_id: str, dag_id: str | None = None) -> dict[str, Any]:
    """After a finetune run: promoted, gate_failed and deployment_failed events, as they happened."""
    from llmops.deployment import webhooks
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    records = get_ledger().records(pipeline=spec.name, run_id=run_id)
    name = spec.registry.model_name
    common = {
        "run_id": run_id,
        "report": _report_link(spec, run_id),
        **({"dag_id": dag_id} if dag_id else {}),
    }
    metrics = _metrics_of_run(spec, run_id)
    sent = []
    promoted = _last(records, ModelPromoted.name)
    gated = _last(records, ModelGated.name)
    if promoted is not None:
        p = promoted.payload
        sent.append(
            webhooks.send(
                spec,
                "promoted",
                f"model/{p['model_name']}/{p['version']}",
                run_id,
                {
                    **common,
                    "model": p["model_name"],
                    "version": p["version"],
                    "alias": mlflow_registry.CHAMPION,
                    "previous_version": p.get("previous"),
                    "metrics": metrics,
                    "gates": (gated.payload.get("gates") if gated else None),
                    "deployments": _deployments(records),
                },
            )
        )
    if gated is not None and not gated.payload.get("passed"):
        champion = None
        try:
            champion = mlflow_registry.alias_version(name, mlflow_registry.CHAMPION)
        except Exception:  # the event matters more than this detail
            log.warning("champion of %s unknown while notifying a gate failure", name)
        sent.append(
            webhooks.send(
                spec,
                "gate_failed",
                gated.subject,
                run_id,
                {
                    **common,
                    "model": name,
                    "version": None,
                    "alias": None,
                    "champion_version": champion,
                    "metrics": metrics,
                    "gates": gated.payload.get("gates"),
                    "failed": [g for g in gated.payload.get("gates") or [] if not g.get("passed")],
                },
            )
        )
    failed = [r for r in records if r.event_type == ModelDeploymentFailed.name]
    if failed:
        version = failed[-1].payload.get("version")
        sent.append(
            webhooks.send(
                spec,
                "deployment_failed",
                f"model/{name}/{version}",
                run_id,
                {
                    **common,
                    "model": name,
                    "version": version,
                    "alias": mlflow_registry.CHAMPION,
                    "failed_targets": sorted({r.payload.get("target") for r in failed}),
                    "deployments": _deployments(records),
                },
            )
        )
    return {"events": sent}


def notify_rollback(model_name: str, run_id: str, dag_id: str | None = None) -> dict[str, Any]:
    """After a rollback: the rolled_back event with the restored version's metrics and report."""
    from llmops.deployment import webhooks
    from llmops.registry import mlflow_registry
    from llmops.specs.loader import pipeline_of_model

    spec = pipeline_of_model(model_name)
    ledger = get_ledger()
    records = ledger.records(pipeline=spec.name, run_id=run_id)
    rolled = _last(records, ModelRolledBack.name)
    if rolled is None:
        return {"events": [], "reason": "no rollback recorded in this run"}
    version = rolled.payload.get("champion")
    registered = ledger.records(
        pipeline=spec.name, event_type=ModelRegistered.name, subject=f"model/{model_name}/{version}"
    )
    trained_in = registered[-1].run_id if registered else None
    fields = {
        "run_id": run_id,
        **({"dag_id": dag_id} if dag_id else {}),
        "model": model_name,
        "version": version,
        "alias": mlflow_registry.CHAMPION,
        "rolled_back_version": rolled.payload.get("rolled_back"),
        "reason": rolled.payload.get("reason"),
        "requested_by": rolled.payload.get("requested_by"),
        "metrics": _metrics_of_run(spec, trained_in),
        "report": _report_link(spec, trained_in),
        "trained_in_run": trained_in,
        "deployments": _deployments(records),
    }
    sent = [webhooks.send(spec, "rolled_back", rolled.subject, run_id, fields)]
    failed = [r for r in records if r.event_type == ModelDeploymentFailed.name]
    if failed:
        sent.append(
            webhooks.send(
                spec,
                "deployment_failed",
                f"model/{model_name}/{version}",
                run_id,
                {**fields, "failed_targets": sorted({r.payload.get("target") for r in failed})},
            )
        )
    return {"events": sent}


def ensure_registry_webhook(spec: PipelineSpec) -> None:
    """Register the MLflow registry webhook before an alias moves (when the spec asks for it).

    A failure is logged, not raised: the Airflow webhook is the record of truth, and a promotion
    must not wait on an optional second channel.
    """
    if not spec.integrations.mlflow_registry_webhook:
        return
    try:
        from llmops.deployment.webhooks import ensure_mlflow_webhook

        outcome = ensure_mlflow_webhook(spec)
        if not outcome.get("registered"):
            log.warning("MLflow registry webhook not registered: %s", outcome.get("reason"))
    except Exception as exc:
        log.warning("MLflow registry webhook could not be registered (%s: %s)", type(exc).__name__, exc)
