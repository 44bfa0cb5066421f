"""Unbounded work from small inputs, through the real CLI in a subprocess: an alias bomb, a document nested 100,000
deep, a key given twice, an explosive shape expression and a numeric option far out of range are each answered
within the subprocess timeout with exit 2, one stderr line naming what to fix, no traceback, with --json exactly
one error document on stdout, and nothing written."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANSWER_WITHIN_S = 120  # a hang is a timeout failure here; a refusal takes seconds (the imports, on a loaded machine)


def compress(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "compress", *map(str, args)], capture_output=True, text=True,
                          timeout=ANSWER_WITHIN_S, env=env, cwd=cwd)


def refused(result: subprocess.CompletedProcess, json_out: bool) -> str:
    """Assert exit 2, one stderr line without traceback, and the one JSON error document (--json); the line."""
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-500:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    if json_out:
        assert json.loads(result.stdout) == {"error": lines[0].removeprefix("error: "), "exit_code": 2}
    else:
        assert result.stdout.strip() == ""
    return lines[0]


# --- YAML: alias bombs, nesting, keys given twice ----------------------------------------------------------------------

def billion_laughs() -> str:
    """14 lines standing for 9^9 (387 million) strings under model.arch_kwargs."""
    lines = ["model:", "  source: zoo:mnist_cnn", "  arch_kwargs:", "    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    {chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines + ["stages:", "  - quantize: {formats: [onnx]}"]) + "\n"


RECIPES = {
    "alias bomb": (billion_laughs(), ":9:8: stands for more than 100,000 values once its aliases are expanded"),
    "model twice": ("model: {source: zoo:mnist_cnn}\nstages: [{quantize: {}}]\nmodel: {source: zoo:cnn64}\n",
                    ":3:1: key 'model' given twice (first on line 1); keep one"),
    "nested key twice": ("model: {source: zoo:mnist_cnn}\nstages:\n  - quantize:\n      calibration: minmax\n"
                         "      formats: [onnx]\n      calibration: entropy\n",
                         ":6:7: key 'calibration' given twice (first on line 4); keep one"),
    "nested 100,000 deep": ("model: {source: zoo:mnist_cnn, arch_kwargs: {a: " + "[" * 100_000 + "]" * 100_000 + "}}\n"
                            "stages: [{quantize: {}}]\n", ":1:246: nested deeper than 200 levels"),
    "alias inside itself": ("model: {source: zoo:mnist_cnn, arch_kwargs: {a: &loop [1, *loop]}}\nstages: [{quantize: {}}]\n",
                            "an alias refers to a collection that contains it"),
}


@pytest.mark.parametrize("verb", [("recipe", "validate"), ("run",)], ids=["validate", "run"])
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", list(RECIPES))
def test_hostile_recipe_is_refused_in_seconds_naming_the_line(case, verb, json_out, tmp_path):
    text, message = RECIPES[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    line = refused(compress(*verb, recipe, *(["--json"] if json_out else []), cwd=tmp_path), json_out)
    assert f"{recipe}{message}" in line if message.startswith(":") else message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]  # no run directory (output.dir is runs/recipe)


def test_alias_bomb_in_a_set_override_is_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {source: zoo:mnist_cnn}\nstages: [{quantize: {formats: [onnx]}}]\n")
    bomb = "[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
           "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    line = refused(compress("run", recipe, "--set", f"model.arch_kwargs.a={bomb}", "--out", tmp_path / "run", "--json"), True)
    assert line.startswith("error: --set 'model.arch_kwargs.a=[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,...e,*e,*e,*e,*e]]': ")
    assert "stands for more than 100,000 values" in line and len(line) < 300
    assert not (tmp_path / "run").exists()


def test_the_shipped_recipes_still_validate():
    """Anchors and merge keys within the bounds stay legal; the recipes in recipes/ use no key twice."""
    for recipe in sorted((REPO / "recipes").glob("*.yaml"))[:3]:
        assert compress("recipe", "validate", recipe).returncode == 0, recipe


@pytest.mark.parametrize("line, message", [
    ("gates: {min_fidelity: {sqnr_db: .nan}}", ":3:33: gates.min_fidelity.sqnr_db: Input should be a finite number"),
    ("gates: {max_latency_ms: {local: .inf}}", ":3:33: gates.max_latency_ms.local: Input should be a finite number"),
    ("seed: 99999999999999", ":3:7: seed: Input should be less than or equal to 4294967295"),
])
def test_recipe_numbers_are_finite_and_in_range(line, message, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{source: zoo:mnist_cnn}}\nstages: [{{quantize: {{}}}}]\n{line}\n")
    assert f"{recipe}{message}" in refused(compress("recipe", "validate", recipe, "--json"), True)


def test_anchors_and_merge_keys_within_the_budget_still_work(tmp_path):
    recipe = tmp_path / "shared.yaml"
    recipe.write_text("model: {source: zoo:mnist_cnn}\nstages:\n  - quantize: &q {formats: [onnx], calibration: entropy}\n"
                      "  - quantize:\n      <<: *q\n      calibration: minmax\n")
    assert compress("recipe", "validate", recipe).returncode == 0


# --- JSON nested 100,000 deep: report.json, --arch-kwargs -------------------------------------------------------------

DEEP_JSON = '{"schema_version": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_report_nested_100000_deep_is_refused(tmp_path, json_out):
    report = tmp_path / "report.json"
    report.write_text(DEEP_JSON)
    if json_out:  # `report validate` has no --json; `report compare` has
        for run in ("a", "b"):
            (tmp_path / run).mkdir()
            (tmp_path / run / "report.json").write_text(DEEP_JSON)
        line = refused(compress("report", "compare", tmp_path / "a", tmp_path / "b", "--json"), True)
    else:
        line = refused(compress("report", "validate", report), False)
    assert "nested deeper than 200 levels" in line and "report.json" in line


def test_arch_kwargs_nested_100000_deep_is_refused(tmp_path, zoo_checkpoint):
    model = zoo_checkpoint("mnist_cnn", epochs=1)
    line = refused(compress("quantize", model, "--arch-kwargs", "width=" + "[" * 100_000, "--no-bench",
                            "--out", tmp_path / "run", "--json"), True)
    assert "nested deeper than 200 levels" in line
    assert not (tmp_path / "run").exists()


def test_stage_marker_nested_100000_deep_is_refused_on_resume(zoo_checkpoint, tmp_path, cli):
    model = zoo_checkpoint("mnist_cnn", epochs=1, width=0.25)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{source: {model}}}\nstages:\n  - prune: {{method: l1-structured, sparsity: 0.25}}\n"
                      f"  - evaluate: {{}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    assert cli("run", recipe).exit_code == 0
    marker = next((tmp_path / "run").glob(".stages/00-prune-*/stage.json"))
    marker.write_text(DEEP_JSON)
    report = (tmp_path / "run" / "report.json").read_bytes()
    line = refused(compress("run", recipe, "--json"), True)
    assert f"{marker} is not JSON compress reads (nested deeper than 200 levels" in line
    assert (tmp_path / "run" / "report.json").read_bytes() == report


# --- shape expressions on the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape, message", [
    ("batch + 10**10**9", "bad --input-shape 'batch + 10**10**9': write dimensions like 1x3x64x64"),
    ("1x" + "9" * 5000, "bad --input-shape"),
    ("1x99999999999999x99999999", "more than 268,435,456 values per sample"),
])
def test_explosive_input_shape_is_refused_in_seconds(shape, message, tmp_path, zoo_checkpoint):
    model = zoo_checkpoint("mnist_cnn", epochs=1)
    line = refused(compress("quantize", model, "--input-shape", shape, "--no-bench", "--out", tmp_path / "run", "--json"), True)
    assert message in line
    assert not (tmp_path / "run").exists()


# --- numeric options: every one finite and in range -------------------------------------------------------------------

NUMERIC = [  # (verb and its required arguments, option, value, the range the line names)
    (("bench", "ARTIFACT"), "--runs", "1000000000", "give 1 to 100,000 runs"),
    (("bench", "ARTIFACT"), "--batch", "1000000000", "give 1 to 65,536 samples"),
    (("bench", "ARTIFACT"), "--seconds", "nan", "give a number above 0, at most 86,400 seconds (got nan)"),
    (("bench", "ARTIFACT"), "--seconds", "inf", "(got inf)"),
    (("bench", "ARTIFACT"), "--warmup", "-1", "give 0 to 100,000 runs"),
    (("bench", "ARTIFACT"), "--threads", "0", "give 1 to 1,024 threads"),
    (("bench", "ARTIFACT"), "--peak-gops", "-inf", "give a number above 0"),
    (("bench", "ARTIFACT", "--target", "ssh://pi@board"), "--timeout", "0", "give a number above 0, at most 86,400 seconds"),
    (("fleet", "RECIPE"), "--workers", "0", "give 1 to 1,024 workers"),
    (("fleet", "RECIPE"), "--cpus-per-recipe", "-1", "give 1 to 1,024 CPUs"),
    (("quantize", "MODEL"), "--runs", "1" + "0" * 400, "give 1 to 100,000 runs (got 10000000000000000000...)"),
    (("quantize", "MODEL"), "--calib-samples", "0", "give 1 to 1,000,000 samples"),
    (("quantize", "MODEL"), "--max-degradation", "nan", "give 0 to 1"),
    (("quantize", "MODEL"), "--seed", "-1", "give 0 to 4,294,967,295"),
    (("prune", "MODEL"), "--sparsity", "inf", "give 0 to 0.999"),
    (("prune", "MODEL"), "--lr", "-1", "give a number above 0, at most 10"),
    (("qat", "MODEL"), "--weight-bits", "1", "give 2 to 8 bits"),
    (("qat", "MODEL"), "--freeze-bn-after", "100000", "give 1 to 10,000 epochs"),
    (("distill", "--teacher", "MODEL", "--student", "mnist_cnn:width=0.5"), "--temperature", "nan", "give a number above 0"),
    (("distill", "--teacher", "MODEL", "--student", "mnist_cnn:width=0.5"), "--feature-weight", "1e300", "give 0 to 1,000"),
    (("tune", "MODEL"), "--trials", "0", "give 1 to 100,000 trials"),
    (("tune", "MODEL"), "--workers", "100000", "give 1 to 1,024 workers"),
    (("verify", "ARTIFACT"), "--samples", "0", "give 1 to 1,000,000 samples"),
    (("verify", "ARTIFACT"), "--min-top1", "2", "give 0 to 1"),
    (("verify", "ARTIFACT"), "--min-sqnr", "nan", "give -1,000 to 1,000 dB"),
    (("verify", "ARTIFACT"), "--max-abs-error", "-1", "give 0 to 1e+30"),
    (("zoo", "train", "mnist_cnn"), "--width", "nan", "give a number above 0, at most 16"),
    (("zoo", "train", "mnist_cnn"), "--epochs", "0", "give 1 to 10,000 epochs"),
]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Inputs the options refer to; they exist, so only the out-of-range number can be what is refused."""
    (tmp_path / "model.onnx").write_bytes(b"not parsed: the line is refused first")
    (tmp_path / "report.json").write_text('{"kept": true}')
    (tmp_path / "model.pt").write_bytes(b"not parsed either")
    (tmp_path / "recipe.yaml").write_text("model: {source: zoo:mnist_cnn}\nstages: [{quantize: {}}]\n")
    return {"ARTIFACT": tmp_path / "model.onnx", "MODEL": tmp_path / "model.pt", "RECIPE": tmp_path / "recipe.yaml"}


@pytest.mark.parametrize("verb, option, value, message", NUMERIC, ids=[f"{v[0]}{o}={x[:12]}" for v, o, x, _ in NUMERIC])
def test_numeric_option_out_of_range_is_one_line_exit_2(verb, option, value, message, files, tmp_path):
    json_out = NUMERIC.index((verb, option, value, message)) % 2 == 1  # both forms, each on half the options
    args = [files.get(a, a) for a in verb]
    out = ["--out", tmp_path / "run"] if verb[0] not in ("bench", "verify") else []
    line = refused(compress(*args, option, value, *out, *(["--json"] if json_out else [])), json_out)
    assert line.startswith(f"error: {option}: ") and message in line, line
    assert not (tmp_path / "run").exists() and (tmp_path / "report.json").read_text() == '{"kept": true}'


def test_every_numeric_option_of_every_verb_has_a_range():
    """bound_options refuses (KeyError) a numeric option missing from OPTION_BOUNDS; each one gets a range."""
    import typer

    from compress.cli import app
    from compress.commands._options import bound_options

    root = typer.main.get_command(app)
    bound_options(root)

    def numeric(command):
        for param in command.params:
            if getattr(getattr(param, "type_descriptor", None), "annotation", None) in (int, float) \
                    and param.param_type_name == "option":
                yield command.name, param
        for sub in getattr(command, "commands", {}).values():
            yield from numeric(sub)

    found = list(numeric(root))
    assert len(found) >= 30
    for name, param in found:
        assert param.bound.refusal(math.nan) and param.bound.refusal(math.inf), (name, param.opts)
        assert param.bound.refusal(param.bound.high * 2 + 1) and param.bound.refusal(param.bound.low - 1), (name, param.opts)
