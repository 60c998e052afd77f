"""Frozen target models behind one interface: :class:`Target`."""

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


def make_target(spec: str, **kwargs) -> Target:
    """Build a target from a string: ``openai:<base_url>:<model>`` (the model is the text after the
    last ``:``, so ``openai:http://127.0.0.1:8000/v1:smollm2`` works) gives :class:`OpenAITarget`;
    anything else is a model name for ``HFTarget(spec, **kwargs)``."""
    if spec.startswith("openai:"):
        base_url, sep, model = spec[len("openai:"):].rpartition(":")
        if not sep or not model or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"target spec {spec!r} must look like openai:<base_url>:<model>")
        return OpenAITarget(base_url, model, **kwargs)
    from rlprompt.targets.hf import HFTarget

    return HFTarget(spec, **kwargs)
