"""The tune settings and the search space (narrowed or widened by a YAML `search:` block, `compress tune --search`).

Example:
    >>> TuneConfig(max_degradation=0.005, budget="10m").budget_seconds
    600.0
"""
from __future__ import annotations

import copy
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from compress.steps.gates import degradation_limit, max_degradation_field
from compress.limits import MAX_TRIALS, MAX_WORKERS
from compress.passes.registry import search_fields, search_options


def _one_of(spec: dict):
    """The type of one choice among ``spec``'s options: a Literal for a fixed list, a string checked against the
    options when validated for options read from the records (a precision registered after import is among them)."""
    if not isinstance(spec["options"], str):
        return Literal[tuple(spec["options"])]

    def check(value: str) -> str:
        allowed = search_options(spec)
        if value not in allowed:
            raise ValueError(f"{value!r} is not searchable; choose from {', '.join(allowed)}")
        return value

    return Annotated[str, AfterValidator(check)]


def _search_field(spec: dict, info) -> tuple:
    """The SearchSpace field for one searchable pass field (see ``compress.passes.registry.searchable``)."""
    default, description = spec["default"], spec.get("description")
    if spec["kind"] == "max":
        return int, Field(default, ge=0, le=spec["le"], description=description)
    item = _one_of(spec) if "options" in spec else info.annotation
    item = Annotated[item, *info.metadata] if info.metadata and "options" not in spec else item
    if spec["kind"] == "range":
        return tuple[item, item], Field(tuple(default), description=description)
    return list[item], Field(default_factory=lambda: copy.deepcopy(default), min_length=0 if "off" in spec else 1, description=description)


class SearchBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _valid_for_the_pass(self) -> "SearchBase":
        """Each choice is a valid value of its pass field (its own validators run); a range is [low, high] with low <= high."""
        for spec, field_name, search in search_fields():
            value, config = getattr(self, search["name"]), spec.config_class()
            unset = {"formats": []} if "formats" in config.model_fields else {}  # TuneConfig checks choices per format
            if search["kind"] == "range" and value[0] > value[1]:
                raise ValueError(f"{search['name']} {list(value)}: give [low, high] with low <= high")
            if search["kind"] == "choices" and "options" not in search:
                for choice in value:
                    try:
                        config.__pydantic_validator__.validate_assignment(config.model_construct(**unset), field_name, choice)
                    except ValidationError as exc:
                        raise ValueError(f"{search['name']} {choice!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        return self


def build_search_space() -> type[SearchBase]:
    """The SearchSpace class: one field per searchable field of the registered passes, named and bounded by it."""
    fields = {search["name"]: _search_field(search, spec.config_class().model_fields[name]) for spec, name, search in search_fields()}
    space = create_model("SearchSpace", __base__=SearchBase, **fields)
    space.__doc__ = "Choices each trial draws from (from the passes' searchable fields). An empty ``prune_methods`` switches pruning off."
    return space


SearchSpace = build_search_space()


def encode_dynamic_ops(ops: list[str]) -> str:
    """A hashable Optuna choice for a list of op types: ``"none"`` or ``"MatMul+Gemm"``."""
    return "+".join(ops) or "none"


def decode_dynamic_ops(choice: str) -> list[str]:
    return [] if choice == "none" else choice.split("+")


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_degradation: float | None = max_degradation_field()
    objective: Literal["size", "latency", "both"] = Field(
        "both", description="both: size and latency (Pareto); the winner is the smallest no slower than plain int8 PTQ.")
    format: str = Field("onnx", description="The format trials write (any format compress quantize produces).")
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
        return degradation_limit(self.max_degradation)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from compress.backends import quantizable

        if value not in quantizable():
            raise ValueError(f"unknown format {value!r}; choose from {', '.join(quantizable())}")
        return value

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
    def _calibrations_of_the_format(self) -> "TuneConfig":
        """Each searched calibration method has an implementation for the format the trials write."""
        from compress.backends.calibration import check_calibration

        for name in getattr(self.search, "calibrations", []):
            try:
                check_calibration(name, self.format)
            except ValueError as exc:
                raise ValueError(f"search calibrations {name!r}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _precisions_of_the_format(self) -> "TuneConfig":
        """Each searched precision has a quantizer in the format the trials write."""
        from compress.catalog import PRECISIONS

        for name in getattr(self.search, "precisions", []):
            if self.format not in PRECISIONS[name].formats:
                raise ValueError(f"search precisions {name!r}: the {self.format} format has no quantizer for it; "
                                 f"formats that do: {', '.join(PRECISIONS[name].formats) or 'none'}")
        return self

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
