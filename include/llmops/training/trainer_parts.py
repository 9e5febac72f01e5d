"""Pieces around a Hugging Face Trainer that every training method shares: integrity fingerprints,
callbacks (progress lines, step timing), the MLflow run, Trainer arguments and the LoRA config,
checkpoint state, and saving the adapter (and the merged model) the same way for every method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.jobs.artifacts import atomic_directory, file_sha256, weights_sha256
from llmops.jobs.runtime import (
    JOB_STATUS_TAG,
    DistributedContext,
    JobInputError,
    encode_prompt_completion,
    resolve_dtype,
)
from llmops.training.checkpoints import KEEP_CHECKPOINTS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmops.training.config import MlflowTarget, TrainingJobConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_SAVE_STEPS = 500
_FINGERPRINT_CHUNK = 1 << 24


def weights_fingerprint(params: list[Any]) -> Any:
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


def _field_name(config_cls: type, new: str, old: str) -> str:
    """transformers 5.x renamed ``gradient_checkpointing*`` to ``activation_checkpointing*``."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return new if new in names else old


def checkpointing_args(config_cls: type, enabled: bool) -> dict[str, Any]:
    """Always pass activation checkpointing explicitly: TRL defaults it to on.

    Non-reentrant checkpointing is the variant that works with DDP and frozen (LoRA) weights.
    """
    key = _field_name(config_cls, "activation_checkpointing", "gradient_checkpointing")
    out: dict[str, Any] = {key: enabled}
    if enabled:
        kwargs_key = _field_name(
            config_cls, "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"
        )
        out[kwargs_key] = {"use_reentrant": False}
    return out


def split_params(model: Any) -> tuple[list[Any], list[Any]]:
    frozen = [p for _, p in model.named_parameters() if not p.requires_grad]
    trainable = [p for _, p in model.named_parameters() if p.requires_grad]
    return frozen, trainable


def progress_callback() -> Any:
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


def throughput_callback(device: str) -> Any:
    """Times each optimizer step, so throughput can be reported without the warm-up steps.

    ``train_runtime`` includes CUDA initialisation, kernel selection and the first data loads,
    which dominate short runs; the steady figures skip the first fifth of the steps (at least
    one, at most ten) and are what a long run will see.
    """
    import time

    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), int(getattr(state, "num_input_tokens_seen", 0) or 0)))

        def _window(self) -> tuple[float, int, int] | None:
            skip = min(10, max(1, len(self.marks) // 5))
            if len(self.marks) - skip < 2:
                return None
            (t0, n0), (t1, n1) = self.marks[skip], self.marks[-1]
            return t1 - t0, n1 - n0, len(self.marks) - 1 - skip

        def steady_tokens_per_second(self) -> float | None:
            window = self._window()
            return round(window[1] / window[0], 2) if window and window[0] > 0 else None

        def steady_step_seconds(self) -> float | None:
            window = self._window()
            return round(window[0] / window[2], 4) if window and window[2] else None

    return StepTimes()


def _flush_mlflow(mlflow: Any) -> None:
    """HF's callback logs asynchronously; make sure everything landed before the run ends."""
    flush = getattr(mlflow, "flush_async_logging", None)
    if flush is not None:
        flush()


@contextlib.contextmanager
def mlflow_run(target: MlflowTarget | None, run_name: str) -> Iterator[str | None]:
    """Make the job's MLflow run the active one, so HF's MLflowCallback logs into it.

    With ``run_id`` the job attaches to that existing run (owned by the orchestrator) and, on
    success, leaves its status as it found it; otherwise it creates a run and finishes it. On
    failure the run is marked FAILED either way. ``parent_run_id`` nests the run under a parent
    (a search's trials under the search). System metrics (CPU, memory, GPU) are sampled when
    psutil is installed.
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
    system_metrics = importlib.util.find_spec("psutil") is not None
    tags = {"mlflow.parentRunId": target.parent_run_id} if target.parent_run_id else None
    prior_status = None
    if target.run_id:
        try:
            prior_status = MlflowClient(target.tracking_uri).get_run(target.run_id).info.status
        except MlflowException as exc:
            raise JobInputError(f"mlflow.run_id: cannot use run {target.run_id!r}: {exc.message}") from None
        run = mlflow.start_run(run_id=target.run_id, tags=tags, log_system_metrics=system_metrics)
    else:
        if target.experiment_name:
            mlflow.set_experiment(target.experiment_name)
        run = mlflow.start_run(run_name=run_name, tags=tags, log_system_metrics=system_metrics)
    run_id = run.info.run_id
    logger.info(
        "logging to MLflow run %s at %s%s",
        run_id,
        target.tracking_uri,
        f" (child of {target.parent_run_id})" if target.parent_run_id else "",
    )
    try:
        yield run_id
    except BaseException:
        _flush_mlflow(mlflow)
        mlflow.set_tag(JOB_STATUS_TAG, "FAILED")
        mlflow.end_run(status="FAILED")
        raise
    _flush_mlflow(mlflow)
    mlflow.set_tag(JOB_STATUS_TAG, "FINISHED")
    mlflow.end_run(status="FINISHED")
    if prior_status == "RUNNING":
        # The orchestrator's run (evaluation and registration log into it next): it ends it with the
        # Airflow run, taking this job's own outcome from the tag (mlflow_registry.end_open_runs).
        MlflowClient(target.tracking_uri).update_run(run_id, status="RUNNING")


def log_dataset_inputs(data_files: dict[str, dict[str, Any]]) -> None:
    """Record the SFT data as MLflow dataset inputs: the file URI as source, its sha256 as digest.

    MLflow's SQL store caps a dataset digest at 36 characters, so the digest is the sha256's
    prefix and the full hex travels as the input's ``llmops.sha256`` tag.
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    contexts = {"train_file": "training", "eval_file": "evaluation"}
    for field, info in data_files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
            source = resolve_dataset_source(info["uri"])
        dataset = MetaDataset(source=source, name=field.removesuffix("_file"), digest=info["sha256"][:36])
        mlflow.log_input(dataset, context=contexts.get(field, field), tags={"llmops.sha256": info["sha256"]})


def check_launch(config: TrainingJobConfig, dist: DistributedContext) -> None:
    """The launch (torchrun or not) must match ``distributed``: both sides decide who writes."""
    strategy = config.distributed.strategy
    if dist.is_distributed and strategy == "none":
        raise JobInputError(
            f"distributed.strategy: the job was launched with {dist.world_size} processes (torchrun) but "
            "distributed.strategy is 'none'; set it to 'ddp' or 'fsdp', or launch one process"
        )
    if strategy != "none" and not dist.is_distributed:
        logger.warning(
            "distributed.strategy is %r but the job runs as a single process (no torchrun); training "
            "on one device",
            strategy,
        )
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    if dist.is_distributed and local_world != config.distributed.processes_per_node:
        logger.warning(
            "torchrun started %d processes per node, distributed.processes_per_node is %d",
            local_world,
            config.distributed.processes_per_node,
        )


def pin_single_gpu() -> None:
    """A single-process job uses one GPU; pin it before CUDA initialises.

    With several GPUs visible, ``Trainer`` would wrap the model in ``nn.DataParallel``, which
    TRL's SFTTrainer rejects. Multi-GPU training goes through torchrun (``distributed``).
    """
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"


def schedule(config: TrainingJobConfig, steps_per_epoch: int) -> dict[str, Any]:
    """Evaluation, checkpoint and best-model settings of the Trainer.

    Evaluations between steps happen every ``eval_steps``, or each epoch when early stopping or a
    search trial needs them and no interval is given. Checkpoints follow ``save_steps``, else the
    evaluations, else every epoch but at least every 500 steps (a killed job loses little).
    """
    out: dict[str, Any] = {"save_total_limit": KEEP_CHECKPOINTS}
    if config.eval_steps is not None:
        out.update(eval_strategy="steps", eval_steps=config.eval_steps)
    elif config.evaluates_during_training:
        out["eval_strategy"] = "epoch"
    else:
        out["eval_strategy"] = "no"
    if config.save_steps is not None:
        out.update(save_strategy="steps", save_steps=config.save_steps)
    elif config.eval_steps is not None:
        out.update(save_strategy="steps", save_steps=config.eval_steps)
    elif out["eval_strategy"] == "epoch":
        out["save_strategy"] = "epoch"
    else:
        out.update(save_strategy="steps", save_steps=max(1, min(steps_per_epoch, DEFAULT_MAX_SAVE_STEPS)))
    if config.early_stopping_patience is not None:
        out.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
        out["restore_callback_states_from_checkpoint"] = True  # keep the patience counter across resumes
    return out


def training_arguments(
    config_cls: type,
    config: TrainingJobConfig,
    output_dir: Path,
    *,
    device: str,
    dtype: Any,
    train_rows: int,
    world_size: int = 1,
    **method_args: Any,
) -> Any:
    """A ``TrainingArguments`` subclass (SFTConfig, DPOConfig) with the job's shared settings.

    ``train_rows`` is the number of training examples per epoch (rows, or packed blocks);
    ``method_args`` are the method's own fields (max_length, packing, beta, ...).
    """
    import torch

    hp = config.hyperparameters
    lr_scheduler = hp.lr_scheduler
    if lr_scheduler == "constant" and hp.warmup_ratio > 0:
        lr_scheduler = "constant_with_warmup"
    per_step = hp.batch_size * hp.gradient_accumulation_steps * max(1, world_size)
    steps_per_epoch = max(1, -(-train_rows // per_step))
    planned_steps = config.max_steps or max(1, int(steps_per_epoch * hp.epochs))
    fsdp = config.distributed.strategy == "fsdp" and world_size > 1
    distributed_args: dict[str, Any] = {}
    if world_size > 1:
        distributed_args["ddp_find_unused_parameters"] = False  # LoRA: frozen weights never get grads
        if device == "cpu":
            distributed_args["ddp_backend"] = "gloo"
    if fsdp:
        # FSDP2 wrapping each decoder layer; the full (gathered) state dict keeps checkpoints and
        # the adapter in the ordinary PEFT format. Its own activation checkpointing avoids a
        # redundant all-gather in the backward pass.
        distributed_args["fsdp"] = True
        distributed_args["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "activation_checkpointing": config.gradient_checkpointing,
        }
    return config_cls(
        output_dir=str(output_dir),
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
        **method_args,
        **checkpointing_args(config_cls, config.gradient_checkpointing and not fsdp),
        bf16=dtype == torch.bfloat16,  # explicit: TRL defaults bf16 to True, even on CPU
        fp16=False,
        use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda",
        **schedule(config, steps_per_epoch),
        logging_strategy="steps",
        logging_steps=max(1, min(25, planned_steps // 10)),
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to=["mlflow"] if config.mlflow else "none",
        disable_tqdm=True,
        **distributed_args,
    )


def build_peft_config(config: TrainingJobConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def probe_sequences(config: TrainingJobConfig, tokenizer: Any, rows: list[dict[str, str]]) -> list[list[int]]:
    if config.chat_template:
        from llmops.jobs.runtime import encode_chat_prompt_completion

        return [encode_chat_prompt_completion(tokenizer, r["prompt"], r["completion"])[0] for r in rows[:3]]
    return [encode_prompt_completion(tokenizer, r["prompt"], r["completion"])[0] for r in rows[:3]]


def data_file_info(location: str, local: Path, rows: int) -> dict[str, Any]:
    return {"uri": location, "sha256": file_sha256(local), "bytes": local.stat().st_size, "rows": rows}


def save_adapter(
    trainer: Any, peft_model: Any, tokenizer: Any, target: Path, *, fsdp: bool, is_main: bool
) -> str | None:
    """Write adapter/ atomically (rank 0); returns its weights digest on rank 0.

    Under FSDP the adapter weights are sharded, so every rank takes part in gathering them
    (``Trainer.save_model``) into a staging folder that rank 0 then publishes.
    """
    if fsdp:
        staging = target.with_name(f".{target.name}.fsdp-staging")
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(staging))
        trainer.accelerator.wait_for_everyone()
        if not is_main:
            return None
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle has no place in a model artifact
        with atomic_directory(target) as tmp:
            for item in staging.iterdir():
                shutil.move(str(item), tmp / item.name)
            digest = weights_sha256(tmp)
        shutil.rmtree(staging, ignore_errors=True)
        return digest
    if not is_main:
        return None
    with atomic_directory(target) as tmp:
        peft_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        return weights_sha256(tmp)


def save_merged(base_dir: Path, adapter_dir: Path, tokenizer: Any, target: Path, device: str) -> str:
    """Base + adapter merged into one full model (for runtimes without LoRA support).

    Merged from a freshly loaded, unquantised base on the CPU: merging into NF4 weights would
    be lossy, and the GPU still holds the training state.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if resolve_dtype(device) == torch.bfloat16 else torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    with atomic_directory(target) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        digest = weights_sha256(tmp)
    logger.info("merged model saved to %s", target)
    return digest


def tokens_at(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(
            json.loads((checkpoint / "trainer_state.json").read_text()).get("num_input_tokens_seen") or 0
        )
    except (OSError, ValueError):
        return 0


def _trainer_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return {}


def training_finished(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved at the end of training (max steps, or an early stop)."""
    state = _trainer_state(checkpoint)
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    steps, planned = int(state.get("global_step") or 0), int(state.get("max_steps") or 0)
    return bool(control.get("should_training_stop")) or (planned > 0 and steps >= planned)


def restore_finished(trainer: Any, peft_model: Any, checkpoint: Path, config: TrainingJobConfig) -> Any:
    """Load the finished run's adapter (its best one with early stopping) and trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    source = checkpoint
    best = trainer.state.best_model_checkpoint
    if config.early_stopping_patience is not None and best:
        best_path = checkpoint.parent / Path(best).name  # the path is recorded as it was when saved
        source = best_path if (best_path / "adapter_model.safetensors").is_file() else checkpoint
    set_peft_model_state_dict(peft_model, load_file(str(source / "adapter_model.safetensors")))
    logger.info(
        "training had finished at step %d; adapter restored from %s", trainer.state.global_step, source
    )
    loss = logged_train_loss(trainer.state.log_history, 0.0)
    return TrainOutput(trainer.state.global_step, loss, {"train_runtime": 0.0})


def logged_train_loss(log_history: list[dict[str, Any]], default: float) -> float:
    """Step-weighted mean of the training losses in the Trainer's log history."""
    total = steps = 0.0
    previous = 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            width = max(1, int(entry["step"]) - previous)
            total += float(entry["loss"]) * width
            steps += width
            previous = int(entry["step"])
    return total / steps if steps else default


def no_extra_metrics(evaluation: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {}


def log_final_metrics(metrics: dict[str, Any], step: int) -> None:
    """The method's derived figures (perplexity, reward accuracy) as MLflow metrics (finite ones)."""
    import math

    import mlflow

    numbers = {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    if numbers:
        mlflow.log_metrics(numbers, step=step)


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated by torch on CUDA, else the process's peak resident set."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def step_of(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    name = checkpoint.name
    return int(name.rsplit("-", 1)[1]) if name.startswith("checkpoint-") else None
