"""Load a decoder language model from local files only, executing nothing from them.

Two sources: a Hugging Face style directory (config.json + *.safetensors + tokenizer.json) whose ``model_type`` is in
FAMILIES (built with that family's ``transformers`` class: no trust_remote_code, no hub, no pickle), or a GGUF file
(compress.lm.gguf_reader: dequantized to float32, tokenizer rebuilt from its metadata).

Example:
    >>> lm = load_lm("models/smollm2")            # or "SmolLM2-135M-Instruct.Q4_1.gguf"
    >>> lm.tokenizer.encode("Hello").ids[:3], lm.eos_ids
    ([19556], [2])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import UsageError

# config.json model_type -> (transformers config class, causal-LM class): the only classes a directory may name.
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
}
LM_META = "lm_meta.json"  # beside an artifact: chat template, bos/eos ids, where the reference came from


@dataclass
class LanguageModel:
    """A float32 ``*ForCausalLM`` in eval mode with its tokenizer and chat template."""

    module: "object"  # transformers.PreTrainedModel
    tokenizer: "object"  # tokenizers.Tokenizer
    source: Path
    source_format: str  # "hf" or "gguf"
    source_quant: str | None = None  # e.g. "Q4_1": the float reference is the dequantized file
    chat_template: str | None = None
    bos_id: int | None = None
    eos_ids: list[int] = field(default_factory=list)


def is_language_model(path) -> bool:
    """A ``.gguf`` file, or a directory whose config.json names a decoder family or a ``*ForCausalLM`` architecture.

    Example:
        >>> is_language_model("SmolLM2-135M-Instruct.Q4_1.gguf"), is_language_model("mnist.pt")
        (True, False)
    """
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".gguf"
    config = _read_config(path / "config.json") if (path / "config.json").is_file() else None
    if not isinstance(config, dict):
        return False
    architectures = config.get("architectures") or []
    return config.get("model_type") in FAMILIES or any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def load_lm(path) -> LanguageModel:
    """The model at ``path`` (a model directory or a .gguf file), float32, eval mode; UsageError for anything else."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory (give a model directory with config.json or a .gguf file)")
    if path.is_file() and path.suffix.lower() == ".gguf":
        from compress.lm.gguf_reader import load_gguf

        return load_gguf(path)
    if path.is_dir():
        return _load_hf_dir(path)
    raise UsageError(f"{path.name}: not a language model (give a directory with config.json, *.safetensors and "
                     "tokenizer.json, or a .gguf file)")


def _read_config(file: Path) -> dict | None:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _load_hf_dir(folder: Path) -> LanguageModel:
    config = _read_config(folder / "config.json")
    if not isinstance(config, dict):
        raise UsageError(f"{folder}: no readable config.json (a Hugging Face model directory has config.json, "
                         "*.safetensors and tokenizer.json)")
    family = config.get("model_type")
    if family not in FAMILIES:
        raise UsageError(f"{folder}: model_type {family!r} is not a supported decoder family; supported: "
                         f"{', '.join(FAMILIES)}")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = (f"{pickled[0]} is a pickle, which compress does not load: convert it to safetensors "
                "(safetensors.torch.save_file(torch.load(f), 'model.safetensors') where you trust the file)") if pickled \
            else "no *.safetensors weights found"
        raise UsageError(f"{folder}: {hint}")
    if not (folder / "tokenizer.json").is_file():
        raise UsageError(f"{folder}: no tokenizer.json (save the tokenizer with tokenizer.save_pretrained into the directory)")
    import transformers
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    config_class, model_class = (getattr(transformers, name) for name in FAMILIES[family])
    try:
        hf_config = config_class.from_dict({k: v for k, v in config.items() if k not in ("auto_map",)})
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # a malformed config or tokenizer: say which file
        raise UsageError(f"{folder}: config.json or tokenizer.json is not valid for {family}: {str(exc).splitlines()[0][:200]}") from None
    state = {}
    for file in weights:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise UsageError(f"{file}: unreadable safetensors file ({str(exc)[:200]})") from None
    module = build_module(model_class, hf_config, state, where=folder)
    meta = _tokenizer_config(folder)
    return LanguageModel(module=module, tokenizer=tokenizer, source=folder, source_format="hf",
                         chat_template=meta.get("chat_template"),
                         bos_id=_token_id(tokenizer, meta.get("bos_token"), hf_config.bos_token_id),
                         eos_ids=_eos_ids(tokenizer, meta.get("eos_token"), hf_config.eos_token_id))


def build_module(model_class, hf_config, state: dict, where) -> object:
    """``model_class(hf_config)`` holding ``state`` (float32, eval); UsageError naming missing or mismatched weights."""
    module = model_class(hf_config).float().eval()
    expected = module.state_dict()
    prefix = module.base_model_prefix + "."
    state = {k if k in expected or prefix + k not in expected else prefix + k: v.float() for k, v in state.items()}
    tied = set()
    if getattr(hf_config, "tie_word_embeddings", False):
        tied = {name for name in expected if name.endswith("lm_head.weight")}
    buffers = {name for name, _ in module.named_buffers()}
    missing = [k for k in expected if k not in state and k not in tied and k not in buffers]
    if missing:
        raise UsageError(f"{where}: the weights lack {len(missing)} tensors the config needs (first: {missing[0]}); "
                         "is config.json from the same checkpoint?")
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise UsageError(f"{where}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config expects "
                         f"{tuple(expected[wrong[0]].shape)}")
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    if tied:
        module.tie_weights()
    return module


def _tokenizer_config(folder: Path) -> dict:
    meta = _read_config(folder / "tokenizer_config.json") or {}
    if not meta.get("chat_template") and (folder / "chat_template.jinja").is_file():
        meta["chat_template"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return {k: (v.get("content") if isinstance(v, dict) else v) for k, v in meta.items()}


def _token_id(tokenizer, token: str | None, fallback) -> int | None:
    found = tokenizer.token_to_id(token) if isinstance(token, str) else None
    if found is not None:
        return found
    return fallback if isinstance(fallback, int) else None


def _eos_ids(tokenizer, token: str | None, fallback) -> list[int]:
    ids = [i for i in (fallback if isinstance(fallback, list) else [fallback]) if isinstance(i, int)]
    found = tokenizer.token_to_id(token) if isinstance(token, str) else None
    return sorted({*ids, *([found] if found is not None else [])})


def save_tokenizer_files(lm: LanguageModel, out_dir: Path) -> list[Path]:
    """Write tokenizer.json and lm_meta.json (chat template, bos/eos ids, reference) into ``out_dir``: what
    ``compress generate`` reads beside an exported artifact.

    Example:
        >>> save_tokenizer_files(lm, Path("runs/smollm2"))
        [PosixPath('runs/smollm2/tokenizer.json'), PosixPath('runs/smollm2/lm_meta.json')]
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.tokenizer.save(str(out_dir / "tokenizer.json"))
    meta = {"chat_template": lm.chat_template, "bos_id": lm.bos_id, "eos_ids": lm.eos_ids,
            "model_type": lm.module.config.model_type, "source": lm.source.name, "source_format": lm.source_format,
            "source_quant": lm.source_quant, "kv_shape": kv_shape(lm.module.config)}
    (out_dir / LM_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return [out_dir / "tokenizer.json", out_dir / LM_META]


def kv_shape(config) -> dict:
    """Layers, key/value heads and head size of a transformers config: what sizes the KV cache.

    Example:
        >>> kv_shape(lm.module.config)
        {'layers': 30, 'kv_heads': 3, 'head_dim': 64}
    """
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    return {"layers": int(getattr(config, "num_hidden_layers", None) or config.n_layer),
            "kv_heads": int(getattr(config, "num_key_value_heads", None) or heads),
            "head_dim": int(getattr(config, "head_dim", None) or hidden // heads)}


def read_tokenizer_files(folder: Path) -> tuple[object, dict]:
    """The tokenizer and lm_meta.json that save_tokenizer_files wrote in ``folder``; UsageError when absent."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise UsageError(f"{folder}: no tokenizer.json beside the artifact (compress quantize writes one; copy the "
                         "model's tokenizer.json there)")
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:
        raise UsageError(f"{folder / 'tokenizer.json'}: not a valid tokenizer ({str(exc).splitlines()[0][:200]})") from None
    return tokenizer, _read_config(folder / LM_META) or {}
