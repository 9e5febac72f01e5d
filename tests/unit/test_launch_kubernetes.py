"""The Kubernetes launcher, without a cluster: pods are rendered by the provider's own
``build_pod_request_obj`` and validated against the Kubernetes API models; and the trainer image
definition (Dockerfile stage, requirement pins) is checked against the project's pins."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from llmops.launch.command import job_argv
from llmops.launch.kubernetes import (
    ANNOTATION_CONFIG_URI,
    TRAINER_UID,
    credential_in,
    evaluation_pod_operator,
    label_value,
    pod_labels,
    pod_manifest,
    training_pod_operator,
)
from llmops.launch.local import run_local
from llmops.specs.schema import Distributed, KubernetesSpec, SecretEnv, Toleration

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE_POD = PROJECT / "deploy" / "kubernetes" / "trainer-pod.example.yaml"

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RUN_ID = "manual__2026-03-01T08:15:00.123456+00:00"
CONFIG_URI = "s3://llmops-lake/runs/support_tickets/manual__2026-03-01/train_job.json"
PLAIN_ENV = {
    "MLFLOW_TRACKING_URI": "https://mlflow.internal.example.com",
    "LLMOPS_LAKE_ROOT": "s3://llmops-lake",
    "LLMOPS_MODEL_STORE": "s3://llmops-models/base",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def gpu_spec(**overrides: Any) -> KubernetesSpec:
    values: dict[str, Any] = {
        "image": "registry.example.com/llmops-trainer@sha256:" + "0" * 64,
        "image_pull_secrets": ["registry-credentials"],
        "service_account": "llmops-trainer",
        "gpus": 2,
        "cpu": "16",
        "memory": "128Gi",
        "ephemeral_storage": "200Gi",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [
            Toleration(key="nvidia.com/gpu"),
            Toleration(key="dedicated", operator="Equal", value="training", effect="NoExecute"),
        ],
        "secrets": [
            SecretEnv(secret="llmops-object-storage"),
            SecretEnv(secret="llmops-mlflow", key="token", env="MLFLOW_TRACKING_TOKEN"),
        ],
    }
    values.update(overrides)
    return KubernetesSpec(**values)


def build(spec: KubernetesSpec | None = None, **kwargs: Any) -> Any:
    """The operator for a GPU training job (the provider's KubernetesPodOperator)."""
    arguments: dict[str, Any] = {
        "task_id": "train",
        "spec": spec or gpu_spec(),
        "module": "llmops.training",
        "config_uri": CONFIG_URI,
        "distributed": None,
        "env": PLAIN_ENV,
        "name": "support_tickets-train",
        "labels": pod_labels("support_tickets", "train", RUN_ID),
    }
    arguments.update(kwargs)
    return training_pod_operator(**arguments)


def fake_context(task_id: str = "train") -> dict[str, Any]:
    """The context keys build_pod_request_obj and template rendering read (no Airflow DB)."""
    ti = SimpleNamespace(
        dag_id="support_tickets__finetune", task_id=task_id, map_index=-1, try_number=1, run_id=RUN_ID
    )
    return {"ti": ti, "run_id": RUN_ID, "dag": SimpleNamespace(dag_id=ti.dag_id), "params": {}}


def validated(manifest: dict[str, Any]) -> dict[str, Any]:
    """Deserialise into kubernetes.client.V1Pod (client-side validation on) and back: a field the
    API models do not know would be dropped, so equality means the manifest is all valid fields."""
    from kubernetes.client import ApiClient, V1Pod

    with ApiClient() as client:
        pod = client._ApiClient__deserialize(json.loads(json.dumps(manifest)), "V1Pod")  # type: ignore[attr-defined]
        assert isinstance(pod, V1Pod)
        assert client.sanitize_for_serialization(pod) == manifest
    return manifest


def render(operator: Any, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return validated(pod_manifest(operator, context))


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    (only,) = manifest["spec"]["containers"]  # one container: no XCom sidecar
    return only


def local_argv(tmp_path: Path, module: str, config_uri: str, distributed: Distributed | None) -> list[str]:
    """What the local launcher actually executes: fake `python`/`torchrun` that print their argv."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("python", "torchrun"):
        script = bin_dir / tool
        script.write_text('#!/bin/sh\nprintf \'%s\\n\' "$(basename "$0")" "$@"\n')
        script.chmod(0o755)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            prefix = f"[{module}] "
            if record.getMessage().startswith(prefix):
                records.append(record.getMessage()[len(prefix) :])

    logger = logging.getLogger("llmops.launch.local")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_local(module, config_uri, distributed=distributed, python=str(bin_dir / "python"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return records


def test_rendered_pod_is_a_valid_kubernetes_pod() -> None:
    """Expect that the provider renders the pod (with task-instance labels from a context) into a
    manifest that round-trips through the Kubernetes V1Pod model unchanged."""
    manifest = render(build(), fake_context())
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Pod"
    assert manifest["metadata"]["namespace"] == "llmops"
    assert manifest["spec"]["restartPolicy"] == "Never"
    assert DNS_SUBDOMAIN.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
    assert manifest["metadata"]["name"].startswith("support-tickets-train-")


def test_gpu_cpu_memory_and_scratch_are_requested_and_limited() -> None:
    """Expect GPUs as an extended-resource limit with an equal request, and cpu, memory and
    ephemeral storage with requests equal to limits (Guaranteed QoS)."""
    resources = container(render(build()))["resources"]
    expected = {"cpu": "16", "memory": "128Gi", "ephemeral-storage": "200Gi", "nvidia.com/gpu": "2"}
    assert resources["limits"] == expected
    assert resources["requests"] == expected


def test_a_cpu_only_pod_asks_for_no_gpu() -> None:
    """Expect that gpus: 0 leaves the GPU resource out entirely."""
    resources = container(render(build(gpu_spec(gpus=0))))["resources"]
    assert "nvidia.com/gpu" not in resources["limits"] and "nvidia.com/gpu" not in resources["requests"]


def test_custom_gpu_resource_name() -> None:
    """Expect that another accelerator's extended resource name is used as given."""
    resources = container(render(build(gpu_spec(gpus=1, gpu_resource="amd.com/gpu"))))["resources"]
    assert resources["limits"]["amd.com/gpu"] == "1" and "nvidia.com/gpu" not in resources["limits"]


def test_scheduling_node_selector_tolerations_and_pull_secrets() -> None:
    """Expect the spec's node selector, tolerations (as V1Toleration), pull secrets, pull policy
    and service account in the pod."""
    manifest = render(build())
    spec = manifest["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"},
    ]
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert spec["serviceAccountName"] == "llmops-trainer"
    assert container(manifest)["image"].endswith("@sha256:" + "0" * 64)
    assert container(manifest)["imagePullPolicy"] == "IfNotPresent"


def test_an_exists_toleration_with_a_value_is_refused() -> None:
    """Expect that a toleration Kubernetes would reject (operator Exists with a value) fails at
    parse time instead of at pod creation."""
    with pytest.raises(ValueError, match="Exists"):
        build(gpu_spec(tolerations=[Toleration(key="gpu", operator="Exists", value="yes")]))


def test_secrets_only_by_reference() -> None:
    """Expect a whole secret as envFrom.secretRef and one key as env.valueFrom.secretKeyRef, and
    the secret-backed variable never with a plain value."""
    c = container(render(build()))
    assert c["envFrom"] == [{"secretRef": {"name": "llmops-object-storage"}}]
    by_name = {e["name"]: e for e in c["env"]}
    assert by_name["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "llmops-mlflow", "key": "token"}},
    }
    assert [e["name"] for e in c["env"]].count("MLFLOW_TRACKING_TOKEN") == 1
    for entry in c["env"]:
        if "value" in entry:
            assert credential_in(entry["value"]) is None
            assert not re.search(r"(?i)(password|secret|token)", entry["name"].replace("TOKENIZERS", ""))
    assert {e["name"]: e["value"] for e in c["env"] if "value" in e}.items() >= PLAIN_ENV.items()


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
        {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"},
        {"HF_TOKEN": "hf_" + "a" * 34},
        {"MLFLOW_TRACKING_PASSWORD": "hunter2"},
        {"OPTUNA_STORAGE": "postgresql://optuna:hunter2@db.internal:5432/optuna"},
        {"LLMOPS_EXTRA": "AKIAIOSFODNN7EXAMPLE"},
        {"MODEL_URL": "https://bucket.s3.amazonaws.com/m?X-Amz-Signature=abc"},
    ],
)
def test_credentials_in_plain_env_are_refused(env: dict[str, str]) -> None:
    """Expect that a credential-named variable or a credential-shaped value in the plain env is
    refused: anyone who can read the pod could read it."""
    with pytest.raises(ValueError, match="secret"):
        build(env={**PLAIN_ENV, **env})


@pytest.mark.parametrize(
    "config_uri",
    [
        "https://lake.example.com/job.json?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA",
        "s3://user:hunter2@bucket/job.json",
        "s3://bucket/$(AWS_SECRET_ACCESS_KEY)/job.json",
    ],
)
def test_credentials_in_the_config_uri_are_refused(config_uri: str) -> None:
    """Expect that a presigned URL, a URL with a password or a Kubernetes variable reference is
    never placed in the pod's arguments or annotations."""
    with pytest.raises(ValueError):
        build(config_uri=config_uri)


def test_no_secret_or_secret_looking_value_in_arguments() -> None:
    """Expect that the arguments are exactly the module and the config URI: no secret names,
    keys or credential-shaped strings."""
    c = container(render(build()))
    assert c["args"] == ["-m", "llmops.training", "--config", CONFIG_URI]
    text = " ".join(c["command"] + c["args"])
    assert credential_in(text) is None
    for name in ("llmops-object-storage", "llmops-mlflow", "MLFLOW_TRACKING_TOKEN", "token"):
        assert name not in text.split()


def test_the_kek_reaches_the_pod_from_a_secret_only() -> None:
    """Expect LLMOPS_KEK (with which the job decrypts its inputs) as a secretKeyRef to the spec's
    kek_secret, never as a value; a plain LLMOPS_KEK, or a second one from kubernetes.secrets, is
    refused; with KMS, the key id is plain env and no KEK secret is needed."""
    from llmops.specs.training import KekSecret

    env = {e["name"]: e for e in container(render(build()))["env"]}
    assert env["LLMOPS_KEK"] == {
        "name": "LLMOPS_KEK",
        "valueFrom": {"secretKeyRef": {"name": "llmops-kek", "key": "kek"}},
    }
    custom = gpu_spec(kek_secret=KekSecret(secret="lake-keys", key="kek-2026"))
    env = {e["name"]: e for e in container(render(build(custom)))["env"]}
    assert env["LLMOPS_KEK"]["valueFrom"]["secretKeyRef"] == {"name": "lake-keys", "key": "kek-2026"}
    with pytest.raises(ValueError, match="also set from a Kubernetes secret"):
        build(env={**PLAIN_ENV, "LLMOPS_KEK": "c2VjcmV0"})
    twice = gpu_spec(secrets=[SecretEnv(secret="other", key="k", env="LLMOPS_KEK")])
    with pytest.raises(ValueError, match="LLMOPS_KEK is set twice"):
        build(twice)
    kms = gpu_spec(kek_secret=None, kms_key_id="arn:aws:kms:eu-west-1:111122223333:key/abcd")
    env = {e["name"]: e for e in container(render(build(kms)))["env"]}
    assert "LLMOPS_KEK" not in env
    assert env["LLMOPS_KMS_KEY_ID"]["value"] == "arn:aws:kms:eu-west-1:111122223333:key/abcd"


def test_a_plain_env_var_colliding_with_a_secret_is_refused() -> None:
    """Expect that a plain value cannot shadow or duplicate a secret-backed variable."""
    spec = gpu_spec(secrets=[SecretEnv(secret="s3", key="region", env="AWS_DEFAULT_REGION")])
    with pytest.raises(ValueError, match="also set from a Kubernetes secret"):
        build(spec)


def test_arguments_equal_the_local_launchers(tmp_path: Path) -> None:
    """Expect that the pod's arguments are exactly what the local launcher runs after the
    interpreter, with `python` from the image's PATH as the command."""
    c = container(render(build()))
    executed = local_argv(tmp_path, "llmops.training", CONFIG_URI, None)
    assert c["command"] == ["python"]
    assert executed[0] == "python"
    assert c["args"] == executed[1:]
    assert [*c["command"], *c["args"]] == job_argv("llmops.training", CONFIG_URI)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_arguments_equal_the_local_launchers(tmp_path: Path, strategy: str) -> None:
    """Expect that distributed training runs torchrun in the pod with the same arguments the
    local launcher gives torchrun."""
    distributed = Distributed(strategy=strategy, processes_per_node=2)
    c = container(render(build(distributed=distributed)))
    executed = local_argv(tmp_path, "llmops.training", CONFIG_URI, distributed)
    assert c["command"] == ["torchrun"]
    assert executed[0] == "torchrun"
    assert c["args"] == executed[1:]
    assert c["args"][:2] == ["--standalone", "--nproc-per-node=2"]


def test_more_processes_than_gpus_is_refused() -> None:
    """Expect that torchrun cannot be asked for more processes than the pod has GPUs."""
    with pytest.raises(ValueError, match="exceeds"):
        build(gpu_spec(gpus=2), distributed=Distributed(strategy="ddp", processes_per_node=4))


def test_evaluation_pod_runs_the_evaluation_module() -> None:
    """Expect that the evaluation operator runs `python -m llmops.evaluation` in the same kind of
    pod."""
    operator = evaluation_pod_operator(
        task_id="evaluate",
        spec=gpu_spec(gpus=1),
        config_uri="s3://lake/eval_job.json",
        env=PLAIN_ENV,
        name="support_tickets-evaluate",
        labels=pod_labels("support_tickets", "evaluate", RUN_ID),
    )
    c = container(render(operator))
    assert c["command"] == ["python"]
    assert c["args"] == ["-m", "llmops.evaluation", "--config", "s3://lake/eval_job.json"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_scratch_and_shared_memory_volumes() -> None:
    """Expect a sized emptyDir at /scratch holding every cache and temp directory, and a
    memory-backed emptyDir at /dev/shm (half the memory by default)."""
    manifest = render(build())
    volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "200Gi"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "65536Mi"}
    c = container(manifest)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/scratch": "scratch", "/dev/shm": "dshm"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    for name in ("HF_HOME", "TMPDIR", "TORCH_HOME", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        assert env[name].startswith("/scratch"), name
    assert env["HF_HUB_OFFLINE"] == "1" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_shm_size_can_be_set() -> None:
    """Expect an explicit shared-memory size to replace the default."""
    volumes = {v["name"]: v for v in render(build(shm_size="16Gi"))["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "16Gi"


def test_scratch_paths_cannot_be_redirected() -> None:
    """Expect that the caller's env cannot move caches off the sized scratch volume."""
    with pytest.raises(ValueError, match="set by the launcher"):
        build(env={**PLAIN_ENV, "HF_HOME": "/root/.cache/huggingface"})


def test_labels_are_valid_kubernetes_labels() -> None:
    """Expect every label, ours (run id sanitised, deterministically) and the provider's
    task-instance labels, to be a valid Kubernetes label of at most 63 characters."""
    labels = render(build(), fake_context())["metadata"]["labels"]
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        assert LABEL_NAME.match(name) and (not prefix or DNS_SUBDOMAIN.match(prefix)), key
        assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    assert labels["llmops.io/pipeline"] == "support_tickets"
    assert labels["llmops.io/stage"] == "train"
    assert labels["llmops.io/run-id"] == label_value(RUN_ID)
    assert labels["llmops.io/run-id"].startswith("manual__2026-03-01T08-15-00.123456-00-00")
    assert labels["run_id"] and labels["dag_id"] == "support_tickets__finetune"
    assert labels["task_id"] == "train" and labels["try_number"] == "1"


def test_label_value_keeps_distinct_values_distinct() -> None:
    """Expect that long or unsafe values that differ only after sanitising stay distinct, and
    that valid values are kept as they are."""
    assert label_value("train") == "train"
    assert label_value("a:b") != label_value("a+b")
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    assert label_value(long_a) != label_value(long_b)
    assert all(len(label_value(v)) <= 63 and LABEL_VALUE.match(label_value(v)) for v in (long_a, "-:-", ""))


def test_templated_and_invalid_labels_are_refused() -> None:
    """Expect that a label value that is a template (unsanitisable at parse time) or an invalid
    label key is refused."""
    with pytest.raises(ValueError, match="templated"):
        build(labels={"llmops.io/run-id": "{{ run_id }}"})
    with pytest.raises(ValueError, match="label key"):
        build(labels={"not a key": "x"})


def test_config_uri_annotation_and_templated_config_uri() -> None:
    """Expect the config URI as an annotation, and a templated URI (e.g. built from the run id or
    an XCom pull) rendered by the operator into both the arguments and the annotation."""
    operator = build(config_uri="s3://lake/runs/{{ run_id }}/train_job.json")
    operator.render_template_fields(fake_context())
    manifest = render(operator, fake_context())
    assert container(manifest)["args"][-1] == f"s3://lake/runs/{RUN_ID}/train_job.json"
    assert (
        manifest["metadata"]["annotations"][ANNOTATION_CONFIG_URI]
        == f"s3://lake/runs/{RUN_ID}/train_job.json"
    )
    assert manifest["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"


def test_lifecycle_no_orphans_and_reattach() -> None:
    """Expect GPU pods deleted on finish and on kill, a retry reattaching to a running pod
    (durable, mirrored by reattach_on_restart) without the deprecated argument's warning, and no
    XCom sidecar."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction, OnKillAction

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        operator = build()
    assert operator.on_finish_action == OnFinishAction.DELETE_POD
    assert operator.on_kill_action == OnKillAction.DELETE_POD
    assert operator.durable is True and operator.reattach_on_restart is True
    assert operator.do_xcom_push is False
    assert operator.get_logs is True
    assert len(render(operator)["spec"]["containers"]) == 1


def test_timeouts() -> None:
    """Expect startup and scheduling timeouts of at least 1800 s by default (a GPU node pool
    scaling up), the spec's execution timeout, and the same cluster-side active deadline."""
    operator = build(gpu_spec())
    assert operator.startup_timeout_seconds >= 1800
    assert operator.schedule_timeout_seconds >= 1800
    assert operator.execution_timeout == timedelta(hours=24)
    assert render(operator)["spec"]["activeDeadlineSeconds"] == 24 * 3600
    short = build(gpu_spec(startup_timeout_seconds=600, execution_timeout_minutes=90))
    assert short.startup_timeout_seconds == 600
    assert short.execution_timeout == timedelta(minutes=90)


@pytest.mark.parametrize("deferrable", [True, False])
def test_deferrable_follows_the_spec(deferrable: bool) -> None:
    """Expect the spec's deferrable flag, with periodic log fetching while deferred."""
    operator = build(gpu_spec(deferrable=deferrable))
    assert operator.deferrable is deferrable
    assert operator.logging_interval == (60 if deferrable else None)


def test_operator_kwargs_pass_through_but_guarantees_cannot_be_overridden() -> None:
    """Expect retries and similar task arguments to reach the operator, and arguments that would
    undo a guarantee (no XCom, delete on finish, secrets by reference) to be refused."""
    operator = build(retries=3, retry_delay=timedelta(minutes=5), pool="gpu")
    assert operator.retries == 3 and operator.pool == "gpu"
    for override in ({"do_xcom_push": True}, {"on_finish_action": "keep_pod"}, {"env_vars": {"A": "b"}}):
        with pytest.raises(TypeError, match="decides"):
            build(**override)


def test_pod_runs_as_the_trainer_images_non_root_user() -> None:
    """Expect a non-root, no-privilege-escalation pod whose uid is the trainer image's USER."""
    manifest = render(build())
    security = manifest["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == TRAINER_UID
    assert container(manifest)["securityContext"]["allowPrivilegeEscalation"] is False
    assert manifest["spec"]["shareProcessNamespace"] is True
    assert "automountServiceAccountToken" not in manifest["spec"]  # a service account was asked for
    no_account = render(build(gpu_spec(service_account=None)))["spec"]
    assert no_account["automountServiceAccountToken"] is False  # no API token for a plain job
    assert f"USER {TRAINER_UID}:{TRAINER_UID}" in dockerfile_stages()["trainer"]


def test_launch_modules_are_import_light() -> None:
    """Expect that importing the launchers (as DAG files do at parse time) imports neither the
    cncf provider nor the Kubernetes client."""
    code = (
        "import sys; import llmops.launch.kubernetes, llmops.launch.local, llmops.launch.command; "
        "print([m for m in sys.modules if m.startswith(('airflow', 'kubernetes', 'torch'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(PROJECT / "include"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"


def example_pod() -> dict[str, Any]:
    """The pod in deploy/kubernetes/trainer-pod.example.yaml, minus the random name suffix."""
    manifest = render(build(distributed=Distributed(strategy="ddp", processes_per_node=2)), fake_context())
    manifest["metadata"]["name"] = "support-tickets-train-xxxxxxxx"
    manifest["metadata"]["labels"].pop("airflow_version", None)
    return manifest


def test_example_manifest_matches_the_code() -> None:
    """Expect the documented example pod to be exactly what the launcher renders (regenerate with
    LLMOPS_REGENERATE_EXAMPLES=1)."""
    import os

    rendered = example_pod()
    if os.environ.get("LLMOPS_REGENERATE_EXAMPLES"):
        header = (
            "# Rendered by llmops.launch.kubernetes.training_pod_operator (see tests/unit/"
            "test_launch_kubernetes.py,\n# LLMOPS_REGENERATE_EXAMPLES=1): a DDP training pod on 2 GPUs. "
            "Not applied by hand: Airflow creates it.\n"
        )
        EXAMPLE_POD.write_text(header + yaml.safe_dump(rendered, sort_keys=False))
    assert yaml.safe_load(EXAMPLE_POD.read_text()) == rendered


# --- the trainer image -------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, str]:
    stages: dict[str, str] = {}
    current = None
    for line in (PROJECT / "Dockerfile").read_text().splitlines():
        match = re.match(r"^FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = ""
        if current:
            stages[current] += line + "\n"
    return stages


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """name (normalised) -> (version, the line's comment)."""
    found: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = (match.group(3), comment.strip())
    return found


def test_trainer_pins_match_the_project_pins() -> None:
    """Expect every trainer pin to equal the requirements.txt/constraints.txt pin, and a
    trainer-only package to be absent from both (so that it cannot drift unnoticed)."""
    trainer = pins(PROJECT / "requirements-trainer.txt")
    project = {**pins(PROJECT / "constraints.txt"), **pins(PROJECT / "requirements.txt")}
    assert {
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "datasets",
        "bitsandbytes",
    } <= trainer.keys()
    for name, (version, comment) in trainer.items():
        if comment.startswith("trainer-only"):
            assert name not in project, f"{name} is marked trainer-only but pinned for the Airflow image"
        else:
            assert name in project, f"{name} is not pinned in requirements.txt or constraints.txt"
            assert project[name][0] == version, f"{name}: trainer {version} != project {project[name][0]}"
    assert not any(name.startswith("apache-airflow") for name in trainer)


def test_dockerfile_stages_install_their_requirements() -> None:
    """Expect the Airflow stage to install requirements.txt (CPU torch) and to stay the default
    target, and the trainer stage to install requirements-trainer.txt with the CUDA torch."""
    stages = dockerfile_stages()
    assert list(stages)[-1] == "airflow"
    airflow, trainer = stages["airflow"], stages["trainer"]
    assert "-r requirements.txt -c constraints.txt" in airflow
    assert "requirements-trainer.txt" not in airflow
    assert "-r requirements-trainer.txt -c constraints.txt" in trainer
    assert "-r requirements.txt" not in trainer
    assert "grep -E '^torch==' requirements-trainer.txt" in trainer
    index = re.search(r"download\.pytorch\.org/whl/\$\{TORCH_CUDA\}", trainer)
    cuda = re.search(r"ARG TORCH_CUDA=(cu\d+)", trainer)
    assert index and cuda and cuda.group(1) != "cpu"
    assert "pip install --no-cache-dir --no-deps ." in trainer


def test_trainer_stage_runtime_settings() -> None:
    """Expect the trainer image to run as a non-root numeric user in /scratch, with no entrypoint
    (the pod passes the command), offline Hub, and the build identity as an env var."""
    trainer = dockerfile_stages()["trainer"]
    instructions = [
        line.split()[0] for line in trainer.splitlines() if line and not line.startswith((" ", "#"))
    ]
    assert "ENTRYPOINT" not in instructions and "CMD" not in instructions
    assert re.search(r"^USER \d+:\d+$", trainer, re.MULTILINE)
    assert re.findall(r"^WORKDIR (\S+)", trainer, re.MULTILINE)[-1] == "/scratch"
    for setting in ("HF_HUB_OFFLINE=1", "TOKENIZERS_PARALLELISM=false", "PYTHONUNBUFFERED=1"):
        assert setting in trainer
    assert "ARG LLMOPS_IMAGE_DIGEST" in trainer
    assert "LLMOPS_IMAGE_DIGEST=${LLMOPS_IMAGE_DIGEST}" in trainer
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}", trainer, re.MULTILINE)
    assert "ARG PYTHON_VERSION=3.11" in (PROJECT / "Dockerfile").read_text()


def test_rbac_example_is_valid_and_grants_what_the_launcher_uses() -> None:
    """Expect the example RBAC manifests to be valid Kubernetes objects, the Role to grant the
    pod operations the provider performs (create, reattach, delete, logs, events) and no exec,
    and the trainer's own service account to get no API token."""
    from kubernetes.client import ApiClient

    kinds = {"Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "Role": "V1Role"}
    kinds["RoleBinding"] = "V1RoleBinding"
    documents = list(yaml.safe_load_all((PROJECT / "deploy" / "kubernetes" / "rbac.yaml").read_text()))
    with ApiClient() as client:
        objects = {doc["kind"]: client._ApiClient__deserialize(doc, kinds[doc["kind"]]) for doc in documents}  # type: ignore[attr-defined]
    assert set(objects) == set(kinds)
    grants = {
        (resource, verb)
        for rule in objects["Role"].rules
        for resource in rule.resources
        for verb in rule.verbs
    }
    needed = {("pods", v) for v in ("create", "get", "list", "watch", "patch", "delete")}
    assert needed | {("pods/log", "get"), ("events", "list")} <= grants
    assert not any(resource == "pods/exec" for resource, _ in grants)
    assert objects["ServiceAccount"].automount_service_account_token is False
    assert objects["RoleBinding"].role_ref.name == objects["Role"].metadata.name
