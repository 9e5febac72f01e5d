"""Training throughput of the SFT entrypoint against a plain Hugging Face ``Trainer`` baseline.

The baseline is what a team would write first: ``Trainer`` with default settings (the model's
saved dtype, no packing, pad to the longest in the batch, loss on every token) and the same LoRA
adapter, model, data, batch size and hardware. The project's variants run the real job command
(``python -m llmops.training --config``). Every variant is a fresh process; the figures are
non-padding tokens per second in the steady state (warm-up steps excluded), step time, peak
memory, model FLOPs utilisation on GPUs, and the ratio to the baseline measured in the same run.

MFU counts the FLOPs a LoRA step needs: forward 2N and input-gradient backward 2N per token over
the N frozen parameters (no weight gradients), plus attention (12 * layers * hidden * sequence
length per token, forward and backward), against the GPU's dense bf16 peak.

The base model is built here (no model hub): a Llama of the chosen size with the project's
tokenizer, random weights (throughput does not depend on what the weights know). The data has
the long-tailed length distribution of real support tickets, where packing pays off.

    python bench/training_throughput.py                      # tiny model, CPU, a few steps
    python bench/training_throughput.py --scale 1b --steps 40  # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

# name: (hidden, layers, heads, kv_heads, intermediate, max_position)
SCALES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (128, 2, 4, 2, 512, 512),
    "150m": (768, 12, 12, 4, 2048, 2048),
    "1b": (2048, 16, 16, 8, 5632, 2048),
}

BASELINE = "hf-trainer"
VARIANTS: dict[str, dict[str, Any]] = {
    BASELINE: {},
    "padded": {"packing": False, "gradient_checkpointing": False},
    "packed": {"packing": True, "gradient_checkpointing": False},
    "packed+ckpt": {"packing": True, "gradient_checkpointing": True},
}
#: Dense bf16 peak (TFLOP/s) by device name, for MFU.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}

WORDS = (
    "customer reports that the invoice export fails after the update and the dashboard shows an "
    "error when the payment page is opened from the mobile app while the sync job retries the "
    "request until the session expires so please reset the token and check the webhook logs"
).split()


def _sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def make_rows(n: int, seed: int, max_words: int) -> list[dict[str, str]]:
    """Prompt/completion pairs with log-normal lengths: most short, a few near the maximum."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt_words = min(max_words // 2, max(8, int(rng.lognormvariate(3.6, 0.7))))
        completion_words = min(max_words // 2, max(4, int(rng.lognormvariate(3.2, 0.8))))
        rows.append(
            {
                "prompt": f"Ticket: {_sentence(rng, prompt_words)}\nResolution:",
                "completion": " " + _sentence(rng, completion_words),
            }
        )
    return rows


def build_base_model(scale: str, out_dir: Path) -> dict[str, Any]:
    """A Llama of ``scale`` with the tiny model's tokenizer, saved with save_pretrained."""
    from llmops.training.tiny_model import build_tiny_model

    hidden, layers, heads, kv_heads, _intermediate, max_position = SCALES[scale]
    corpus = [_sentence(random.Random(i), 40) for i in range(400)]
    return build_tiny_model(
        corpus,
        out_dir,
        vocab_size=4096,
        hidden_size=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        max_position=max_position,
        pretrain_steps=0,
    )


def run_variant(
    name: str, overrides: dict[str, Any], work: Path, base: Path, args: argparse.Namespace
) -> dict[str, Any]:
    job_dir = work / name
    job_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "base_model_path": str(base),
        "train_file": str(work / "train.jsonl"),
        "eval_file": str(work / "eval.jsonl"),
        "output_dir": str(job_dir / "out"),
        "device": args.device,
        "max_steps": args.steps,
        "resume": False,
        "run_name": f"bench-{name}",
        "hyperparameters": {
            "learning_rate": 1e-4,
            "epochs": 1,
            "batch_size": args.batch_size,
            "gradient_accumulation_steps": 1,
            "max_length": args.max_length,
            "warmup_ratio": 0.0,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        **overrides,
    }
    (job_dir / "job.json").write_text(json.dumps(config))
    command = ["-m", "llmops.training", "--config", str(job_dir / "job.json")]
    if name == BASELINE:
        command = [str(Path(__file__).resolve()), "--baseline-job", str(job_dir / "job.json")]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"variant {name} failed with exit code {done.returncode}")
    result = json.loads((job_dir / "out" / "result.json").read_text())
    runtime = result["train_runtime_s"]
    return {
        "variant": name,
        # Steady state (warm-up steps excluded); whole-run figures alongside.
        "tokens_per_s": result["steady_tokens_per_second"],
        "step_ms": 1000.0 * result["steady_step_seconds"],
        "run_tokens_per_s": result["tokens_per_second"],
        "run_step_ms": 1000.0 * runtime / max(1, result["global_step"]),
        "train_tokens": result["train_tokens"],
        "peak_memory_gib": result.get("peak_memory_gib"),
        "wall_s": wall,
        "device": result.get("device"),
        "dtype": result.get("dtype"),
        "sequence_tokens": result.get("sequence_tokens"),
    }


def run_baseline(config_path: Path) -> int:
    """Plain ``transformers.Trainer`` with default settings and the same LoRA adapter."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from llmops.training.trainer_parts import peak_memory_gib, throughput_callback

    job = json.loads(config_path.read_text())
    hp, lora = job["hyperparameters"], job["lora"]
    device = "cuda" if torch.cuda.is_available() and job["device"] != "cpu" else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(job["base_model_path"])
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["base_model_path"])
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    rows = [json.loads(line) for line in Path(job["train_file"]).read_text().splitlines() if line]
    texts = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in rows]
    dataset = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=hp["max_length"]),
        batched=True,
        remove_columns=["text"],
    )
    args = TrainingArguments(
        output_dir=str(Path(job["output_dir"]) / "trainer"),
        per_device_train_batch_size=hp["batch_size"],
        max_steps=job["max_steps"],
        learning_rate=hp["learning_rate"],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10,
        include_num_input_tokens_seen="non_padding",
        use_cpu=device == "cpu",
    )
    throughput = throughput_callback(device)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[throughput],
    )
    output = trainer.train()
    runtime = float(output.metrics["train_runtime"])
    tokens = int(trainer.state.num_input_tokens_seen)
    result = {
        "status": "succeeded",
        "global_step": trainer.state.global_step,
        "train_runtime_s": runtime,
        "train_tokens": tokens,
        "tokens_per_second": tokens / runtime if runtime else None,
        "steady_tokens_per_second": throughput.steady_tokens_per_second(),
        "steady_step_seconds": throughput.steady_step_seconds(),
        "peak_memory_gib": peak_memory_gib(device),
        "device": device,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result))
    return 0


def mfu(
    tokens_per_s: float, info: dict[str, Any], mean_sequence: float, peak_tflops: float | None
) -> float | None:
    """Model FLOPs utilisation of a LoRA step (see the module docstring)."""
    if not peak_tflops or not tokens_per_s:
        return None
    config = info["config"]
    flops_per_token = 4 * info["parameters"] + 12 * config["layers"] * config["hidden_size"] * mean_sequence
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)


def _peak_tflops() -> float | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name()
    except Exception:
        return None
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--work", type=Path, default=ROOT / ".llmops" / "bench" / "training_throughput")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--baseline-job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_job:
        return run_baseline(args.baseline_job)

    work = args.work / args.scale
    work.mkdir(parents=True, exist_ok=True)
    rows = make_rows(args.rows, seed=1, max_words=args.max_length // 2)
    with open(work / "train.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    with open(work / "eval.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in make_rows(max(8, args.batch_size), seed=2, max_words=64))
    base = work / "base"
    info = build_base_model(args.scale, base)
    print(
        f"base model: {args.scale} ({info['parameters'] / 1e6:.1f}M parameters), {args.rows} rows, "
        f"batch {args.batch_size}, max_length {args.max_length}, {args.steps} steps per variant"
    )
    results = [run_variant(n, VARIANTS[n], work, base, args) for n in args.variants.split(",")]
    baseline = results[0]
    peak = _peak_tflops()
    # Attention FLOPs grow with each document's own length (packed documents do not attend to
    # each other; padding is not useful work), so the mean document length in tokens is used.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    sample = rows[:500]
    mean_sequence = sum(
        min(args.max_length, len(tokenizer(r["prompt"] + r["completion"])["input_ids"])) for r in sample
    ) / len(sample)
    print("\nsteady state (warm-up steps excluded); 'run tokens/s' includes warm-up")
    header = (
        f"{'variant':<14}{'tokens/s':>12}{'vs ' + baseline['variant']:>16}{'step ms':>10}{'peak GiB':>10}"
    )
    print(f"{header}{'MFU':>8}{'run tokens/s':>14}")
    for r in results:
        ratio = r["tokens_per_s"] / baseline["tokens_per_s"] if baseline["tokens_per_s"] else float("nan")
        r["ratio_to_baseline"] = ratio
        r["mfu"] = mfu(r["tokens_per_s"], info, mean_sequence, peak)
        memory = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
        util = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"{r['variant']:<14}{r['tokens_per_s']:>12.0f}{ratio:>15.2f}x{r['step_ms']:>10.0f}{memory:>10}"
            f"{util:>8}{r['run_tokens_per_s']:>14.0f}"
        )
    print(
        f"device={results[-1]['device']} dtype: baseline {baseline['dtype']}, llmops {results[-1]['dtype']}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"scale": args.scale, "parameters": info["parameters"], "results": results})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
