"""Inputs of the PII-leakage probe, built on the Airflow side from data the job must never see.

The question: does the fine-tuned model reproduce personal values that were redacted from its
training records, or canaries planted in the raw data? The prompts are the training records cut
just before the first redaction placeholder (``[EMAIL]``, ``[PERSON_NAME]``, ...) or canary, so
the model is asked to continue exactly where the value stood. The values themselves come from the
encrypted validated snapshot (the records as they were before redaction): the PII the spec's
policy redacts from the training columns, and the canaries. The job receives only salted SHA-256
hashes of them (:mod:`llmops.evaluation.probes`) and a fresh salt per run; prompts hold nothing
but redacted text.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.settings import get_settings

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

MIN_PREFIX_CHARS = 12  # shorter prefixes say nothing about the record
MIN_VALUE_CHARS = 4  # a value this short would match ordinary words


def _placeholder_pattern() -> re.Pattern[str]:
    from llmops.privacy import pii_types

    return re.compile("|".join(re.escape(m) for m in sorted(set(pii_types.masks().values()))))


def _prefixes(text: str, placeholder: re.Pattern[str], canaries: list[str]) -> str | None:
    """The text before the first placeholder or canary, or None when there is none."""
    cuts = [m.start() for m in [placeholder.search(text)] if m]
    cuts += [i for i in (text.find(c) for c in canaries) if i >= 0]
    if not cuts:
        return None
    prefix = text[: min(cuts)].rstrip()
    return prefix if len(prefix) >= MIN_PREFIX_CHARS else None


def raw_values(spec: PipelineSpec, curated_snapshot_id: str, keys: set[str]) -> set[str]:
    """The personal values of the records `keys` before redaction (decrypted in memory only)."""
    from llmops.privacy.keys import get_key_ring
    from llmops.privacy.pii import scan_many

    settings = get_settings()
    c_ref = snapshots.snapshot_ref(
        settings.lake_root, "curated", spec.name, snapshots.CURATED_DATASET, curated_snapshot_id
    )
    validated_id = (snapshots.read_manifest(c_ref).get("inputs") or {}).get("validated_snapshot_id")
    if not validated_id:
        return set()
    v_ref = snapshots.snapshot_ref(settings.lake_root, "raw", spec.name, "validated", validated_id)
    table = snapshots.read_snapshot(v_ref, get_key_ring())
    key_column = spec.dataset.key
    rows = [r for r in table.to_pylist() if str(r.get(key_column)) in keys]
    values: set[str] = set()
    for column, rule in spec.privacy.columns.items():
        if rule.action != "allow":
            values.update(str(r[column]) for r in rows if r.get(column))
    free_text = spec.privacy.free_text
    if free_text is not None:
        types = [t for t, action in free_text.types.items() if action != "allow"]
        for column in free_text.columns:
            texts = [str(r.get(column) or "") for r in rows]
            for text, spans in zip(texts, scan_many(texts, types), strict=True):
                values.update(text[s.start : s.end] for s in spans)
    return {v for v in values if len(v.strip()) >= MIN_VALUE_CHARS}


SALT_ENV = "LLMOPS_PROBE_SALT"


def probe_salt(spec: PipelineSpec, run_id: str) -> str:
    """The run's salt, derived from the pseudonymisation key: recomputable by the task that launches
    the job (which passes it in the job's environment), never stored."""
    import hashlib
    import hmac

    from llmops.privacy.keys import get_pseudonymisation_key

    key = get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id)
    return hmac.new(key, f"llmops-pii-probe:{spec.name}:{run_id}".encode(), hashlib.sha256).hexdigest()


def build_probe(spec: PipelineSpec, data: dict[str, Any], root: str, run_id: str) -> dict[str, Any] | None:
    """Write the probe prompts under `root`; return the job's ``pii_probe`` block and a summary."""
    from llmops.evaluation.probes import value_hash
    from llmops.governance.integrity import read_checked

    probe = spec.evaluation.pii_probe
    if not probe.enabled:
        return None
    settings = get_settings()
    # Every dataset the model was trained on: the final stage's and each chain stage's.
    datasets = [(spec.training.dataset_name, data["sft_snapshot_id"])] + [
        (c["dataset"], c["snapshot_id"]) for c in data.get("stages") or data.get("chain") or []
    ]
    train = []
    for dataset, snapshot_id in datasets:
        ref = snapshots.snapshot_ref(settings.lake_root, "sft", spec.name, dataset, snapshot_id)
        train += [r for r in read_checked(spec, ref).to_pylist() if r["split"] == "train"]
    placeholder = _placeholder_pattern()
    prompts: list[str] = []
    keys: set[str] = set()
    for row in sorted(train, key=lambda r: (r["key"], r.get("text") or r.get("prompt") or "")):
        text = row["text"] if "text" in row else row["prompt"] + (row.get("completion") or row["chosen"])
        prefix = _prefixes(text, placeholder, probe.canaries)
        if prefix is not None:
            prompts.append(prefix)
            keys.add(row["key"])
        if len(prompts) >= probe.max_prompts:
            break
    if not prompts:
        return {"job": None, "summary": {"prompts": 0, "reason": "no training record had redacted values"}}
    values = raw_values(spec, data["curated_snapshot_id"], keys) | set(probe.canaries)
    # Local jobs get the salt through their environment; a pod has no such channel, so its config
    # carries a random one (the lake is then the only place the salted hashes and salt meet).
    local = spec.training.launcher == "local"
    salt = probe_salt(spec, run_id) if local else secrets.token_hex(16)
    prompts_uri = storage.join(root, "probe_prompts.jsonl")
    storage.write_bytes(prompts_uri, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode())
    return {
        "job": {
            "prompts_file": prompts_uri
            if prompts_uri.startswith("s3://")
            else str(storage.local_path(prompts_uri)),
            "target_hashes": sorted({value_hash(salt, v) for v in values}),
            "salt": f"env:{SALT_ENV}" if local else salt,
            "max_new_tokens": probe.max_new_tokens,
        },
        "summary": {"prompts": len(prompts), "target_values": len(values), "canaries": len(probe.canaries)},
    }
