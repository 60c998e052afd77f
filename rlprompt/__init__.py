"""rlprompt: prompt policies learned with reinforcement learning from a frozen target model's feedback."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports, so ``import rlprompt`` stays light (no torch import until one is used)."""
    if name == "PromptEnhancer":
        from rlprompt.enhancer import PromptEnhancer

        return PromptEnhancer
    raise AttributeError(f"module 'rlprompt' has no attribute {name!r}")
