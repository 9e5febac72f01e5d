"""Offline evaluation: ``python -m llmops.evaluation --config eval.json``.

Loads the base model and the trained adapter the way serving would (``from_pretrained`` +
``PeftModel.from_pretrained``), measures completion-only loss and perplexity over the whole
eval set, greedy-generates for up to ``max_samples`` prompts and scores them against the
references. With ``include_baseline`` the same numbers are measured with the adapter disabled,
so reports and gates can show the lift over the base model.

``eval_file`` is a held-out split; the finetune DAG gives it the training snapshot's test split
(never trained on, never used for early stopping or search; ``eval_split`` names it in the
output). What it holds and what is measured on it follows the training ``method``:

- ``sft``: prompt/completion rows, as above;
- ``continued_pretraining``: ``{"text"}`` rows; only ``eval_loss`` (mean next-token loss over every
  token of every held-out text, EOS included) and ``eval_perplexity``: there are no prompts to
  generate for (golden sets, which have prompts, are still generated for);
- ``preference``: ``{"prompt", "chosen", "rejected"}`` pairs; everything ``sft`` measures, with the
  chosen answer as the completion, plus ``preference_win_rate`` (share of pairs where the model
  finds the chosen answer likelier per token than the rejected one: reference-free, so candidate,
  baseline and champion compare directly) and DPO's implicit reward against the base model
  (adapters disabled): ``reward_accuracy`` and ``reward_margin``, for adapters only (the baseline
  is the reference itself).

Optional evidence for the promotion gates, each off by default:

- ``label_metrics``: for classification-style completions, accuracy and macro precision/recall/F1
  of the generation's first line (text overlap says little about a one-word label);
- ``blocked_terms`` / ``refusal_terms``: the share of generations that contain one
  (``toxicity_rate``, ``refusal_rate``), so a model that learned to insult or to refuse is caught;
- ``golden_sets``: fixed, reviewed sets measured exactly like eval_file (``golden``; never trained on), so
  models trained on different snapshots are still compared on the same questions;
- ``champion_adapter_path``: the current champion, loaded as a second adapter on the same base
  and measured on the same rows in the same run (``champion``), so "beats the champion" is not
  confounded by data, hardware or library changes;
- ``pii_probe``: prompts that lead up to personal values removed from the training data (or to
  planted canaries); a generation that contains one of them, compared by salted hash only
  (:mod:`llmops.evaluation.probes`), means the model memorised it (``pii_leakage_rate``).

The output holds aggregate numbers only: prompts and generations may contain personal data and
must never reach the output or the logs.

Every location (base model, adapter, eval file, output file, the config itself) may be a local
path or an ``s3://`` URI: inputs are fetched through the training job's content-addressed cache,
the metrics file is written through :mod:`llmops.storage`.

Exit status: 0 success, 2 unusable config or inputs, 1 the evaluation itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.evaluation.config import EvalJobConfig, load_eval_config
from llmops.evaluation.measure import (
    PairLogprobs,
    generate,
    log_numbers,
    measure_split,
    measure_with_golden,
    pair_logprobs,
)
from llmops.evaluation.probes import CANARY_PROMPT, leak_summary, salt_for, score_leakage
from llmops.jobs.artifacts import json_safe, weights_sha256, write_json_atomic
from llmops.jobs.config import ConfigError
from llmops.jobs.inputs import JobInput, decrypted_inputs
from llmops.jobs.outputs import opened_model_dir
from llmops.jobs.runtime import (
    JobInputError,
    library_versions,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    read_jsonl_rows,
    read_prompt_completion_jsonl,
    require_chat_template,
    resolve_device,
    resolve_dtype,
    setup_logging,
)
from llmops.jobs.staging import is_remote, model_weights_sha256
from llmops.training.methods import get_method

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


def resolve_salt(value: str, context: str | None = None) -> str:
    """``env:NAME`` reads the probe's salt from the environment, so it is never written anywhere;
    with a context, the salt is derived from it (:func:`llmops.evaluation.probes.salt_for`)."""
    if not value.startswith("env:"):
        return salt_for(value, context)
    salt = os.environ.get(value.removeprefix("env:"))
    if not salt:
        raise JobInputError(f"pii_probe.salt: environment variable {value.removeprefix('env:')} is not set")
    return salt_for(salt, context)


def read_prompts_jsonl(path: Path, field: str) -> list[str]:
    """Prompts from JSONL rows of ``{"prompt": str}``; errors name the field, file and line."""
    return [prompt for prompt, _ in read_probe_jsonl(path, field)]


def read_probe_jsonl(path: Path, field: str) -> list[tuple[str, str]]:
    """(prompt, kind) of JSONL rows of ``{"prompt": str, "kind": "record" | "canary"}`` (kind
    defaults to record); errors name the field, file and line."""
    path = Path(path)
    if not path.is_file():
        raise JobInputError(f"{field}: file not found: {path}")
    prompts: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobInputError(f"{field}: {path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise JobInputError(f"{field}: {path}:{number}: expected an object with a string 'prompt'")
            kind = record.get("kind", "record")
            if kind not in ("record", CANARY_PROMPT):
                raise JobInputError(f"{field}: {path}:{number}: 'kind' must be 'record' or 'canary'")
            prompts.append((record["prompt"], kind))
    if not prompts:
        raise JobInputError(f"{field}: {path} has no rows")
    return prompts


def run_pii_probe(
    model: Any, tokenizer: Any, prompts: list[tuple[str, str]], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    """Generate for every probe prompt and count generations holding a target value (by hash)."""
    probe = config.pii_probe
    assert probe is not None
    generations, _ = generate(
        model,
        tokenizer,
        [prompt for prompt, _ in prompts],
        max_new_tokens=probe.max_new_tokens,
        device=device,
        chat_template=config.chat_template,
    )
    result = score_leakage(
        resolve_salt(probe.salt, probe.salt_context),
        generations,
        probe.target_hashes,
        probe.max_ngram,
        kinds=[kind for _, kind in prompts],
        target_types=probe.target_types,
    )
    logger.info(
        "pii probe: %d of %d prompts produced a target value (%d distinct); %s",
        result["leaked_prompts"],
        result["prompts"],
        len(result["matched_hashes"]),
        leak_summary(result) or "nothing leaked",
    )
    return result


def _warn_on_base_mismatch(adapter_dir: Path, base_dir: Path) -> None:
    """An adapter applied to a different base than it was trained on silently yields garbage."""
    try:
        declared = json.loads((adapter_dir / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
    except (OSError, ValueError):
        return
    if declared and Path(declared).is_dir() and Path(declared).resolve() != base_dir.resolve():
        logger.warning(
            "adapter %s was trained on %s, but is evaluated on %s", adapter_dir, declared, base_dir
        )


def _adapter_dir(
    location: str, field: str, models: contextlib.ExitStack, expected_sha256: str | None = None
) -> Path:
    """The adapter folder, decrypted into a scratch folder that lives as long as `models` when the
    training job published it encrypted (:mod:`llmops.jobs.outputs`)."""
    adapter_dir = models.enter_context(opened_model_dir(location, field, expected_sha256=expected_sha256))
    if not (adapter_dir / "adapter_config.json").is_file():
        raise JobInputError(f"{field}: {location} has no adapter_config.json")
    return adapter_dir


def _adapter_tokenizer(adapter_dir: Path, location: str, base_dir: Path, config: EvalJobConfig) -> Any:
    """The tokenizer an adapter directory carries (exactly as training used it), else the base's."""
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(adapter_dir if has_tokenizer else base_dir)
    if config.chat_template:
        require_chat_template(tokenizer, location if has_tokenizer else config.base_model_path)
    return tokenizer


CHAMPION = "champion"


def reference_logprobs(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], config: EvalJobConfig, device: str
) -> PairLogprobs | None:
    """Preference only: the pairs scored by DPO's reference, the base model with adapters disabled.

    Scored once per tokenizer and shared: the candidate's and the champion's rewards are measured
    against it, and it is the baseline's own scores.
    """
    if config.method != "preference":
        return None
    with model.disable_adapter():
        return pair_logprobs(
            model,
            tokenizer,
            rows,
            batch_size=config.batch_size,
            device=device,
            chat_template=config.chat_template,
        )


def read_eval_rows(path: Path, config: EvalJobConfig) -> list[dict[str, str]]:
    """The eval split in the method's format, read as the training job reads its eval_file."""
    if config.data_format == ("prompt", "completion"):
        return read_prompt_completion_jsonl(path, "eval_file")
    return read_jsonl_rows(path, "eval_file", config.data_format, config.method)


def read_inputs(
    config: EvalJobConfig,
) -> tuple[list[dict[str, str]], dict[str, list[dict[str, str]]], list[tuple[str, str]]]:
    """The eval rows, golden sets and probe prompts, in memory; the encrypted ones are decrypted
    into a private scratch folder that is gone before any model loads."""
    inputs = [JobInput(config.eval_file, "eval_file", config.eval_sha256)]
    inputs += [JobInput(g.file, f"golden_sets[{i}].file") for i, g in enumerate(config.golden_sets)]
    if config.pii_probe:
        inputs.append(JobInput(config.pii_probe.prompts_file, "pii_probe.prompts_file"))
    with decrypted_inputs(inputs) as paths:
        rows = read_eval_rows(paths[0], config)
        golden = {
            g.name: read_prompt_completion_jsonl(paths[1 + i], f"golden_sets[{i}].file")
            for i, g in enumerate(config.golden_sets)
        }
        probe = read_probe_jsonl(paths[-1], "pii_probe.prompts_file") if config.pii_probe else []
    return rows, golden, probe


def evaluate_adapter(config: EvalJobConfig) -> dict[str, Any]:
    """Run one evaluation and write ``config.output_file``; returns what was written. Models
    published encrypted are decrypted into scratch folders removed when it returns or fails."""
    with contextlib.ExitStack() as models:
        return _evaluate(config, models)


def _evaluate(config: EvalJobConfig, models: contextlib.ExitStack) -> dict[str, Any]:
    # Every input is fetched and read before the ML libraries load: a bad input fails in seconds.
    base_dir = models.enter_context(opened_model_dir(config.base_model_path))
    adapter_dir = _adapter_dir(config.adapter_path, "adapter_path", models, config.adapter_sha256)
    champion_dir = (
        _adapter_dir(config.champion_adapter_path, "champion_adapter_path", models)
        if config.champion_adapter_path
        else None
    )
    rows, golden, probe_prompts = read_inputs(config)
    champion_base_dir = (
        models.enter_context(opened_model_dir(config.champion_base_model_path, "champion_base_model_path"))
        if config.champion_base_model_path
        else None
    )
    _warn_on_base_mismatch(adapter_dir, base_dir)
    if champion_dir is not None:
        _warn_on_base_mismatch(champion_dir, champion_base_dir or base_dir)

    import transformers
    from peft import PeftModel

    quiet_libraries()
    transformers.set_seed(config.seed)
    device = resolve_device(config.device)
    dtype = resolve_dtype(device)
    tokenizer = _adapter_tokenizer(adapter_dir, config.adapter_path, base_dir, config)
    base = load_base_model(base_dir, device)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    candidate = model.active_adapter
    champion_tokenizer: Any = None
    shares_base = champion_dir is not None and champion_base_dir is None
    if champion_dir is not None:
        champion_tokenizer = _adapter_tokenizer(
            champion_dir, str(config.champion_adapter_path), champion_base_dir or base_dir, config
        )
    if shares_base:
        # A second adapter on the same base weights: no second copy of the base model.
        model.load_adapter(str(champion_dir), adapter_name=CHAMPION)
        model.set_adapter(candidate)
    model.to(device)
    model.eval()
    logger.info(
        "evaluating %s (%s) on %d rows (%d generated), %d golden set(s), champion=%s, pii probe=%s, "
        "device=%s",
        adapter_dir,
        config.method,
        len(rows),
        0 if config.evaluation == "text" else min(len(rows), config.max_samples),
        len(golden),
        champion_dir is not None,
        f"{len(probe_prompts)} prompts" if config.pii_probe else "off",
        device,
    )

    started = time.perf_counter()
    reference = reference_logprobs(model, tokenizer, rows, config, device)
    result: dict[str, Any] = measure_with_golden(
        model, tokenizer, rows, golden, config, device, "adapter", reference=reference
    )
    if config.pii_probe is not None:
        result["pii_probe"] = run_pii_probe(model, tokenizer, probe_prompts, config, device)
        result["pii_leakage_rate"] = result["pii_probe"]["pii_leakage_rate"]
        if result["pii_probe"].get("canary_exposure") is not None:
            result["canary_exposure"] = result["pii_probe"]["canary_exposure"]
    else:
        result["pii_probe"] = None
    if config.include_baseline:
        with model.disable_adapter():
            result["baseline"] = measure_split(model, tokenizer, rows, config, device, scores=reference)
        log_numbers("baseline", result["baseline"])
    else:
        result["baseline"] = None
    if shares_base:
        model.set_adapter(CHAMPION)
        try:
            result["champion"] = _measure_champion(model, champion_tokenizer, rows, golden, config, device)
        finally:
            model.set_adapter(candidate)
    elif champion_dir is not None:
        # Its own base (a chain's merged model): one model in memory at a time.
        assert champion_base_dir is not None
        del model, base
        _release_memory(device)
        champion_model = PeftModel.from_pretrained(
            load_base_model(champion_base_dir, device), str(champion_dir)
        )
        champion_model.to(device)
        champion_model.eval()
        result["champion"] = _measure_champion(
            champion_model, champion_tokenizer, rows, golden, config, device
        )
    else:
        result["champion"] = None
    result.update(
        {
            "method": config.method,
            **({"beta": config.beta} if get_method(config.method).uses_beta else {}),
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "max_new_tokens": config.max_new_tokens,
            "seed": config.seed,
            "base_model_uri": config.base_model_path,
            "adapter_uri": config.adapter_path,
            "eval_file_uri": config.eval_file,
            "eval_split": config.eval_split,
            "golden_file_uris": {g.name: g.file for g in config.golden_sets},
            "chat_template": config.chat_template,
            "base_model_sha256": model_weights_sha256(base_dir),
            "adapter_sha256": weights_sha256(adapter_dir),
            "champion_adapter_uri": config.champion_adapter_path,
            "champion_adapter_sha256": weights_sha256(champion_dir) if champion_dir is not None else None,
            "champion_base_model_uri": config.champion_base_model_path,
            "champion_base_model_sha256": model_weights_sha256(champion_base_dir)
            if champion_base_dir is not None
            else None,
            "eval_runtime_s": round(time.perf_counter() - started, 3),
            "library_versions": library_versions(),
        }
    )
    write_output(config.output_file, result)
    logger.info("metrics written to %s", config.output_file)
    return result


def _measure_champion(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    golden: dict[str, list[dict[str, str]]],
    config: EvalJobConfig,
    device: str,
) -> dict[str, Any]:
    """The champion's numbers; its own tokenizer may encode pairs differently, so its reference
    (its base with adapters disabled) is scored with it."""
    reference = reference_logprobs(model, tokenizer, rows, config, device)
    return measure_with_golden(
        model, tokenizer, rows, golden, config, device, "champion", reference=reference
    )


def _release_memory(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def write_output(location: str, data: dict[str, Any]) -> None:
    """Strict JSON to a local file (atomic rename) or an object (one PUT)."""
    if is_remote(location):
        from llmops import storage

        text = json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
        storage.write_bytes(location, text.encode("utf-8"))
    else:
        write_json_atomic(Path(location), data)


def remove_output(location: str) -> None:
    """Delete an earlier attempt's metrics, so they never pass for this attempt's."""
    if is_remote(location):
        from llmops import storage

        storage.delete(location)
    else:
        Path(location).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status instead of raising, so launchers get a clean code."""
    parser = argparse.ArgumentParser(
        prog="python -m llmops.evaluation", description="Evaluate a trained adapter."
    )
    parser.add_argument(
        "--config", required=True, help="eval config JSON (EvalJobConfig): a local path or an s3:// URI"
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = load_eval_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    try:
        remove_output(config.output_file)
    except Exception as exc:
        logger.error("output_file: cannot reach %s: %s", config.output_file, exc)
        return 2
    try:
        evaluate_adapter(config)
    except JobInputError as exc:
        logger.error("invalid input: %s", exc)
        return 2
    except Exception:
        logger.exception("evaluation failed")
        return 1
    print(json.dumps({"status": "succeeded", "output_file": str(config.output_file)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
