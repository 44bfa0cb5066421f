"""Decoder language models: load (Hugging Face dir or GGUF), decode with a KV cache, measure quality and speed.

Example:
    >>> from compress.lm.model import load_lm
    >>> lm = load_lm("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> lm.module.config.model_type, lm.source_quant
    ('llama', 'Q4_1')
"""
