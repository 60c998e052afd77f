"""PRewrite's environment: rewrite an instruction in one step (Kong et al. 2024, "PRewrite: Prompt
Rewriting with Reinforcement Learning").

Observation: the original instruction as token ids, ``Box(0, max token id, shape=(max_tokens + 1,),
int64)``: entries ``[0:max_tokens]`` hold the ids (0-padded, truncated to ``max_tokens``), the last
entry the number of real ids. Not a ``spaces.Text``, which stable-baselines3 rejects; the texts are in
``info``. Action: ``spaces.Text(max_length, charset=printable ASCII incl. space)``, the rewritten
instruction. Reward: the :class:`PromptScorer` reward of the rewritten instruction; one step per episode.
The Text action space means SB3 cannot train on it directly: a rewriter LM (``policies/``) acts here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlprompt.envs.prompt_tokens import resolve_tokenizer
from rlprompt.envs.scoring import PromptScorer
from rlprompt.models import BUNDLED
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask

PRINTABLE = "".join(chr(c) for c in range(32, 127))
"""Printable ASCII: space, letters, digits and punctuation (no tabs or newlines)."""


class PromptRewriteEnv(gym.Env):
    """One-step instruction rewriting scored by a frozen target (PRewrite, Kong et al. 2024).

    ``instructions``: originals drawn at reset with ``self.np_random`` (default: the task's own prompt);
    ``reset(options={"instruction": s})`` picks one. ``max_tokens`` bounds the observation,
    ``max_length`` the rewrite's characters. Other arguments as :class:`PromptTokensEnv`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str | ClassificationTask = "sentiment",
        target: str | Target = BUNDLED,
        instructions: Sequence[str] | None = None,
        max_tokens: int = 64,
        max_length: int = 256,
        reward: str = "gap",
        stabilizer: str = "none",
        batch_size: int = 16,
        split: str = "train",
        *,
        tokenizer: Any = None,
        **reward_kwargs: Any,
    ) -> None:
        if max_tokens < 1 or max_length < 1:
            raise ValueError(f"max_tokens and max_length must be >= 1, got {max_tokens} and {max_length}")
        self.scorer = PromptScorer(target, task, reward=reward, stabilizer=stabilizer, split=split,
                                   batch_size=batch_size, **reward_kwargs)
        self.tokenizer = resolve_tokenizer(self.scorer.target, tokenizer)
        self.instructions = list(instructions) if instructions is not None else [self.scorer.task.prompt]
        if not self.instructions:
            raise ValueError("instructions is empty: give at least one instruction to rewrite")
        self.max_tokens = int(max_tokens)
        self.observation_space = spaces.Box(0, len(self.tokenizer) - 1, shape=(self.max_tokens + 1,), dtype=np.int64)
        self.action_space = spaces.Text(max_length, min_length=0, charset=PRINTABLE)
        self.instruction: str | None = None

    def _obs(self) -> np.ndarray:
        ids = self.tokenizer(self.instruction, add_special_tokens=False).input_ids[: self.max_tokens]
        obs = np.zeros(self.max_tokens + 1, dtype=np.int64)
        obs[: len(ids)] = ids
        obs[-1] = len(ids)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.scorer.reseed(seed)
        options = options or {}
        if "instruction" in options:
            self.instruction = str(options["instruction"])
        else:
            self.instruction = self.instructions[int(self.np_random.integers(len(self.instructions)))]
        return self._obs(), {"instruction": self.instruction}

    def step(self, action: str) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.instruction is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str) or not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not a string of at most {self.action_space.max_length} "
                             "printable ASCII characters")
        rewards, infos = self.scorer.score([action])
        obs = self._obs()
        info = {"instruction": self.instruction, "rewritten": action, **infos[0]}
        self.instruction = None
        return obs, float(rewards[0]), True, False, info


__all__ = ["PRINTABLE", "PromptRewriteEnv"]
