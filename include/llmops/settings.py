"""Deployment settings, read from the environment with safe embedded defaults.

One switch per component: each store (lake, ledger, MLflow, keys) is chosen here and nowhere
else, so moving from the laptop defaults to production is a change of environment only.
Credentials are never settings: they come from Airflow Connections (``*_CONN_ID`` names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _project_dir() -> Path:
    """The Astro project root: the source checkout, or $AIRFLOW_HOME in an image."""
    explicit = os.environ.get("LLMOPS_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    checkout = _PACKAGE_DIR.parents[1]
    if (checkout / "include" / "pipelines").is_dir():
        return checkout
    return Path(os.environ.get("AIRFLOW_HOME", os.getcwd())).resolve()


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    home: Path
    lake_root: str
    ledger_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    pipelines_dir: Path
    gx_dir: Path
    model_store: str
    kek_conn_id: str
    kek_file: Path
    lineage_dir: Path
    python_executable: str
    # Local folders a spec may read files from (files sources, golden sets); s3:// is not a folder.
    data_roots: tuple[Path, ...] = ()

    @property
    def reports_root(self) -> str:
        return f"{self.lake_root.rstrip('/')}/reports"


def get_settings() -> Settings:
    """Read settings now (not at import), so tests and tasks see the current environment."""
    project = _project_dir()
    home = Path(os.environ.get("LLMOPS_HOME", project / ".llmops")).resolve()
    return Settings(
        project_dir=project,
        home=home,
        lake_root=os.environ.get("LLMOPS_LAKE_ROOT", str(home / "lake")),
        ledger_url=os.environ.get("LLMOPS_LEDGER_URL", f"sqlite:///{home / 'ledger.db'}"),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        mlflow_artifact_root=os.environ.get("LLMOPS_MLFLOW_ARTIFACT_ROOT", str(home / "mlartifacts")),
        pipelines_dir=Path(os.environ.get("LLMOPS_PIPELINES_DIR", project / "include" / "pipelines")),
        gx_dir=Path(os.environ.get("LLMOPS_GX_DIR", project / "great_expectations")),
        model_store=os.environ.get("LLMOPS_MODEL_STORE", str(home / "base_models")),
        kek_conn_id=os.environ.get("LLMOPS_KEK_CONN_ID", "llmops_kek"),
        kek_file=Path(os.environ.get("LLMOPS_KEK_FILE", home / "keys" / "kek.key")),
        lineage_dir=Path(os.environ.get("LLMOPS_LINEAGE_DIR", home / "lineage")),
        python_executable=os.environ.get("LLMOPS_PYTHON", _default_python()),
        data_roots=_data_roots(project, home),
    )


def _data_roots(project: Path, home: Path) -> tuple[Path, ...]:
    """LLMOPS_DATA_ROOTS (paths separated by os.pathsep), else the project and LLMOPS_HOME."""
    explicit = os.environ.get("LLMOPS_DATA_ROOTS", "")
    roots = [Path(p) for p in explicit.split(os.pathsep) if p] or [project, home]
    return tuple(r.resolve() for r in roots)


def _default_python() -> str:
    import sys

    return sys.executable
