"""Kubernetes serving manifests for a registry version: vLLM (Deployment + Service) or KServe.

Both targets run the same two containers:

- ``fetch`` (init container, the trainer image: llmops + MLflow): ``python -m
  llmops.deployment.fetch --model-uri models:/<model>/<version> --dest /models`` downloads the
  registered version and lays out ``/models/base`` and ``/models/adapter``. The version, not the
  alias, is pinned: a manifest always says exactly what it serves, and a rollback produces a new
  manifest pointing at the restored version (``kubectl apply`` rolls the pods).
- ``vllm``: vLLM's OpenAI-compatible server with the base model and the LoRA adapter
  (``--enable-lora --lora-modules <model>=/models/adapter``). Clients ask for ``"model": "<model>"``
  on ``/v1/completions`` or ``/v1/chat/completions``.

``vllm`` renders a ``Deployment`` and a ``Service``; ``kserve`` renders an ``InferenceService``
(``serving.kserve.io/v1beta1``, a custom predictor: the same pod spec, container
``kserve-container``, raw deployment mode). Every built object goes through the Kubernetes API
models of the ``kubernetes`` client and back: a field those models do not know would be dropped,
so the round trip must give the manifest back unchanged. The InferenceService is a CRD, so its
embedded pod spec is validated that way and its own fields are checked here.

Credentials reach the fetch container only as references to Kubernetes secrets
(``deployment.kubernetes.secrets``); plain values are checked for credential-shaped content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops.errors import safe_error_text

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import ServingKubernetes

MODELS_DIR = "/models"
FETCH_MODULE = "llmops.deployment.fetch"
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
KSERVE_CONTAINER = "kserve-container"
#: vLLM accepts these LoRA ranks for --max-lora-rank; the adapter's r is rounded up to one of them.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
#: KServe's own fields of a component (next to the inlined pod spec) that this module may set or accept.
KSERVE_COMPONENT_FIELDS = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "scaleMetricType",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "labels",
        "annotations",
        "deploymentStrategy",
        "autoScaling",
        "logger",
        "batcher",
    }
)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 45  # KServe derives longer names (<name>-predictor-...) that must stay within 63


class ManifestError(ValueError):
    """A manifest that the Kubernetes API (or KServe) would refuse, with the field named."""


@dataclass
class ServingVersion:
    """What a manifest serves: one registry version of one model."""

    model_name: str
    version: str
    tracking_uri: str
    lora_rank: int
    pipeline: str
    warnings: list[str] = field(default_factory=list)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def resource_name(model_name: str) -> str:
    """A DNS-1035 label for the model ('support_bot' -> 'support-bot'), stable across versions."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if name and not name[0].isalpha():
        name = "m-" + name
    name = name[:NAME_MAX].rstrip("-")
    if not _DNS_1035.match(name):
        raise ManifestError(f"registry.model_name {model_name!r} gives no usable Kubernetes name")
    return name


def vllm_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that fits an adapter of rank ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ManifestError(f"LoRA rank {rank} is above what vLLM serves ({VLLM_LORA_RANKS[-1]})")


def labels(version: ServingVersion) -> dict[str, str]:
    from llmops.launch.kubernetes import label_value

    return {
        "app.kubernetes.io/name": resource_name(version.model_name),
        "app.kubernetes.io/part-of": "llmops",
        "app.kubernetes.io/component": "serving",
        "llmops.io/pipeline": label_value(version.pipeline),
        "llmops.io/model": label_value(version.model_name),
        "llmops.io/model-version": label_value(version.version),
    }


def _selector(version: ServingVersion) -> dict[str, str]:
    """Labels that select the pods of one model whatever version they run."""
    return {
        "app.kubernetes.io/name": resource_name(version.model_name),
        "app.kubernetes.io/component": "serving",
    }


def _annotations(version: ServingVersion) -> dict[str, str]:
    return {"llmops.io/model-uri": version.model_uri}


def _secret_env(k8s: ServingKubernetes) -> tuple[list[Any], list[Any]]:
    """envFrom (whole secrets) and env (one key each) of the fetch container: references only."""
    from kubernetes.client import models as m

    env_from, env = [], []
    for secret in k8s.secrets:
        if secret.key is None:
            env_from.append(m.V1EnvFromSource(secret_ref=m.V1SecretEnvSource(name=secret.secret)))
        else:
            env.append(
                m.V1EnvVar(
                    name=secret.env,
                    value_from=m.V1EnvVarSource(
                        secret_key_ref=m.V1SecretKeySelector(name=secret.secret, key=secret.key)
                    ),
                )
            )
    return env_from, env


def _plain(name: str, value: str) -> Any:
    from kubernetes.client import models as m

    from llmops.launch.kubernetes import credential_in

    what = credential_in(value)
    if what:
        raise ManifestError(f"{name} holds {what}: give it through deployment.kubernetes.secrets instead")
    return m.V1EnvVar(name=name, value=value)


def fetch_argv(version: ServingVersion) -> list[str]:
    """The fetch container's command: the same module and arguments one can run by hand."""
    return ["python", "-m", FETCH_MODULE, "--model-uri", version.model_uri, "--dest", MODELS_DIR]


def vllm_args(spec: PipelineSpec, version: ServingVersion) -> list[str]:
    k8s = spec.deployment.kubernetes
    args = [
        "--model",
        f"{MODELS_DIR}/base",
        "--served-model-name",
        f"{version.model_name}-base",
        "--enable-lora",
        "--lora-modules",
        f"{version.model_name}={MODELS_DIR}/adapter",
        "--max-lora-rank",
        str(vllm_lora_rank(version.lora_rank)),
        "--host",
        "0.0.0.0",
        "--port",
        str(k8s.port),
    ]
    if k8s.max_model_len:
        args += ["--max-model-len", str(k8s.max_model_len)]
    return args + list(k8s.extra_args)


def pod_spec(spec: PipelineSpec, version: ServingVersion, container_name: str = "vllm") -> Any:
    """The serving pod: fetch the version into an emptyDir, then vLLM with base model + adapter."""
    from kubernetes.client import models as m

    from llmops.launch.kubernetes import TRAINER_UID

    k8s = spec.deployment.kubernetes
    fetch_image = k8s.fetch_image or (spec.training.kubernetes.image if spec.training.kubernetes else None)
    if not fetch_image:
        raise ManifestError("deployment.kubernetes.fetch_image is not set (nor training.kubernetes.image)")
    quantities = {"cpu": k8s.cpu, "memory": k8s.memory}
    for what, quantity in quantities.items():
        _check_quantity(f"deployment.kubernetes.{what}", quantity)
    _check_quantity("deployment.kubernetes.model_volume_size", k8s.model_volume_size)
    limits = dict(quantities)
    if k8s.gpus:
        limits[k8s.gpu_resource] = str(k8s.gpus)
    env_from, secret_env = _secret_env(k8s)
    mounts = [m.V1VolumeMount(name="models", mount_path=MODELS_DIR)]
    no_escalation = m.V1SecurityContext(allow_privilege_escalation=False)
    fetch = m.V1Container(
        name="fetch",
        image=fetch_image,
        image_pull_policy=k8s.image_pull_policy,
        command=fetch_argv(version),
        env=[_plain("MLFLOW_TRACKING_URI", version.tracking_uri), _plain("HOME", "/tmp"), *secret_env],
        env_from=env_from or None,
        volume_mounts=mounts,
        resources=m.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": "2", "memory": "4Gi"}
        ),
        security_context=m.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=TRAINER_UID,
            capabilities=m.V1Capabilities(drop=["ALL"]),
        ),
    )
    probe = m.V1HTTPGetAction(path="/health", port=k8s.port)
    server = m.V1Container(
        name=container_name,
        image=k8s.image,
        image_pull_policy=k8s.image_pull_policy,
        command=["python3", "-m", "vllm.entrypoints.openai.api_server"],
        args=vllm_args(spec, version),
        env=[_plain("HF_HUB_OFFLINE", "1"), _plain("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "false")],
        ports=[m.V1ContainerPort(name="http", container_port=k8s.port, protocol="TCP")],
        resources=m.V1ResourceRequirements(requests=dict(limits), limits=limits),
        volume_mounts=[*mounts, m.V1VolumeMount(name="dshm", mount_path="/dev/shm")],
        readiness_probe=m.V1Probe(http_get=probe, period_seconds=10, failure_threshold=3),
        startup_probe=m.V1Probe(http_get=probe, period_seconds=10, failure_threshold=180),
        security_context=no_escalation,
    )
    tolerations = [
        m.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
        for t in k8s.tolerations
    ]
    return m.V1PodSpec(
        init_containers=[fetch],
        containers=[server],
        volumes=[
            m.V1Volume(name="models", empty_dir=m.V1EmptyDirVolumeSource(size_limit=k8s.model_volume_size)),
            m.V1Volume(name="dshm", empty_dir=m.V1EmptyDirVolumeSource(medium="Memory", size_limit="8Gi")),
        ],
        node_selector=dict(k8s.node_selector) or None,
        tolerations=tolerations or None,
        service_account_name=k8s.service_account,
        image_pull_secrets=[m.V1LocalObjectReference(name=s) for s in k8s.image_pull_secrets] or None,
        termination_grace_period_seconds=60,
    )


def _check_quantity(what: str, quantity: str) -> None:
    from kubernetes.utils import parse_quantity

    try:
        parse_quantity(quantity)
    except ValueError:
        raise ManifestError(f"{what} {quantity!r} is not a Kubernetes quantity") from None


def _metadata(spec: PipelineSpec, version: ServingVersion) -> Any:
    from kubernetes.client import models as m

    return m.V1ObjectMeta(
        name=resource_name(version.model_name),
        namespace=spec.deployment.kubernetes.namespace,
        labels=labels(version),
        annotations=_annotations(version),
    )


def _to_dict(obj: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    with ApiClient() as client:
        return client.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def vllm_manifests(spec: PipelineSpec, version: ServingVersion) -> list[dict[str, Any]]:
    """A Deployment running vLLM with the version, and a ClusterIP Service in front of it."""
    from kubernetes.client import models as m

    k8s = spec.deployment.kubernetes
    deployment = m.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_metadata(spec, version),
        spec=m.V1DeploymentSpec(
            replicas=k8s.replicas,
            selector=m.V1LabelSelector(match_labels=_selector(version)),
            strategy=m.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=m.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
            ),
            template=m.V1PodTemplateSpec(
                metadata=m.V1ObjectMeta(labels=labels(version), annotations=_annotations(version)),
                spec=pod_spec(spec, version),
            ),
        ),
    )
    service = m.V1Service(
        api_version="v1",
        kind="Service",
        metadata=_metadata(spec, version),
        spec=m.V1ServiceSpec(
            type="ClusterIP",
            selector=_selector(version),
            ports=[m.V1ServicePort(name="http", port=80, target_port="http", protocol="TCP")],
        ),
    )
    return [validate(_to_dict(deployment)), validate(_to_dict(service))]


def kserve_manifest(spec: PipelineSpec, version: ServingVersion) -> dict[str, Any]:
    """An InferenceService whose predictor is the same vLLM pod (KServe raw deployment mode)."""
    k8s = spec.deployment.kubernetes
    metadata = _to_dict(_metadata(spec, version))
    metadata["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    predictor = {
        **_to_dict(pod_spec(spec, version, container_name=KSERVE_CONTAINER)),
        "minReplicas": k8s.replicas,
        "maxReplicas": k8s.max_replicas or k8s.replicas,
    }
    doc = {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }
    return validate(doc)


def build(spec: PipelineSpec, target: str, version: ServingVersion) -> list[dict[str, Any]]:
    if target == "vllm":
        return vllm_manifests(spec, version)
    if target == "kserve":
        return [kserve_manifest(spec, version)]
    raise ManifestError(f"no Kubernetes manifest for target {target!r}")


# -- validation ----------------------------------------------------------------------------------

_MODEL_TYPES = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "Pod"): "V1Pod",
}


def _named_field(exc: BaseException) -> str:
    """The field a Kubernetes client error names ("Invalid value for `image`"): the name only, as
    the rest of its text can quote the value (an env var, a credential)."""
    found = re.search(r"`([A-Za-z_][A-Za-z0-9_]*)`", str(exc))
    return f" (field {found.group(1)})" if found else ""


def round_trip(doc: dict[str, Any], model: str, where: str) -> dict[str, Any]:
    """Deserialise ``doc`` into the Kubernetes client model ``model`` (client-side validation on)
    and serialise it back; any difference is a field the API does not know, or a wrong type."""
    import json
    from types import SimpleNamespace

    from kubernetes.client import ApiClient

    with ApiClient() as client:
        try:
            obj = client.deserialize(SimpleNamespace(data=json.dumps(doc)), model)
        except (ValueError, TypeError) as exc:
            raise ManifestError(
                f"{where}: not a valid {model}{_named_field(exc)}: {safe_error_text(exc)}"
            ) from None
        back = client.sanitize_for_serialization(obj)
    if back != doc:
        raise ManifestError(
            f"{where}: {_diff(doc, back)} is not valid for the Kubernetes {model} model (unknown field or wrong type)"
        )
    return doc


def _diff(doc: Any, back: Any, path: str = "") -> str:
    """The first path where the manifest and its round trip differ."""
    if isinstance(doc, dict) and isinstance(back, dict):
        for key in doc:
            if key not in back:
                return f"{path}.{key}".lstrip(".")
            inner = _diff(doc[key], back[key], f"{path}.{key}")
            if inner:
                return inner
        return ""
    if isinstance(doc, list) and isinstance(back, list):
        for i, (a, b) in enumerate(zip(doc, back, strict=False)):
            inner = _diff(a, b, f"{path}[{i}]")
            if inner:
                return inner
        return "" if len(doc) == len(back) else f"{path} (length)"
    return "" if doc == back else (path.lstrip(".") or "(root)")


def validate(doc: dict[str, Any]) -> dict[str, Any]:
    """Check one manifest: core kinds through their client model, an InferenceService field by field."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in _MODEL_TYPES:
        return round_trip(doc, _MODEL_TYPES[key], f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}")
    if key == (KSERVE_API_VERSION, "InferenceService"):
        return validate_inference_service(doc)
    raise ManifestError(f"unsupported manifest kind {key}")


def validate_inference_service(doc: dict[str, Any]) -> dict[str, Any]:
    """The CRD's structure checked here; its metadata and pod spec through the client models."""
    where = "InferenceService"
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ManifestError(f"{where}: unknown top-level field(s) {sorted(extra)}")
    metadata = doc.get("metadata") or {}
    name = metadata.get("name") or ""
    if not _DNS_1035.match(name) or len(name) > NAME_MAX:
        raise ManifestError(
            f"{where}.metadata.name {name!r}: a DNS-1035 label of at most {NAME_MAX} characters"
        )
    round_trip(metadata, "V1ObjectMeta", f"{where}.metadata")
    spec = doc.get("spec")
    if not isinstance(spec, dict) or set(spec) - {"predictor", "transformer", "explainer"}:
        raise ManifestError(f"{where}.spec: only predictor, transformer and explainer are allowed")
    predictor = spec.get("predictor")
    if not isinstance(predictor, dict):
        raise ManifestError(f"{where}.spec.predictor is required")
    from kubernetes.client import V1PodSpec

    pod_fields = set(V1PodSpec.attribute_map.values())
    unknown = set(predictor) - pod_fields - KSERVE_COMPONENT_FIELDS
    if unknown:
        raise ManifestError(f"{where}.spec.predictor: unknown field(s) {sorted(unknown)}")
    for bound in ("minReplicas", "maxReplicas"):
        value = predictor.get(bound)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ManifestError(f"{where}.spec.predictor.{bound}: a non-negative integer (got {value!r})")
    if (predictor.get("maxReplicas") or 0) and predictor.get("minReplicas", 0) > predictor["maxReplicas"]:
        raise ManifestError(f"{where}.spec.predictor: minReplicas is above maxReplicas")
    pod = {k: v for k, v in predictor.items() if k in pod_fields}
    round_trip(pod, "V1PodSpec", f"{where}.spec.predictor")
    containers = pod.get("containers") or []
    if len(containers) != 1 or containers[0].get("name") != KSERVE_CONTAINER:
        raise ManifestError(f"{where}.spec.predictor.containers: one container named {KSERVE_CONTAINER!r}")
    return doc


def to_yaml(docs: list[dict[str, Any]]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
