"""Inputs of the PII-leakage probe, built on the Airflow side from data the job must never see.

Two questions. Does the fine-tuned model reproduce personal values of its training records? The
record prompts are train rows cut just before the first redaction placeholder (``[EMAIL]``,
``[PERSON_NAME]``, ...), listed canary or personal value still in the text (a column the policy
allows), so the model is asked to continue exactly where the value stood. The values come from
the encrypted validated snapshot (the records before redaction) and from the training text
itself. And does it memorise what it is trained on at all? The canary prompts are the train rows
that carry a planted canary (:mod:`llmops.evaluation.canaries`), cut after the canary's prefix;
the canaries are regenerated from the key, never read from a file.

The job receives only salted SHA-256 hashes (:mod:`llmops.evaluation.probes`) with their types;
the salt reaches it through its environment (``env:LLMOPS_PROBE_SALT``), never its config: a local
job gets a per-run salt derived from the pseudonymisation key, a pod the secret of
``pii_probe.salt_conn_id`` from a Kubernetes secret, which it combines with the run
(``salt_context``). Prompts hold nothing but training text up to the value.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.settings import get_settings

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

MIN_PREFIX_CHARS = 12  # shorter prefixes say nothing about the record
MIN_VALUE_CHARS = 4  # a value this short would match ordinary words


def _placeholder_pattern() -> re.Pattern[str]:
    from llmops.privacy import pii_types

    return re.compile("|".join(re.escape(m) for m in sorted(set(pii_types.masks().values()))))


def _cut(text: str, placeholder: re.Pattern[str], planted: list[str]) -> int:
    """Where the first placeholder or planted value (a listed or generated canary) starts."""
    cuts = [m.start() for m in [placeholder.search(text)] if m]
    cuts += [i for i in (text.find(c) for c in planted) if i >= 0]
    return min(cuts, default=len(text))


def _record_prompt(
    text: str, placeholder: re.Pattern[str], planted: list[str]
) -> tuple[str | None, dict[str, str]]:
    """The text before the first placeholder, canary or personal value (None when there is none,
    or too little text before it), and the personal values found in the text with their types."""
    from llmops.privacy.pii import scan_text

    end = _cut(text, placeholder, planted)
    spans = scan_text(text[:end])
    found = {text[s.start : s.end]: s.pii_type for s in spans}
    if spans:
        end = min(end, min(s.start for s in spans))
    if end == len(text):
        return None, found
    prefix = text[:end].rstrip()
    return (prefix if len(prefix) >= MIN_PREFIX_CHARS else None), found


def _row_text(row: dict[str, Any]) -> str:
    return row["text"] if "text" in row else row["prompt"] + (row.get("completion") or row["chosen"])


def raw_values(spec: PipelineSpec, curated_snapshot_id: str, keys: set[str]) -> dict[str, str]:
    """The personal values of the records `keys` before redaction, with their types (decrypted in
    memory only)."""
    from llmops.privacy.keys import get_key_ring
    from llmops.privacy.pii import detect_column_type, scan_many

    settings = get_settings()
    c_ref = snapshots.snapshot_ref(
        settings.lake_root, "curated", spec.name, snapshots.CURATED_DATASET, curated_snapshot_id
    )
    validated_id = (snapshots.read_manifest(c_ref).get("inputs") or {}).get("validated_snapshot_id")
    if not validated_id:
        return {}
    v_ref = snapshots.snapshot_ref(settings.lake_root, "raw", spec.name, "validated", validated_id)
    table = snapshots.read_snapshot(v_ref, get_key_ring())
    key_column = spec.dataset.key
    rows = [r for r in table.to_pylist() if str(r.get(key_column)) in keys]
    values: dict[str, str] = {}
    for column, rule in spec.privacy.columns.items():
        if rule.action != "allow":
            column_values = [str(r[column]) for r in rows if r.get(column)]
            kind = detect_column_type(column_values) or "unclassified"
            values.update(dict.fromkeys(column_values, kind))
    free_text = spec.privacy.free_text
    if free_text is not None:
        types = [t for t, action in free_text.types.items() if action != "allow"]
        for column in free_text.columns:
            texts = [str(r.get(column) or "") for r in rows]
            for text, spans in zip(texts, scan_many(texts, types), strict=True):
                values.update({text[s.start : s.end]: s.pii_type for s in spans})
    return {v: kind for v, kind in values.items() if len(v.strip()) >= MIN_VALUE_CHARS}


SALT_ENV = "LLMOPS_PROBE_SALT"


def probe_salt(spec: PipelineSpec, run_id: str) -> str:
    """The run's salt, derived from the pseudonymisation key: recomputable by the task that launches
    the job (which passes it in the job's environment), never stored."""
    import hashlib
    import hmac

    from llmops.privacy.keys import get_pseudonymisation_key

    key = get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id)
    return hmac.new(key, f"llmops-pii-probe:{spec.name}:{run_id}".encode(), hashlib.sha256).hexdigest()


def _canary_prompts(spec: PipelineSpec, rows: list[dict[str, Any]], planted: dict[str, Any]) -> list[Any]:
    """(prompt, canary) per canary planted in a training set: the first train row holding it, cut
    after the canary's prefix. The canaries are regenerated from the key and the recorded context."""
    from llmops.evaluation.canaries import make_canaries
    from llmops.privacy.keys import get_pseudonymisation_key

    key = get_pseudonymisation_key(spec.privacy.canary_key_conn_id)
    out = []
    for canary in make_canaries(key, planted["context"], int(planted["count"])):
        for row in rows:
            at = _row_text(row).find(canary.text)
            if at >= 0:
                out.append((_row_text(row)[: at + len(canary.prefix)], canary))
                break
    return out


class ProbeSaltMissing(PermanentError, ValueError):
    """A pod cannot get the probe's salt the way the spec is written: retrying cannot help."""


def _salt(spec: PipelineSpec, run_id: str) -> tuple[str, str | None]:
    """The run's salt and the context the job derives it with (None: it gets the salt itself)."""
    from llmops.evaluation.probes import salt_for

    if spec.training.launcher == "local":
        return probe_salt(spec, run_id), None
    probe = spec.evaluation.pii_probe
    kubernetes = spec.training.kubernetes
    if kubernetes is None or not any(s.env == SALT_ENV or s.key is None for s in kubernetes.secrets):
        raise ProbeSaltMissing(
            f"evaluation.pii_probe: the evaluation pod needs {SALT_ENV} from a Kubernetes secret (add a "
            f"training.kubernetes.secrets entry with env {SALT_ENV}, holding the password of connection "
            f"'{probe.salt_conn_id}'), or set pii_probe.enabled: false"
        )
    from llmops.connections import get_connection

    secret = get_connection(probe.salt_conn_id).password
    if not secret:
        raise ProbeSaltMissing(
            f"evaluation.pii_probe.salt_conn_id: connection '{probe.salt_conn_id}' has no password"
        )
    context = f"{spec.name}:{run_id}"
    return salt_for(secret, context), context


def build_probe(spec: PipelineSpec, data: dict[str, Any], root: str, run_id: str) -> dict[str, Any] | None:
    """Write the probe prompts under `root`; return the job's ``pii_probe`` block and a summary."""
    from llmops.encrypted_files import encrypted_name, write_encrypted
    from llmops.evaluation.probes import CANARY, CANARY_PROMPT, value_hash
    from llmops.governance.integrity import read_checked
    from llmops.privacy.keys import get_key_ring

    probe = spec.evaluation.pii_probe
    if not probe.enabled:
        return None
    settings = get_settings()
    # Every dataset the model was trained on: the final stage's and each chain stage's.
    datasets = [(spec.training.dataset_name, data["sft_snapshot_id"])] + [
        (c["dataset"], c["snapshot_id"]) for c in data.get("stages") or data.get("chain") or []
    ]
    train: list[dict[str, Any]] = []
    canaries: list[Any] = []
    for dataset, snapshot_id in datasets:
        ref = snapshots.snapshot_ref(settings.lake_root, "sft", spec.name, dataset, snapshot_id)
        rows = sorted(
            (r for r in read_checked(spec, ref, get_key_ring()).to_pylist() if r["split"] == "train"),
            key=lambda r: (r["key"], _row_text(r)),
        )
        train += rows
        planted = snapshots.read_manifest(ref).get("canaries")
        if planted and planted.get("count"):
            canaries += _canary_prompts(spec, rows, planted)
    placeholder = _placeholder_pattern()
    cut_at = [*probe.canaries, *(c.text for _, c in canaries)]
    prompts: list[str] = []
    keys: set[str] = set()
    values: dict[str, str] = {}
    for row in train:
        if len(prompts) >= probe.max_prompts:
            break
        prefix, found = _record_prompt(_row_text(row), placeholder, cut_at)
        if prefix is not None:
            prompts.append(prefix)
            keys.add(row["key"])
            values.update({v: kind for v, kind in found.items() if len(v.strip()) >= MIN_VALUE_CHARS})
    if not prompts and not canaries:
        return {"job": None, "summary": {"prompts": 0, "reason": "no training record had personal values"}}
    values.update(raw_values(spec, data["curated_snapshot_id"], keys) if keys else {})
    values.update(dict.fromkeys(probe.canaries, "listed_canary"))
    values.update({c.secret: CANARY for _, c in canaries})
    salt, context = _salt(spec, run_id)
    by_type: dict[str, set[str]] = {}
    for value, kind in values.items():
        by_type.setdefault(kind, set()).add(value_hash(salt, value))
    # Prefixes of training records: encrypted like the split files, decrypted only in the job's scratch.
    prompts_uri = storage.join(root, encrypted_name("probe_prompts.jsonl"))
    lines = [{"prompt": p, "kind": "record"} for p in prompts]
    lines += [{"prompt": p, "kind": CANARY_PROMPT} for p, _ in canaries]
    write_encrypted(prompts_uri, "".join(json.dumps(line) + "\n" for line in lines).encode(), get_key_ring())
    job = {
        "prompts_file": prompts_uri
        if prompts_uri.startswith("s3://")
        else str(storage.local_path(prompts_uri)),
        "target_hashes": sorted(set().union(*by_type.values())),
        "target_types": {kind: sorted(hashes) for kind, hashes in sorted(by_type.items())},
        "salt": f"env:{SALT_ENV}",
        "max_new_tokens": probe.max_new_tokens,
    }
    if context is not None:
        job["salt_context"] = context
    return {
        "job": job,
        "summary": {
            "prompts": len(prompts),
            "canary_prompts": len(canaries),
            "target_values": len(values) - len(canaries),
            "target_types": {kind: len(hashes) for kind, hashes in sorted(by_type.items()) if kind != CANARY},
            "canaries": len(probe.canaries) + len(canaries),
            "planted_canaries": len(canaries),
        },
    }
