"""Prompt policies, one module per method.

* :mod:`.rlprompt`: RLPrompt's token-by-token policy trained with PPO (Deng et al. 2022).
"""

from rlprompt.policies.rlprompt import RLPromptConfig, RLPromptPolicy, train_rlprompt

__all__ = ["RLPromptConfig", "RLPromptPolicy", "train_rlprompt"]
