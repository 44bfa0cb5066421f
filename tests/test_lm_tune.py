"""`compress tune` on a decoder language model, as a user runs it: a tiny Llama directory, per-layer precision as the
search space (the most sensitive layers kept at int8, the embedding table's precision), each trial an ONNX file
verified on held-out text in onnxruntime and judged by its perplexity gate; the winner kept with its tokenizer (so
`compress generate` runs it) and written back as a recipe that validates; settings a language model does not take
exit 2 with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli_checks import json_output, one_line
from tests.lm_models import hf_dir

SEARCH = """search:
  lm_precisions: [int4-weight]
  lm_algorithms: [rtn]
  lm_block_sizes: [32]
  lm_keep_int8_max: 2
  lm_embeddings: [fp32, int8-weight]
"""


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")


@pytest.fixture(scope="module")
def tuned(llama_dir, tmp_path_factory, cli):
    folder = tmp_path_factory.mktemp("tune")
    (folder / "search.yaml").write_text(SEARCH)
    done = cli("tune", llama_dir, "--objective", "size", "--trials", "3", "--max-degradation", "0.05",
               "--search", folder / "search.yaml", "--json", "--out", folder / "out")
    return json_output(done), folder / "out"


def test_trials_follow_the_sensitivity_ranking(tuned):
    document, out = tuned
    study = json.loads((out / "tune.json").read_text())
    ranking = [r["layer"] for r in study["ranking"]]
    kls = [r["kl"] for r in study["ranking"]]
    assert kls == sorted(kls, reverse=True) and "lm_head" in ranking and len(ranking) == 15  # 2 x 7 linears + head
    assert len(study["trials"]) == 3 and len({json.dumps(t["params"]) for t in study["trials"]}) == 3
    for trial in study["trials"]:
        assert trial["verified_in"] == ["onnxruntime"]
        report = json.loads((Path(trial["folder"]) / "report.json").read_text())
        layers = {c["name"]: c["precision"] for c in report["artifacts"][0]["layers"]}
        kept = trial["params"]["keep_int8"]
        assert [layers[name] for name in ranking] == ["int8-weight"] * kept + ["int4-weight"] * (len(ranking) - kept)
        assert layers["model.embed_tokens"] == trial["params"]["embeddings"]


def test_the_smallest_passing_trial_wins_and_runs(tuned, cli):
    document, out = tuned
    study = json.loads((out / "tune.json").read_text())
    passing = [t for t in study["trials"] if t["passed"]]
    assert passing and document["best"]["number"] == min(passing, key=lambda t: t["size_bytes"])["number"]
    best = out / "best" / Path(document["best"]["artifact"]).name
    assert best.is_file() and (out / "best" / "report.json").is_file()
    generated = json_output(cli("generate", best, "--prompt", "The Python language", "--max-new-tokens", "4", "--json"))
    assert generated["tokens"]
    assert "(best)" in (out / "pareto.md").read_text()


def test_the_winner_is_written_back_as_a_recipe(tuned, cli):
    document, out = tuned
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    stage = recipe["stages"][0]["quantize_lm"]
    assert stage["precisions"] == ["int4-weight"] and len(stage["keep_int8"]) == document["best"]["params"]["keep_int8"]
    assert cli("recipe", "validate", out / "recipe.yaml").exit_code == 0


@pytest.mark.parametrize("args, says", [
    (["--data", "digits28"], "--data"),
    (["--workers", "2"], "--workers"),
    (["--format", "tflite"], "--format tflite"),
])
def test_settings_a_language_model_does_not_take(args, says, llama_dir, tmp_path, cli):
    done = cli("tune", llama_dir, *args, "--trials", "1", "--out", tmp_path / "out")
    assert done.exit_code == 2 and says in one_line(done)
    assert not (tmp_path / "out" / "trials").exists()
