"""PRewrite's environment: rewrite an instruction in one step (Kong et al. 2024, "PRewrite: Prompt
Rewriting with Reinforcement Learning").

Observation: the original instruction as token ids, ``Box(0, max token id, shape=(max_tokens + 1,),
int64)``: entries ``[0:max_tokens]`` hold the ids (0-padded, truncated to ``max_tokens``), the last
entry the number of real ids. Not a ``spaces.Text``, which stable-baselines3 rejects; the texts are in
``info``. Action: ``spaces.Text(max_length, charset=printable ASCII incl. space)``, the rewritten
instruction (``charset=None``: any string, what a rewriter LM writes). Reward: the :class:`PromptScorer` reward of
the rewritten instruction; one step per episode. :meth:`PromptRewriteEnv.step_group` takes a group of rewrites of the
same instruction at once, scored in one target call on one shared minibatch (RLPrompt's input z-score compares
them per input): PRewrite's GRPO reward (:class:`rlprompt.policies.prewrite.RewriteReward`) is that step.
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


class AnyText(spaces.Text):
    """A Text space holding every string, of any characters and length (a rewriter LM writes any Unicode, which a
    Gymnasium Text space cannot list); it samples printable ASCII of at most ``max_length`` characters."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)


class PromptRewriteEnv(gym.Env):
    """One-step instruction rewriting scored by a frozen target (PRewrite, Kong et al. 2024).

    ``instructions``: originals drawn at reset with ``self.np_random`` (default: the task's own prompt);
    ``reset(options={"instruction": s})`` picks one. ``max_tokens`` bounds the observation,
    ``max_length`` the rewrite's characters, drawn from ``charset`` (None: any string, :class:`AnyText`).
    Other arguments as :class:`PromptTokensEnv`.
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
        charset: str | None = PRINTABLE,
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
        self.action_space = (AnyText(max_length, min_length=0, charset=PRINTABLE) if charset is None
                             else spaces.Text(max_length, min_length=0, charset=charset))
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
        obs, rewards, terminated, truncated, infos = self.step_group([action])
        return obs, float(rewards[0]), terminated, truncated, infos[0]

    def step_group(self, actions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, bool, bool, list[dict[str, Any]]]:
        """One step for a group of rewrites of the current instruction (PRewrite's GRPO group, Kong et al. 2024):
        all scored in ONE scorer call on one shared minibatch, then the episode ends. Returns the observation, the
        rewards ``(G,)``, ``terminated`` (True), ``truncated`` (False) and one info per rewrite (``instruction``,
        ``rewritten``, ``raw_reward``, ``accuracy``). :meth:`step` is this for a group of one."""
        if self.instruction is None:
            raise RuntimeError("call reset() before step()")
        for action in actions:
            if not isinstance(action, str) or not self.action_space.contains(action):
                raise ValueError(f"action {action!r} is not a string" + ("" if isinstance(self.action_space, AnyText)
                                 else f" of at most {self.action_space.max_length} characters of the env's charset (default: "
                                 "printable ASCII)"))
        rewards, infos = self.scorer.score(actions)
        obs = self._obs()
        infos = [{"instruction": self.instruction, "rewritten": action, **info} for action, info in zip(actions, infos)]
        self.instruction = None
        return obs, rewards, True, False, infos


__all__ = ["PRINTABLE", "AnyText", "PromptRewriteEnv"]
