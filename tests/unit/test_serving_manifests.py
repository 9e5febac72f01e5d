"""Kubernetes serving manifests, without a cluster: rendered from the spec, validated against the
Kubernetes API models of the `kubernetes` client (and, for KServe's CRD, its own structure)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmops.deployment import manifests
from llmops.deployment.manifests import ManifestError, ServingVersion
from llmops.specs import parse_spec

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"
TRACKING = "https://mlflow.internal.example.com"


def _spec(**kubernetes):
    raw = yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())
    raw["deployment"]["kubernetes"].update(kubernetes)
    return parse_spec(raw)


def _version(version="3", rank=16, tracking=TRACKING) -> ServingVersion:
    return ServingVersion(
        model_name="support_bot",
        version=version,
        tracking_uri=tracking,
        lora_rank=rank,
        pipeline="support_bot",
    )


def _pod(doc: dict) -> dict:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]
    return doc["spec"]["predictor"]


def test_vllm_deployment_and_service_are_valid_kubernetes_objects():
    """Expect a Deployment and a Service that round-trip through V1Deployment / V1Service unchanged."""
    deployment, service = manifests.vllm_manifests(_spec(), _version())
    assert manifests.round_trip(copy.deepcopy(deployment), "V1Deployment", "d") == deployment
    assert manifests.round_trip(copy.deepcopy(service), "V1Service", "s") == service
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "support-bot"
    assert deployment["metadata"]["namespace"] == "support"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_vllm_serves_base_model_with_the_lora_adapter_of_the_version():
    """Expect vLLM to load /models/base with the adapter as LoRA module '<model>' (rank rounded up),
    and the init container to fetch exactly that registry version."""
    [deployment, _] = manifests.vllm_manifests(_spec(), _version(version="7", rank=12))
    pod = _pod(deployment)
    [fetch] = pod["initContainers"]
    [server] = pod["containers"]
    assert fetch["command"] == [
        "python", "-m", "llmops.deployment.fetch", "--model-uri", "models:/support_bot/7", "--dest", "/models",
    ]  # fmt: skip
    assert fetch["image"] == "registry.example.com/llmops-trainer:1.0"
    args = server["args"]
    assert args[args.index("--model") + 1] == "/models/base"
    assert "--enable-lora" in args
    assert args[args.index("--lora-modules") + 1] == "support_bot=/models/adapter"
    assert args[args.index("--max-lora-rank") + 1] == "16"
    assert server["ports"][0]["containerPort"] == 8000
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"]["llmops.io/model-uri"]
        == "models:/support_bot/7"
    )
    assert deployment["spec"]["template"]["metadata"]["labels"]["llmops.io/model-version"] == "7"


def test_resources_scheduling_and_secrets_by_reference():
    spec = _spec(
        gpus=2,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        secrets=[
            {"secret": "serving-env"},
            {"secret": "mlflow-auth", "key": "token", "env": "MLFLOW_TRACKING_TOKEN"},
        ],
        image_pull_secrets=["registry-credentials"],
    )
    pod = _pod(manifests.vllm_manifests(spec, _version())[0])
    server, fetch = pod["containers"][0], pod["initContainers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["resources"]["requests"] == server["resources"]["limits"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert fetch["envFrom"] == [{"secretRef": {"name": "serving-env"}}]
    token = next(e for e in fetch["env"] if e["name"] == "MLFLOW_TRACKING_TOKEN")
    assert token == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"key": "token", "name": "mlflow-auth"}},
    }
    assert {"name": "MLFLOW_TRACKING_URI", "value": TRACKING} in fetch["env"]
    assert fetch["securityContext"]["runAsNonRoot"] is True
    assert {v["name"] for v in pod["volumes"]} == {"models", "dshm"}


def test_credentials_in_plain_values_are_refused():
    """Expect a tracking URI with a password in it to be refused: secrets go through references."""
    with pytest.raises(ManifestError, match="MLFLOW_TRACKING_URI holds"):
        manifests.vllm_manifests(_spec(), _version(tracking="https://user:s3cr3t-pass@mlflow.example.com"))


def test_kserve_inference_service_structure_and_embedded_pod_spec():
    """Expect an InferenceService (raw deployment) whose predictor is the same validated pod spec."""
    doc = manifests.kserve_manifest(_spec(replicas=1, max_replicas=3), _version())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = doc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert predictor["containers"][0]["name"] == "kserve-container"
    assert predictor["initContainers"][0]["name"] == "fetch"
    pod = {k: v for k, v in predictor.items() if k not in manifests.KSERVE_COMPONENT_FIELDS}
    assert manifests.round_trip(copy.deepcopy(pod), "V1PodSpec", "p") == pod


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(status={}), "unknown top-level field"),
        (lambda d: d["metadata"].update(name="Support_Bot"), "metadata.name 'Support_Bot': a DNS-1035 label"),
        (lambda d: d["spec"].update(router={}), "only predictor, transformer and explainer"),
        (lambda d: d["spec"]["predictor"].update(gpuCount=1), "predictor: unknown field(s) ['gpuCount']"),
        (lambda d: d["spec"]["predictor"].update(minReplicas=-1), "minReplicas: a non-negative integer"),
        (
            lambda d: d["spec"]["predictor"].update(minReplicas=4, maxReplicas=2),
            "minReplicas is above maxReplicas",
        ),
        (
            lambda d: d["spec"]["predictor"]["containers"][0].update(name="vllm"),
            "one container named 'kserve-container'",
        ),
        (
            lambda d: d["spec"]["predictor"]["containers"][0].update(gpus=1),
            "predictor: containers[0].gpus is not valid for the Kubernetes V1PodSpec model",
        ),
        (
            lambda d: d["spec"]["predictor"]["volumes"][0].update(emptyDir="big"),
            "volumes[0].emptyDir is not valid for the Kubernetes V1PodSpec model",
        ),
        (
            lambda d: d["spec"]["predictor"]["initContainers"][0].pop("name"),
            "InferenceService.spec.predictor: not a valid V1PodSpec (field name)",
        ),
    ],
)
def test_a_broken_inference_service_is_refused_with_the_field(mutate, message):
    doc = manifests.kserve_manifest(_spec(), _version())
    mutate(doc)
    with pytest.raises(ManifestError) as info:
        manifests.validate(doc)
    assert message in str(info.value), str(info.value)


def test_unknown_fields_in_core_objects_are_refused():
    """Expect a misspelt field in the Deployment to be named (the client model would drop it)."""
    [deployment, _] = manifests.vllm_manifests(_spec(), _version())
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(ManifestError, match=r"containers\[0\]\.resource"):
        manifests.validate(deployment)
    with pytest.raises(ManifestError, match="unsupported manifest kind"):
        manifests.validate({"apiVersion": "v1", "kind": "ConfigMap"})


def test_names_ranks_and_quantities():
    assert manifests.resource_name("support_bot") == "support-bot"
    assert manifests.resource_name("7.Contract_Clauses") == "m-7-contract-clauses"
    assert len(manifests.resource_name("x" * 80)) == manifests.NAME_MAX
    assert [manifests.vllm_lora_rank(r) for r in (4, 8, 9, 33, 300, 512)] == [8, 8, 16, 64, 320, 512]
    with pytest.raises(ManifestError, match="above what vLLM serves"):
        manifests.vllm_lora_rank(1024)
    with pytest.raises(
        ManifestError, match="deployment.kubernetes.memory 'lots' is not a Kubernetes quantity"
    ):
        manifests.vllm_manifests(_spec(memory="lots"), _version())


def test_a_rollback_manifest_differs_only_in_the_version():
    """Expect the manifest of another version to keep names and selectors and change what is fetched."""
    v3 = manifests.vllm_manifests(_spec(), _version("3"))
    v2 = manifests.vllm_manifests(_spec(), _version("2"))
    assert v3[1] != v2[1] or v3[1]["spec"] == v2[1]["spec"]  # the Service selects whatever runs
    assert v3[0]["spec"]["selector"] == v2[0]["spec"]["selector"]
    text = manifests.to_yaml(v2)
    assert "models:/support_bot/2" in text and "models:/support_bot/3" not in text
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["Deployment", "Service"]
