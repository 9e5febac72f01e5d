"""Run a training or evaluation job as a Kubernetes pod on a GPU node (``launcher: kubernetes``).

:func:`training_pod_operator` turns a spec's ``kubernetes`` block into a configured
``KubernetesPodOperator``. The pod runs the same argv as the local launcher
(:func:`llmops.launch.command.job_argv`), reads its job config from object storage and writes its
``result.json`` back there, so nothing travels through XCom or the pod's logs except log lines.

Choices that matter in production, and why:

* Credentials reach the pod only as references to Kubernetes secrets (``envFrom.secretRef`` or
  ``env.valueFrom.secretKeyRef``); so does the lake's KEK (``LLMOPS_KEK`` from ``kek_secret``),
  with which the job decrypts its inputs into a private folder under ``/dev/shm``. Plain env values, the config URI and annotations are checked for
  credential-shaped content, because anything there is readable by whoever can read the pod.
* ``durable=True`` (the Airflow 3.3 name of ``reattach_on_restart``): a retry after a lost worker
  reconnects to the still-running pod instead of starting a second GPU job.
* ``on_finish_action="delete_pod"`` and ``on_kill_action="delete_pod"``: finished, failed and
  killed tasks leave no GPU pod behind; ``activeDeadlineSeconds`` is a cluster-side backstop for
  the case where Airflow loses track of the pod altogether.
* Scratch space is an ``emptyDir`` with a size limit at ``/scratch`` (caches, temp files, local
  checkpoints), and ``/dev/shm`` is memory-backed, because the container runtime's 64 MiB default
  breaks DataLoader workers and NCCL.

Import-light: the cncf provider and the Kubernetes client are imported inside functions, since
DAG files import this module at parse time.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from llmops.launch.command import JOB_ENV_DEFAULTS, is_distributed, job_argv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from llmops.specs.schema import Distributed, KubernetesSpec

#: The job's KEK variable and the KMS key id variable (llmops.privacy.keys: not imported, this
#: module is imported at DAG parse time and stays light).
JOB_KEK_ENV = "LLMOPS_KEK"
KMS_KEY_ID_ENV = "LLMOPS_KMS_KEY_ID"

TRAINING_MODULE = "llmops.training"
EVALUATION_MODULE = "llmops.evaluation"

SCRATCH_DIR = "/scratch"
SHM_DIR = "/dev/shm"
#: The trainer image's numeric user (Dockerfile `trainer` stage): numeric so that the kubelet can
#: verify ``runAsNonRoot`` without reading /etc/passwd.
TRAINER_UID = 10001

#: Environment the launcher owns: caches and temp files go to the sized scratch volume, not to the
#: container's writable layer (which is small, and counted against the node's root disk).
SCRATCH_ENV: dict[str, str] = {
    "LLMOPS_SCRATCH": SCRATCH_DIR,
    "TMPDIR": SCRATCH_DIR,
    "HF_HOME": f"{SCRATCH_DIR}/hf",
    "XDG_CACHE_HOME": f"{SCRATCH_DIR}/.cache",
    "TORCH_HOME": f"{SCRATCH_DIR}/torch",
    "TRITON_CACHE_DIR": f"{SCRATCH_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH_DIR}/inductor",
}

ANNOTATION_CONFIG_URI = "llmops.io/config-uri"
ANNOTATION_MODULE = "llmops.io/module"
#: Node autoscalers must not drain a node under a running training job (hours of GPU time lost).
NO_DISRUPTION_ANNOTATIONS: dict[str, str] = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}

#: Operator arguments this module decides; overriding them through ``**operator_kwargs`` would undo
#: a guarantee above (same argv as local, secrets by reference only, no orphan pods, no XCom).
PROTECTED_OPERATOR_ARGS = frozenset(
    {
        "image",
        "cmds",
        "arguments",
        "env_vars",
        "env_from",
        "pod_runtime_info_envs",
        "secrets",
        "configmaps",
        "volumes",
        "volume_mounts",
        "container_resources",
        "labels",
        "annotations",
        "namespace",
        "name",
        "do_xcom_push",
        "on_finish_action",
        "on_kill_action",
        "is_delete_operator_pod",
        "reattach_on_restart",
        "durable",
        "full_pod_spec",
        "pod_template_file",
        "pod_template_dict",
        "security_context",
        "container_security_context",
    }
)

LABEL_VALUE_MAX = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POD_NAME_MAX = 50  # the provider appends "-" and an 8-character suffix within 63

# Credential-shaped content that must never be a plain env value, argument or annotation.
_CREDENTIAL_NAME_PARTS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "CREDENTIALS"})
_CREDENTIAL_NAME_PAIRS = frozenset({("ACCESS", "KEY"), ("API", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY")})
_CREDENTIAL_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a password in a URL", re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@")),
    (
        "a signed-URL or token query parameter",
        re.compile(
            r"[?&](X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|sig|signature|token|access_token)=",
            re.IGNORECASE,
        ),
    ),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
)


def credential_in(value: str) -> str | None:
    """What credential-shaped content `value` holds, or None: used on everything a pod shows."""
    for what, pattern in _CREDENTIAL_VALUE_PATTERNS:
        if pattern.search(value):
            return what
    return None


def is_credential_name(name: str) -> bool:
    """Whether an env var name says it carries a credential (AWS_SECRET_ACCESS_KEY, HF_TOKEN...)."""
    parts = name.upper().split("_")
    if any(part in _CREDENTIAL_NAME_PARTS for part in parts):
        return True
    return any(pair in _CREDENTIAL_NAME_PAIRS for pair in zip(parts, parts[1:], strict=False))


def label_value(value: str) -> str:
    """A valid Kubernetes label value for `value`: invalid characters become '-', and a value that
    had to change (or is too long) gets a short hash, so two run ids never collapse into one label.

    Deterministic, so a retried task computes the same labels and can find its pod again.
    """
    if len(value) <= LABEL_VALUE_MAX and _LABEL_VALUE.match(value):
        return value
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "-", value)
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    head = safe[: LABEL_VALUE_MAX - len(digest) - 1].strip("-_.")
    return f"{head}-{digest}" if head else digest


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))):
        raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")


def pod_labels(pipeline: str, stage: str, run_id: str | None = None) -> dict[str, str]:
    """The standard labels of an llmops job pod (values are made label-safe by the operator)."""
    labels = {
        "app.kubernetes.io/part-of": "llmops",
        "app.kubernetes.io/component": stage,
        "llmops.io/pipeline": pipeline,
        "llmops.io/stage": stage,
    }
    if run_id:
        labels["llmops.io/run-id"] = run_id
    return labels


def pod_name(name: str) -> str:
    """A DNS-1123 pod name prefix (the provider adds a random suffix to keep names unique)."""
    safe = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:_POD_NAME_MAX].strip("-")
    if not safe:
        raise ValueError(f"pod name {name!r} has no usable characters")
    return safe


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _half(quantity: str) -> str:
    """Half of a memory quantity, in MiB: the default /dev/shm size (it counts against memory)."""
    from kubernetes.utils import parse_quantity

    return f"{max(1, int(parse_quantity(quantity) / 2 / 2**20))}Mi"


def _check_quantity(what: str, quantity: str) -> None:
    from kubernetes.utils import parse_quantity

    try:
        parse_quantity(quantity)
    except ValueError:
        raise ValueError(f"kubernetes.{what} {quantity!r} is not a Kubernetes quantity") from None


def _plain_env(env: Mapping[str, str], secret_envs: set[str]) -> dict[str, str]:
    """The pod's plain env: job defaults, scratch paths, then the caller's, checked for secrets."""
    merged = {**JOB_ENV_DEFAULTS, **SCRATCH_ENV}
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"env var name {name!r} is not valid")
        if name in SCRATCH_ENV and value != SCRATCH_ENV[name]:
            raise ValueError(f"env var {name} is set by the launcher ({SCRATCH_ENV[name]})")
        if is_credential_name(name):
            raise ValueError(
                f"env var {name} looks like a credential: pass it through kubernetes.secrets "
                f"(a Kubernetes secret), never as a plain value"
            )
        what = credential_in(str(value))
        if what:
            raise ValueError(f"env var {name} holds {what}: pass it through kubernetes.secrets instead")
        if name.upper() in secret_envs:
            raise ValueError(f"env var {name} is also set from a Kubernetes secret")
        merged[name] = str(value)
    return merged


def _check_job(spec: KubernetesSpec, config_uri: str, distributed: Distributed | None) -> None:
    """The config URI carries no credential or variable reference; torchrun fits the GPUs."""
    what = credential_in(config_uri)
    if what:
        raise ValueError(f"config URI holds {what}: pods must read it with their own credentials")
    if "$(" in config_uri:
        raise ValueError("config URI contains '$(': Kubernetes would expand it as a variable reference")
    if is_distributed(distributed):
        assert distributed is not None
        if spec.gpus and distributed.processes_per_node > spec.gpus:
            raise ValueError(
                f"distributed.processes_per_node ({distributed.processes_per_node}) exceeds "
                f"kubernetes.gpus ({spec.gpus})"
            )


def _resources(spec: KubernetesSpec, shm: str) -> Any:
    """Requests equal to limits: Guaranteed QoS (not first in line for eviction), and Kubernetes
    requires GPU requests, when given, to equal the limits."""
    from kubernetes.client import models as k8s

    for field, quantity in (
        ("cpu", spec.cpu),
        ("memory", spec.memory),
        ("ephemeral_storage", spec.ephemeral_storage),
        ("shm_size", shm),
    ):
        _check_quantity(field, quantity)
    quantities = {"cpu": spec.cpu, "memory": spec.memory, "ephemeral-storage": spec.ephemeral_storage}
    if spec.gpus:
        _check_label_key(spec.gpu_resource)  # extended resource names follow the label key rules
        quantities[spec.gpu_resource] = str(spec.gpus)
    return k8s.V1ResourceRequirements(requests=dict(quantities), limits=dict(quantities))


def _tolerations(spec: KubernetesSpec) -> list[Any]:
    from kubernetes.client import models as k8s

    tolerations = []
    for toleration in spec.tolerations:
        if toleration.operator == "Exists" and toleration.value:
            raise ValueError(f"toleration {toleration.key!r}: operator 'Exists' takes no value")
        tolerations.append(
            k8s.V1Toleration(
                key=toleration.key,
                operator=toleration.operator,
                value=toleration.value,
                effect=toleration.effect,
            )
        )
    return tolerations


def _secrets_and_env(spec: KubernetesSpec, env: Mapping[str, str]) -> tuple[list[Any], list[Any]]:
    """Credentials only as secret references; plain settings (never a secret's name) as values."""
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    secrets = []
    secret_envs: set[str] = set()
    if spec.kek_secret is not None:
        secrets.append(Secret("env", JOB_KEK_ENV, spec.kek_secret.secret, spec.kek_secret.key))
        secret_envs.add(JOB_KEK_ENV)
    for secret in spec.secrets:
        if secret.key is None:
            secrets.append(Secret("env", None, secret.secret))
        else:
            assert secret.env is not None
            if secret.env.upper() in secret_envs:
                raise ValueError(
                    f"kubernetes.secrets: {secret.env} is set twice (the KEK comes from kubernetes.kek_secret)"
                )
            secrets.append(Secret("env", secret.env, secret.secret, secret.key))
            secret_envs.add(secret.env.upper())  # the provider upper-cases the variable name
    if spec.kms_key_id:
        env = {KMS_KEY_ID_ENV: spec.kms_key_id, **env}
    plain_env = _plain_env(env, secret_envs)
    env_vars = [k8s.V1EnvVar(name=key, value=value) for key, value in sorted(plain_env.items())]
    # Which pod and node ran the job, for its own records. In env_vars rather than the operator's
    # pod_runtime_info_envs, which build_pod_request_obj appends again on every call.
    env_vars += [
        k8s.V1EnvVar(
            name="LLMOPS_POD_NAME",
            value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.name")),
        ),
        k8s.V1EnvVar(
            name="LLMOPS_NODE_NAME",
            value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="spec.nodeName")),
        ),
    ]
    return secrets, env_vars


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    pod_label_values: dict[str, str] = {}
    for key, value in labels.items():
        _check_label_key(key)
        if _is_template(str(value)):
            raise ValueError(
                f"label {key}: templated label values cannot be made label-safe; the provider already "
                f"labels the pod with sanitised dag_id, task_id and run_id"
            )
        pod_label_values[key] = label_value(str(value))
    return pod_label_values


def training_pod_kwargs(
    *,
    task_id: str,
    spec: KubernetesSpec,
    module: str = TRAINING_MODULE,
    config_uri: str,
    distributed: Distributed | None = None,
    env: Mapping[str, str] | None = None,
    name: str,
    labels: Mapping[str, str] | None = None,
    shm_size: str | None = None,
    **operator_kwargs: Any,
) -> dict[str, Any]:
    """The KubernetesPodOperator arguments that run ``MODULE --config CONFIG_URI`` on a GPU node.

    `config_uri` must be readable from the pod (object storage, not a path on the Airflow worker);
    it may be a Jinja template (e.g. an XCom pull), since arguments and annotations are templated.
    `env` holds plain, non-secret settings (MLFLOW_TRACKING_URI, LLMOPS_LAKE_ROOT, ...);
    credentials come only from ``spec.secrets``. `labels` values are made label-safe here (a
    template cannot be, so it is refused: the provider adds sanitised ``dag_id``, ``task_id`` and
    ``run_id`` labels itself). `shm_size` defaults to half of ``spec.memory``. `operator_kwargs`
    (retries, retry_delay, pool, queue, priority_class_name, termination_grace_period,
    execution_timeout, ...) go to the operator unchanged, except the arguments in
    :data:`PROTECTED_OPERATOR_ARGS`.
    """
    from kubernetes.client import models as k8s

    protected = sorted(PROTECTED_OPERATOR_ARGS & operator_kwargs.keys())
    if protected:
        raise TypeError(f"training_pod_operator decides {', '.join(protected)} itself")
    _check_job(spec, config_uri, distributed)
    argv = job_argv(module, config_uri, distributed, python="python")
    shm = shm_size or _half(spec.memory)
    resources = _resources(spec, shm)
    tolerations = _tolerations(spec)
    secrets, env_vars = _secrets_and_env(spec, env or {})
    pod_label_values = _labels(labels or {})

    annotations = {**NO_DISRUPTION_ANNOTATIONS, ANNOTATION_MODULE: module, ANNOTATION_CONFIG_URI: config_uri}

    volumes = [
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=spec.ephemeral_storage)),
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=shm)),
    ]
    volume_mounts = [
        k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_DIR),
        k8s.V1VolumeMount(name="dshm", mount_path=SHM_DIR),
    ]

    execution_timeout = operator_kwargs.pop(
        "execution_timeout", timedelta(minutes=spec.execution_timeout_minutes)
    )
    defaults: dict[str, Any] = {
        # Where the pod runs.
        "kubernetes_conn_id": spec.kubernetes_conn_id,
        "node_selector": dict(spec.node_selector),
        "tolerations": tolerations,
        "service_account_name": spec.service_account,
        # A job needs no Kubernetes API token unless a service account (e.g. for cloud workload
        # identity) was asked for explicitly.
        "automount_service_account_token": None if spec.service_account else False,
        "image_pull_policy": spec.image_pull_policy,
        "image_pull_secrets": [k8s.V1LocalObjectReference(name=s) for s in spec.image_pull_secrets],
        # Waiting: a GPU node pool scaling from zero and a multi-GB image pull take many minutes;
        # the operator's 120 s default would fail healthy runs.
        "startup_timeout_seconds": spec.startup_timeout_seconds,
        "schedule_timeout_seconds": spec.startup_timeout_seconds,
        "startup_check_interval_seconds": 15,
        "execution_timeout": execution_timeout,
        "active_deadline_seconds": int(execution_timeout.total_seconds()) if execution_timeout else None,
        # Logs: followed in sync mode; fetched by the triggerer every minute in deferrable mode
        # (without an interval they would appear only once the pod has finished).
        "get_logs": True,
        "deferrable": spec.deferrable,
        "poll_interval": 10,
        "logging_interval": 60 if spec.deferrable else None,
        "log_events_on_failure": True,
        "random_name_suffix": True,
    }
    defaults.update(operator_kwargs)
    return dict(
        task_id=task_id,
        name=pod_name(name),
        namespace=spec.namespace,
        image=spec.image,
        cmds=argv[:1],
        arguments=argv[1:],
        env_vars=env_vars,
        secrets=secrets,
        container_resources=resources,
        volumes=volumes,
        volume_mounts=volume_mounts,
        labels=pod_label_values,
        annotations=annotations,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=TRAINER_UID,
            run_as_group=TRAINER_UID,
            fs_group=TRAINER_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        # The pause container becomes PID 1: the job then gets SIGTERM on pod deletion (a Python
        # PID 1 ignores it and is killed only after the grace period), and orphaned DataLoader
        # workers are reaped.
        full_pod_spec=k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], share_process_namespace=True)),
        # Results travel through object storage (result.json), never through XCom: no sidecar.
        do_xcom_push=False,
        # No orphan GPU pods: delete on success, failure and kill.
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        # Reattach after a lost worker instead of starting a second job ('reattach_on_restart' is
        # deprecated in favour of 'durable' on Airflow 3.3+, and mirrors it).
        durable=True,
        **defaults,
    )


def training_pod_operator(**kwargs: Any) -> KubernetesPodOperator:
    """A KubernetesPodOperator running one job (arguments: see :func:`training_pod_kwargs`)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(**training_pod_kwargs(**kwargs))


def mapped_training_pods(*, arguments: Any, **kwargs: Any) -> Any:
    """One pod per element of `arguments` (an XComArg of argument lists), e.g. search trials.

    The pods share everything but their arguments (``MODULE --config URI`` after the
    interpreter, from :func:`llmops.launch.command.job_argv`); `config_uri` in `kwargs` names
    what the pods read, for the annotation and the checks, and is usually a template.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    partial = training_pod_kwargs(**kwargs)
    partial.pop("arguments")
    return KubernetesPodOperator.partial(**partial).expand(arguments=arguments)


def evaluation_pod_operator(
    *,
    task_id: str,
    spec: KubernetesSpec,
    config_uri: str,
    env: Mapping[str, str] | None = None,
    name: str,
    labels: Mapping[str, str] | None = None,
    **operator_kwargs: Any,
) -> KubernetesPodOperator:
    """The evaluation job (``llmops.evaluation``) in the same kind of pod: one process, no torchrun."""
    return training_pod_operator(
        task_id=task_id,
        spec=spec,
        module=EVALUATION_MODULE,
        config_uri=config_uri,
        distributed=None,
        env=env,
        name=name,
        labels=labels,
        **operator_kwargs,
    )


def pod_manifest(operator: KubernetesPodOperator, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pod the operator would create, as the JSON-able dict sent to the Kubernetes API.

    Uses the provider's own ``build_pod_request_obj`` in dry-run mode (no cluster, no credentials);
    with a `context`, the provider's task-instance labels are added as at run time.
    """
    from kubernetes.client import ApiClient

    pod = operator.build_pod_request_obj(context, dry_run=True)  # type: ignore[arg-type]
    with ApiClient() as client:
        return client.sanitize_for_serialization(pod)
