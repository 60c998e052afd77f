"""PromptEnhancer: a trained instruction rewriter (PRewrite, Kong et al. 2024; DPO / Sem-DPO) for inference and serving.

A saved enhancer is a directory of plain files, loaded offline and without pickle::

    enhancer.json               format version, base model reference and checksum, dtype, generation settings,
                                task info, and the dev evaluation of the original instruction beside its rewrites
    meta_prompt.txt             the meta-prompt, holding {instruction} once (plain text)
    adapter_config.json         the LoRA adapter's peft config
    adapter_model.safetensors   the LoRA weights
    tokenizer.json, tokenizer_config.json, chat_template.jinja   the rewriter's tokenizer and chat template

The base model is referenced portably: the bundled name (``smollm2-135m-instruct``), a hub id, or a local
checkpoint directory as given, never a cache path; ``base_model_sha256`` (the bundled GGUF file, or a local
directory's config and weights) is checked on load. It is resolved through :func:`rlprompt.models.load_model`,
so the directory stays a few MB. Files get the umask's modes (0o644 / 0o755 under the usual umask 022).

**Never worse than none.** Training stores the dev score of the initial instruction beside its rewrites'
(:func:`rewriter_evaluation`). When the rewrite the enhancer produces does not beat the original, the
enhancer is the *identity*: :meth:`PromptEnhancer.from_pretrained` loads no model and ``enhance(x) == x``.
Each single rewrite also passes one rule, :func:`fallback_reason`: a rewrite that is empty, cut off by
``max_new_tokens`` mid-sentence, or far longer than the input is replaced by the input.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rlprompt.errors import ConfigError, DataError, MissingFileError

FORMAT_VERSION = 2
"""Version 2 adds the tokenizer files, ``base_model_sha256`` and ``evaluation``; version 1 still loads (warning)."""
CONFIG_FILE = "enhancer.json"
META_PROMPT_FILE = "meta_prompt.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub model the bundled SmolLM2 is a Q4_1 quantization of (written as the adapter's base for plain peft)."""
MAX_REWRITE_WORDS = 60
"""A rewrite is "far longer" than its input past max(MAX_REWRITE_WORDS, MAX_GROWTH x the input's words) words."""
MAX_GROWTH = 4


# -- the fallback rule ------------------------------------------------------------------------------
class Rewrite(NamedTuple):
    """What the enhancer made of one prompt: ``text`` is what :meth:`PromptEnhancer.enhance` returns (the
    rewrite, or the prompt itself), ``fallback`` why the prompt was kept (``None`` when the rewrite is used;
    ``"identity"``, ``"empty"``, ``"truncated"`` or ``"too_long"``), ``raw`` the model's text (``None`` when
    no model ran: an identity enhancer)."""

    text: str
    fallback: str | None
    raw: str | None


def clean_rewrite(text: str) -> str:
    """The instruction inside a rewriter completion (PRewrite, Kong et al. 2024): first paragraph, without a
    leading ``Instruction:``/``New instruction:`` label and surrounding quotes."""
    text = text.strip().split("\n\n", 1)[0].strip()
    text = re.sub(r"^(new |rewritten |improved )?instruction\s*:\s*", "", text, flags=re.IGNORECASE)
    return text.strip().strip('"').strip("'").strip()


def fallback_reason(original: str, rewrite: str, finished: bool) -> str | None:
    """The one rule that decides whether a rewrite may replace ``original``; ``None`` when it may, else why not:

    - ``"empty"``: the rewrite is blank;
    - ``"truncated"``: generation stopped at ``max_new_tokens`` inside the rewrite (``finished`` is False), so
      it was cut mid-sentence;
    - ``"too_long"``: it has more than ``max(MAX_REWRITE_WORDS, MAX_GROWTH x original's words)`` words.
    """
    if not rewrite.strip():
        return "empty"
    if not finished:
        return "truncated"
    if len(rewrite.split()) > max(MAX_REWRITE_WORDS, MAX_GROWTH * len(original.split())):
        return "too_long"
    return None


def judge_rewrite(original: str, raw: str, finished: bool) -> Rewrite:
    """The :class:`Rewrite` of ``original`` from the model's completion ``raw``: cleaned with
    :func:`clean_rewrite`, then kept unless :func:`fallback_reason` fires. ``finished`` says whether the model
    stopped by itself (end of sequence) before ``max_new_tokens``; a first paragraph followed by more text
    ended before any cut."""
    text = clean_rewrite(raw)
    reason = fallback_reason(original, text, finished or "\n\n" in raw.strip())
    return Rewrite(original if reason else text, reason, raw)


# -- the stored evaluation --------------------------------------------------------------------------
def rewriter_evaluation(originals: Sequence[str], original_scores: Sequence[float],
                        rewrites: Mapping[str, tuple[Sequence[str], Sequence[float]]], *, deployed: str,
                        metric: str, examples: int) -> dict[str, Any]:
    """The evaluation an enhancer stores: the scores (``metric``, e.g. dev accuracy over ``examples`` inputs) of
    the original instructions beside those of each kind of rewrite (``rewrites[name] = (texts, scores)``, one
    per original). ``deployed`` names the rewrites :meth:`PromptEnhancer.enhance` produces (the greedy ones);
    ``identity`` is True unless their mean score beats the originals' (a tie keeps the originals)."""
    if deployed not in rewrites:
        raise ValueError(f"deployed={deployed!r} is not one of the rewrites {sorted(rewrites)}")

    def entry(texts: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
        if len(texts) != len(originals) or len(scores) != len(originals):
            raise ValueError(f"need one text and score per original ({len(originals)}), got {len(texts)} and "
                             f"{len(scores)}")
        values = [float(x) for x in scores]
        return {"texts": list(texts), "scores": values, "score": sum(values) / len(values)}

    table = {name: entry(*pair) for name, pair in rewrites.items()}
    original = entry(originals, original_scores)
    return {"metric": metric, "examples": int(examples), "deployed": deployed,
            "identity": not table[deployed]["score"] > original["score"], "original": original, "rewrites": table}


def describe_evaluation(evaluation: Mapping[str, Any] | None) -> str:
    """One line: the stored scores and whether the enhancer rewrites or keeps the original (identity)."""
    if not evaluation:
        return "no stored evaluation (an enhancer saved before rlprompt stored one): it always rewrites"
    scores = ", ".join([f"original {evaluation['original']['score']:.3f}"] + [
        f"{name} {entry['score']:.3f}" for name, entry in evaluation["rewrites"].items()])
    where = f"{evaluation['metric']} on {evaluation['examples']} examples: {scores}"
    if evaluation["identity"]:
        return f"{where}; the rewrite ({evaluation['deployed']}) does not beat the original: the enhancer keeps " \
               f"the original (identity)"
    return f"{where}; the rewrite ({evaluation['deployed']}) beats the original: the enhancer rewrites"


# -- the portable base-model reference --------------------------------------------------------------
def portable_base_model(name: str) -> str:
    """``name`` as an enhancer records it: the bundled model's converted cache directory becomes its bundled
    name; anything else (the bundled or tiny name, a hub id, a local directory) stays as given."""
    from rlprompt.models import BUNDLED, cache_dir

    if Path(name).is_absolute() and Path(name).resolve() == (cache_dir() / "models" / BUNDLED).resolve():
        return BUNDLED
    return name


def base_model_checksum(name: str) -> str | None:
    """A sha256 of the weights ``name`` loads: the bundled model's GGUF file, or a local directory's
    ``config.json`` and weight files (name and digest of each); ``None`` for the tiny random model (built from
    code) and a hub id (named by its repository)."""
    from rlprompt.models import BUNDLED, bundled_gguf_path

    if name == BUNDLED:
        files = [bundled_gguf_path()]
    elif Path(name).is_dir():
        files = sorted(p for p in Path(name).iterdir()
                       if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    else:
        return None
    lines = []
    for path in files:
        with open(path, "rb") as fh:
            lines.append(f"{path.name} {hashlib.file_digest(fh, 'sha256').hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _check_config(path: Path, config: Any) -> dict[str, Any]:
    """The contents of ``enhancer.json``, or a :class:`~rlprompt.errors.DataError` naming the file and the bad field."""
    if not isinstance(config, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("format_version") not in (1, FORMAT_VERSION):
        raise DataError(f"{path} has format_version {config.get('format_version')!r}; this rlprompt "
                        f"reads versions 1 to {FORMAT_VERSION}")
    base, dtype, tokens, info = (config.get(k) for k in ("base_model", "dtype", "max_new_tokens", "info"))
    checksum, evaluation = config.get("base_model_sha256"), config.get("evaluation")
    for key, value, ok, wanted in (
        ("base_model", base, isinstance(base, str) and bool(base), "a model name"),
        ("dtype", dtype, isinstance(dtype, str) and bool(dtype), "a dtype name"),
        ("max_new_tokens", tokens, isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 1,
         "a positive integer"),
        ("info", info, info is None or isinstance(info, dict), "a JSON object"),
        ("base_model_sha256", checksum, checksum is None or (isinstance(checksum, str) and len(checksum) == 64),
         "a sha256 hex digest or null"),
        ("evaluation", evaluation, evaluation is None or (
            isinstance(evaluation, dict) and isinstance(evaluation.get("identity"), bool)
            and isinstance(evaluation.get("original"), dict) and isinstance(evaluation.get("rewrites"), dict)),
         "null or an object with a boolean 'identity', 'original' and 'rewrites'"),
    ):
        if not ok:
            raise DataError(f"{path}: {key!r} must be {wanted}, got {value!r}")
    return config


def _open_to_umask(directory: Path) -> None:
    """Give ``directory`` and the files in it the modes ``mkdir``/``open`` would (``mkdtemp`` and safetensors
    make them private)."""
    from rlprompt.runs import current_umask

    mask = current_umask()
    for path in directory.iterdir():
        path.chmod(0o666 & ~mask)
    directory.chmod(0o777 & ~mask)


class PromptEnhancer:
    """Rewrites prompts with a LoRA-adapted causal LM prompted by a meta-prompt (PRewrite, Kong et al. 2024).

    ``model`` is a peft model (or a plain causal LM) and ``tokenizer`` its tokenizer; ``base_model`` is the
    :func:`~rlprompt.models.load_model` name the adapter was trained on. ``evaluation`` is what
    :func:`rewriter_evaluation` stored at training; when it says ``identity``, :meth:`enhance` returns every
    prompt unchanged and ``model`` may be ``None``. Generation is batched (left padding, ``batch_size`` prompts
    at once) in eval mode with a KV cache; calls are serialised by a lock, so one enhancer may be shared by
    threads.
    """

    def __init__(self, model: Any | None, tokenizer: Any, *, base_model: str, meta_prompt: str,
                 max_new_tokens: int = 48, dtype: str = "float32", batch_size: int = 16,
                 info: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None) -> None:
        if meta_prompt.count("{instruction}") != 1:
            raise ConfigError(f"meta_prompt must contain {{instruction}} exactly once, got {meta_prompt!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
        self.evaluation = evaluation
        if model is None and not self.identity:
            raise ValueError("model may be None only for an identity enhancer (evaluation['identity'] true)")
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.base_model, self.meta_prompt, self.dtype = base_model, meta_prompt, dtype
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.info = dict(info or {})
        self._lock = threading.Lock()

    @property
    def identity(self) -> bool:
        """True when the stored evaluation found no gain from rewriting: :meth:`enhance` keeps every prompt."""
        return bool(self.evaluation and self.evaluation.get("identity"))

    # -- loading and saving ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | Path, *, dtype: str | None = None, batch_size: int = 16) -> PromptEnhancer:
        """Load a directory written by :meth:`save_pretrained` (offline: the base model comes from
        :func:`rlprompt.models.load_model`, the adapter from safetensors, the tokenizer from the directory).
        ``dtype`` overrides the saved one. An identity enhancer loads its tokenizer only, no model.

        A damaged directory (a missing, truncated or hand-edited file, an adapter that does not fit the base
        model, a base model whose weights differ from the recorded checksum) is a
        :class:`~rlprompt.errors.DataError` or :class:`~rlprompt.errors.MissingFileError` naming the file, raised
        before anything is served. A directory written before format 2 (no tokenizer files, no checksum) loads with
        a warning."""
        import safetensors
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from rlprompt.models import load_model, peft_deprecations_silenced
        from rlprompt.tasks import read_json, read_text

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise MissingFileError(f"{str(directory)!r} is not a saved PromptEnhancer: {CONFIG_FILE} is missing")
        config = _check_config(config_path, read_json(config_path))
        has_tokenizer = (directory / TOKENIZER_CONFIG).is_file()
        needed = (META_PROMPT_FILE,) + ((TOKENIZER_CONFIG,) if config["format_version"] >= 2 else ())
        if not (config.get("evaluation") or {}).get("identity"):
            needed += ADAPTER_FILES
        for name in needed:
            if not (directory / name).is_file():
                raise MissingFileError(f"{directory / name} is missing (only safetensors are read)")
        meta_prompt = read_text(directory / META_PROMPT_FILE)
        settings = dict(base_model=config["base_model"], meta_prompt=meta_prompt, batch_size=batch_size,
                        max_new_tokens=config["max_new_tokens"], dtype=dtype or config["dtype"],
                        info=config.get("info") or {}, evaluation=config.get("evaluation"))
        if settings["evaluation"] and settings["evaluation"]["identity"]:
            return cls(None, AutoTokenizer.from_pretrained(str(directory)), **settings)
        if config["format_version"] < 2 or not has_tokenizer:
            warnings.warn(f"{directory} was saved by an older rlprompt (enhancer format {config['format_version']}: "
                          f"base model {config['base_model']!r} without a checksum, no tokenizer files, no dev "
                          f"evaluation); loading it with the base model's tokenizer. Save it again with "
                          f"PromptEnhancer.save_pretrained to make it portable", stacklevel=2)
        read_json(directory / "adapter_config.json")  # a clear error for a truncated file, before peft reads it
        adapter = directory / "adapter_model.safetensors"
        try:
            saved = set(load_file(str(adapter)))
        except (safetensors.SafetensorError, OSError) as err:
            raise DataError(f"{adapter} is not a readable safetensors file ({err}): the enhancer was damaged "
                            f"or copied incompletely") from None
        recorded, actual = config.get("base_model_sha256"), base_model_checksum(config["base_model"])
        if recorded is not None and actual is not None and actual != recorded:
            raise DataError(f"the base model {config['base_model']!r} is not the one the enhancer in {directory} "
                            f"was trained on: its sha256 is {actual[:16]}..., {CONFIG_FILE} records "
                            f"{recorded[:16]}... (its config or weights changed); use the original base model")
        base, base_tokenizer = load_model(config["base_model"], dtype=settings["dtype"])
        try:
            with peft_deprecations_silenced():
                model = PeftModel.from_pretrained(base, str(directory), is_trainable=False, use_safetensors=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"the adapter in {directory} does not load onto {config['base_model']!r}: "
                            f"{first}") from None
        # the adapter's own tensor names (LoRA here never trains the embeddings); "auto" would ask the hub
        # whether the base model's vocabulary changed, a network lookup for a hub-id base
        expected = set(get_peft_model_state_dict(model, save_embedding_layers=False))
        if saved != expected:
            raise DataError(f"{adapter} does not hold the adapter's tensors: missing {sorted(expected - saved)[:3]}, "
                            f"unexpected {sorted(saved - expected)[:3]}")
        tokenizer = AutoTokenizer.from_pretrained(str(directory)) if has_tokenizer else base_tokenizer
        return cls(model, tokenizer, **settings)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the enhancer into ``directory`` atomically (a temporary sibling directory renamed into
        place; an existing enhancer there is replaced only once the new one is complete): the adapter, the
        tokenizer, the meta-prompt and ``enhancer.json`` with a portable base-model reference
        (:func:`portable_base_model`, :func:`base_model_checksum`) and the stored evaluation."""
        directory = Path(directory).expanduser().resolve()
        if not hasattr(self.model, "peft_config"):
            raise TypeError("save_pretrained needs a peft model (the trained LoRA adapter); an identity enhancer "
                            "loaded without its model is saved by copying its directory")
        from rlprompt.models import BUNDLED, TINY

        base = portable_base_model(self.base_model)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            self.model.save_pretrained(str(tmp), safe_serialization=True)
            for stray in tmp.glob("README.md"):
                stray.unlink()
            adapter_config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
            adapter_config["base_model_name_or_path"] = {BUNDLED: BUNDLED_HUB_ID, TINY: None}.get(base, base)
            (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / META_PROMPT_FILE).write_text(self.meta_prompt, encoding="utf-8")
            config = {"format_version": FORMAT_VERSION, "base_model": base,
                      "base_model_sha256": base_model_checksum(base), "dtype": self.dtype,
                      "max_new_tokens": self.max_new_tokens, "info": self.info, "evaluation": self.evaluation}
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            _open_to_umask(tmp)
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
        minus ``max_new_tokens``; ``None`` when the model's config does not tell its context, or when there is
        no model (an identity enhancer reads nothing)."""
        context = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return context - self.max_new_tokens if isinstance(context, int) else None

    def _stop_ids(self) -> set[int]:
        """Token ids that end a generation: the generation config's end-of-sequence ids and the tokenizer's."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
        return ids | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())

    @torch.inference_mode()
    def _generate(self, prompts: list[str], *, k: int, temperature: float,
                  seed: int | None) -> list[list[tuple[str, bool]]]:
        """``k`` completions of each prompt's meta-prompt, each as (text, whether the model ended it before
        ``max_new_tokens``)."""
        encoded = [self._encode(p) for p in prompts]
        pad, stops = self.tokenizer.pad_token_id, self._stop_ids()
        out: list[list[tuple[str, bool]]] = []
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
                    num_return_sequences=k, pad_token_id=pad, use_cache=True, **kwargs)[:, width:].cpu()
                texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
                ended = [bool(stops.intersection(row.tolist())) for row in generated]
                out.extend([(texts[j].strip(), ended[j]) for j in range(i * k, (i + 1) * k)]
                           for i in range(len(batch)))
        return out

    def enhance_with_reasons(self, prompt: str | Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                             seed: int | None = None) -> Rewrite | list[Rewrite] | list[list[Rewrite]]:
        """What :meth:`enhance` does, as :class:`Rewrite` records (the text, why the prompt was kept if it was,
        and the model's own text), in :meth:`enhance`'s shapes."""
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("enhance takes a string or a list of strings")
        if not prompts:
            return []
        if self.identity:
            rows = [[Rewrite(p, "identity", None)] * num_samples for p in prompts]
        else:
            generated = self._generate(prompts, k=num_samples, temperature=0.0 if num_samples == 1 else temperature,
                                       seed=None if num_samples == 1 else seed)
            rows = [[judge_rewrite(p, raw, ended) for raw, ended in row] for p, row in zip(prompts, generated)]
        shaped = [row[0] for row in rows] if num_samples == 1 else rows
        return shaped[0] if single else shaped

    def enhance(self, prompt: str | Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                seed: int | None = None) -> str | list[str] | list[list[str]]:
        """Rewrite ``prompt`` (one string, or a list rewritten in batches).

        ``num_samples=1`` decodes greedily and returns a string per prompt (a ``str`` for a ``str``, a list
        for a list). ``num_samples=K > 1`` samples K rewrites at ``temperature``: a list of K strings per prompt.
        Each rewrite is cleaned (:func:`clean_rewrite`); where :func:`fallback_reason` rejects it, and always
        for an identity enhancer, the prompt itself is returned (:meth:`enhance_with_reasons` says why).
        """
        out = self.enhance_with_reasons(prompt, num_samples=num_samples, temperature=temperature, seed=seed)
        if isinstance(out, Rewrite):
            return out.text
        return [r.text if isinstance(r, Rewrite) else [x.text for x in r] for r in out]

    def sample(self, prompts: Sequence[str], *, k: int, temperature: float = 1.0, seed: int | None = None) -> list[list[str]]:
        """``k`` sampled completions of each prompt as the model wrote them (PRewrite-S cleans and scores
        them), reproducible with ``seed``."""
        if k < 1 or temperature <= 0:
            raise ConfigError(f"need k >= 1 and temperature > 0, got {k} and {temperature}")
        if self.model is None:
            raise ConfigError("an identity enhancer loaded without its model cannot sample")
        return [[text for text, _ in row] for row in self._generate(list(prompts), k=k, temperature=temperature, seed=seed)]

    def __repr__(self) -> str:
        return (f"PromptEnhancer(base_model={self.base_model!r}, dtype={self.dtype!r}, "
                f"max_new_tokens={self.max_new_tokens}, identity={self.identity})")


def read_prompts(stream: Any) -> list[str]:
    """One prompt per non-blank line of a text stream (``sys.stdin``), with ``\\r\\n`` line ends removed; a
    :class:`~rlprompt.errors.DataError` giving the offset of the first bad byte when the input is not UTF-8."""
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"stdin is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} "
                            f"({err.reason})") from None
    return [line.rstrip("\r") for line in raw.split("\n") if line.strip()]


def enhance_main(enhancer_dir: str | Path, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                 seed: int | None = None, dtype: str | None = None, as_json: bool = False) -> int:
    """CLI glue for ``rlprompt enhance``: rewrite ``prompts`` (``["-"]`` reads one prompt per stdin line) with
    the enhancer saved in ``enhancer_dir`` and print one rewrite per line (or a JSON list of ``{prompt, enhanced,
    fallback}`` with ``as_json``). Standard error gets one line with the stored evaluation (whether the enhancer
    is the identity) and one counting the prompts kept by the fallback rule, if any."""
    import sys

    if list(prompts) == ["-"]:
        prompts = read_prompts(sys.stdin)
    if not prompts:
        raise ConfigError("no prompts to enhance: pass them as arguments or '-' to read stdin")
    for i, prompt in enumerate(prompts):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell could not decode arrive as lone surrogates
            raise DataError(f"prompt {i + 1} is not valid UTF-8 text: {prompt[:60]!r}") from None
    enhancer = PromptEnhancer.from_pretrained(enhancer_dir, dtype=dtype)
    print(f"rlprompt enhance: {describe_evaluation(enhancer.evaluation)}", file=sys.stderr)
    out = enhancer.enhance_with_reasons(list(prompts), num_samples=num_samples, temperature=temperature, seed=seed)
    rows = [[r] if isinstance(r, Rewrite) else r for r in out]
    kept = [r.fallback for row in rows for r in row if r.fallback not in (None, "identity")]
    if kept:
        reasons = ", ".join(f"{reason}: {kept.count(reason)}" for reason in dict.fromkeys(kept))
        print(f"rlprompt enhance: kept the original for {len(kept)} of {sum(map(len, rows))} rewrites ({reasons})",
              file=sys.stderr)
    if as_json:
        print(json.dumps([{"prompt": p, "enhanced": [r.text for r in row] if num_samples > 1 else row[0].text,
                           "fallback": [r.fallback for r in row] if num_samples > 1 else row[0].fallback}
                          for p, row in zip(prompts, rows)]))
    else:
        for row in rows:
            print("\n".join(r.text for r in row))
    return 0


__all__ = ["MAX_GROWTH", "MAX_REWRITE_WORDS", "PromptEnhancer", "Rewrite", "base_model_checksum", "clean_rewrite",
           "describe_evaluation", "enhance_main", "fallback_reason", "judge_rewrite", "portable_base_model", "read_prompts",
           "rewriter_evaluation"]
