"""Supervised fine-tuning with LoRA, via TRL's ``SFTTrainer``.

One job: load the base model exactly as a real one is loaded (``from_pretrained``), train a LoRA
adapter with loss on the completion tokens only, measure eval loss before and after, prove the
base weights were left alone, and publish ``adapter/`` and ``result.json`` atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.training.artifacts import (
    atomic_directory,
    canonical_json_sha256,
    weights_sha256,
    write_json_atomic,
)
from llmops.training.runtime import (
    JobInputError,
    library_versions,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    read_prompt_completion_jsonl,
    resolve_device,
    resolve_dtype,
    resolve_model_dir,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmops.training.config import MlflowTarget, TrainingJobConfig

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
RESULT_FILE = "result.json"
_FINGERPRINT_CHUNK = 1 << 24


def _fingerprint(params: list[Any]) -> Any:
    """Per-tensor float64 sum and L2 norm, computed on the tensors' own device.

    Cheap enough for multi-billion-parameter models (no host copy) and any optimizer update
    changes it, which is all the "base weights unchanged" check needs.
    """
    import torch

    rows = []
    for param in params:
        total = torch.zeros((), dtype=torch.float64, device=param.device)
        squares = torch.zeros((), dtype=torch.float64, device=param.device)
        # Chunked so the float64 upcast never holds more than 16M elements of a huge embedding.
        for chunk in param.detach().reshape(-1).split(_FINGERPRINT_CHUNK):
            wide = chunk.to(torch.float64)
            total += wide.sum()
            squares += wide.square().sum()
        rows.append(torch.stack([total, squares]).cpu())
    return torch.stack(rows) if rows else torch.zeros((0, 2), dtype=torch.float64)


def _checkpointing_args(config_cls: type, enabled: bool) -> dict[str, bool]:
    """Always pass activation checkpointing explicitly: TRL defaults it to on.

    transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and warns
    on the old name; use whichever the installed version has.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled}


def _split_params(model: Any) -> tuple[list[Any], list[Any]]:
    frozen = [p for _, p in model.named_parameters() if not p.requires_grad]
    trainable = [p for _, p in model.named_parameters() if p.requires_grad]
    return frozen, trainable


def _progress_callback() -> Any:
    """A TrainerCallback that logs one readable line per logging step (replaces the dict printer)."""
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if not state.is_local_process_zero or not logs:
                return
            parts = []
            for key in sorted(logs):
                value = logs[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
            phase = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            logger.info("%s step %d/%d %s", phase, state.global_step, state.max_steps, " ".join(parts))

    return LogLines()


def _flush_mlflow(mlflow: Any) -> None:
    """HF's callback logs asynchronously; make sure everything landed before the run ends."""
    flush = getattr(mlflow, "flush_async_logging", None)
    if flush is not None:
        flush()


@contextlib.contextmanager
def _mlflow_run(target: MlflowTarget | None, run_name: str) -> Iterator[str | None]:
    """Make the job's MLflow run the active one, so HF's MLflowCallback logs into it.

    With ``run_id`` the job attaches to that existing run (owned by the orchestrator) and, on
    success, leaves its status as it found it; otherwise it creates a run and finishes it. On
    failure the run is marked FAILED either way.
    """
    if target is None:
        yield None
        return
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # The env vars are what HF's callback reads; the fluent run below makes it reuse our run
    # instead of starting (and later ending) its own. MLFLOW_RUN_ID must stay unset for that.
    os.environ["MLFLOW_TRACKING_URI"] = target.tracking_uri
    os.environ.pop("MLFLOW_RUN_ID", None)
    if target.experiment_name:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = target.experiment_name
    mlflow.set_tracking_uri(target.tracking_uri)
    prior_status = None
    if target.run_id:
        try:
            prior_status = MlflowClient(target.tracking_uri).get_run(target.run_id).info.status
        except MlflowException as exc:
            raise JobInputError(f"mlflow.run_id: cannot use run {target.run_id!r}: {exc.message}") from None
        run = mlflow.start_run(run_id=target.run_id)
    else:
        if target.experiment_name:
            mlflow.set_experiment(target.experiment_name)
        run = mlflow.start_run(run_name=run_name)
    run_id = run.info.run_id
    logger.info("logging to MLflow run %s at %s", run_id, target.tracking_uri)
    try:
        yield run_id
    except BaseException:
        _flush_mlflow(mlflow)
        mlflow.end_run(status="FAILED")
        raise
    _flush_mlflow(mlflow)
    mlflow.end_run(status="FINISHED")
    if prior_status == "RUNNING":
        MlflowClient(target.tracking_uri).update_run(run_id, status="RUNNING")


def _pin_single_gpu() -> None:
    """This entrypoint is one process on one GPU; pin it before CUDA initialises.

    With several GPUs visible, ``Trainer`` would wrap the model in ``nn.DataParallel``, which
    TRL's SFTTrainer rejects. A distributed launch (torchrun) would race on the published
    artifacts, so it is refused until it is supported explicitly.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise JobInputError("distributed launch (WORLD_SIZE > 1) is not supported by this entrypoint yet")
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"


def train_sft(config: TrainingJobConfig) -> dict[str, Any]:
    """Run one LoRA SFT job and return the result that is also written to ``result.json``."""
    # Inputs first: a wrong path should fail in milliseconds, not after importing torch.
    base_dir = resolve_model_dir(config.base_model_path)
    train_rows = read_prompt_completion_jsonl(config.train_file, "train_file")
    eval_rows = read_prompt_completion_jsonl(config.eval_file, "eval_file")
    _pin_single_gpu()

    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    quiet_libraries()
    # Raised inside TRL/PEFT for transformers 5's rename; nothing a job config can change.
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    hp = config.hyperparameters
    transformers.set_seed(hp.seed)
    device = resolve_device(config.device)
    dtype = resolve_dtype(device)
    logger.info(
        "data: %d train rows, %d eval rows; device=%s dtype=%s",
        len(train_rows),
        len(eval_rows),
        device,
        dtype,
    )

    base_sha256 = weights_sha256(base_dir)
    tokenizer = load_tokenizer(base_dir)
    model = load_base_model(base_dir, device)

    lr_scheduler = hp.lr_scheduler
    if lr_scheduler == "constant" and hp.warmup_ratio > 0:
        lr_scheduler = "constant_with_warmup"
    steps_per_epoch = max(1, -(-len(train_rows) // (hp.batch_size * hp.gradient_accumulation_steps)))
    planned_steps = config.max_steps or max(1, int(steps_per_epoch * hp.epochs))
    use_bf16 = dtype == torch.bfloat16

    config.output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".trainer-", dir=config.output_dir))
    try:
        args = SFTConfig(
            output_dir=str(scratch),
            run_name=config.run_name,
            seed=hp.seed,
            data_seed=hp.seed,
            num_train_epochs=hp.epochs,
            max_steps=config.max_steps or -1,
            per_device_train_batch_size=hp.batch_size,
            per_device_eval_batch_size=hp.batch_size,
            gradient_accumulation_steps=hp.gradient_accumulation_steps,
            learning_rate=hp.learning_rate,
            lr_scheduler_type=lr_scheduler,
            warmup_steps=hp.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
            weight_decay=hp.weight_decay,
            max_length=hp.max_length,
            packing=config.packing,
            eval_packing=False,  # eval loss per example, comparable with the evaluation entrypoint
            completion_only_loss=True,
            **_checkpointing_args(SFTConfig, config.gradient_checkpointing),
            bf16=use_bf16,  # explicit: TRL defaults bf16 to True, even on CPU
            fp16=False,
            use_cpu=device == "cpu",
            dataloader_pin_memory=device == "cuda",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=max(1, min(25, planned_steps // 10)),
            logging_first_step=True,
            include_num_input_tokens_seen="non_padding",
            report_to=["mlflow"] if config.mlflow else "none",
            disable_tqdm=True,
        )
        peft_config = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        with _mlflow_run(config.mlflow, config.run_name) as mlflow_run_id:
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(train_rows),
                eval_dataset=Dataset.from_list(eval_rows),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(_progress_callback())
            peft_model = trainer.model
            frozen, trainable = _split_params(peft_model)
            frozen_before, trainable_before = _fingerprint(frozen), _fingerprint(trainable)
            trainable_params, total_params = peft_model.get_nb_trainable_parameters()
            logger.info(
                "LoRA r=%d alpha=%d on %s: %d trainable of %d parameters (%.3f%%)",
                config.lora.r,
                config.lora.alpha,
                config.lora.target_modules,
                trainable_params,
                total_params,
                100.0 * trainable_params / max(1, total_params),
            )

            base_eval = trainer.evaluate()
            logger.info("base model eval_loss=%.4f", base_eval["eval_loss"])
            train_output = trainer.train()
            final_eval = trainer.evaluate()
            logger.info("adapter eval_loss=%.4f", final_eval["eval_loss"])

            # Inside the MLflow run, so that a failed check marks the run FAILED.
            base_unchanged = bool(torch.equal(frozen_before, _fingerprint(frozen)))
            adapter_changed = not bool(torch.equal(trainable_before, _fingerprint(trainable)))
            if not base_unchanged:
                raise RuntimeError("integrity check failed: base model weights changed during LoRA training")
            if not adapter_changed:
                raise RuntimeError("integrity check failed: adapter weights did not change during training")

            adapter_target = config.output_dir / ADAPTER_DIR
            with atomic_directory(adapter_target) as tmp:
                peft_model.save_pretrained(str(tmp))
                tokenizer.save_pretrained(str(tmp))
                adapter_sha256 = weights_sha256(tmp)
            logger.info("adapter saved to %s", adapter_target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    state = trainer.state
    metrics = train_output.metrics
    runtime_s = float(metrics.get("train_runtime", 0.0))
    train_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    result: dict[str, Any] = {
        "status": "succeeded",
        "method": config.method,
        "run_name": config.run_name,
        "train_loss": float(train_output.training_loss),
        "eval_loss": float(final_eval["eval_loss"]),
        "base_eval_loss": float(base_eval["eval_loss"]),
        "global_step": int(state.global_step),
        "epochs": float(state.epoch or 0.0),
        "train_runtime_s": round(runtime_s, 3),
        "train_tokens": train_tokens,
        "tokens_per_second": round(train_tokens / runtime_s, 2) if runtime_s > 0 else None,
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "trainable_params": int(trainable_params),
        "total_params": int(total_params),
        "base_weights_unchanged": base_unchanged,
        "adapter_weights_changed": adapter_changed,
        "base_model_sha256": base_sha256,
        "adapter_sha256": adapter_sha256,
        "adapter_path": str(adapter_target),
        "config_sha256": canonical_json_sha256(config.resolved_dict()),
        "seed": hp.seed,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "mlflow_run_id": mlflow_run_id,
        "library_versions": library_versions(),
    }
    write_json_atomic(config.output_dir / RESULT_FILE, result)
    logger.info(
        "done: train_loss=%.4f eval_loss=%.4f (base %.4f) steps=%d in %.1fs",
        result["train_loss"],
        result["eval_loss"],
        result["base_eval_loss"],
        result["global_step"],
        runtime_s,
    )
    return result
