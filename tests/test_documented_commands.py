"""Every command the user is shown runs: the code blocks and command tables of README.md and docs/*.md, and each verb's
``--help`` example.

They run in order in one working directory, as a new user would type them (``zoo train ... --out mnist_cnn.pt`` makes
the model the later examples use; README's "your own model" Python block saves the ``model.pt2`` and ``data.npz`` its
``compress quantize`` line reads). Fast variants keep each command's shape: the zoo cache is seeded with 1-epoch
checkpoints under the default names, ``--epochs``/``--finetune-epochs`` become 1, training and quantizing verbs get
``--no-bench``, ``tune --budget`` becomes 1 s with one worker. A command that needs hardware or a user's own files
(ssh board, adb phone, CUDA, a qemu ARM64 userspace, a Ray cluster, ``mine.yaml``) is parsed by the verb's own
option parser (every flag and value accepted) but not run, and so is a command whose flags another example of the
same verb includes (it would retrace that one's path); the skip reason says which. The usage synopses
(``compress quantize MODEL [--data D] ...``) are checked flag by flag against the verb, and every install line shown
gets PyTorch's CPU wheel before compress.

Example:
    $ pytest tests/test_documented_commands.py -q
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from compress.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
WORKFLOW = ROOT / "examples" / "github-actions" / "compress-model.yml"
CPU_WHEEL = "--index-url https://download.pytorch.org/whl/cpu"
# Why a command is parsed and not run: the first marker found in it.
NEEDS = {"ssh://": "an ssh board", "adb": "an adb phone", "cuda": "a CUDA GPU", "qemu-arm64": "a qemu ARM64 userspace",
         "--executor ray": "a Ray cluster", "mine.yaml": "the user's own recipe and package",
         "runs/smollm2": "a decoder LM run (tests/test_lm_*.py quantize and generate one)"}
# Run directories an example compares, made by the examples before it.
MADE_BY = {"runs/ptq": "runs/mnist", "runs/prune-int8": "runs/mnist_cnn-pruned"}
# The order a new user follows: what makes a file comes before what reads it.
ORDER = ["zoo list", "zoo train", "zoo eval", "recipe", "quantize", "report validate", "prune", "qat", "distill", "run",
         "tune", "report", "bench", "verify", "generate", "fleet", "demo"]
FAST_FLAGS = {"--epochs": "1", "--finetune-epochs": "1", "--budget": "1s", "--workers": "1"}
NO_BENCH_VERBS = {"quantize", "prune", "distill", "qat"}


def _click_app():
    return typer.main.get_command(app)


def _blocks(text: str, language: str = "[a-z]*") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def readme_commands() -> list[str]:
    """``compress ...`` lines of the pages' fenced blocks (comments dropped) and the Example column of their tables."""
    found = []
    for page in PAGES:
        text = page.read_text()
        found += [line.split("  #")[0].strip() for block in _blocks(text) for line in block.splitlines()
                  if line.strip().startswith("compress ")]
        for line in text.splitlines():
            if line.startswith("|") and "`compress" in line:
                found += re.findall(r"`(compress [^`]+)`", line.strip("|").split("|")[-1])
    return found


def own_model_script() -> str:
    """README's "your own model" Python block: it saves the model.pt2 and data.npz its quantize line reads."""
    return next(block for block in _blocks(README.read_text(), "python") if "torch.export.save" in block)


def help_examples() -> list[str]:
    """The ``Example: compress ...`` line of every verb's --help."""
    found = []

    def walk(command) -> None:
        found.extend(re.findall(r"^\s*Example: (compress .+)$", command.help or "", re.M))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(_click_app())
    return found


def _verb(argv: list[str]):
    """The click command an argv names, and the arguments left for it."""
    command, rest = _click_app(), list(argv)
    while rest and rest[0] in getattr(command, "commands", {}):
        command = command.commands[rest.pop(0)]
    return command, rest


def _order(command: str) -> int:
    words = " ".join(shlex.split(command)[1:3])
    return next(i for i, verb in enumerate(ORDER) if words.startswith(verb))


def _is_synopsis(command: str) -> bool:
    return "[" in command or bool(re.search(r"\s[A-Z]{4,}\b", command))


def documented() -> list[tuple[str, str]]:
    """(where, command) of every runnable documented command, deduplicated, in ORDER (a verb's --help example first)."""
    seen: dict[str, str] = {}
    for where, commands in (("--help", help_examples()), ("README", readme_commands())):
        for command in commands:
            if not _is_synopsis(command):
                seen.setdefault(command, where)
    return sorted(((where, command) for command, where in seen.items()), key=lambda item: (_order(item[1]), item[0] != "--help"))


def _flags(command: str) -> tuple[str, set[str]]:
    words = shlex.split(command)[1:]
    verb = " ".join(w for w in words[:2] if w in ("zoo", "recipe", "report", "list", "train", "eval", "init", "validate",
                                                   "schema", "compare") or w == words[0])
    return verb, {w for w in words if w.startswith("-")}


def covered_by(command: str) -> str | None:
    """An earlier documented command of the same verb whose flags include all of this one's: running it covers this
    one's path, so this one is only parsed (`quantize m.pt --out d` beside `quantize m.pt --format onnx,tflite --out d`)."""
    verb, flags = _flags(command)
    for _, other in documented():
        if other == command:
            return None
        other_verb, other_flags = _flags(other)
        if other_verb == verb and flags <= other_flags and not any(marker in other for marker in NEEDS):
            return other
    return None


def fast_variant(argv: list[str]) -> list[str]:
    """The same command, quicker: FAST_FLAGS' values, and --no-bench on verbs that time artifacts."""
    out = [FAST_FLAGS[argv[i - 1]] if i and argv[i - 1] in FAST_FLAGS else arg for i, arg in enumerate(argv)]
    if out[0] in NO_BENCH_VERBS and "--no-bench" not in out:
        out.append("--no-bench")
    return out


def _parse(argv: list[str]) -> None:
    """Let the verb's own option parser read the arguments (unknown flags and bad values raise), and a recipe its
    ``--set`` overrides; nothing runs."""
    command, rest = _verb(argv)
    with command.make_context(" ".join(argv[: len(argv) - len(rest)]), rest) as ctx:
        params = ctx.params
    if command.name == "run" and Path(params["file"]).is_file():  # a --set path the recipe lacks is a usage error
        from compress.recipe import load_recipe

        load_recipe(Path(params["file"]), params["overrides"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, zoo_checkpoint):
    """An empty project folder with the repo's recipes, and a zoo cache whose default checkpoints are 1-epoch ones."""
    from compress.zoo import zoo_entry
    from compress.zoo.train import default_checkpoint_path

    folder, cache = tmp_path_factory.mktemp("user"), tmp_path_factory.mktemp("user-cache")
    shutil.copytree(README.parent / "recipes", folder / "recipes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESS_CACHE", str(cache))
        for name in ("mnist_cnn",):  # demo --model cnn64 is parsed: demo --model mnist_cnn runs its path
            target = default_checkpoint_path(name, 1.0, zoo_entry(name).epochs, 0)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(zoo_checkpoint(name, epochs=1), target)
        saved = subprocess.run([sys.executable, "-c", own_model_script()], cwd=folder, capture_output=True, text=True, timeout=300)
        assert saved.returncode == 0, f"README's own-model script failed:\n{saved.stderr[-3000:]}"
        patch.chdir(folder)
        yield folder


def test_the_readme_and_help_show_commands():
    commands = [command for _, command in documented()]
    verbs = {" ".join(shlex.split(c)[1:2]) for c in commands}
    assert {"zoo", "quantize", "prune", "distill", "qat", "run", "tune", "bench", "verify", "report", "recipe", "demo"} <= verbs


@pytest.mark.parametrize("where, command", documented(), ids=lambda value: value if value.startswith("compress") else None)
def test_documented_command(where, command, workdir, cli):
    argv, redirect = shlex.split(command.replace(" > ", " >> ", 1))[1:], None
    if ">>" in argv:
        argv, redirect = argv[: argv.index(">>")], argv[argv.index(">>") + 1]
    need = next((why for marker, why in NEEDS.items() if marker in command), None)
    if need:
        _parse(argv)
        pytest.skip(f"parsed, not run: needs {need}")  # shown with -ra, so the reason is never silent
    twin = covered_by(command)
    if twin:
        _parse(argv)
        pytest.skip(f"parsed, not run: `{twin}` runs the same verb with these flags and more")
    for arg in argv:
        if arg in MADE_BY and not Path(arg).exists():
            shutil.copytree(MADE_BY[arg], arg)
    result = cli(*fast_variant(argv))
    assert result.exit_code in (0, 1), f"{where}: `{command}` exit {result.exit_code}:\n{result.output[-3000:]}"
    if result.exit_code == 1:  # a quality gate judged the 1-epoch model: the command itself ran
        assert "gate" in result.output, result.output[-3000:]
    if redirect:
        Path(redirect).write_text(result.stdout)
        assert Path(redirect).stat().st_size > 0


@pytest.mark.parametrize("synopsis", [c for c in readme_commands() if _is_synopsis(c)])
def test_readme_synopsis_flags_exist(synopsis):
    command, _ = _verb(shlex.split(synopsis.split("[", 1)[0])[1:2])
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    page = next(page.read_text() for page in PAGES if synopsis in page.read_text())
    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", page.split(synopsis, 1)[1].split("```")[0] + synopsis):
        assert flag in known, f"the synopsis of `compress {command.name}` shows {flag}, which the verb does not take"


def _install_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if re.match(r"\s*(python3? -m )?pip install ", line)]


def test_install_instructions_get_the_cpu_torch_wheel_before_compress():
    """README's install block and the CI workflow: torch from PyTorch's CPU index first (PyPI's torch is the CUDA build)."""
    readme_install = next(block for block in _blocks(README.read_text(), "bash") if "pip install" in block)
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["compress"]["steps"]
    workflow_install = next(step["run"] for step in steps if "pip install" in step.get("run", ""))
    for where, text, compress_marker in (("README", readme_install, "-e ."), ("workflow", workflow_install, "$COMPRESS_PACKAGE")):
        lines = _install_lines(text)
        torch_line = next(i for i, line in enumerate(lines) if re.search(r"\btorch==", line))
        compress_line = next(i for i, line in enumerate(lines) if compress_marker in line)
        assert CPU_WHEEL in lines[torch_line], f"{where}: `{lines[torch_line]}` does not name PyTorch's CPU wheel index"
        assert torch_line < compress_line, f"{where}: compress is installed before the CPU torch wheel"
