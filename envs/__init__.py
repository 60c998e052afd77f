"""Gymnasium (and PettingZoo) environments in which a policy writes or edits prompts for a frozen target.

Registered ids (``gymnasium.make(id)`` with no arguments uses the bundled SmolLM2 target and the
built-in ``sentiment`` task):

* ``rlprompt/PromptTokens-v0``: :class:`PromptTokensEnv`, RLPrompt (Deng et al. 2022), token by token.
* ``rlprompt/PromptRewrite-v0``: :class:`PromptRewriteEnv`, PRewrite (Kong et al. 2024), one-step rewrite.
* ``rlprompt/PromptEdit-v0``: :class:`PromptEditEnv`, GrIPS-style phrase edits (Prasad et al. 2023).

Plus :class:`MultiPrompterEnv` (PettingZoo AEC, MultiPrompter, Kim et al. 2023), the batched vector env
:func:`make_prompt_tokens_vec_env`, and :class:`PromptScorer`, the one place prompts become rewards.
"""

from __future__ import annotations

import gymnasium

from rlprompt.envs.prompt_edit import PromptEditEnv
from rlprompt.envs.prompt_rewrite import PromptRewriteEnv
from rlprompt.envs.prompt_tokens import BatchedPromptVecEnv, PromptTokensEnv, make_prompt_tokens_vec_env
from rlprompt.envs.scoring import PromptScorer

ENV_IDS: tuple[str, ...] = ("rlprompt/PromptTokens-v0", "rlprompt/PromptRewrite-v0", "rlprompt/PromptEdit-v0")

for _id, _entry in zip(ENV_IDS, ("rlprompt.envs.prompt_tokens:PromptTokensEnv",
                                 "rlprompt.envs.prompt_rewrite:PromptRewriteEnv",
                                 "rlprompt.envs.prompt_edit:PromptEditEnv")):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)


def __getattr__(name: str):
    # PettingZoo is imported only when MultiPrompterEnv is asked for.
    if name == "MultiPrompterEnv":
        from rlprompt.envs.multiprompter import MultiPrompterEnv

        return MultiPrompterEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENV_IDS",
    "BatchedPromptVecEnv",
    "MultiPrompterEnv",
    "PromptEditEnv",
    "PromptRewriteEnv",
    "PromptScorer",
    "PromptTokensEnv",
    "make_prompt_tokens_vec_env",
]
