"""rlprompt: prompt policies learned with reinforcement learning from a frozen target model's feedback."""

__version__ = "0.1.0"

_LAZY = {"PromptEnhancer": "rlprompt.enhancer", "train": "rlprompt.training", "load_task": "rlprompt.tasks"}


def __getattr__(name: str):
    """Lazy exports (``rlprompt.train``, ``rlprompt.load_task``, ``rlprompt.PromptEnhancer``), so ``import rlprompt``
    stays light (no torch import until one is used)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlprompt' has no attribute {name!r}")
