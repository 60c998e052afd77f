"""PromptEnhancer: a trained PRewrite rewriter (Kong et al. 2024) packaged for inference and serving.

A saved enhancer is a directory of plain files, loaded offline and without pickle::

    enhancer.json               format version, base model name, dtype, generation settings, task info
    meta_prompt.txt             the meta-prompt, holding {instruction} once
    adapter_config.json         the LoRA adapter's peft config
    adapter_model.safetensors   the LoRA weights

The base model is resolved by name through :func:`rlprompt.models.load_model` (the bundled SmolLM2, the
tiny random model, or a local checkpoint directory), so the directory stays a few MB.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
CONFIG_FILE = "enhancer.json"
META_PROMPT_FILE = "meta_prompt.txt"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _check_config(path: Path, config: Any) -> dict[str, Any]:
    """The contents of ``enhancer.json``, or a ``ValueError`` naming the file and the bad field."""
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {config.get('format_version')!r}; this rlprompt "
                         f"reads version {FORMAT_VERSION}")
    base, dtype, tokens, info = (config.get(k) for k in ("base_model", "dtype", "max_new_tokens", "info"))
    for key, value, ok, wanted in (
        ("base_model", base, isinstance(base, str) and bool(base), "a model name"),
        ("dtype", dtype, isinstance(dtype, str) and bool(dtype), "a dtype name"),
        ("max_new_tokens", tokens, isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 1,
         "a positive integer"),
        ("info", info, info is None or isinstance(info, dict), "a JSON object"),
    ):
        if not ok:
            raise ValueError(f"{path}: {key!r} must be {wanted}, got {value!r}")
    return config


class PromptEnhancer:
    """Rewrites prompts with a LoRA-adapted causal LM prompted by a meta-prompt (PRewrite, Kong et al. 2024).

    ``model`` is a peft model (or a plain causal LM) and ``tokenizer`` its tokenizer; ``base_model`` is the
    :func:`~rlprompt.models.load_model` name the adapter was trained on. Generation is batched (left padding,
    ``batch_size`` prompts at once) in eval mode with a KV cache; calls are serialised by a lock, so one
    enhancer may be shared by threads.
    """

    def __init__(self, model: Any, tokenizer: Any, *, base_model: str, meta_prompt: str, max_new_tokens: int = 48,
                 dtype: str = "float32", batch_size: int = 16, info: dict[str, Any] | None = None) -> None:
        if meta_prompt.count("{instruction}") != 1:
            raise ValueError(f"meta_prompt must contain {{instruction}} exactly once, got {meta_prompt!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.base_model, self.meta_prompt, self.dtype = base_model, meta_prompt, dtype
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.info = dict(info or {})
        self._lock = threading.Lock()

    # -- loading and saving ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | Path, *, dtype: str | None = None, batch_size: int = 16) -> PromptEnhancer:
        """Load a directory written by :meth:`save_pretrained` (offline: the base model comes from
        :func:`rlprompt.models.load_model`, the adapter from safetensors). ``dtype`` overrides the saved one.

        A damaged directory (a missing, truncated or hand-edited file, an adapter that does not fit the base
        model) is a ``ValueError`` or ``FileNotFoundError`` naming the file, raised before anything is served."""
        import safetensors
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors.torch import load_file

        from rlprompt.models import load_model
        from rlprompt.tasks import read_json, read_text

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{str(directory)!r} is not a saved PromptEnhancer: {CONFIG_FILE} is missing")
        config = _check_config(config_path, read_json(config_path))
        for name in (META_PROMPT_FILE, *ADAPTER_FILES):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} is missing (only safetensors are read)")
        meta_prompt = read_text(directory / META_PROMPT_FILE)
        read_json(directory / "adapter_config.json")  # a clear error for a truncated file, before peft reads it
        adapter = directory / "adapter_model.safetensors"
        try:
            saved = set(load_file(str(adapter)))
        except (safetensors.SafetensorError, OSError) as err:
            raise ValueError(f"{adapter} is not a readable safetensors file ({err}): the enhancer was damaged "
                             f"or copied incompletely") from None
        dtype = dtype or config["dtype"]
        base, tokenizer = load_model(config["base_model"], dtype=dtype)
        try:
            model = PeftModel.from_pretrained(base, str(directory), is_trainable=False, use_safetensors=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"the adapter in {directory} does not load onto {config['base_model']!r}: "
                             f"{first}") from None
        expected = set(get_peft_model_state_dict(model))
        if saved != expected:
            raise ValueError(f"{adapter} does not hold the adapter's tensors: missing {sorted(expected - saved)[:3]}, "
                             f"unexpected {sorted(saved - expected)[:3]}")
        return cls(model, tokenizer, base_model=config["base_model"], meta_prompt=meta_prompt,
                   max_new_tokens=config["max_new_tokens"], dtype=dtype, batch_size=batch_size,
                   info=config.get("info") or {})

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the enhancer into ``directory`` atomically (a temporary sibling directory renamed into
        place; an existing enhancer there is replaced only once the new one is complete)."""
        directory = Path(directory).expanduser().resolve()
        if not hasattr(self.model, "peft_config"):
            raise TypeError("save_pretrained needs a peft model (the trained LoRA adapter)")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            self.model.save_pretrained(str(tmp), safe_serialization=True)
            for stray in tmp.glob("README.md"):
                stray.unlink()
            (tmp / META_PROMPT_FILE).write_text(self.meta_prompt, encoding="utf-8")
            config = {"format_version": FORMAT_VERSION, "base_model": self.base_model, "dtype": self.dtype,
                      "max_new_tokens": self.max_new_tokens, "info": self.info}
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            old = None
            if directory.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent))
                old.rmdir()
                directory.rename(old)
            tmp.rename(directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    # -- generation -----------------------------------------------------------------------------------
    def _encode(self, prompt: str) -> list[int]:
        messages = [{"role": "user", "content": self.meta_prompt.replace("{instruction}", prompt)}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, prompt: str) -> int:
        """How many tokens the model reads to rewrite ``prompt``: the prompt inside the meta-prompt and the
        chat template, as :meth:`enhance` feeds it (the figure to hold against :attr:`max_input_tokens`)."""
        return len(self._encode(prompt))

    @property
    def max_input_tokens(self) -> int | None:
        """The most input tokens one rewrite can take: the model's context (``max_position_embeddings``)
        minus ``max_new_tokens``; ``None`` when the model's config does not tell its context."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        return context - self.max_new_tokens if isinstance(context, int) else None

    @torch.inference_mode()
    def _generate(self, prompts: list[str], *, k: int, temperature: float, seed: int | None) -> list[list[str]]:
        encoded = [self._encode(p) for p in prompts]
        pad = self.tokenizer.pad_token_id
        out: list[list[str]] = []
        device = next(self.model.parameters()).device
        kwargs: dict[str, Any] = {"do_sample": False} if k == 1 and temperature == 0 else {
            "do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        with self._lock, torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(encoded), max(1, self.batch_size // k)):
                batch = encoded[start:start + max(1, self.batch_size // k)]
                width = max(len(ids) for ids in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, seq in enumerate(batch):
                    ids[row, width - len(seq):] = torch.tensor(seq)
                    mask[row, width - len(seq):] = 1
                generated = self.model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=self.max_new_tokens,
                    num_return_sequences=k, pad_token_id=pad, use_cache=True, **kwargs)
                texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
                out.extend([t.strip() for t in texts[i * k:(i + 1) * k]] for i in range(len(batch)))
        return out

    def enhance(self, prompt: str | Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                seed: int | None = None) -> str | list[str] | list[list[str]]:
        """Rewrite ``prompt`` (one string, or a list rewritten in batches).

        ``num_samples=1`` decodes greedily and returns a string per prompt (a ``str`` for a ``str``, a list
        for a list). ``num_samples=K > 1`` samples K rewrites at ``temperature``: a list of K strings per prompt.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("enhance takes a string or a list of strings")
        if not prompts:
            return []
        if num_samples == 1:
            rewrites = [r[0] for r in self._generate(prompts, k=1, temperature=0.0, seed=None)]
            return rewrites[0] if single else rewrites
        samples = self._generate(prompts, k=num_samples, temperature=temperature, seed=seed)
        return samples[0] if single else samples

    def sample(self, prompts: Sequence[str], *, k: int, temperature: float = 1.0, seed: int | None = None) -> list[list[str]]:
        """``k`` sampled rewrites of each prompt (PRewrite-S), reproducible with ``seed``."""
        if k < 1 or temperature <= 0:
            raise ValueError(f"need k >= 1 and temperature > 0, got {k} and {temperature}")
        return self._generate(list(prompts), k=k, temperature=temperature, seed=seed)

    def __repr__(self) -> str:
        return f"PromptEnhancer(base_model={self.base_model!r}, dtype={self.dtype!r}, max_new_tokens={self.max_new_tokens})"


def read_prompts(stream: Any) -> list[str]:
    """One prompt per non-blank line of a text stream (``sys.stdin``), with ``\\r\\n`` line ends removed; a
    ``ValueError`` giving the offset of the first bad byte when the input is not UTF-8."""
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"stdin is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} "
                             f"({err.reason})") from None
    return [line.rstrip("\r") for line in raw.split("\n") if line.strip()]


def enhance_main(enhancer_dir: str | Path, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                 seed: int | None = None, dtype: str | None = None, as_json: bool = False) -> int:
    """CLI glue for ``rlprompt enhance``: rewrite ``prompts`` (``["-"]`` reads one prompt per stdin line) with
    the enhancer saved in ``enhancer_dir`` and print one rewrite per line (or a JSON list with ``as_json``)."""
    import sys

    if list(prompts) == ["-"]:
        prompts = read_prompts(sys.stdin)
    if not prompts:
        raise ValueError("no prompts to enhance: pass them as arguments or '-' to read stdin")
    for i, prompt in enumerate(prompts):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell could not decode arrive as lone surrogates
            raise ValueError(f"prompt {i + 1} is not valid UTF-8 text: {prompt[:60]!r}") from None
    enhancer = PromptEnhancer.from_pretrained(enhancer_dir, dtype=dtype)
    out = enhancer.enhance(list(prompts), num_samples=num_samples, temperature=temperature, seed=seed)
    if as_json:
        print(json.dumps([{"prompt": p, "enhanced": e} for p, e in zip(prompts, out)]))
    else:
        for rewrite in out:
            print(rewrite if isinstance(rewrite, str) else "\n".join(rewrite))
    return 0


__all__ = ["PromptEnhancer", "enhance_main", "read_prompts"]
