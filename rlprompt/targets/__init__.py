"""Frozen target models behind one interface: :class:`Target`."""

import os

from rlprompt.errors import ConfigError
from rlprompt.targets.base import BudgetExceeded, QueryStats, Target, TargetError, check_template, fill
from rlprompt.targets.cache import CachedTarget
from rlprompt.targets.openai import OpenAITarget

__all__ = [
    "BudgetExceeded",
    "CachedTarget",
    "OpenAITarget",
    "QueryStats",
    "Target",
    "TargetError",
    "check_template",
    "fill",
    "make_target",
]


# OpenAITarget settings a target spec may carry after "?": name -> parser of the text value.
_SPEC_OPTIONS = {"concurrency": int, "timeout": float, "max_retries": int, "backoff": float, "max_wait": float,
                 "top_logprobs": int, "label_tokens": int, "mode": str, "missing": str, "api_key_env": str,
                 "scoring": str}


def make_target(spec: str, *, dtype: str | None = None, device: str | None = None,
                cache: str | os.PathLike | None = None, **kwargs) -> Target:
    """Build a target from a string: ``openai:<base_url>:<model>`` (the model is the text after the
    last ``:``, so ``openai:http://127.0.0.1:8000/v1:smollm2`` works) gives :class:`OpenAITarget`;
    anything else is a model name for ``HFTarget(spec, dtype=dtype, **kwargs)``. ``cache`` puts a
    :class:`CachedTarget` with its SQLite file at that path in front of either, so repeated queries (in this
    process or a later one) are answered from disk.

    An OpenAI spec may end in ``?key=value&...`` with :class:`OpenAITarget` settings (``timeout``,
    ``max_retries``, ``backoff``, ``max_wait``, ``concurrency``, ``mode``, ``scoring``, ...), so configs and
    the CLI can tune them: ``openai:http://127.0.0.1:8000/v1:smollm2?timeout=10&max_retries=3``; an endpoint
    without logprobs needs ``scoring=labels`` (label parsing, hard labels). ``dtype`` and
    ``device`` are local-weights settings and do not apply to a remote endpoint."""
    if spec.startswith("openai:"):
        spec, _, query = spec.partition("?")
        base_url, sep, model = spec[len("openai:"):].rpartition(":")
        if not sep or not model or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"target spec {spec!r} must look like openai:<base_url>:<model>[?key=value&...]")
        for pair in filter(None, query.split("&")):
            key, eq, value = pair.partition("=")
            if key not in _SPEC_OPTIONS or not eq:
                raise ConfigError(f"target spec option {pair!r}: expected key=value with key one of {sorted(_SPEC_OPTIONS)}")
            try:
                kwargs[key] = _SPEC_OPTIONS[key](value)
            except (ValueError, KeyError):
                raise ConfigError(f"target spec option {key}={value!r} is not a valid {key}") from None
        target: Target = OpenAITarget(base_url, model, **kwargs)
    else:
        from rlprompt.targets.hf import HFTarget

        local = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
        target = HFTarget(spec, **local, **kwargs)
    return target if cache is None else CachedTarget(target, cache)
