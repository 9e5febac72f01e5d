"""Shared fixtures. The environment is isolated before Airflow or llmops read it: every test
session gets its own Airflow home, lake, ledger and MLflow store under a temporary folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="llmops-tests-"))

os.environ["LLMOPS_PROJECT_DIR"] = str(PROJECT)
os.environ["LLMOPS_HOME"] = str(_SESSION_HOME / "llmops")
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_HOME / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PROJECT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'llmops' / 'mlflow.db'}"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenLineage: the provider's events, and the datasets the llmops steps add, as JSON Lines in the session home.
os.environ["LLMOPS_LINEAGE_DIR"] = str(_SESSION_HOME / "llmops" / "lineage")
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "False"
os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "llmops"
os.environ.pop("AIRFLOW__OPENLINEAGE__DISABLE_SOURCE_CODE", None)  # legacy: EMISSION_POLICY below
os.environ["AIRFLOW__OPENLINEAGE__EMISSION_POLICY"] = (
    '[{"scope": {}, "controls": {"include_source_code": false}, "locked": true}, '
    '{"scope": {"dag_id": "data_erasure_request"}, "controls": {"emit": false}, "locked": true}]'
)
os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = (
    f'{{"type": "file", "log_file_path": "{_SESSION_HOME / "llmops" / "lineage" / "openlineage.jsonl"}", '
    '"append": true, "filesystem": "fsspec.implementations.local.LocalFileSystem", "fs_kwargs": {"auto_mkdir": true}}'
)
os.environ.pop("OPENLINEAGE_DISABLED", None)
os.environ.pop("AIRFLOW__OPENLINEAGE__CONFIG_PATH", None)
for _key in [
    k for k in os.environ if k.startswith(("LLMOPS_LAKE_ROOT", "LLMOPS_LEDGER_URL", "AIRFLOW_CONN_"))
]:
    del os.environ[_key]
(_SESSION_HOME / "airflow").mkdir(parents=True, exist_ok=True)
(_SESSION_HOME / "llmops").mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(PROJECT / "include"))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, port: int) -> None:
    """Skip (visibly) when a local server is absent; in CI a missing server is a failure."""
    if _reachable("127.0.0.1", port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI must provide it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata DB for dag.test() runs."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@pytest.fixture
def postgres_url() -> str:
    require_server("PostgreSQL", 5432)
    return os.environ.get("LLMOPS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture
def mariadb_url() -> str:
    require_server("MariaDB", 3306)
    return os.environ.get("LLMOPS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server process on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": "",
            # Registry webhooks to receivers on loopback over plain http (test only), seen at once.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
