"""Measuring one model on held-out rows: token log-probabilities and losses (completions, raw text,
preference pairs), greedy generation, and the scores of generated answers, exactly as the
evaluation job computes them for the candidate, the base model and the champion alike."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops import metrics as catalogue
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
from llmops.jobs.runtime import (
    JobInputError,
    chat_prompt_ids,
    encode_chat_prompt_completion,
    encode_prompt_completion,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmops.evaluation.config import EvalJobConfig

logger = logging.getLogger(__name__)


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
    log_numbers(who, result)
    result["golden"] = {}
    for name, golden_rows in golden.items():
        result["golden"][name] = measure(model, tokenizer, golden_rows, config, device)
        log_numbers(f"{who} golden {name}", result["golden"][name])
    return result


_COUNTS = ("n_loss_tokens", "n_pairs")  # logged beside the catalogue's metrics


def log_numbers(who: str, metrics: dict[str, Any]) -> None:
    """One line of aggregate numbers (never text: generations may hold personal data)."""
    shown = " ".join(
        f"{k}={metrics[k]}" if isinstance(metrics[k], int) else f"{k}={metrics[k]:.4f}"
        for k in (*catalogue.names(), *_COUNTS)
        if isinstance(metrics.get(k), int | float)
    )
    logger.info("%s: %s", who, shown)
