"""`compress recipe validate|schema|init` and `compress run`: reproducible YAML pipelines."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from compress.commands._common import (
    DEBUG_OPTION, JSON_OPTION, TRUST_CODE_FROM_OPTION, TRUST_CODE_OPTION, TRUST_PICKLE_OPTION, console, emit, handle_errors, stdout_console,
)

recipe_app = typer.Typer(help="Recipes: validate a pipeline file, print its JSON Schema, start a new one.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
    app.command("run")(run)


@recipe_app.command("validate")
def validate(file: Path = typer.Argument(..., help="Recipe YAML."), json_out: bool = JSON_OPTION, debug: bool = DEBUG_OPTION) -> None:
    """Check a recipe without running it; errors point at file:line:column. The data is checked against the model's
    inputs (array names, dtypes, shapes: one line per mismatch, exit 2). Lists the code it would import
    (``compress run`` needs --trust-code or --trust-code-from for it).

    Example: compress recipe validate recipes/mnist_cnn.yaml
    """
    from compress.recipe import load_recipe
    from compress.recipe.trust import code_imports

    with handle_errors(debug, json_out):
        recipe = load_recipe(file)
        imports = code_imports(recipe)
        data_check = check_data(file, recipe)
        document = {"valid": True, "imports": [{"field": i.field, "name": i.name} for i in imports],
                    "trust_pickle": recipe.model.trust_pickle, "data_check": data_check, "recipe": recipe.resolved()}
        emit(document, json_out, lambda: _print_validation(file, recipe, imports, data_check))


def check_data(file: Path, recipe) -> str:
    """Raise a UsageError, one line per mismatch, when the recipe's data does not fit its model's inputs; else say
    what was checked (or why not)."""
    from compress.errors import UsageError
    from compress.recipe.data_fit import data_mismatches, recipe_inputs

    from compress.recipe.lm_fit import is_lm_recipe

    if is_lm_recipe(recipe):
        return "data: compress's held-out text (a language model is judged on perplexity in each file's runtime)"
    name = recipe.data.name
    if name is None:
        own = recipe.model.source.startswith("zoo:")
        return "data: the zoo model's own dataset" if own else "no data: random inputs, judged by fidelity only"
    spec = recipe_inputs(recipe)
    if isinstance(spec, str):
        return f"data not checked against the model: {spec}"
    problems = data_mismatches(spec, name)
    if problems is None:
        return f"data {name}: not checked here (an image folder is resized to the model; a callable runs only with --trust-code)"
    if problems:
        raise UsageError("\n".join(f"{file}: data {name}: {problem}" for problem in problems))
    return f"data {name} fits the model's inputs ({', '.join(spec.names)})"


def _print_validation(file: Path, recipe, imports, data_check: str) -> None:
    from rich.table import Table

    stdout_console.print(f"{file}: valid ({len(recipe.stages)} stages: {', '.join(k for k, _ in recipe.stage_list)}); {data_check}",
                         highlight=False, soft_wrap=True, markup=False)
    if imports:
        table = Table(title="code this recipe imports and runs (compress run needs --trust-code or --trust-code-from)")
        table.add_column("field")
        table.add_column("imports")
        for item in imports:
            table.add_row(item.field, item.name)
        stdout_console.print(table)
    if recipe.model.trust_pickle:
        stdout_console.print("model.trust_pickle: the model is a pickle; compress run needs --trust-pickle")


@recipe_app.command("schema")
def schema() -> None:
    """Print the recipe JSON Schema (for editor completion).

    Example: compress recipe schema > recipe.schema.json
    """
    from compress.recipe import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


@recipe_app.command("init")
def init(model: str = typer.Option("mnist_cnn", "--model", "-m", help="Zoo name or model path."), debug: bool = DEBUG_OPTION) -> None:
    """Print a commented starter recipe.

    Example: compress recipe init --model mnist_cnn > mnist.yaml
    """
    from compress.recipe.starter import starter_recipe

    with handle_errors(debug):
        typer.echo(starter_recipe(model), nl=False)


def run(
    file: Path = typer.Argument(..., help="Recipe YAML."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: the recipe's output.dir)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage instead of reusing unchanged ones."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a value: stages.1.quantize.calibration=entropy (repeatable)."),
    trust_code: bool = TRUST_CODE_OPTION,
    trust_code_from: list[str] = TRUST_CODE_FROM_OPTION,
    trust_pickle: bool = TRUST_PICKLE_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Run a recipe: stages in order (cached, resumable), gates on the real artifacts, report + manifest.

    A recipe is data: package.module:Name entries (model.arch, data.name, a distill student) run only with
    --trust-code or --trust-code-from PKG, and a pickled model only with --trust-pickle.

    Example: compress run recipes/mnist_cnn.yaml --set stages.1.quantize.calibration=entropy
    """
    from compress.commands._progress import step_progress
    from compress.commands._render import artifact_table
    from compress.errors import GateFailed
    from compress.recipe import load_recipe
    from compress.recipe.run import run_recipe
    from compress.recipe.trust import Trust

    with handle_errors(debug, json_out):
        recipe = load_recipe(file, overrides)
        trust = Trust(code=trust_code, roots=tuple(trust_code_from or ()), pickle=trust_pickle)
        with step_progress(transient=json_out) as step:
            result = run_recipe(recipe, out, force=force, step=step, recipe_path=str(file), trust=trust,
                                say=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
        emit(result.report, json_out, lambda: stdout_console.print(artifact_table(result.report, result.run_dir)))
        if not result.report["passed"]:
            from compress.steps.gates import failure_message

            raise GateFailed(failure_message(result.report, result.run_dir))
