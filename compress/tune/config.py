"""The tune settings and the search space (extensible from a recipe's `search:` block).

Example:
    >>> TuneConfig(max_degradation=0.005, budget="10m").budget_seconds
    600.0
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SearchSpace(BaseModel):
    """Choices each trial draws from. Empty lists switch a dimension off."""

    model_config = ConfigDict(extra="forbid")

    precisions: list[Literal["int8", "int8-dynamic"]] = Field(default_factory=lambda: ["int8", "int8-dynamic"])
    calibrations: list[Literal["minmax", "percentile", "entropy"]] = Field(default_factory=lambda: ["minmax", "percentile", "entropy"])
    calib_samples: list[int] = Field(default_factory=lambda: [128, 256, 512])
    per_channel: list[bool] = Field(default_factory=lambda: [True, False])
    keep_float_max: int = Field(2, ge=0, description="Up to this many of the most sensitive layers stay in float.")
    prune_methods: list[Literal["none", "l1-structured", "magnitude"]] = Field(default_factory=lambda: ["none", "l1-structured"])
    prune_sparsity: tuple[float, float] = (0.2, 0.6)
    finetune_epochs: list[int] = Field(default_factory=lambda: [2, 4])


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_degradation: float = Field(..., ge=0, description="Metric loss allowed, as a fraction (0.005 = 0.5 pt).")
    objective: Literal["size", "latency", "both"] = "size"
    format: Literal["onnx", "tflite"] = "onnx"
    target: str = "local"
    budget: str | None = Field(None, description="Wall-clock budget like 10m, 90s, 1h.")
    trials: int | None = Field(None, ge=1)
    workers: int = Field(1, ge=1)
    executor: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="Ray cluster address (`auto` joins a running cluster).")
    seed: int = 0
    search: SearchSpace = Field(default_factory=SearchSpace)

    @field_validator("budget")
    @classmethod
    def _budget_format(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+(\.\d+)?[smh]", value):
            raise ValueError(f"budget {value!r}: write it like 90s, 10m or 1h")
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
