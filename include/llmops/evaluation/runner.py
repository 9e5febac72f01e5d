"""Offline evaluation: ``python -m llmops.evaluation --config eval.json``.

Loads the base model and the trained adapter the way serving would (``from_pretrained`` +
``PeftModel.from_pretrained``), measures completion-only loss and perplexity over the whole
eval set, greedy-generates for up to ``max_samples`` prompts and scores them against the
references. With ``include_baseline`` the same numbers are measured with the adapter disabled,
so reports and gates can show the lift over the base model.

What the eval split holds and what is measured on it follows the training ``method``:

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
- ``golden_sets``: fixed, reviewed sets measured exactly like the eval split (``golden``), so
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
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import metrics as catalogue
from llmops.evaluation.config import EvalJobConfig, load_eval_config
from llmops.evaluation.metrics import (
    dpo_reward_margins,
    gold_label,
    label_scores,
    percentile,
    predicted_label,
    preference_win_rate,
    reward_scores,
    scoring_windows,
    term_rate,
)
from llmops.evaluation.probes import score_leakage
from llmops.jobs.artifacts import json_safe, weights_sha256, write_json_atomic
from llmops.jobs.config import ConfigError
from llmops.jobs.runtime import (
    JobInputError,
    chat_prompt_ids,
    encode_chat_prompt_completion,
    encode_prompt_completion,
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
from llmops.jobs.staging import fetch_file, fetch_model_dir, is_remote, model_weights_sha256
from llmops.training.methods import get_method

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


def resolve_salt(value: str) -> str:
    """``env:NAME`` reads the probe's salt from the environment, so it is never written anywhere."""
    if not value.startswith("env:"):
        return value
    salt = os.environ.get(value.removeprefix("env:"))
    if not salt:
        raise JobInputError(f"pii_probe.salt: environment variable {value.removeprefix('env:')} is not set")
    return salt


def _max_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence both the model's positions and the tokenizer allow."""
    limits = [
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(usable) if usable else 2048


def _sequence_logprobs(
    model: Any, encoded: list[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int, device: str
) -> list[tuple[float, int]]:
    """``(summed log-prob, target count)`` per ``(input_ids, labels)``; labels -100 are not targets.

    Right-padded batches of ``batch_size``: the one forward-pass loop behind every loss here.
    """
    import torch

    scores: list[tuple[float, int]] = []
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
            reduction="none",
        ).view(shift_labels.shape)
        per_row = nll.sum(dim=1).tolist()
        counts = (shift_labels != -100).sum(dim=1).tolist()
        scores.extend((-float(v), int(n)) for v, n in zip(per_row, counts, strict=True))
    return scores


def completion_logprobs(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    *,
    batch_size: int,
    device: str,
    chat_template: bool = False,
    completion_key: str = "completion",
) -> list[tuple[float, int]]:
    """Per row: the summed log-prob of its completion given its prompt, and the completion's tokens.

    Prompt tokens excluded, EOS (or the chat template's end of turn) included, with the same
    tokenisation as training. ``completion_key`` picks the answer (``chosen``/``rejected`` of a pair).
    """
    max_length = _max_length(model, tokenizer)
    encode = encode_chat_prompt_completion if chat_template else encode_prompt_completion
    encoded = [encode(tokenizer, r["prompt"], r[completion_key], max_length) for r in rows]
    return _sequence_logprobs(
        model, encoded, pad_id=tokenizer.pad_token_id, batch_size=batch_size, device=device
    )


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

    Token-weighted (every completion token counts once), as the trainer's eval_loss, so the two
    are comparable; see :func:`completion_logprobs` for what is scored.
    """
    scores = completion_logprobs(
        model, tokenizer, rows, batch_size=batch_size, device=device, chat_template=chat_template
    )
    return _mean_nll(scores, "eval_file: no completion tokens left to score (prompts fill the context?)")


def _mean_nll(scores: list[tuple[float, int]], empty: str) -> tuple[float, int]:
    total_tokens = sum(n for _, n in scores)
    if total_tokens == 0:
        raise JobInputError(empty)
    return -sum(lp for lp, _ in scores) / total_tokens, total_tokens


def text_loss(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], *, batch_size: int, device: str
) -> tuple[float, int]:
    """Mean next-token NLL over every token of each ``text`` (EOS appended), and the token count.

    Tokenised as continued pretraining trains (:func:`llmops.training.cpt.count_blocks`), but each
    text on its own: the held-out number depends on the texts, not on how they happen to pack.
    A text longer than the model's context is scored in consecutive windows
    (:func:`~llmops.evaluation.metrics.scoring_windows`); a text's first token has no context
    and is no target.
    """
    max_length = _max_length(model, tokenizer)
    eos = tokenizer.eos_token
    encoded: list[tuple[list[int], list[int]]] = []
    for row in rows:
        text = row["text"] if row["text"].endswith(eos) else row["text"] + eos
        ids = tokenizer(text=text)["input_ids"]
        encoded.extend((ids[a:b], ids[a:b]) for a, b in scoring_windows(len(ids), max_length))
    scores = _sequence_logprobs(
        model, encoded, pad_id=tokenizer.pad_token_id, batch_size=batch_size, device=device
    )
    return _mean_nll(scores, "eval_file: no text tokens to score")


@dataclass(frozen=True)
class PairLogprobs:
    """One model's ``(summed log-prob, token count)`` of each pair's chosen and rejected answer."""

    chosen: list[tuple[float, int]]
    rejected: list[tuple[float, int]]


def pair_logprobs(
    model: Any,
    tokenizer: Any,
    pairs: list[dict[str, str]],
    *,
    batch_size: int,
    device: str,
    chat_template: bool,
) -> PairLogprobs:
    """Both answers of every pair scored as completions of its prompt (as :func:`completion_loss`)."""
    chosen, rejected = (
        completion_logprobs(
            model,
            tokenizer,
            pairs,
            batch_size=batch_size,
            device=device,
            chat_template=chat_template,
            completion_key=key,
        )
        for key in ("chosen", "rejected")
    )
    for i, ((_, n_c), (_, n_r)) in enumerate(zip(chosen, rejected, strict=True)):
        if n_c == 0 or n_r == 0:
            raise JobInputError(
                f"eval_file: pair {i + 1}: no {'chosen' if n_c == 0 else 'rejected'} answer tokens left to "
                "score (the prompt fills the context?)"
            )
    return PairLogprobs(chosen, rejected)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    device: str,
    chat_template: bool = False,
) -> tuple[list[str], list[float]]:
    """Greedy-decode each prompt one at a time (so latency is per request).

    Returns the stripped generations and the latencies in ms. The generations stay in memory:
    they may hold personal data and are never written or logged.
    """
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
    predictions: list[str] = []
    latencies: list[float] = []
    for prompt in prompts:
        if chat_template:
            ids = chat_prompt_ids(tokenizer, prompt)[-max_prompt:]
        else:
            ids = tokenizer(text=prompt)["input_ids"][-max_prompt:]
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
        predictions.append(
            tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
        )
    return predictions, latencies


def score_generations(
    predictions: Sequence[str],
    references: Sequence[str],
    latencies: Sequence[float],
    *,
    label_metrics: bool = False,
    blocked_terms: Sequence[str] = (),
    refusal_terms: Sequence[str] = (),
) -> dict[str, float]:
    """Aggregate scores of generations against their references (numbers only).

    Label and term metrics appear only when asked for, so an absent key means "not measured".
    """
    result: dict[str, float] = {}
    for metric in catalogue.scored_per_answer():
        assert metric.scorer is not None
        values = [metric.scorer(p, r.strip()) for p, r in zip(predictions, references, strict=True)]
        result[metric.name] = sum(values) / len(values)
    result["latency_ms_mean"] = sum(latencies) / len(latencies)
    result["latency_ms_p95"] = percentile(list(latencies), 95)
    if label_metrics:
        result.update(
            label_scores([predicted_label(p) for p in predictions], [gold_label(r) for r in references])
        )
    if blocked_terms:
        result["toxicity_rate"] = term_rate(predictions, blocked_terms)
    if refusal_terms:
        result["refusal_rate"] = term_rate(predictions, refusal_terms)
    return result


def generate_and_score(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    *,
    max_new_tokens: int,
    device: str,
    chat_template: bool = False,
    label_metrics: bool = False,
    blocked_terms: Sequence[str] = (),
    refusal_terms: Sequence[str] = (),
) -> dict[str, float]:
    """Greedy-decode each prompt and score it against its completion."""
    predictions, latencies = generate(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        max_new_tokens=max_new_tokens,
        device=device,
        chat_template=chat_template,
    )
    return score_generations(
        predictions,
        [r["completion"] for r in rows],
        latencies,
        label_metrics=label_metrics,
        blocked_terms=blocked_terms,
        refusal_terms=refusal_terms,
    )


def _loss_metrics(loss: float, tokens: int, rows: int) -> dict[str, Any]:
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(loss) if loss < 700 else None,
        "n_loss_rows": rows,
        "n_loss_tokens": tokens,
    }


def _generation_metrics(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    samples = rows[: config.max_samples]
    generated = generate_and_score(
        model,
        tokenizer,
        samples,
        max_new_tokens=config.max_new_tokens,
        device=device,
        chat_template=config.chat_template,
        label_metrics=config.label_metrics,
        blocked_terms=config.blocked_terms,
        refusal_terms=config.refusal_terms,
    )
    return {**generated, "n_samples": len(samples)}


def measure(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    """Loss, perplexity and generation metrics of whatever ``model`` currently is, on prompt/completion rows."""
    loss, loss_tokens = completion_loss(
        model,
        tokenizer,
        rows,
        batch_size=config.batch_size,
        device=device,
        chat_template=config.chat_template,
    )
    return {
        **_loss_metrics(loss, loss_tokens, len(rows)),
        **_generation_metrics(model, tokenizer, rows, config, device),
    }


def measure_text(
    model: Any, tokenizer: Any, rows: list[dict[str, str]], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    """Continued pretraining: loss and perplexity on held-out text (no prompts, so no generations)."""
    loss, loss_tokens = text_loss(model, tokenizer, rows, batch_size=config.batch_size, device=device)
    return _loss_metrics(loss, loss_tokens, len(rows))


def measure_pairs(
    model: Any,
    tokenizer: Any,
    pairs: list[dict[str, str]],
    config: EvalJobConfig,
    device: str,
    *,
    reference: PairLogprobs | None,
    scores: PairLogprobs | None = None,
) -> dict[str, Any]:
    """Preference: :func:`measure` with the chosen answers as completions, plus pair metrics.

    ``preference_win_rate`` needs no reference. The DPO reward (``reward_accuracy``,
    ``reward_margin``) is measured against ``reference`` (the base model's log-probs), and left
    out without one (the baseline is the reference). ``scores`` are this model's log-probs when
    already known.
    """
    if scores is None:
        scores = pair_logprobs(
            model,
            tokenizer,
            pairs,
            batch_size=config.batch_size,
            device=device,
            chat_template=config.chat_template,
        )
    # The chosen answers' loss is exactly completion_loss on {prompt, completion: chosen} rows.
    loss, loss_tokens = _mean_nll(scores.chosen, "eval_file: no chosen answer tokens to score")
    as_completions = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    result: dict[str, Any] = {
        **_loss_metrics(loss, loss_tokens, len(pairs)),
        **_generation_metrics(model, tokenizer, as_completions, config, device),
        "preference_win_rate": preference_win_rate(scores.chosen, scores.rejected),
        "n_pairs": len(pairs),
    }
    if reference is not None:
        margins = dpo_reward_margins(
            [lp for lp, _ in scores.chosen],
            [lp for lp, _ in scores.rejected],
            [lp for lp, _ in reference.chosen],
            [lp for lp, _ in reference.rejected],
            config.beta,
        )
        result.update(reward_scores(margins))
    return result


def measure_split(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    config: EvalJobConfig,
    device: str,
    *,
    reference: PairLogprobs | None = None,
    scores: PairLogprobs | None = None,
) -> dict[str, Any]:
    """The eval split's metrics for the config's method (``reference``/``scores``: preference only)."""
    if config.evaluation == "text":
        return measure_text(model, tokenizer, rows, config, device)
    if config.evaluation == "pairs":
        return measure_pairs(model, tokenizer, rows, config, device, reference=reference, scores=scores)
    return measure(model, tokenizer, rows, config, device)


def measure_with_golden(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    golden: dict[str, list[dict[str, str]]],
    config: EvalJobConfig,
    device: str,
    who: str,
    *,
    reference: PairLogprobs | None = None,
) -> dict[str, Any]:
    """:func:`measure_split` on the eval rows, plus ``golden: {name: measure(golden rows)}``."""
    result = measure_split(model, tokenizer, rows, config, device, reference=reference)
    _log_numbers(who, result)
    result["golden"] = {}
    for name, golden_rows in golden.items():
        result["golden"][name] = measure(model, tokenizer, golden_rows, config, device)
        _log_numbers(f"{who} golden {name}", result["golden"][name])
    return result


_COUNTS = ("n_loss_tokens", "n_pairs")  # logged beside the catalogue's metrics


def _log_numbers(who: str, metrics: dict[str, Any]) -> None:
    """One line of aggregate numbers (never text: generations may hold personal data)."""
    shown = " ".join(
        f"{k}={metrics[k]}" if isinstance(metrics[k], int) else f"{k}={metrics[k]:.4f}"
        for k in (*catalogue.names(), *_COUNTS)
        if isinstance(metrics.get(k), int | float)
    )
    logger.info("%s: %s", who, shown)


def read_prompts_jsonl(path: Path, field: str) -> list[str]:
    """Prompts from JSONL rows of ``{"prompt": str}``; errors name the field, file and line."""
    path = Path(path)
    if not path.is_file():
        raise JobInputError(f"{field}: file not found: {path}")
    prompts: list[str] = []
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
            prompts.append(record["prompt"])
    if not prompts:
        raise JobInputError(f"{field}: {path} has no rows")
    return prompts


def run_pii_probe(
    model: Any, tokenizer: Any, prompts: list[str], config: EvalJobConfig, device: str
) -> dict[str, Any]:
    """Generate for every probe prompt and count generations holding a target value (by hash)."""
    probe = config.pii_probe
    assert probe is not None
    generations, _ = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=probe.max_new_tokens,
        device=device,
        chat_template=config.chat_template,
    )
    result = score_leakage(resolve_salt(probe.salt), generations, probe.target_hashes, probe.max_ngram)
    logger.info(
        "pii probe: %d of %d prompts produced a target value (%d distinct)",
        result["leaked_prompts"],
        result["prompts"],
        len(result["matched_hashes"]),
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


def _adapter_dir(location: str, field: str) -> Path:
    adapter_dir = fetch_model_dir(location, field)
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


def evaluate_adapter(config: EvalJobConfig) -> dict[str, Any]:
    """Run one evaluation and write ``config.output_file``; returns what was written."""
    # Every input is fetched and read before the ML libraries load: a bad input fails in seconds.
    base_dir = fetch_model_dir(config.base_model_path)
    adapter_dir = _adapter_dir(config.adapter_path, "adapter_path")
    champion_dir = (
        _adapter_dir(config.champion_adapter_path, "champion_adapter_path")
        if config.champion_adapter_path
        else None
    )
    rows = read_eval_rows(fetch_file(config.eval_file, "eval_file"), config)
    golden: dict[str, list[dict[str, str]]] = {}
    for i, golden_set in enumerate(config.golden_sets):
        field = f"golden_sets[{i}].file"
        golden[golden_set.name] = read_prompt_completion_jsonl(fetch_file(golden_set.file, field), field)
    probe_prompts = (
        read_prompts_jsonl(
            fetch_file(config.pii_probe.prompts_file, "pii_probe.prompts_file"), "pii_probe.prompts_file"
        )
        if config.pii_probe
        else []
    )
    champion_base_dir = (
        fetch_model_dir(config.champion_base_model_path, "champion_base_model_path")
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
    else:
        result["pii_probe"] = None
    if config.include_baseline:
        with model.disable_adapter():
            result["baseline"] = measure_split(model, tokenizer, rows, config, device, scores=reference)
        _log_numbers("baseline", result["baseline"])
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
