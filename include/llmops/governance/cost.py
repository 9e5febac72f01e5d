"""What a training job or search trial used, and what it cost at the spec's prices.

A job's ``result.json`` says how long the job process ran (``job_wall_s``; ``elapsed_s`` for a
failed job), on which device (``device``, ``hardware.accelerator``) and with how many processes
(``world_size``). The billed device count is what the job held: the GPUs its pod requested with
``launcher: kubernetes``, one GPU per process for a local CUDA job, one CPU job otherwise. Cost is
``wall hours x devices x price per device-hour``; a device without a price is recorded with its
usage and no cost (never a guess). Everything here is plain arithmetic on dicts: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.specs.schema import price_key

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import CostSpec

GPU_DEVICES = frozenset({"cuda"})
ROUND = 6


def device_of(spec: PipelineSpec, result: dict[str, Any]) -> tuple[str, str, int]:
    """(kind, device type, billed count) of a job from its result and the spec's launcher.

    kind is "gpu" or "cpu"; the device type is the accelerator's name as a price key
    ("nvidia-h100-80gb-hbm3") or "cpu".
    """
    device = str(result.get("device") or "cpu")
    hardware = result.get("hardware") or {}
    training = spec.training
    requested = (
        training.kubernetes.gpus if training.launcher == "kubernetes" and training.kubernetes else None
    )
    if device in GPU_DEVICES:
        name = price_key(str(hardware.get("accelerator") or "gpu"))
        count = requested or max(int(result.get("world_size") or 1), 1)
        return "gpu", name, count
    if requested:  # a pod that asked for GPUs and ran on CPU still held them
        return "gpu", price_key(training.kubernetes.gpu_resource if training.kubernetes else "gpu"), requested
    return "cpu", "cpu", 1


def price_for(prices: dict[str, float], device_type: str, kind: str) -> tuple[float | None, str | None]:
    """The price per device-hour and the key it came from: the exact device, the longest key the
    device name starts with ('nvidia-h100' for 'nvidia-h100-80gb-hbm3'), then 'gpu' for a GPU."""
    if device_type in prices:
        return prices[device_type], device_type
    prefixes = [k for k in prices if device_type.startswith(k + "-")]
    if prefixes:
        key = max(prefixes, key=len)
        return prices[key], key
    if kind == "gpu" and "gpu" in prices:
        return prices["gpu"], "gpu"
    return None, None


def wall_seconds(result: dict[str, Any]) -> float | None:
    """How long the job process ran: ``job_wall_s``, else ``elapsed_s`` (failed jobs), else the
    trainer's runtime (results written before jobs reported their wall time)."""
    for key in ("job_wall_s", "elapsed_s", "train_runtime_s"):
        value = result.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


def job_usage(spec: PipelineSpec, name: str, kind: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """One job's usage and estimated cost (``cost`` None when unknown or unpriced, with ``note``)."""
    entry: dict[str, Any] = {"job": name, "kind": kind, "status": (result or {}).get("status")}
    if not result:
        unknown = {"wall_s": None, "device": None, "devices": 0, "device_hours": 0.0, "gpu_hours": 0.0}
        return {**entry, **unknown, "cost": None, "note": "no result.json: usage unknown"}
    device_kind, device_type, count = device_of(spec, result)
    wall = wall_seconds(result)
    hours = (wall or 0.0) / 3600
    entry.update(
        wall_s=None if wall is None else round(wall, 3),
        device=device_type,
        device_kind=device_kind,
        devices=count,
        device_hours=round(hours * count, ROUND),
        gpu_hours=round(hours * count, ROUND) if device_kind == "gpu" else 0.0,
        cost=None,
    )
    cost_spec: CostSpec | None = spec.cost
    if wall is None:
        entry["note"] = "the result does not say how long the job ran"
    elif cost_spec is None:
        entry["note"] = "no cost block in the spec: usage only"
    else:
        price, key = price_for(cost_spec.prices_per_hour, device_type, device_kind)
        if price is None:
            entry["note"] = f"no price for device '{device_type}' in cost.prices_per_hour"
        else:
            entry.update(price_per_hour=price, price_key=key, cost=round(hours * count * price, ROUND))
    return entry


def totals(spec: PipelineSpec, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over jobs; ``cost`` counts priced jobs only and ``unpriced_jobs`` says how many were not."""
    cost_spec = spec.cost
    priced = [j for j in jobs if j.get("cost") is not None]
    total_cost = round(sum(j["cost"] for j in priced), ROUND)
    out: dict[str, Any] = {
        "jobs": len(jobs),
        "wall_hours": round(sum((j.get("wall_s") or 0.0) for j in jobs) / 3600, ROUND),
        "device_hours": round(sum(j.get("device_hours") or 0.0 for j in jobs), ROUND),
        "gpu_hours": round(sum(j.get("gpu_hours") or 0.0 for j in jobs), ROUND),
        "cost": total_cost if cost_spec is not None else None,
        "currency": cost_spec.currency if cost_spec is not None else None,
        "unpriced_jobs": len(jobs) - len(priced),
        "budget": cost_spec.budget if cost_spec is not None else None,
    }
    out["budget_exceeded"] = bool(
        cost_spec and cost_spec.budget is not None and total_cost >= cost_spec.budget
    )
    return out


def budget_left(spec: PipelineSpec, spent: float) -> float | None:
    """What is left of the run's budget (may be negative); None without a budget."""
    if spec.cost is None or spec.cost.budget is None:
        return None
    return round(spec.cost.budget - spent, ROUND)
