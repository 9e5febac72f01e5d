"""Supervised fine-tuning with LoRA (or QLoRA), via TRL's ``SFTTrainer``, and the job driver
every training method shares.

One job: stage the inputs (local paths or ``s3://``), load the base model exactly as a real one
is loaded (``from_pretrained``), train a LoRA adapter with loss on the completion tokens only,
measure eval loss before and after, prove the base weights were left alone, and publish
``adapter/``, ``manifest.json`` and ``result.json`` (last) to ``output_dir``.

Robustness: checkpoints (adapter, optimizer, scheduler, RNG) every ``save_steps`` under
``output_dir/checkpoints/`` (mirrored to object storage), resumed automatically by a rerun of
the same command. Early stopping, Optuna pruning and ``torchrun`` (DDP/FSDP) launches are
supported; in a distributed job only rank 0 writes outputs.

The driver (:func:`run_training`) is method-agnostic: a :class:`TrainingMethod` says how rows
are read, which ``TrainingArguments`` subclass and ``Trainer`` are built and which extra figures
an evaluation yields. SFT is defined here; continued pretraining (:mod:`llmops.training.cpt`)
and DPO (:mod:`llmops.training.dpo`) reuse the same staging, LoRA, checkpoints, integrity
checks, manifest and MLflow logging.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.training.artifacts import atomic_directory, file_sha256, weights_sha256
from llmops.training.checkpoints import (
    CHECKPOINTS_DIR,
    KEEP_CHECKPOINTS,
    checkpoint_callback,
    latest_complete_checkpoint,
    prepare_checkpoints,
    training_fingerprint,
)
from llmops.training.manifest import MANIFEST_FILE, build_manifest
from llmops.training.runtime import (
    DistributedContext,
    JobInputError,
    as_conversation,
    check_quantization_support,
    encode_prompt_completion,
    job_wall_seconds,
    library_versions,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    read_prompt_completion_jsonl,
    require_chat_template,
    resolve_device,
    resolve_dtype,
)
from llmops.training.staging import OutputLocation, fetch_file, fetch_model_dir, model_weights_sha256

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from llmops.training.config import MlflowTarget, TrainingJobConfig

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
RESULT_FILE = "result.json"
DEFAULT_MAX_SAVE_STEPS = 500
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


def _field_name(config_cls: type, new: str, old: str) -> str:
    """transformers 5.x renamed ``gradient_checkpointing*`` to ``activation_checkpointing*``."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return new if new in names else old


def _checkpointing_args(config_cls: type, enabled: bool) -> dict[str, Any]:
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


def _throughput_callback(device: str) -> Any:
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
def _mlflow_run(target: MlflowTarget | None, run_name: str) -> Iterator[str | None]:
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
        mlflow.end_run(status="FAILED")
        raise
    _flush_mlflow(mlflow)
    mlflow.end_run(status="FINISHED")
    if prior_status == "RUNNING":
        MlflowClient(target.tracking_uri).update_run(run_id, status="RUNNING")


def _log_dataset_inputs(data_files: dict[str, dict[str, Any]]) -> None:
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


def _check_launch(config: TrainingJobConfig, dist: DistributedContext) -> None:
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


def _pin_single_gpu() -> None:
    """A single-process job uses one GPU; pin it before CUDA initialises.

    With several GPUs visible, ``Trainer`` would wrap the model in ``nn.DataParallel``, which
    TRL's SFTTrainer rejects. Multi-GPU training goes through torchrun (``distributed``).
    """
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"


def make_datasets(
    config: TrainingJobConfig, train_rows: list[dict[str, str]], eval_rows: list[dict[str, str]]
) -> Any:
    """The train and eval ``datasets.Dataset``: plain prompt/completion, or chat conversations."""
    from datasets import Dataset

    def convert(rows: list[dict[str, str]]) -> Any:
        if config.chat_template:
            rows = [as_conversation(r["prompt"], r["completion"]) for r in rows]  # type: ignore[misc]
        return Dataset.from_list(rows)

    return convert(train_rows), convert(eval_rows)


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


def build_sft_config(
    config: TrainingJobConfig,
    output_dir: Path,
    *,
    device: str,
    dtype: Any,
    train_rows: int,
    world_size: int = 1,
) -> Any:
    """The ``SFTConfig`` of a job: one place, used by the entrypoint, the tests and the benchmark."""
    from trl import SFTConfig

    return training_arguments(
        SFTConfig,
        config,
        output_dir,
        device=device,
        dtype=dtype,
        train_rows=train_rows,
        world_size=world_size,
        max_length=config.hyperparameters.max_length,
        packing=config.packing,
        packing_strategy="bfd",  # whole examples per row + padding-free position_ids (see packing.py)
        eval_packing=False,  # eval loss per example, comparable with the evaluation entrypoint
        completion_only_loss=True,
    )


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
        **_checkpointing_args(config_cls, config.gradient_checkpointing and not fsdp),
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


def build_trainer(
    config: TrainingJobConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
) -> Any:
    """The SFTTrainer exactly as the entrypoint builds it (no job-level callbacks)."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    train_dataset, eval_dataset = make_datasets(config, train_rows, eval_rows)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=build_peft_config(config),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_progress_callback())
    return trainer


def _probe_sequences(
    config: TrainingJobConfig, tokenizer: Any, rows: list[dict[str, str]]
) -> list[list[int]]:
    if config.chat_template:
        from llmops.training.runtime import encode_chat_prompt_completion

        return [encode_chat_prompt_completion(tokenizer, r["prompt"], r["completion"])[0] for r in rows[:3]]
    return [encode_prompt_completion(tokenizer, r["prompt"], r["completion"])[0] for r in rows[:3]]


def _data_file_info(location: str, local: Path, rows: int) -> dict[str, Any]:
    return {"uri": location, "sha256": file_sha256(local), "bytes": local.stat().st_size, "rows": rows}


def _save_adapter(
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


def _save_merged(base_dir: Path, adapter_dir: Path, tokenizer: Any, target: Path, device: str) -> str:
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


def _tokens_at(checkpoint: Path | None) -> int:
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


def _training_finished(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved at the end of training (max steps, or an early stop)."""
    state = _trainer_state(checkpoint)
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    steps, planned = int(state.get("global_step") or 0), int(state.get("max_steps") or 0)
    return bool(control.get("should_training_stop")) or (planned > 0 and steps >= planned)


def _restore_finished(trainer: Any, peft_model: Any, checkpoint: Path, config: TrainingJobConfig) -> Any:
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
    loss = _logged_train_loss(trainer.state.log_history, 0.0)
    return TrainOutput(trainer.state.global_step, loss, {"train_runtime": 0.0})


def _logged_train_loss(log_history: list[dict[str, Any]], default: float) -> float:
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


def _no_extra_metrics(evaluation: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TrainingMethod:
    """What differs between training methods; everything else is :func:`run_training`'s.

    * ``read_rows(path, field)``: the validated rows of a data file (errors name ``field``).
    * ``build_args(config, output_dir, *, device, dtype, train_rows, world_size)``: the
      ``TrainingArguments`` subclass of the method (see :func:`training_arguments`).
    * ``build_trainer(config, args, model, tokenizer, train_rows, eval_rows)``: the Trainer, with
      the LoRA adapter applied (``trainer.model`` is the PEFT model).
    * ``count_examples(config, tokenizer, rows)``: training examples per epoch (for the
      schedule); the number of rows when unset.
    * ``eval_metrics(evaluation, prefix)``: extra flat figures from a ``trainer.evaluate()``
      dict, keys starting with ``prefix`` ("eval_" after training, "base_eval_" before).
    * ``packing``: the result's ``packing`` entry when the method fixes it (else from ``config``).
    """

    name: str
    read_rows: Callable[[Path, str], list[dict[str, str]]]
    build_args: Callable[..., Any]
    build_trainer: Callable[..., Any]
    count_examples: Callable[[TrainingJobConfig, Any, list[dict[str, str]]], int] | None = None
    eval_metrics: Callable[[dict[str, Any], str], dict[str, Any]] = _no_extra_metrics
    packing: dict[str, Any] | None = None


SFT = TrainingMethod(
    name="sft",
    read_rows=read_prompt_completion_jsonl,
    build_args=build_sft_config,
    build_trainer=build_trainer,
)


def train_sft(config: TrainingJobConfig) -> dict[str, Any]:
    """Run one LoRA SFT job and return the result that is also written to ``result.json``."""
    return run_training(config, SFT)


def run_training(config: TrainingJobConfig, method: TrainingMethod) -> dict[str, Any]:
    """Run one LoRA job of ``method`` and return the result that is also written to ``result.json``."""
    if config.method != method.name:
        raise JobInputError(
            f"method: the job is {config.method!r} but was given to the {method.name!r} trainer"
        )
    dist = DistributedContext.from_env()
    _check_launch(config, dist)
    if not dist.is_main:
        logging.getLogger("llmops").setLevel(logging.WARNING)  # one copy of each log line, from rank 0
    location = OutputLocation.for_uri(config.output_dir)
    # Inputs first: a wrong path should fail in seconds, not after importing torch.
    base_dir = fetch_model_dir(config.base_model_path)
    train_path = fetch_file(config.train_file, "train_file")
    eval_path = fetch_file(config.eval_file, "eval_file")
    train_rows = method.read_rows(train_path, "train_file")
    eval_rows = method.read_rows(eval_path, "eval_file")
    if not dist.is_distributed:
        _pin_single_gpu()

    import torch
    import transformers

    quiet_libraries()
    # Raised inside TRL/PEFT for transformers 5's rename; nothing a job config can change.
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    hp = config.hyperparameters
    transformers.set_seed(hp.seed)
    device = resolve_device(config.device)
    check_quantization_support(config.quantization, device)
    dtype = resolve_dtype(device)
    fsdp = config.distributed.strategy == "fsdp" and dist.is_distributed
    if fsdp and device != "cuda":
        raise JobInputError(
            "distributed.strategy: 'fsdp' needs CUDA devices (FSDP2 with NCCL); use 'ddp' on CPU"
        )
    logger.info(
        "data: %d train rows, %d eval rows; device=%s dtype=%s world_size=%d",
        len(train_rows),
        len(eval_rows),
        device,
        dtype,
        dist.world_size,
    )

    base_sha256 = model_weights_sha256(base_dir)
    data_files = {
        "train_file": _data_file_info(config.train_file, train_path, len(train_rows)),
        "eval_file": _data_file_info(config.eval_file, eval_path, len(eval_rows)),
    }
    fingerprint = training_fingerprint(config, base_sha256, {k: v["sha256"] for k, v in data_files.items()})
    tokenizer = load_tokenizer(base_dir)
    if config.chat_template:
        require_chat_template(tokenizer, base_dir)

    checkpoints_root = location.local_dir / CHECKPOINTS_DIR
    train_examples = (
        method.count_examples(config, tokenizer, train_rows) if method.count_examples else len(train_rows)
    )
    if method.count_examples:
        logger.info("%s: %d training examples per epoch", method.name, train_examples)
    args = method.build_args(
        config,
        checkpoints_root,
        device=device,
        dtype=dtype,
        train_rows=train_examples,
        world_size=dist.world_size,
    )
    from accelerate import PartialState

    _ = args.device  # initialises the process group under torchrun (before any collective below)
    state = PartialState()
    with state.local_main_process_first():
        if state.is_local_main_process:
            location.local_dir.mkdir(parents=True, exist_ok=True)
            resume_from = prepare_checkpoints(location, fingerprint, config.resume)
        else:
            resume_from = latest_complete_checkpoint(checkpoints_root) if config.resume else None
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)

    model = load_base_model(base_dir, device, quantization=config.quantization, local_rank=dist.local_rank)
    if device == "cuda" and config.quantization == "none" and not fsdp:
        model.to(torch.device("cuda", dist.local_rank if dist.is_distributed else 0))
    packing_check: dict[str, Any] = {"checked": False}
    if config.packing:
        if fsdp:
            packing_check["reason"] = "not probed under FSDP (the unsharded model is not on a device yet)"
        else:
            from llmops.training.packing import check_packed_isolation

            packing_check = check_packed_isolation(model, _probe_sequences(config, tokenizer, train_rows))

    throughput = _throughput_callback(device)
    callbacks: list[Any] = [checkpoint_callback(location, fingerprint), throughput]
    if config.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    pruning = None
    if config.hpo is not None:
        from llmops.training.hpo import pruning_callback

        pruning = pruning_callback(config.hpo, dist.is_main)
        callbacks.append(pruning)

    mlflow_target = config.mlflow if dist.is_main else None
    adapter_target = location.local_dir / ADAPTER_DIR
    with _mlflow_run(mlflow_target, config.run_name) as mlflow_run_id:
        if mlflow_run_id is not None:
            _log_dataset_inputs(data_files)
        trainer = method.build_trainer(config, args, model, tokenizer, train_rows, eval_rows)
        for callback in callbacks:
            trainer.add_callback(callback)
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
        if resume_from is not None and _training_finished(resume_from):
            # The checkpoint is the end of training (the job was stopped while publishing, or is
            # rerun after success). Trainer.train would run one step past max_steps from here.
            train_output = _restore_finished(trainer, peft_model, resume_from, config)
        else:
            train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        pruned = bool(pruning is not None and pruning.pruned)
        if pruned:
            final_eval = {"eval_loss": pruning.last_eval_loss}
        else:
            final_eval = trainer.evaluate()
            logger.info("adapter eval_loss=%.4f", final_eval["eval_loss"])

        # Inside the MLflow run, so that a failed check marks the run FAILED. Under FSDP the
        # parameters are sharded after wrapping and the fingerprints are not comparable.
        base_unchanged: bool | None = None
        adapter_changed: bool | None = None
        if not fsdp:
            base_unchanged = bool(torch.equal(frozen_before, _fingerprint(frozen)))
            adapter_changed = not bool(torch.equal(trainable_before, _fingerprint(trainable)))
            if not base_unchanged:
                raise RuntimeError("integrity check failed: base model weights changed during LoRA training")
            if not adapter_changed and not pruned:
                raise RuntimeError("integrity check failed: adapter weights did not change during training")

        adapter_sha256 = merged_sha256 = None
        if not pruned:
            adapter_sha256 = _save_adapter(
                trainer, peft_model, tokenizer, adapter_target, fsdp=fsdp, is_main=dist.is_main
            )
            if dist.is_main:
                logger.info("adapter saved to %s", adapter_target)
                if config.merge_adapter:
                    merged_sha256 = _save_merged(
                        base_dir, adapter_target, tokenizer, location.local_dir / MERGED_DIR, device
                    )
        if not dist.is_main:
            return {"status": "pruned" if pruned else "succeeded", "rank": dist.rank}

        tstate = trainer.state
        runtime_s = float(train_output.metrics.get("train_runtime", 0.0))
        train_tokens = int(getattr(tstate, "num_input_tokens_seen", 0) or 0)
        session_tokens = train_tokens - _tokens_at(resume_from)
        resumed_from_step = _step_of(resume_from)
        # Trainer's mean over the steps this attempt ran (all of them unless it resumed); an
        # attempt that resumed from the final checkpoint ran none and reports the logged losses.
        train_loss = float(train_output.training_loss)
        stopped_early = (
            not pruned
            and config.early_stopping_patience is not None
            and int(tstate.global_step) < int(tstate.max_steps)
        )
        extra = {**method.eval_metrics(final_eval, "eval_"), **method.eval_metrics(base_eval, "base_eval_")}
        flat: dict[str, Any] = {
            "train_loss": train_loss,
            "eval_loss": float(final_eval["eval_loss"]) if final_eval["eval_loss"] is not None else None,
            "base_eval_loss": float(base_eval["eval_loss"]),
            "best_eval_loss": tstate.best_metric,
            "best_global_step": tstate.best_global_step,
            "global_step": int(tstate.global_step),
            "planned_steps": int(tstate.max_steps),
            "epochs": float(tstate.epoch or 0.0),
            "stopped_early": stopped_early,
            "train_runtime_s": round(runtime_s, 3),
            "job_wall_s": job_wall_seconds(),
            "train_tokens": train_tokens,
            "tokens_per_second": round(session_tokens / runtime_s, 2) if runtime_s > 0 else None,
            "steady_tokens_per_second": throughput.steady_tokens_per_second(),
            "steady_step_seconds": throughput.steady_step_seconds(),
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
            **extra,
            "trainable_params": int(trainable_params),
            "total_params": int(total_params),
            "peak_memory_gib": _peak_memory_gib(device),
        }
        if extra:
            logger.info(
                "%s: %s",
                method.name,
                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()),
            )
        if mlflow_run_id is not None and extra:
            _log_final_metrics(extra, int(tstate.global_step))
        published = location.remote
        adapter_uri = location.join(ADAPTER_DIR) if adapter_sha256 else None
        merged_uri = location.join(MERGED_DIR) if merged_sha256 else None
        manifest = build_manifest(
            config,
            status="pruned" if pruned else "succeeded",
            base_model_sha256=base_sha256,
            data_files=data_files,
            device=device,
            dtype=str(dtype).removeprefix("torch."),
            world_size=dist.world_size,
            library_versions=library_versions(),
            metrics=flat,
            adapter_uri=adapter_uri,
            adapter_sha256=adapter_sha256,
            merged_model_uri=merged_uri,
            merged_model_sha256=merged_sha256,
            resumed_from_step=resumed_from_step,
            local_rank=dist.local_rank,
        )
        result: dict[str, Any] = {
            **manifest,
            **flat,
            "adapter_path": adapter_uri,
            "merged_model_path": merged_uri,
            "manifest_path": location.join(MANIFEST_FILE),
            "checkpoints_path": location.join(CHECKPOINTS_DIR),
            "base_weights_unchanged": base_unchanged,
            "adapter_weights_changed": adapter_changed,
            "quantization": config.quantization,
            "distributed_strategy": config.distributed.strategy if dist.is_distributed else "none",
            "packing": dict(method.packing)
            if method.packing is not None
            else {
                "enabled": config.packing,
                "strategy": "bfd" if config.packing else None,
                **packing_check,
            },
            "hpo": pruning.summary() if pruning is not None else None,
            "mlflow_run_id": mlflow_run_id,
        }
        if mlflow_run_id is not None and adapter_sha256 and config.mlflow and config.mlflow.log_adapter:
            import mlflow

            mlflow.log_artifacts(str(adapter_target), artifact_path=ADAPTER_DIR)
        # Publish: artifacts first, the manifest, then result.json last (its presence means done).
        if published:
            for folder in (ADAPTER_DIR, MERGED_DIR):
                if (location.local_dir / folder).is_dir():
                    location.upload_tree(folder)
        location.write_json(MANIFEST_FILE, manifest)
        location.write_json(RESULT_FILE, result)
    if published:
        shutil.rmtree(location.local_dir, ignore_errors=True)  # everything is in object storage now
    logger.info(
        "done (%s): train_loss=%.4f eval_loss=%s (base %.4f) steps=%d in %.1fs%s",
        result["status"],
        result["train_loss"],
        f"{result['eval_loss']:.4f}" if result["eval_loss"] is not None else "n/a",
        result["base_eval_loss"],
        result["global_step"],
        runtime_s,
        f", resumed from step {resumed_from_step}" if resumed_from_step else "",
    )
    return result


def _log_final_metrics(metrics: dict[str, Any], step: int) -> None:
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


def _peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated by torch on CUDA, else the process's peak resident set."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def _step_of(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    name = checkpoint.name
    return int(name.rsplit("-", 1)[1]) if name.startswith("checkpoint-") else None
