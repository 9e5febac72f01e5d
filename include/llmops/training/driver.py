"""The job driver every training method shares: stage the inputs, load the base model exactly as a
real one is loaded (``from_pretrained``), train a LoRA adapter, measure eval loss before and after,
prove the base weights were left alone, and publish ``adapter/``, ``manifest.json`` and
``result.json`` (last) to ``output_dir``. A job whose inputs are encrypted works in a private
scratch folder and publishes ``adapter/``, ``checkpoints/`` and ``merged/`` encrypted
(:mod:`llmops.jobs.outputs`); the scratch folder is removed when the job ends, whatever happens.

Robustness: checkpoints (adapter, optimizer, scheduler, RNG) every ``save_steps`` under
``output_dir/checkpoints/`` (mirrored to object storage), resumed automatically by a rerun of
the same command. Early stopping, Optuna pruning and ``torchrun`` (DDP/FSDP) launches are
supported; in a distributed job only rank 0 writes outputs.

The driver (:func:`run_training`) is method-agnostic: a :class:`TrainerRecipe` says how rows are
read, which ``TrainingArguments`` subclass and ``Trainer`` are built and which extra figures an
evaluation yields (:mod:`llmops.training.sft`, :mod:`.cpt`, :mod:`.dpo`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops.jobs.inputs import JobInput, decrypted_inputs
from llmops.jobs.outputs import (
    OutputLocation,
    is_encrypted_dir,
    opened_model_dir,
    remove_work_dir,
    stored_model_dir,
)
from llmops.jobs.results import RESULT_FILE
from llmops.jobs.runtime import (
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
from llmops.jobs.scratch import is_encrypted, job_key_ring
from llmops.jobs.staging import fetch_file, model_weights_sha256
from llmops.training.checkpoints import (
    CHECKPOINTS_DIR,
    checkpoint_callback,
    latest_complete_checkpoint,
    prepare_checkpoints,
    training_fingerprint,
)
from llmops.training.manifest import MANIFEST_FILE, build_manifest
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


@dataclass
class _Job:
    """What the phases of one training job share once its inputs are staged."""

    config: TrainingJobConfig
    recipe: TrainerRecipe
    dist: DistributedContext
    location: OutputLocation
    base_dir: Path
    train_rows: list[dict[str, str]]
    eval_rows: list[dict[str, str]]
    data_files: dict[str, dict[str, Any]]
    device: str = "cpu"
    dtype: Any = None
    fsdp: bool = False
    base_sha256: str = ""
    fingerprint: str = ""

    @property
    def checkpoints_root(self) -> Path:
        return self.location.local_dir / CHECKPOINTS_DIR


@dataclass
class _Outcome:
    """What training and evaluation produced, before it is saved and reported."""

    base_eval: dict[str, Any]
    final_eval: dict[str, Any]
    train_output: Any
    pruned: bool
    trainable_params: int
    total_params: int
    base_unchanged: bool | None = None
    adapter_changed: bool | None = None
    adapter_sha256: str | None = None
    merged_sha256: str | None = None


def _output_location(
    config: TrainingJobConfig, dist: DistributedContext, base_dir: Path, stack: contextlib.ExitStack
) -> OutputLocation:
    """A job given encrypted inputs works in a private scratch folder (removed when the job ends,
    on success and on failure) and publishes adapter, checkpoints and merged model encrypted."""
    base_bytes = sum(p.stat().st_size for p in base_dir.rglob("*") if p.is_file())
    # Room for the checkpoints (adapter, optimizer state) and, when merged, a full model copy.
    needed = base_bytes if config.merge_adapter else base_bytes // 4
    location = OutputLocation.for_uri(config.output_dir, job_key_ring(), needed)
    if dist.local_rank == 0:
        stack.callback(remove_work_dir, location.local_dir)
    logger.info("outputs are written in %s and published encrypted to %s", location.local_dir, location.uri)
    return location


def _inputs_encrypted(config: TrainingJobConfig, inputs: list[JobInput]) -> bool:
    """Outputs are protected as the inputs they derive from: encrypted when any input is (the
    split files, or a chained stage's merged base model)."""
    if any(is_encrypted(fetch_file(item.location, item.field)) for item in inputs):
        return True
    return is_encrypted_dir(stored_model_dir(config.base_model_path, "base_model_path"))


def _stage_inputs(
    config: TrainingJobConfig, recipe: TrainerRecipe, dist: DistributedContext, stack: contextlib.ExitStack
) -> _Job:
    """Fetch the base model and data, read and check the rows (before torch is imported: a wrong
    path fails in seconds). An encrypted base model (a chained stage's merged model) is decrypted
    into a scratch folder that lives as long as `stack`."""
    if config.method != recipe.name:
        raise JobInputError(
            f"method: the job is {config.method!r} but was given to the {recipe.name!r} trainer"
        )
    check_launch(config, dist)
    if not dist.is_main:
        logging.getLogger("llmops").setLevel(logging.WARNING)  # one copy of each log line, from rank 0
    inputs = [
        JobInput(config.train_file, "train_file", config.train_sha256),
        JobInput(config.eval_file, "eval_file", config.eval_sha256),
    ]
    # The rows are read into memory here: the decrypted files are gone before the model loads.
    with decrypted_inputs(inputs) as (train_path, eval_path):
        train_rows = recipe.read_rows(train_path, "train_file")
        eval_rows = recipe.read_rows(eval_path, "eval_file")
        data_files = {
            "train_file": data_file_info(config.train_file, train_path, len(train_rows)),
            "eval_file": data_file_info(config.eval_file, eval_path, len(eval_rows)),
        }
    base_dir = stack.enter_context(opened_model_dir(config.base_model_path))
    encrypted = _inputs_encrypted(config, inputs)
    return _Job(
        config=config,
        recipe=recipe,
        dist=dist,
        location=_output_location(config, dist, base_dir, stack)
        if encrypted
        else OutputLocation.for_uri(config.output_dir),
        base_dir=base_dir,
        train_rows=train_rows,
        eval_rows=eval_rows,
        data_files=data_files,
    )


def _set_up_runtime(job: _Job) -> None:
    """Seed, device, dtype and the distributed strategy; the hashes that identify the job."""
    config, dist = job.config, job.dist
    if not dist.is_distributed:
        pin_single_gpu()  # before CUDA initialises

    import transformers

    quiet_libraries()
    # Raised inside TRL/PEFT for transformers 5's rename; nothing a job config can change.
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    transformers.set_seed(config.hyperparameters.seed)
    job.device = resolve_device(config.device)
    check_quantization_support(config.quantization, job.device)
    job.dtype = resolve_dtype(job.device)
    job.fsdp = config.distributed.strategy == "fsdp" and dist.is_distributed
    if job.fsdp and job.device != "cuda":
        raise JobInputError(
            "distributed.strategy: 'fsdp' needs CUDA devices (FSDP2 with NCCL); use 'ddp' on CPU"
        )
    logger.info(
        "data: %d train rows, %d eval rows; device=%s dtype=%s world_size=%d",
        len(job.train_rows),
        len(job.eval_rows),
        job.device,
        job.dtype,
        dist.world_size,
    )
    job.base_sha256 = model_weights_sha256(job.base_dir)
    files = {k: v["sha256"] for k, v in job.data_files.items()}
    job.fingerprint = training_fingerprint(config, job.base_sha256, files)


def _trainer_arguments(job: _Job, tokenizer: Any) -> Any:
    """The method's TrainingArguments, sized by its examples per epoch."""
    recipe, config = job.recipe, job.config
    examples = len(job.train_rows)
    if recipe.count_examples:
        examples = recipe.count_examples(config, tokenizer, job.train_rows)
        logger.info("%s: %d training examples per epoch", recipe.name, examples)
    return recipe.build_args(
        config,
        job.checkpoints_root,
        device=job.device,
        dtype=job.dtype,
        train_rows=examples,
        world_size=job.dist.world_size,
    )


def _resume_point(job: _Job, args: Any) -> Path | None:
    """The checkpoint to resume from (after the process group exists: ranks wait for rank 0)."""
    from accelerate import PartialState

    _ = args.device  # initialises the process group under torchrun (before any collective below)
    state = PartialState()
    with state.local_main_process_first():
        if state.is_local_main_process:
            job.location.local_dir.mkdir(parents=True, exist_ok=True)
            resume_from = prepare_checkpoints(job.location, job.fingerprint, job.config.resume)
        else:
            resume_from = latest_complete_checkpoint(job.checkpoints_root) if job.config.resume else None
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)
    return resume_from


def _load_model(job: _Job, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The base model on its device, and the packed-sequence isolation check when packing."""
    import torch

    config, dist = job.config, job.dist
    model = load_base_model(
        job.base_dir, job.device, quantization=config.quantization, local_rank=dist.local_rank
    )
    if job.device == "cuda" and config.quantization == "none" and not job.fsdp:
        model.to(torch.device("cuda", dist.local_rank if dist.is_distributed else 0))
    packing_check: dict[str, Any] = {"checked": False}
    if config.packing:
        if job.fsdp:
            packing_check["reason"] = "not probed under FSDP (the unsharded model is not on a device yet)"
        else:
            from llmops.training.packing import check_packed_isolation

            packing_check = check_packed_isolation(model, probe_sequences(config, tokenizer, job.train_rows))
    return model, packing_check


def _callbacks(job: _Job) -> tuple[list[Any], Any, Any]:
    """Checkpoint mirroring, step timing, early stopping and search pruning; (all, timing, pruning)."""
    config = job.config
    throughput = throughput_callback(job.device)
    callbacks: list[Any] = [checkpoint_callback(job.location, job.fingerprint), throughput]
    if config.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    pruning = None
    if config.hpo is not None:
        from llmops.training.hpo import pruning_callback

        pruning = pruning_callback(config.hpo, job.dist.is_main)
        callbacks.append(pruning)
    return callbacks, throughput, pruning


def _train(job: _Job, trainer: Any, resume_from: Path | None, pruning: Any) -> _Outcome:
    """Evaluate the base, train (or restore a finished run), evaluate the adapter, check integrity."""
    import torch

    config = job.config
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
    outcome = _Outcome(base_eval, final_eval, train_output, pruned, int(trainable_params), int(total_params))
    # Inside the MLflow run, so that a failed check marks the run FAILED. Under FSDP the
    # parameters are sharded after wrapping and the fingerprints are not comparable.
    if not job.fsdp:
        outcome.base_unchanged = bool(torch.equal(frozen_before, weights_fingerprint(frozen)))
        outcome.adapter_changed = not bool(torch.equal(trainable_before, weights_fingerprint(trainable)))
        if not outcome.base_unchanged:
            raise RuntimeError("integrity check failed: base model weights changed during LoRA training")
        if not outcome.adapter_changed and not pruned:
            raise RuntimeError("integrity check failed: adapter weights did not change during training")
    return outcome


def _save(job: _Job, trainer: Any, tokenizer: Any, outcome: _Outcome) -> None:
    """The adapter (every rank takes part under FSDP), and the merged model when a chain needs it."""
    if outcome.pruned:
        return
    target = job.location.local_dir / ADAPTER_DIR
    outcome.adapter_sha256 = save_adapter(
        trainer, trainer.model, tokenizer, target, fsdp=job.fsdp, is_main=job.dist.is_main
    )
    if job.dist.is_main:
        logger.info("adapter saved to %s", target)
        if job.config.merge_adapter:
            outcome.merged_sha256 = save_merged(
                job.base_dir, target, tokenizer, job.location.local_dir / MERGED_DIR, job.device
            )


def _figures(
    job: _Job, trainer: Any, outcome: _Outcome, throughput: Any, resume_from: Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flat numbers of the result and the manifest, and the method's own figures among them."""
    config, recipe, tstate = job.config, job.recipe, trainer.state
    runtime_s = float(outcome.train_output.metrics.get("train_runtime", 0.0))
    train_tokens = int(getattr(tstate, "num_input_tokens_seen", 0) or 0)
    session_tokens = train_tokens - tokens_at(resume_from)
    stopped_early = (
        not outcome.pruned
        and config.early_stopping_patience is not None
        and int(tstate.global_step) < int(tstate.max_steps)
    )
    extra = {
        **recipe.eval_metrics(outcome.final_eval, "eval_"),
        **recipe.eval_metrics(outcome.base_eval, "base_eval_"),
    }
    final_loss = outcome.final_eval["eval_loss"]
    flat: dict[str, Any] = {
        # Trainer's mean over the steps this attempt ran (all of them unless it resumed); an
        # attempt that resumed from the final checkpoint ran none and reports the logged losses.
        "train_loss": float(outcome.train_output.training_loss),
        "eval_loss": float(final_loss) if final_loss is not None else None,
        "base_eval_loss": float(outcome.base_eval["eval_loss"]),
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
        "train_rows": len(job.train_rows),
        "eval_rows": len(job.eval_rows),
        **extra,
        "trainable_params": outcome.trainable_params,
        "total_params": outcome.total_params,
        "peak_memory_gib": peak_memory_gib(job.device),
    }
    if extra:
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        logger.info("%s: %s", recipe.name, shown)
    return flat, extra


def _result(
    job: _Job,
    outcome: _Outcome,
    flat: dict[str, Any],
    packing_check: dict[str, Any],
    pruning: Any,
    mlflow_run_id: str | None,
    resume_from: Path | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest (reproducibility) and result.json (what the orchestrator reads)."""
    config, location, dist = job.config, job.location, job.dist
    adapter_uri = location.join(ADAPTER_DIR) if outcome.adapter_sha256 else None
    merged_uri = location.join(MERGED_DIR) if outcome.merged_sha256 else None
    manifest = build_manifest(
        config,
        status="pruned" if outcome.pruned else "succeeded",
        base_model_sha256=job.base_sha256,
        data_files=job.data_files,
        device=job.device,
        dtype=str(job.dtype).removeprefix("torch."),
        world_size=dist.world_size,
        library_versions=library_versions(),
        metrics=flat,
        adapter_uri=adapter_uri,
        adapter_sha256=outcome.adapter_sha256,
        merged_model_uri=merged_uri,
        merged_model_sha256=outcome.merged_sha256,
        resumed_from_step=step_of(resume_from),
        local_rank=dist.local_rank,
    )
    packing = (
        dict(job.recipe.packing)
        if job.recipe.packing is not None
        else {"enabled": config.packing, "strategy": "bfd" if config.packing else None, **packing_check}
    )
    result: dict[str, Any] = {
        **manifest,
        **flat,
        "adapter_path": adapter_uri,
        "merged_model_path": merged_uri,
        "manifest_path": location.join(MANIFEST_FILE),
        "checkpoints_path": location.join(CHECKPOINTS_DIR),
        "base_weights_unchanged": outcome.base_unchanged,
        "adapter_weights_changed": outcome.adapter_changed,
        "quantization": config.quantization,
        "distributed_strategy": config.distributed.strategy if dist.is_distributed else "none",
        "packing": packing,
        "hpo": pruning.summary() if pruning is not None else None,
        "mlflow_run_id": mlflow_run_id,
    }
    return manifest, result


def _publish(job: _Job, manifest: dict[str, Any], result: dict[str, Any], mlflow_run_id: str | None) -> None:
    """Artifacts first (encrypted file by file when the job's inputs were encrypted), the manifest,
    then result.json last (its presence means done). The manifest and result hold settings,
    hashes and figures, no record data, and stay plaintext for the orchestrator."""
    config, location = job.config, job.location
    if mlflow_run_id is not None and result["adapter_path"] and config.mlflow and config.mlflow.log_adapter:
        import mlflow

        # The tracking server's artifact store is protected by that store (server-side encryption
        # and access control), not by the lake's keys: docs/encryption_zones.md.
        mlflow.log_artifacts(str(location.local_dir / ADAPTER_DIR), artifact_path=ADAPTER_DIR)
    if location.remote:
        for folder in (ADAPTER_DIR, MERGED_DIR):
            if (location.local_dir / folder).is_dir():
                location.upload_tree(folder)
    location.write_json(MANIFEST_FILE, manifest)
    location.write_json(RESULT_FILE, result)


def run_training(config: TrainingJobConfig, method: TrainerRecipe) -> dict[str, Any]:
    """Run one LoRA job of ``method`` and return the result that is also written to ``result.json``.

    Every scratch folder the job decrypted into or wrote its plaintext outputs in is removed when
    it returns or fails."""
    with contextlib.ExitStack() as stack:
        return _run(config, method, stack)


def _run(config: TrainingJobConfig, method: TrainerRecipe, stack: contextlib.ExitStack) -> dict[str, Any]:
    job = _stage_inputs(config, method, DistributedContext.from_env(), stack)
    _set_up_runtime(job)
    tokenizer = load_tokenizer(job.base_dir)
    if config.chat_template:
        require_chat_template(tokenizer, job.base_dir)
    args = _trainer_arguments(job, tokenizer)
    resume_from = _resume_point(job, args)
    model, packing_check = _load_model(job, tokenizer)
    callbacks, throughput, pruning = _callbacks(job)
    mlflow_target = config.mlflow if job.dist.is_main else None
    with mlflow_run(mlflow_target, config.run_name) as mlflow_run_id:
        if mlflow_run_id is not None:
            log_dataset_inputs(job.data_files)
        trainer = method.build_trainer(config, args, model, tokenizer, job.train_rows, job.eval_rows)
        for callback in callbacks:
            trainer.add_callback(callback)
        outcome = _train(job, trainer, resume_from, pruning)
        _save(job, trainer, tokenizer, outcome)
        if not job.dist.is_main:
            return {"status": "pruned" if outcome.pruned else "succeeded", "rank": job.dist.rank}
        flat, extra = _figures(job, trainer, outcome, throughput, resume_from)
        if mlflow_run_id is not None and extra:
            log_final_metrics(extra, int(trainer.state.global_step))
        manifest, result = _result(job, outcome, flat, packing_check, pruning, mlflow_run_id, resume_from)
        _publish(job, manifest, result, mlflow_run_id)
    if job.location.remote and not job.location.encrypted:
        shutil.rmtree(job.location.local_dir, ignore_errors=True)  # everything is in object storage now
    resumed_from_step = step_of(resume_from)
    logger.info(
        "done (%s): train_loss=%.4f eval_loss=%s (base %.4f) steps=%d in %.1fs%s",
        result["status"],
        result["train_loss"],
        f"{result['eval_loss']:.4f}" if result["eval_loss"] is not None else "n/a",
        result["base_eval_loss"],
        result["global_step"],
        result["train_runtime_s"],
        f", resumed from step {resumed_from_step}" if resumed_from_step else "",
    )
    return result
