"""Greedy generation through any Decoder, with the prompt rendered by the model's own chat template in a sandbox.

The chat template (Jinja from tokenizer_config.json or the GGUF metadata) is data from the file, so it is rendered
with jinja2's ImmutableSandboxedEnvironment: it can format text, never reach Python objects or run code.

Example:
    >>> ids = chat_prompt_ids(lm.tokenizer, lm.chat_template, "What is the capital of France?", bos_id=lm.bos_id)
    >>> result = generate(TorchDecoder(lm.module), ids, max_new_tokens=16, stop=lm.eos_ids)
    >>> lm.tokenizer.decode(result.tokens), result.stopped
    ('The capital of France is Paris.', 'eos')
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from compress.errors import UsageError, first_line


@dataclass
class Generation:
    """Greedy new tokens and their timing: time to first token (prefill) and decode tokens per second."""

    prompt_tokens: int
    tokens: list[int]
    stopped: str  # "eos", "max-new-tokens" or "context-full"
    ttft_s: float
    decode_s: float  # time of the decode calls after the first token

    @property
    def decode_tokens_per_s(self) -> float | None:
        steps = len(self.tokens) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else None


def render_chat(template: str, prompt: str, bos_token: str = "", eos_token: str = "") -> str:
    """``template`` rendered for one user message with the assistant's turn opened, in jinja2's immutable sandbox.

    Example:
        >>> render_chat("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>", "Hi")
        '<|user|>Hi<|assistant|>'
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(template).render(messages=[{"role": "user", "content": prompt}],
                                                        add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token)
    except TemplateError as exc:  # includes the sandbox's SecurityError
        raise UsageError(f"the model's chat template failed: {first_line(exc)} (use --no-chat to send the prompt as plain text)") from None


def chat_prompt_ids(tokenizer, template: str | None, prompt: str, bos_id: int | None = None,
                    eos_ids: Sequence[int] = ()) -> list[int]:
    """Token ids of ``prompt`` wrapped in the chat template (the template places any special tokens itself)."""
    if not template:
        raise UsageError("the model has no chat template: use --no-chat to send the prompt as plain text")
    def text_of(token_id: int | None) -> str:
        return (tokenizer.id_to_token(token_id) or "") if token_id is not None else ""

    text = render_chat(template, prompt, bos_token=text_of(bos_id), eos_token=text_of(eos_ids[0] if eos_ids else None))
    return tokenizer.encode(text, add_special_tokens=False).ids


def plain_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as plain text (with the BOS token where the tokenizer adds one)."""
    ids = tokenizer.encode(prompt).ids
    if not ids:
        raise UsageError("the prompt is empty: give --prompt some text")
    return ids


def generate(decoder, prompt_ids: Sequence[int], max_new_tokens: int, stop: Sequence[int] = ()) -> Generation:
    """Greedy decoding: the prompt prefilled in one call, then one decode call per new token, until a stop token,
    ``max_new_tokens`` or a full KV cache."""
    if len(prompt_ids) >= decoder.max_context:
        raise UsageError(f"the prompt has {len(prompt_ids)} tokens; the model's KV cache holds {decoder.max_context}: shorten it")
    start = time.perf_counter()
    logits = decoder.prefill(list(prompt_ids))[-1]
    token = int(np.argmax(logits))
    ttft = time.perf_counter() - start
    tokens, stopped = [token], "max-new-tokens"
    start = time.perf_counter()
    while True:
        if token in stop:
            stopped = "eos"
            break
        if len(tokens) >= max_new_tokens:
            break
        if len(prompt_ids) + len(tokens) >= decoder.max_context:
            stopped = "context-full"
            break
        token = int(np.argmax(decoder.decode(token)))
        tokens.append(token)
    return Generation(prompt_tokens=len(prompt_ids), tokens=tokens, stopped=stopped, ttft_s=ttft,
                      decode_s=time.perf_counter() - start)
