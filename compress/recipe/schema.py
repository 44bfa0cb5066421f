"""The typed recipe schema. Each stage's config is the very object the CLI verb and Python API use.

Example:
    >>> recipe_model().model_validate({"model": {"source": "zoo:mnist_cnn"}, "stages": [{"quantize": {}}]}).stage_list[0][0]
    'quantize'
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, model_validator

from compress.steps.gates import max_degradation_field
from compress.limits import MAX_EPOCHS, MAX_SAMPLES, MAX_SEED
from compress.passes.registry import PASSES, on_register
from compress.tune.config import SearchSpace



class _StageConfigs(Mapping):
    """stage name -> "module:ConfigClass", read from the pass registry; one definition, three faces (CLI, API, recipe)."""

    def __getitem__(self, kind: str) -> str:
        return PASSES[kind].config_path()

    def __iter__(self):
        return iter(PASSES)

    def __len__(self) -> int:
        return len(PASSES)


STAGE_CONFIGS: Mapping[str, str] = _StageConfigs()


def stage_config_class(kind: str) -> type[BaseModel]:
    return PASSES[kind].config_class()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `.nan` or `.inf` in a recipe is a typo


class ModelSection(Strict):
    source: str = Field(..., description="zoo:NAME (trained or reused), or a path to a model file.")
    arch: str | None = Field(None, description="For a state_dict: a zoo name, or package.module:Class (imported only with --trust-code).")
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shapes: list[str] = Field(default_factory=list, description="Like 1x3x64x64 or name=1x12:int64.")
    batch_axes: dict[str, int] = Field(default_factory=dict, description="Inputs whose batch is not on axis 0, like {state: 1}.")
    state: dict[str, str] = Field(default_factory=dict, description="Inputs fed back from outputs, like {state: output_1}.")
    trust_pickle: bool = Field(False, description="The model is a pickle; loading it still needs --trust-pickle on the command line.")
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description=f"zoo: training epochs (default: the model's own; at most {MAX_EPOCHS:,}).")
    output_kinds: dict[str, Literal["classes", "probabilities", "embedding", "regression", "state"]] = Field(
        default_factory=dict, description="Declared kind per output name (default: inferred), e.g. {emb: embedding}.")


class DataSection(Strict):
    name: str | None = Field(None, description="Dataset name, .npz, image folder or package.module:function (imported only with --trust-code).")
    calib_samples: int = Field(256, ge=1, le=MAX_SAMPLES, description=f"Calibration samples from train+val (at most {MAX_SAMPLES:,}).")


class Gates(Strict):
    enabled: bool = Field(True, description="false: judge nothing (like --no-gate); the report says gates were off.")
    max_degradation: float | None = max_degradation_field()
    min_fidelity: dict[str, float] = Field(default_factory=dict, description=(
        "Extra floors on every output that has the measure, e.g. {top1_agreement: 0.99, sqnr_db: 25, cosine: 0.99}."))
    max_size_bytes: int | None = Field(None, ge=1)
    max_latency_ms: dict[str, float] = Field(default_factory=dict, description="target -> p50 limit, e.g. {local: 2.0}.")

    @model_validator(mode="after")
    def _known_fidelity(self) -> "Gates":
        from compress.data.outputs import FLOOR_MEASURES

        unknown = set(self.min_fidelity) - set(FLOOR_MEASURES)
        if unknown:
            raise ValueError(f"unknown fidelity measure {sorted(unknown)[0]!r}; use {', '.join(FLOOR_MEASURES)}")
        return self

    def policy(self):
        """The compress.steps.gates.GatePolicy these settings mean."""
        from compress.steps.gates import GatePolicy

        return GatePolicy(enabled=self.enabled, max_degradation=self.max_degradation, min_fidelity=dict(self.min_fidelity),
                          max_size_bytes=self.max_size_bytes, max_latency_ms=dict(self.max_latency_ms))


class Output(Strict):
    dir: str = "runs/recipe"


class RecipeBase(Strict):
    """A compression pipeline kept in git (``stages`` is typed per kind by :func:`recipe_model`)."""

    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    targets: list[str] = Field(default_factory=lambda: ["local"])
    gates: Gates = Field(default_factory=Gates)
    output: Output = Field(default_factory=Output)
    seed: int = Field(0, ge=0, le=MAX_SEED, description=f"Seed of data splits, calibration subsets and training (0 to {MAX_SEED:,}).")
    search: SearchSpace | None = Field(None, description="Search space for `compress tune --search THIS_FILE`; `compress run` ignores it.")

    @model_validator(mode="after")
    def _data_calib_samples(self) -> "RecipeBase":
        """``data.calib_samples`` is what every stage that calibrates uses, unless the stage sets its own."""
        for _, config in self.stage_list if hasattr(self, "stages") else []:
            if "calib_samples" in type(config).model_fields and "calib_samples" not in config.model_fields_set:
                config.calib_samples = self.data.calib_samples
        return self

    @model_validator(mode="after")
    def _stages_fit_a_language_model(self) -> "RecipeBase":
        """A decoder LM source takes one quantize_lm stage, and quantize_lm takes only a decoder LM."""
        from compress.recipe.lm_fit import lm_recipe_problem

        problem = lm_recipe_problem(self) if hasattr(self, "stages") else None
        if problem:
            raise ValueError(problem)
        return self

    @property
    def stage_list(self) -> list[tuple[str, BaseModel]]:
        """``[(kind, config), ...]`` in order."""
        return [(kind, getattr(stage, kind)) for stage in self.stages for kind in type(stage).model_fields]

    def resolved(self) -> dict:
        """The recipe with every default filled in (what the manifest records)."""
        return self.model_dump(mode="json")


def _stage_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


@functools.lru_cache(maxsize=1)
def recipe_model() -> type[RecipeBase]:
    """Build the Recipe class: ``stages`` is a list of one-key mappings, each typed by its kind."""
    variants = []
    for kind in STAGE_CONFIGS:
        stage = create_model(f"{kind.title()}Stage", __config__=ConfigDict(extra="forbid"), **{kind: (stage_config_class(kind), ...)})
        variants.append(Annotated[stage, Tag(kind)])
    union = Annotated[Union[tuple(variants)], Discriminator(_stage_kind, custom_error_type="unknown_stage",
                      custom_error_message=f"a stage is one mapping like '- quantize: {{...}}' with one of: {', '.join(STAGE_CONFIGS)}")]
    return create_model("Recipe", __base__=RecipeBase, stages=(list[union], Field(..., min_length=1)))


on_register(recipe_model.cache_clear)


def recipe_json_schema() -> dict:
    """JSON Schema for editors and `compress recipe schema`."""
    return recipe_model().model_json_schema()
