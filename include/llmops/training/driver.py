"""The job driver every training method shares: stage the inputs, load the base model exactly as a
real one is loaded (``from_pretrained``), train a LoRA adapter, measure eval loss before and after,
prove the base weights were left alone, and publish ``adapter/``, ``manifest.json`` and
``result.json`` (last) to ``output_dir``.

Robustness: checkpoints (adapter, optimizer, scheduler, RNG) every ``save_steps`` under
``output_dir/checkpoints/`` (mirrored to object storage), resumed automatically by a rerun of
the same command. Early stopping, Optuna pruning and ``torchrun`` (DDP/FSDP) launches are
supported; in a distributed job only rank 0 writes outputs.

The driver (:func:`run_training`) is method-agnostic: a :class:`TrainerRecipe` says how rows are
read, which ``TrainingArguments`` subclass and ``Trainer`` are built and which extra figures an
evaluation yields (:mod:`llmops.training.sft`, :mod:`.cpt`, :mod:`.dpo`).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops.training.checkpoints import (
    CHECKPOINTS_DIR,
    checkpoint_callback,
    latest_complete_checkpoint,
    prepare_checkpoints,
    training_fingerprint,
)
from llmops.training.manifest import MANIFEST_FILE, build_manifest
from llmops.training.runtime import (
    DistributedContext,
    JobInputError,
    check_quantization_support,
    job_wall_seconds,
    library_versions,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    require_chat_template,
    resolve_device,
    resolve_dtype,
)
from llmops.training.staging import OutputLocation, fetch_file, fetch_model_dir, model_weights_sha256
from llmops.training.trainer_parts import (
    check_launch,
    data_file_info,
    log_dataset_inputs,
    log_final_metrics,
    mlflow_run,
    no_extra_metrics,
    peak_memory_gib,
    pin_single_gpu,
    probe_sequences,
    restore_finished,
    save_adapter,
    save_merged,
    split_params,
    step_of,
    throughput_callback,
    tokens_at,
    training_finished,
    weights_fingerprint,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from llmops.training.config import TrainingJobConfig

logger = logging.getLogger(__name__)


ADAPTER_DIR = "adapter"


MERGED_DIR = "merged"


RESULT_FILE = "result.json"


@dataclass(frozen=True)
class TrainerRecipe:
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
    eval_metrics: Callable[[dict[str, Any], str], dict[str, Any]] = no_extra_metrics
    packing: dict[str, Any] | None = None


def run_training(config: TrainingJobConfig, method: TrainerRecipe) -> dict[str, Any]:
    """Run one LoRA job of ``method`` and return the result that is also written to ``result.json``."""
    if config.method != method.name:
        raise JobInputError(
            f"method: the job is {config.method!r} but was given to the {method.name!r} trainer"
        )
    dist = DistributedContext.from_env()
    check_launch(config, dist)
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
        pin_single_gpu()

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
        "train_file": data_file_info(config.train_file, train_path, len(train_rows)),
        "eval_file": data_file_info(config.eval_file, eval_path, len(eval_rows)),
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

            packing_check = check_packed_isolation(model, probe_sequences(config, tokenizer, train_rows))

    throughput = throughput_callback(device)
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
    with mlflow_run(mlflow_target, config.run_name) as mlflow_run_id:
        if mlflow_run_id is not None:
            log_dataset_inputs(data_files)
        trainer = method.build_trainer(config, args, model, tokenizer, train_rows, eval_rows)
        for callback in callbacks:
            trainer.add_callback(callback)
        peft_model = trainer.model
        frozen, trainable = split_params(peft_model)
        frozen_before, trainable_before = weights_fingerprint(frozen), weights_fingerprint(trainable)
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
        if resume_from is not None and training_finished(resume_from):
            # The checkpoint is the end of training (the job was stopped while publishing, or is
            # rerun after success). Trainer.train would run one step past max_steps from here.
            train_output = restore_finished(trainer, peft_model, resume_from, config)
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
            base_unchanged = bool(torch.equal(frozen_before, weights_fingerprint(frozen)))
            adapter_changed = not bool(torch.equal(trainable_before, weights_fingerprint(trainable)))
            if not base_unchanged:
                raise RuntimeError("integrity check failed: base model weights changed during LoRA training")
            if not adapter_changed and not pruned:
                raise RuntimeError("integrity check failed: adapter weights did not change during training")

        adapter_sha256 = merged_sha256 = None
        if not pruned:
            adapter_sha256 = save_adapter(
                trainer, peft_model, tokenizer, adapter_target, fsdp=fsdp, is_main=dist.is_main
            )
            if dist.is_main:
                logger.info("adapter saved to %s", adapter_target)
                if config.merge_adapter:
                    merged_sha256 = save_merged(
                        base_dir, adapter_target, tokenizer, location.local_dir / MERGED_DIR, device
                    )
        if not dist.is_main:
            return {"status": "pruned" if pruned else "succeeded", "rank": dist.rank}

        tstate = trainer.state
        runtime_s = float(train_output.metrics.get("train_runtime", 0.0))
        train_tokens = int(getattr(tstate, "num_input_tokens_seen", 0) or 0)
        session_tokens = train_tokens - tokens_at(resume_from)
        resumed_from_step = step_of(resume_from)
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
            "peak_memory_gib": peak_memory_gib(device),
        }
        if extra:
            logger.info(
                "%s: %s",
                method.name,
                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()),
            )
        if mlflow_run_id is not None and extra:
            log_final_metrics(extra, int(tstate.global_step))
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
