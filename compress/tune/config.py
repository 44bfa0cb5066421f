"""The tune settings and the search space (narrowed or widened by a YAML `search:` block, `compress tune --search`).

Example:
    >>> TuneConfig(max_degradation=0.005, budget="10m").budget_seconds
    600.0
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compress.limits import MAX_EPOCHS, MAX_LAYERS, MAX_SAMPLES, MAX_TRIALS, MAX_WORKERS


class SearchSpace(BaseModel):
    """Choices each trial draws from. An empty ``prune_methods`` switches pruning off."""

    model_config = ConfigDict(extra="forbid")

    precisions: list[Literal["int8", "int8-dynamic"]] = Field(default_factory=lambda: ["int8", "int8-dynamic"], min_length=1)
    calibrations: list[Literal["minmax", "percentile", "entropy"]] = Field(
        default_factory=lambda: ["minmax", "percentile", "entropy"], min_length=1)
    calib_samples: list[Annotated[int, Field(ge=1, le=MAX_SAMPLES)]] = Field(description=f"Calibration sample counts (each at most {MAX_SAMPLES:,}).", default_factory=lambda: [128, 256, 512], min_length=1)
    per_channel: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    dynamic_op_types: list[list[str]] = Field(default_factory=lambda: [[], ["MatMul", "Gemm"]], min_length=1, description=(
        "With int8: op types quantized dynamically, the rest static ([]: all static)."))
    keep_float_max: int = Field(2, ge=0, le=MAX_LAYERS, description=f"Up to this many of the most sensitive layers stay in float (at most {MAX_LAYERS:,}).")
    prune_methods: list[Literal["none", "l1-structured", "magnitude"]] = Field(default_factory=lambda: ["none", "l1-structured"])
    prune_sparsity: tuple[float, float] = (0.2, 0.6)
    finetune_epochs: list[Annotated[int, Field(ge=0, le=MAX_EPOCHS)]] = Field(description=f"Fine-tuning epochs after pruning (each at most {MAX_EPOCHS:,}).", default_factory=lambda: [2, 4], min_length=1)

    @field_validator("prune_sparsity")
    @classmethod
    def _sparsity_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1] < 1:
            raise ValueError(f"prune_sparsity {list(value)}: give [low, high] with 0 <= low <= high < 1")
        return value

    @field_validator("dynamic_op_types")
    @classmethod
    def _dynamic_op_types(cls, value: list[list[str]]) -> list[list[str]]:
        from compress.quantize import check_dynamic_op_types

        return [check_dynamic_op_types(ops) for ops in value]


def encode_dynamic_ops(ops: list[str]) -> str:
    """A hashable Optuna choice for a list of op types: ``"none"`` or ``"MatMul+Gemm"``."""
    return "+".join(ops) or "none"


def decode_dynamic_ops(choice: str) -> list[str]:
    return [] if choice == "none" else choice.split("+")


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_degradation: float | None = Field(None, ge=0, description=(
        "Metric loss allowed, as a fraction (0.005 = 0.5 pt; default 0.01 with labels). Without labels trials are judged "
        "by the fidelity floors of their outputs (compress.gates)."))
    objective: Literal["size", "latency", "both"] = Field(
        "both", description="both: size and latency (Pareto); the winner is the smallest no slower than plain int8 PTQ.")
    format: Literal["onnx", "tflite"] = "onnx"
    target: str = "local"
    budget: str | None = Field(None, description="Wall-clock budget like 10m, 90s, 1h.")
    trials: int | None = Field(None, ge=1, le=MAX_TRIALS, description=f"Number of trials (at most {MAX_TRIALS:,}).")
    workers: int = Field(1, ge=1, le=MAX_WORKERS, description=f"Trials run at once (at most {MAX_WORKERS:,}).")
    executor: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="Ray cluster address (`auto` joins a running cluster).")
    seed: int = 0
    search: SearchSpace = Field(default_factory=SearchSpace)

    @property
    def degradation_limit(self) -> float:
        """The limit trials with labels are judged by (the gates' default when none was given)."""
        from compress.gates import DEFAULT_MAX_DEGRADATION

        return DEFAULT_MAX_DEGRADATION if self.max_degradation is None else self.max_degradation

    @field_validator("budget")
    @classmethod
    def _budget_format(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+(\.\d+)?[smh]", value):
            raise ValueError(f"budget {value!r}: write it like 90s, 10m or 1h")
        return value

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        from compress.errors import UsageError
        from compress.targets.base import target_class

        try:
            target_class(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> "TuneConfig":
        if self.budget is None and self.trials is None:
            self.trials = 20
        return self

    @property
    def budget_seconds(self) -> float | None:
        if self.budget is None:
            return None
        return float(self.budget[:-1]) * {"s": 1, "m": 60, "h": 3600}[self.budget[-1]]
