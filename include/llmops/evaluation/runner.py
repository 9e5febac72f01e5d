"""Offline evaluation: ``python -m llmops.evaluation --config eval.json``.

Loads the base model and the trained adapter the way serving would (``from_pretrained`` +
``PeftModel.from_pretrained``), measures completion-only loss and perplexity over the whole
eval set, greedy-generates for up to ``max_samples`` prompts and scores them against the
references. With ``include_baseline`` the same numbers are measured with the adapter disabled,
so reports and gates can show the lift over the base model.

The output holds aggregate numbers only: prompts and generations may contain personal data and
must never reach reports.

Every location (base model, adapter, eval file, output file, the config itself) may be a local
path or an ``s3://`` URI: inputs are fetched through the training job's content-addressed cache,
the metrics file is written through :mod:`llmops.storage`.

Exit status: 0 success, 2 unusable config or inputs, 1 the evaluation itself failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.evaluation.config import EvalJobConfig, load_eval_config
from llmops.evaluation.metrics import exact_match, percentile, rouge_l, token_f1
from llmops.training.artifacts import json_safe, weights_sha256, write_json_atomic
from llmops.training.config import ConfigError
from llmops.training.runtime import (
    JobInputError,
    chat_prompt_ids,
    encode_chat_prompt_completion,
    encode_prompt_completion,
    library_versions,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    read_prompt_completion_jsonl,
    require_chat_template,
    resolve_device,
    resolve_dtype,
    setup_logging,
)
from llmops.training.staging import fetch_file, fetch_model_dir, is_remote, model_weights_sha256

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


def _max_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence both the model's positions and the tokenizer allow."""
    limits = [
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(usable) if usable else 2048


def completion_loss(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    *,
    batch_size: int,
    device: str,
    chat_template: bool = False,
) -> tuple[float, int]:
    """Mean negative log-likelihood per completion token over all rows, and the token count.

    Token-weighted (every completion token counts once), prompt tokens excluded, EOS (or the
    chat template's end of turn) included, with the same tokenisation as training.
    """
    import torch

    max_length = _max_length(model, tokenizer)
    encode = encode_chat_prompt_completion if chat_template else encode_prompt_completion
    encoded = [encode(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    total_nll = 0.0
    total_tokens = 0
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(ids)] = 1
        input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=attention).logits
        shift_logits = logits[:, :-1, :].float()
        shift_labels = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    if total_tokens == 0:
        raise JobInputError("eval_file: no completion tokens left to score (prompts fill the context?)")
    return total_nll / total_tokens, total_tokens


def generate_and_score(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    *,
    max_new_tokens: int,
    device: str,
    chat_template: bool = False,
) -> dict[str, float]:
    """Greedy-decode each prompt one at a time (so latency is per request) and score it."""
    import torch
    from transformers import GenerationConfig

    generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    max_prompt = max(1, _max_length(model, tokenizer) - max_new_tokens)
    scores: dict[str, list[float]] = {"token_f1": [], "exact_match": [], "rouge_l": []}
    latencies: list[float] = []
    for row in rows:
        if chat_template:
            ids = chat_prompt_ids(tokenizer, row["prompt"])[-max_prompt:]
        else:
            ids = tokenizer(text=row["prompt"])["input_ids"][-max_prompt:]
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        attention = torch.ones_like(input_ids)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention, generation_config=generation_config
            )
        if device == "cuda":
            torch.cuda.synchronize()
        latencies.append((time.perf_counter() - started) * 1000.0)
        prediction = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
        reference = row["completion"].strip()
        scores["token_f1"].append(token_f1(prediction, reference))
        scores["exact_match"].append(exact_match(prediction, reference))
        scores["rouge_l"].append(rouge_l(prediction, reference))
    result = {name: sum(values) / len(values) for name, values in scores.items()}
    result["latency_ms_mean"] = sum(latencies) / len(latencies)
    result["latency_ms_p95"] = percentile(latencies, 95)
    return result


def measure(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    """Loss, perplexity and generation metrics of whatever ``model`` currently is."""
    loss, loss_tokens = completion_loss(
        model,
        tokenizer,
        rows,
        batch_size=config.batch_size,
        device=device,
        chat_template=config.chat_template,
    )
    samples = rows[: config.max_samples]
    generated = generate_and_score(
        model,
        tokenizer,
        samples,
        max_new_tokens=config.max_new_tokens,
        device=device,
        chat_template=config.chat_template,
    )
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(loss) if loss < 700 else None,
        **generated,
        "n_samples": len(samples),
        "n_loss_rows": len(rows),
        "n_loss_tokens": loss_tokens,
    }


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


def evaluate_adapter(config: EvalJobConfig) -> dict[str, Any]:
    """Run one evaluation and write ``config.output_file``; returns what was written."""
    import transformers
    from peft import PeftModel

    quiet_libraries()
    transformers.set_seed(config.seed)
    device = resolve_device(config.device)
    dtype = resolve_dtype(device)
    base_dir = fetch_model_dir(config.base_model_path)
    adapter_dir = fetch_model_dir(config.adapter_path, "adapter_path")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise JobInputError(f"adapter_path: {config.adapter_path} has no adapter_config.json")
    rows = read_prompt_completion_jsonl(fetch_file(config.eval_file, "eval_file"), "eval_file")
    _warn_on_base_mismatch(adapter_dir, base_dir)

    # The adapter directory carries the tokenizer exactly as training used it.
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(adapter_dir if has_tokenizer else base_dir)
    if config.chat_template:
        require_chat_template(tokenizer, config.adapter_path if has_tokenizer else config.base_model_path)
    base = load_base_model(base_dir, device)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.to(device)
    model.eval()
    logger.info(
        "evaluating %s on %d rows (%d generated), device=%s",
        adapter_dir,
        len(rows),
        min(len(rows), config.max_samples),
        device,
    )

    started = time.perf_counter()
    result: dict[str, Any] = measure(model, tokenizer, rows, config, device)
    logger.info(
        "adapter: eval_loss=%.4f token_f1=%.4f exact_match=%.4f rouge_l=%.4f latency_p95=%.1fms",
        result["eval_loss"],
        result["token_f1"],
        result["exact_match"],
        result["rouge_l"],
        result["latency_ms_p95"],
    )
    if config.include_baseline:
        with model.disable_adapter():
            baseline = measure(model, tokenizer, rows, config, device)
        logger.info(
            "baseline: eval_loss=%.4f token_f1=%.4f exact_match=%.4f rouge_l=%.4f",
            baseline["eval_loss"],
            baseline["token_f1"],
            baseline["exact_match"],
            baseline["rouge_l"],
        )
        result["baseline"] = baseline
    else:
        result["baseline"] = None
    result.update(
        {
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "max_new_tokens": config.max_new_tokens,
            "seed": config.seed,
            "base_model_uri": config.base_model_path,
            "adapter_uri": config.adapter_path,
            "eval_file_uri": config.eval_file,
            "chat_template": config.chat_template,
            "base_model_sha256": model_weights_sha256(base_dir),
            "adapter_sha256": weights_sha256(adapter_dir),
            "eval_runtime_s": round(time.perf_counter() - started, 3),
            "library_versions": library_versions(),
        }
    )
    write_output(config.output_file, result)
    logger.info("metrics written to %s", config.output_file)
    return result


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
