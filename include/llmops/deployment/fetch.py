"""``python -m llmops.deployment.fetch --model-uri models:/<model>/<version> --dest /models``

The serving pod's init container: downloads a registered version (the pyfunc that holds the base
model and the LoRA adapter) from MLflow and lays it out for vLLM as ``<dest>/base`` and
``<dest>/adapter`` (links into the download), plus ``<dest>/llmops-model.json`` saying what it is.
A second run for the same version finds that file and does nothing. Needs ``MLFLOW_TRACKING_URI``
and the artifact store's credentials in its environment (from Kubernetes secrets).

Exit status: 0 done, 2 the version is not a llmops model (no base model or adapter in it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("llmops.deployment.fetch")

MARKER = "llmops-model.json"
LAYOUT = {"base": "base_model", "adapter": "adapter"}  # folder under dest -> pyfunc artifact key


class NotAnLlmopsModel(ValueError):
    """The model has no base_model / adapter artifacts (not registered by llmops)."""


def artifact_paths(model_dir: Path) -> dict[str, Path]:
    """The pyfunc's artifacts (key -> local folder) as its MLmodel file records them."""
    import yaml

    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    artifacts = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    out = {}
    for key in LAYOUT.values():
        entry = artifacts.get(key)
        if not entry or not entry.get("path"):
            raise NotAnLlmopsModel(f"the model has no '{key}' artifact (artifacts: {sorted(artifacts)})")
        out[key] = model_dir / entry["path"]
    return out


def fetch(model_uri: str, dest: Path) -> dict[str, str]:
    """Download ``model_uri`` under ``dest`` and link ``base`` / ``adapter``; idempotent per URI."""
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / MARKER
    if marker.is_file():
        known = json.loads(marker.read_text())
        if known.get("model_uri") == model_uri and all((dest / d).exists() for d in LAYOUT):
            log.info("%s already fetched into %s", model_uri, dest)
            return known  # type: ignore[no-any-return]
    download = dest / "download"
    if download.exists():
        shutil.rmtree(download)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(download)))
    paths = artifact_paths(local)
    layout = {}
    for folder, key in LAYOUT.items():
        link = dest / folder
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(paths[key].resolve(), target_is_directory=True)
        layout[folder] = str(link)
    info = {"model_uri": model_uri, **layout}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, marker)  # written last: its presence means the layout is complete
    log.info("fetched %s into %s", model_uri, dest)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmops.deployment.fetch",
        description="Download a registered llmops model version as base/ and adapter/ for vLLM.",
    )
    parser.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version> (or any MLflow model URI)"
    )
    parser.add_argument("--dest", required=True, type=Path, help="folder for base/ and adapter/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    try:
        info = fetch(args.model_uri, args.dest)
    except NotAnLlmopsModel as exc:
        log.error("%s: %s", args.model_uri, exc)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
