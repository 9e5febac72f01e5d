"""Packing without cross-contamination, and a runtime check that it holds.

What the installed stack does (TRL 1.16, transformers 5.24), read from their sources and
verified by ``tests/integration/test_training_cpu.py::test_packed_loss_equals_unpacked_loss``:

* ``SFTConfig(packing=True)`` with the default ``packing_strategy="bfd"`` packs whole examples
  into rows of ``max_length`` tokens (best-fit decreasing; an example longer than
  ``max_length`` is truncated, never split across rows) and switches the collator to
  *padding-free*: a batch becomes one flattened row with ``position_ids`` restarting at 0 at
  each example, ``cu_seq_lens_q/k`` boundaries, **no** ``attention_mask``, and the label of each
  example's first token set to -100 (so no loss term predicts one example from the previous one).
* FlashAttention 2/3 use the ``cu_seq_lens``/``position_ids`` boundaries directly (varlen kernels).
* SDPA and eager build their mask in ``transformers.masking_utils.create_causal_mask``: with no
  2D ``attention_mask`` and **no KV cache**, ``find_packed_sequence_indices`` derives the
  sequences from the ``position_ids`` resets and the causal mask is intersected with a
  block-diagonal one, so a token only attends to earlier tokens of its own example.
* The "no KV cache" condition matters: a forward with ``use_cache=True`` creates a cache and
  the packed-sequence detection is skipped, so packed examples *do* attend to each other
  (measured here: logits off by several units). ``SFTTrainer.compute_loss`` passes
  ``use_cache=False`` on every training and evaluation forward, and the job also sets
  ``model.config.use_cache = False``.

Because that correctness rests on a model's forward going through ``create_causal_mask`` (a
custom architecture might not), :func:`check_packed_isolation` verifies it on the loaded model
before training: two real examples packed into one row must give the same next-token
log-probabilities as each example alone. A model that fails is refused with a clear message.
"""

from __future__ import annotations

import logging
from typing import Any

from llmops.jobs.runtime import JobInputError

logger = logging.getLogger(__name__)

# Largest |log p(packed) - log p(alone)| accepted. Float32 differs only by summation order
# (about 1e-6 here); bf16/fp16 kernels pick different tilings for different sequence lengths.
# Leakage moves log-probabilities by whole units, far above either bound.
FP32_TOLERANCE = 1e-3
LOW_PRECISION_TOLERANCE = 0.25
_PROBE_TOKENS = 48


def _next_token_logprobs(logits: Any, ids: Any) -> Any:
    import torch

    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    return logprobs.gather(-1, ids[1:, None]).squeeze(-1)


def check_packed_isolation(model: Any, sequences: list[list[int]]) -> dict[str, Any]:
    """Prove on ``model`` that packed sequences do not attend to each other; raise if they do.

    ``sequences`` are token ids of real examples (at least two). They are packed into one row
    the way TRL's padding-free collator does it (``position_ids`` restarting at 0, no attention
    mask, no cache) and each one's next-token log-probabilities are compared with a forward of
    that sequence alone.
    """
    import torch

    probes = [s[:_PROBE_TOKENS] for s in sequences if len(s) >= 2][:3]
    if len(probes) < 2:
        return {"checked": False, "reason": "fewer than two usable examples"}
    device = next(model.parameters()).device
    packed_ids = torch.tensor([sum(probes, [])], device=device)
    position_ids = torch.tensor([[i for s in probes for i in range(len(s))]], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(input_ids=packed_ids, position_ids=position_ids, use_cache=False).logits[0]
            worst = 0.0
            offset = 0
            for seq in probes:
                ids = torch.tensor(seq, device=device)
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                diff = _next_token_logprobs(packed[offset : offset + len(seq)], ids) - _next_token_logprobs(
                    alone, ids
                )
                worst = max(worst, float(diff.abs().max()))
                offset += len(seq)
    finally:
        model.train(was_training)
    dtype = next(model.parameters()).dtype
    tolerance = FP32_TOLERANCE if dtype == torch.float32 else LOW_PRECISION_TOLERANCE
    attention = getattr(model.config, "_attn_implementation", None)
    report = {
        "checked": True,
        "attn_implementation": attention,
        "max_abs_logprob_diff": worst,
        "tolerance": tolerance,
        "sequences": len(probes),
    }
    if worst > tolerance:
        raise JobInputError(
            f"packing: with attention implementation {attention!r} this model lets packed sequences attend "
            f"to each other (next-token log-probabilities differ by up to {worst:.3g} between packed and "
            "separate examples); use a model whose attention honours position_ids boundaries "
            "(flash_attention_2, or sdpa/eager through transformers' masking utilities) or set packing: false"
        )
    logger.info(
        "packing: packed sequences are isolated (%s attention, max |delta log p| = %.2g over %d examples)",
        attention,
        worst,
        len(probes),
    )
    return report
