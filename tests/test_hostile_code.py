"""Safe by default: hostile model files, run directories, recipes and ssh targets run no code.

Every hostile payload would touch a sentinel file if it ran; each case goes through the CLI and checks the exit code
(2), one line on stderr naming the problem, no traceback, nothing written under a final name, and no sentinel.
"""
from __future__ import annotations

import io
import json
import pathlib
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.cli_checks import json_output, one_line


class Touch:
    """Unpickling this creates ``path``: the proof that code from a file ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def save_program(path: Path) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Tiny().eval(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},), strict=False)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def rewrite(source: Path, target: Path, edit) -> Path:
    """A copy of the zip ``source`` with ``edit(files)`` applied to its {relative name: bytes} (the archive prefix kept)."""
    with zipfile.ZipFile(source) as archive:
        prefix = archive.namelist()[0].split("/", 1)[0] + "/"
        files = {name[len(prefix):]: archive.read(name) for name in archive.namelist()}
    edit(files)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(prefix + name, data)
    return target


def torch_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def edit_json(files: dict, name: str, change) -> None:
    document = json.loads(files[name])
    change(document)
    files[name] = json.dumps(document).encode()


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
PROGRAM = "models/model.json"


def pickled_weight(payload):
    def edit(files, sentinel):
        edit_json(files, WEIGHTS, lambda d: d["config"]["fc.weight"].update(use_pickle=True))
        files["data/weights/weight_0"] = payload(Touch(sentinel))
    return edit


def pickled_constant(path_name: str, use_pickle: bool = True):
    def edit(files, sentinel):
        edit_json(files, CONSTANTS, lambda d: d["config"].update(
            {"evil": {"path_name": path_name, "is_param": False, "use_pickle": use_pickle, "tensor_meta": None}}))
        files[f"data/constants/{path_name}"] = pickle.dumps(Touch(sentinel))
    return edit


def code_in_program(change):
    def edit(files, sentinel):
        code = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
        edit_json(files, PROGRAM, lambda d: change(d, code, sentinel))
    return edit


def shape_expression(document, code, sentinel):
    symbol = document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]
    symbol["expr_str"] = f"{code} or {symbol['expr_str']}"


def guard(document, code, sentinel):
    document["guards_code"] = [f"{code} or True"]


def node_target(document, code, sentinel):
    document["graph_module"]["graph"]["nodes"].insert(0, {
        "target": "torch.os.system", "inputs": [{"name": "a", "arg": {"as_string": f"touch {sentinel}"}, "kind": 1}],
        "outputs": [], "metadata": {}, "is_hop_single_tensor_return": None, "name": "evil"})


HOSTILE_PROGRAMS = {
    # entry named in the error line: edit
    "data/weights/weight_0": pickled_weight(torch_pickle),
    "data/weights/weight_0 ": pickled_weight(lambda obj: pickle.dumps(obj, protocol=2)),  # a bare pickle stream (0x80)
    "data/constants/tensor_0": pickled_constant("tensor_0"),
    "data/constants/opaque_obj_0": pickled_constant("opaque_obj_0"),
    "data/constants/custom_obj_0": pickled_constant("custom_obj_0", use_pickle=False),
    "data/sample_inputs/model.pt": lambda files, sentinel: files.update({"data/sample_inputs/model.pt": torch_pickle(Touch(sentinel))}),
    "shape expression": code_in_program(shape_expression),
    "guard": code_in_program(guard),
    "torch.os.system": code_in_program(node_target),
    "data/aotinductor/model/model.so": lambda files, sentinel: files.update({"data/aotinductor/model/model.so": b"\x7fELF"}),
}


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    return save_program(tmp_path_factory.mktemp("program") / "tiny.pt2")


def hostile(program: Path, tmp_path: Path, edit) -> tuple[Path, Path]:
    sentinel = tmp_path / "code-ran"
    return rewrite(program, tmp_path / "evil.pt2", lambda files: edit(files, sentinel)), sentinel


def assert_refused(result, out: Path | None, sentinel: Path, *words: str) -> str:
    assert result.exit_code == 2, result.output
    line = one_line(result)
    for word in words:
        assert word in line, line
    assert not sentinel.exists(), "code from the file ran"
    if out is not None:
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    return line


@pytest.mark.parametrize("entry", list(HOSTILE_PROGRAMS), ids=[e.strip().replace("/", "_") for e in HOSTILE_PROGRAMS])
def test_a_pt2_that_would_run_code_is_refused(entry, program, tmp_path, cli):
    evil, sentinel = hostile(program, tmp_path, HOSTILE_PROGRAMS[entry])
    out = tmp_path / "out"
    result = cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", out)
    assert_refused(result, out, sentinel, entry.strip(), "--trust-pickle")


def test_bench_refuses_a_hostile_pt2_before_any_target_loads_it(program, tmp_path, cli):
    evil, sentinel = hostile(program, tmp_path, HOSTILE_PROGRAMS["data/weights/weight_0"])
    assert_refused(cli("bench", evil, "--runtime", "torch", "--runs", "2", "--no-report"), None, sentinel, "data/weights/weight_0")


def test_trust_pickle_is_what_decides(program, tmp_path, cli):
    evil, sentinel = hostile(program, tmp_path, HOSTILE_PROGRAMS["data/weights/weight_0"])
    cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out", "--trust-pickle")
    assert sentinel.exists()  # the flag let torch unpickle it: the check, not an accident, stopped it before


def test_a_plain_program_still_loads_and_quantizes(program, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("quantize", program, "--format", "onnx", "--no-bench", "--out", out, "--json")
    assert json_output(result)["artifacts"] and (out / "model.int8.onnx").is_file()


def test_torchscript_unpickler_refuses_python_globals(tmp_path, cli):
    """torch.jit.load's C++ unpickler rebuilds no Python globals: a data.pkl calling pathlib fails, runs nothing."""
    sentinel = tmp_path / "code-ran"
    scripted = tmp_path / "tiny.ts"
    torch.jit.save(torch.jit.script(Tiny()), str(scripted))
    evil = rewrite(scripted, tmp_path / "evil.pt", lambda files: files.update({"data.pkl": pickle.dumps(Touch(sentinel), protocol=2)}))
    assert_refused(cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out", sentinel,
                   "TorchScript")


# --- a run directory's stage cache ---------------------------------------------------------------------------------

STAGED = """\
model: {{source: {source}}}
stages:
  - prune: {{method: l1-structured, sparsity: 0.25}}
  - evaluate: {{}}
output: {{dir: {out}}}
"""


@pytest.fixture(scope="module")
def staged_run(zoo_checkpoint, tmp_path_factory, cli):
    """A finished recipe run with a prune stage: its .stages/00-prune-*/model.pt2 is what a resume reloads."""
    folder = tmp_path_factory.mktemp("staged")
    recipe = folder / "recipe.yaml"
    recipe.write_text(STAGED.format(source=zoo_checkpoint("mnist_cnn", epochs=1, width=0.25), out=folder / "run"))
    result = cli("run", recipe)
    assert result.exit_code == 0, result.output
    return recipe, folder / "run"


def poisoned_copy(staged_run, tmp_path: Path, record_digest: bool, poison=None) -> tuple[Path, Path, Path]:
    """The run directory copied, its stage model replaced by a hostile program (``poison(path, sentinel)``, default
    :func:`_poison`; and the marker's sha256 too if asked)."""
    import shutil

    from compress.safety.io import sha256_file

    recipe, run = staged_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("report.json", "report.md", "report.html", "manifest.json"):
        (copy / name).unlink(missing_ok=True)
    stage = next(copy.glob(".stages/00-prune-*"))
    sentinel = tmp_path / "code-ran"
    (poison or _poison)(stage / "model.pt2", sentinel)
    if record_digest:
        marker = json.loads((stage / "stage.json").read_text())
        marker["files"]["model.pt2"] = sha256_file(stage / "model.pt2")
        (stage / "stage.json").write_text(json.dumps(marker))
    return recipe, copy, sentinel


def _poison(path: Path, sentinel: Path) -> None:
    """Mark the program's first weight use_pickle and put a pickle there (whatever the weight is called)."""
    def edit(files):
        config = json.loads(files[WEIGHTS])
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        files[WEIGHTS] = json.dumps(config).encode()
        files[f"data/weights/{meta['path_name']}"] = torch_pickle(Touch(sentinel))
    rewrite(path, path.with_name("poisoned.pt2"), edit).replace(path)


def test_a_stage_model_changed_since_it_was_written_is_refused(staged_run, tmp_path, cli):
    recipe, copy, sentinel = poisoned_copy(staged_run, tmp_path, record_digest=False)
    line = assert_refused(cli("run", recipe, "--out", copy, "--json"), None, sentinel, "model.pt2", "sha256", "--force")
    assert "prune" in line and not (copy / "report.json").exists()


def test_a_poisoned_stage_model_with_a_forged_digest_is_still_refused(staged_run, tmp_path, cli):
    recipe, copy, sentinel = poisoned_copy(staged_run, tmp_path, record_digest=True)
    assert_refused(cli("run", recipe, "--out", copy, "--json"), None, sentinel, "model.pt2", "as a pickle", "--force")
    assert not (copy / "report.json").exists()


# --- recipes are data ----------------------------------------------------------------------------------------------

HOSTILE_MODULE = """\
import pathlib
pathlib.Path({sentinel!r}).touch()   # importing this module is already running code


def batches():
    return []


class Net:
    pass
"""


@pytest.fixture
def hostile_module(tmp_path, monkeypatch) -> Path:
    """``hostile_mod`` on sys.path: importing it touches the sentinel."""
    sentinel = tmp_path / "code-ran"
    (tmp_path / "hostile_mod.py").write_text(HOSTILE_MODULE.format(sentinel=str(sentinel)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hostile_mod", raising=False)
    return sentinel


def recipe_file(tmp_path: Path, model: str, data: str = "", stages: str = "[{quantize: {formats: [onnx]}}]") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: {model}\n{data}stages: {stages}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    return path


HOSTILE_RECIPES = [
    ("subprocess-popen", "{source: zoo:mnist_cnn, arch: 'subprocess:Popen', arch_kwargs: {args: 'touch SENTINEL', shell: true}}", "",
     "model.arch", "subprocess:Popen"),
    ("os-system", "{source: zoo:mnist_cnn, arch: 'os:system'}", "", "model.arch", "os:system"),
    ("builtins-eval", "{source: zoo:mnist_cnn, arch: 'builtins:eval'}", "", "model.arch", "builtins:eval"),
    ("data-getcwd", "{source: zoo:mnist_cnn}", "data: {name: 'os:getcwd'}\n", "data.name", "os:getcwd"),
    ("data-module", "{source: zoo:mnist_cnn}", "data: {name: 'hostile_mod:batches'}\n", "data.name", "hostile_mod:batches"),
]


@pytest.mark.parametrize("model, data, field, name", [case[1:] for case in HOSTILE_RECIPES], ids=[c[0] for c in HOSTILE_RECIPES])
def test_a_recipe_naming_code_needs_trust_code(model, data, field, name, hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, model.replace("SENTINEL", str(hostile_module)), data)
    result = cli("run", path)
    assert_refused(result, tmp_path / "out", hostile_module, field, repr(name), "--trust-code")
    assert "hostile_mod" not in sys.modules


def test_a_distill_student_naming_code_needs_trust_code(hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, "{source: zoo:mnist_cnn}", stages="[{distill: {student: 'hostile_mod:Net'}}]")
    assert_refused(cli("run", path), tmp_path / "out", hostile_module, "stages[0].distill.student", "hostile_mod:Net")


def test_an_override_naming_code_needs_trust_code_too(hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, "{source: zoo:mnist_cnn}")
    assert_refused(cli("run", path, "--set", "model.arch=hostile_mod:Net"), tmp_path / "out", hostile_module, "model.arch")


def test_trust_code_from_covers_only_its_own_roots(hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, "{source: zoo:mnist_cnn, arch: 'hostile_mod:Net'}")
    line = assert_refused(cli("run", path, "--trust-code-from", "hostile"), tmp_path / "out", hostile_module, "hostile_mod:Net")
    assert "--trust-code-from hostile_mod" in line


def test_trust_pickle_in_the_file_alone_is_not_enough(hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, "{source: zoo:mnist_cnn, trust_pickle: true}")
    assert_refused(cli("run", path), tmp_path / "out", hostile_module, "model.trust_pickle", "--trust-pickle")


def test_validate_lists_the_code_a_recipe_imports_and_imports_none(hostile_module, tmp_path, cli):
    path = recipe_file(tmp_path, "{source: zoo:mnist_cnn, arch: 'hostile_mod:Net', trust_pickle: true}",
                       "data: {name: 'os:getcwd'}\n", "[{distill: {student: 'mnist_cnn:width=0.5'}}, {quantize: {}}]")
    document = json_output(cli("recipe", "validate", path, "--json"))
    assert document["imports"] == [{"field": "model.arch", "name": "hostile_mod:Net"}, {"field": "data.name", "name": "os:getcwd"}]
    assert document["trust_pickle"] is True
    table = cli("recipe", "validate", path)
    assert table.exit_code == 0 and "hostile_mod:Net" in table.stdout and "--trust-code" in table.stdout
    assert not hostile_module.exists()


TRUSTED_MODULE = """\
import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        return self.body(x)


def batches():
    rng = np.random.default_rng(0)
    for _ in range(6):
        x = rng.standard_normal((32, 4)).astype("float32")
        yield {"x": x, "y": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")}
"""


@pytest.mark.parametrize("flags", [["--trust-code"], ["--trust-code-from", "trusted_mod"]], ids=["trust-code", "trust-code-from"])
def test_granted_code_runs_end_to_end(flags, tmp_path, monkeypatch, cli):
    (tmp_path / "trusted_mod.py").write_text(TRUSTED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trusted_mod", raising=False)
    import trusted_mod

    torch.save(trusted_mod.Net(hidden=8).state_dict(), tmp_path / "net.pt")
    path = recipe_file(tmp_path, f"{{source: {tmp_path / 'net.pt'}, arch: 'trusted_mod:Net', arch_kwargs: {{hidden: 8}}, "
                                 "input_shapes: [1x4]}",
                       # 39 test samples cannot resolve the default 1 pt gate (undecided, exit 1): a gate they can
                       "data: {name: 'trusted_mod:batches', calib_samples: 32}\ngates: {max_degradation: 0.1}\n",
                       "[{quantize: {formats: [onnx], bench: false}}]")
    report = json_output(cli("run", path, *flags, "--json"))
    assert report["passed"] and (tmp_path / "out" / "model.int8.onnx").is_file()


# --- ssh targets -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, part", [
    ("ssh://-oProxyCommand=touch%20code-ran", "bad host"),
    ("ssh://-oProxyCommand=touch%20code-ran@example.org", "bad user"),
    ("ssh://pi@-oProxyCommand=touch%20code-ran", "bad host"),
    ("ssh://pi@host;touch%20code-ran", "bad host"),
])
def test_an_ssh_user_or_host_that_is_an_option_is_refused(url, part, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)  # where `touch code-ran` would land
    sentinel = tmp_path / "code-ran"
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"not run")
    result = cli("bench", artifact, "--target", url, "--runs", "2", "--no-report")
    assert_refused(result, None, sentinel, part)


def test_ssh_and_scp_end_their_options_before_the_host(monkeypatch):
    from compress.targets import ssh

    seen = []

    def record(command, *args, **kwargs):
        seen.append(command)
        raise ssh.EnvironmentFailure("stop")

    monkeypatch.setattr(ssh, "run_command", record)
    target = ssh.SshTarget("ssh://pi@board.local:2222")
    for call in (lambda: target._ssh("true", 5, "probe"), lambda: target._scp(["/tmp/a"], "pi@board.local:/tmp/", "copy")):
        with pytest.raises(ssh.EnvironmentFailure):
            call()
    ssh_command, scp_command = seen
    assert ssh_command[ssh_command.index("--") + 1] == "pi@board.local"
    assert scp_command[scp_command.index("--"):] == ["--", "/tmp/a", "pi@board.local:/tmp/"]
