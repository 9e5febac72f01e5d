"""Shared fixtures. The environment is isolated before Airflow or llmops read it: every test
session gets its own Airflow home, lake, ledger and MLflow store under a temporary folder."""

from __future__ import annotations

import os
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
# Files sources and golden sets of test specs live in pytest's temporary folders.
os.environ["LLMOPS_DATA_ROOTS"] = os.pathsep.join([str(PROJECT), tempfile.gettempdir()])
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

from servers import require_server, run_mlflow_server  # noqa: E402

pytest_plugins = ("process_state", "pytester")


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


@pytest.fixture(scope="session")
def mlflow_server_root(tmp_path_factory) -> Path:
    """Where the session's MLflow server keeps its database and artifacts."""
    return tmp_path_factory.mktemp("mlflow-server")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_root):
    """A real MLflow tracking server process on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    root = mlflow_server_root
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "",
        # Registry webhooks to receivers on loopback over plain http (test only), seen at once.
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    with run_mlflow_server(root, f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), env) as url:
        yield url
