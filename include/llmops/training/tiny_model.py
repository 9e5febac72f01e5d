"""Build a tiny Llama-architecture base model from a text corpus, for demos and CPU tests.

No machine here can reach a model hub, yet the training and evaluation entrypoints must be
exercised with the exact ``from_pretrained`` code a real base model goes through. This module
trains a byte-level BPE tokenizer and briefly pretrains a small ``LlamaForCausalLM`` so that
the result is a genuine (if small) language model saved in the standard Hugging Face layout.

The build is deterministic for a given corpus, seed and machine, and is written atomically
with a ``build_info.json`` that records its settings and a sha256 over the weight files.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.jobs.artifacts import atomic_directory, weights_sha256, write_json_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

logger = logging.getLogger("llmops.training.tiny_model")  # stable name under `python -m`

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]
# Redaction placeholders written by the privacy step; one token each so that a redacted record
# costs one position and the model can learn to reproduce a placeholder verbatim.
PLACEHOLDER_TOKENS = [
    "[EMAIL]",
    "[PHONE]",
    "[PAYMENT_CARD]",
    "[IBAN]",
    "[US_SSN]",
    "[IP_ADDRESS]",
    "[PERSON_NAME]",
    "[REDACTED]",
]
BUILD_INFO_FILE = "build_info.json"


def _train_tokenizer(texts: Sequence[str], vocab_size: int, max_position: int) -> Any:
    """Byte-level BPE (never needs <unk>) with Llama-style BOS and no automatic EOS."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PLACEHOLDER_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Not "special": generations must keep placeholders when decoded with skip_special_tokens.
    tokenizer.add_tokens([AddedToken(p, normalized=False, special=False) for p in PLACEHOLDER_TOKENS])
    bos_id = tokenizer.token_to_id(BOS)
    # BOS only, as Llama does: the prompt's ids stay a prefix of prompt+completion's ids, which
    # completion-only loss masking relies on. EOS is appended explicitly by the trainer.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_position,
        padding_side="right",
    )


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """All documents as one id stream, each as <s> ... </s>."""
    ids: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    return ids


def _pretrain(
    model: Any,
    stream: list[int],
    *,
    steps: int,
    batch_size: int,
    block_size: int,
    learning_rate: float,
    seed: int,
) -> list[float]:
    """Full-parameter causal-LM pretraining on random windows of the stream; returns step losses."""
    import torch

    data = torch.tensor(stream, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.01, eps=1e-8
    )
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    max_start = len(stream) - block_size
    for step in range(steps):
        starts = torch.randint(0, max_start + 1, (batch_size,), generator=generator)
        batch = torch.stack([data[s : s + block_size] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step == 0 or (step + 1) % 50 == 0 or step + 1 == steps:
            logger.info(
                "pretrain step %d/%d loss=%.4f lr=%.2e (%.1fs)",
                step + 1,
                steps,
                losses[-1],
                scheduler.get_last_lr()[0],
                time.perf_counter() - started,
            )
    model.eval()
    return losses


def build_tiny_model(
    corpus: Iterable[str],
    out_dir: Path,
    *,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_position: int = 512,
    pretrain_steps: int = 300,
    seed: int = 0,
    batch_size: int = 8,
    block_size: int = 128,
    learning_rate: float = 3e-3,
) -> dict[str, Any]:
    """Train a tokenizer and a small Llama on ``corpus`` and save both to ``out_dir``.

    Returns the build info that is also written to ``out_dir/build_info.json``. ``out_dir`` is
    replaced atomically, so a concurrent reader never sees a partial model.
    """
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    texts = [t.strip() for t in corpus if t and t.strip()]
    if not texts:
        raise ValueError("corpus is empty: need at least one non-blank document")
    if hidden_size % heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    if vocab_size <= len(SPECIAL_TOKENS) + len(PLACEHOLDER_TOKENS) + 256:
        raise ValueError(f"vocab_size ({vocab_size}) must exceed the byte alphabet plus special tokens")
    if pretrain_steps < 0:
        raise ValueError("pretrain_steps must be >= 0")

    started = time.perf_counter()
    transformers.set_seed(seed)
    tokenizer = _train_tokenizer(texts, vocab_size, max_position)
    stream = _token_stream(tokenizer, texts)
    block = min(block_size, max_position, len(stream) - 1)
    if block < 8:
        raise ValueError(f"corpus too small: {len(stream)} tokens, need at least 9")
    logger.info(
        "tokenizer: %d tokens in vocabulary; corpus: %d documents, %d tokens",
        len(tokenizer),
        len(texts),
        len(stream),
    )

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    losses = _pretrain(
        model,
        stream,
        steps=pretrain_steps,
        batch_size=batch_size,
        block_size=block,
        learning_rate=learning_rate,
        seed=seed,
    )
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    tail = losses[-10:]
    info: dict[str, Any] = {
        "kind": "llmops-tiny-llama",
        "config": {
            "vocab_size": vocab_size,
            "tokenizer_vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": config.intermediate_size,
            "layers": layers,
            "heads": heads,
            "kv_heads": kv_heads,
            "max_position": max_position,
            "batch_size": batch_size,
            "block_size": block,
            "learning_rate": learning_rate,
        },
        "corpus_documents": len(texts),
        "corpus_tokens": len(stream),
        "pretrain_steps": pretrain_steps,
        "initial_loss": losses[0] if losses else None,
        "final_loss": sum(tail) / len(tail) if tail else None,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "library_versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info["weights_sha256"] = weights_sha256(tmp)
        info["build_seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(tmp / BUILD_INFO_FILE, info)
    logger.info(
        "tiny model saved to %s (%d parameters, final loss %.4f, %.1fs)",
        out_dir,
        info["parameters"],
        info["final_loss"] or float("nan"),
        info["build_seconds"],
    )
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: one document per non-blank line of ``--corpus``."""
    import json

    parser = argparse.ArgumentParser(
        prog="python -m llmops.training.tiny_model",
        description="Build a tiny Llama base model from a corpus.",
    )
    parser.add_argument("--corpus", type=Path, required=True, help="UTF-8 text file, one document per line")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--max-position", type=int, default=512)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        lines = args.corpus.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        parser.error(f"cannot read --corpus {args.corpus}: {exc.strerror}")
    try:
        info = build_tiny_model(
            lines,
            args.out,
            vocab_size=args.vocab_size,
            hidden_size=args.hidden_size,
            layers=args.layers,
            heads=args.heads,
            kv_heads=args.kv_heads,
            max_position=args.max_position,
            pretrain_steps=args.pretrain_steps,
            seed=args.seed,
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
