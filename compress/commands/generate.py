"""`compress generate`: greedy text from a decoder language model, from an exported artifact or the model itself."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, JSON_OPTION, THREADS_OPTION, emit, handle_errors, stdout_console


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    source: Path = typer.Argument(..., help="An exported .onnx/.pte/.tflite language model (tokenizer.json beside it), "
                                  "a model directory (config.json, *.safetensors, tokenizer.json) or a .gguf file."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue or answer."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Stop after this many new tokens."),
    chat: bool = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the model's chat template "
                              "(default: when the model has one)."),
    threads: int = THREADS_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Generate greedily from a language model and print the text and its speed (time to first token, tokens/s).

    Example: compress generate runs/smollm2/model.int4-weight.onnx --prompt "What is the capital of France?"
    """
    from compress.lm.generation import chat_prompt_ids, generate as run, plain_prompt_ids
    from compress.lm.session import open_generator

    with handle_errors(debug, json_out):
        session = open_generator(source, threads=threads)
        use_chat = bool(session.chat_template) if chat is None else chat
        ids = (chat_prompt_ids(session.tokenizer, session.chat_template, prompt, session.bos_id, session.eos_ids)
               if use_chat else plain_prompt_ids(session.tokenizer, prompt))
        result = run(session.decoder, ids, max_new_tokens, stop=session.eos_ids)
        text = session.tokenizer.decode([t for t in result.tokens if t not in session.eos_ids])
        document = {
            "source": str(source), "runtime": session.runtime, "chat": use_chat, "prompt": prompt, "text": text,
            "prompt_tokens": result.prompt_tokens, "new_tokens": len(result.tokens), "tokens": result.tokens,
            "stopped": result.stopped, "ttft_s": round(result.ttft_s, 4),
            "decode_tokens_per_s": None if result.decode_tokens_per_s is None else round(result.decode_tokens_per_s, 2),
            "threads": threads,
        }

    def render() -> None:
        stdout_console.print(text, markup=False, highlight=False)
        speed = "n/a" if result.decode_tokens_per_s is None else f"{result.decode_tokens_per_s:.1f} tokens/s"
        stdout_console.print(f"[dim]{len(result.tokens)} tokens ({result.stopped}) in {session.runtime}; time to first "
                             f"token {result.ttft_s * 1e3:.0f} ms for {result.prompt_tokens} prompt tokens; decode {speed}[/]",
                             highlight=False)

    emit(document, json_out, render)
