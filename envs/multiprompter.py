"""MultiPrompter (Kim et al. 2023, "MultiPrompter: Cooperative Prompt Optimization with Multi-Agent
Reinforcement Learning"): K prompter agents take turns, each writing its own segment of one prompt,
and share the team reward the target gives the whole prompt.

A PettingZoo AEC environment. Agent ``prompter_k`` writes tokens ``[k*S, (k+1)*S)`` (``S`` =
``segment_length``), one token per step, then the turn passes to ``prompter_{k+1}``. Conventions follow
:class:`~rlprompt.envs.PromptTokensEnv`: every agent observes ``Box(0, max token id, shape=(K*S + 2,),
int64)``: the whole prompt's token ids so far (0 where not chosen yet), then the position ``t`` (tokens
chosen), then the observing agent's number ``k + 1`` (1-based, so no observation is all zeros); actions
are ``Discrete(len(env.action_token_ids))``. All agents receive the scorer's reward of the finished
prompt and terminate together; ``infos`` then hold ``prompt``, ``accuracy`` and ``raw_reward``.

The turn order (:func:`acting_agent`) and the observation (:func:`observation`, for a batch of prompts) are
plain functions, so the batched trainer of :mod:`rlprompt.policies.multiprompter` acts with the env's own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv

from rlprompt.envs.prompt_tokens import action_vocabulary, decode_prompt, resolve_tokenizer
from rlprompt.envs.scoring import PromptScorer
from rlprompt.errors import ConfigError
from rlprompt.models import BUNDLED
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask


def acting_agent(t: int, segment_length: int) -> int:
    """The 0-based agent who writes token ``t``: agent ``k`` writes tokens ``[k*S, (k+1)*S)``, S = segment_length."""
    return t // segment_length


def observation(tokens: np.ndarray, t: int, agent: int) -> np.ndarray:
    """Agent ``agent``'s (0-based) observation of each row of ``tokens`` ``(n, K*S)`` with ``t`` tokens chosen:
    ``(n, K*S + 2)`` int64, the prompt's token ids (0 where not chosen yet), then ``t``, then ``agent + 1``."""
    tokens = np.asarray(tokens, dtype=np.int64)
    extra = np.broadcast_to(np.array([t, agent + 1], dtype=np.int64), (tokens.shape[0], 2))
    return np.concatenate([tokens, extra], axis=1)


class MultiPrompterEnv(AECEnv):
    """K cooperative prompters writing one prompt segment by segment (MultiPrompter, Kim et al. 2023).

    Arguments as :class:`~rlprompt.envs.PromptTokensEnv`, plus ``n_agents`` (K, as MultiPrompterConfig's field) and
    ``segment_length`` (S, tokens per agent). ``num_agents=`` is the old name of ``n_agents``, still read with a
    warning (PettingZoo's ``env.num_agents`` is the number of agents still acting, 0 before ``reset``).
    ``reset(seed=s)`` reseeds the scorer's minibatch sampler.
    """

    metadata = {"name": "multiprompter_v0", "render_modes": [], "is_parallelizable": False}

    def __init__(
        self,
        task: str | ClassificationTask = "sentiment",
        target: str | Target = BUNDLED,
        n_agents: int = 2,
        segment_length: int = 3,
        vocab: Sequence[int] | None = None,
        reward: str = "gap",
        stabilizer: str = "none",
        batch_size: int = 16,
        split: str = "train",
        *,
        tokenizer: Any = None,
        num_agents: int | None = None,
        **reward_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_agents is not None:
            warnings.warn("MultiPrompterEnv(num_agents=) is deprecated: pass n_agents=", FutureWarning, stacklevel=2)
            n_agents = num_agents
        if n_agents < 1 or segment_length < 1:
            raise ValueError(f"n_agents and segment_length must be >= 1, got {n_agents} and {segment_length}")
        self.scorer = PromptScorer(target, task, reward=reward, stabilizer=stabilizer, split=split,
                                   batch_size=batch_size, **reward_kwargs)
        self.tokenizer = resolve_tokenizer(self.scorer.target, tokenizer)
        self.action_token_ids = action_vocabulary(self.tokenizer, vocab)
        self.segment_length = int(segment_length)
        self.prompt_length = int(n_agents) * self.segment_length
        self.possible_agents = [f"prompter_{k}" for k in range(n_agents)]
        high = len(self.tokenizer) - 1
        if self.prompt_length > high or n_agents > high:
            raise ConfigError(f"prompt length {self.prompt_length} must stay below the vocabulary size {high + 1}")
        self.observation_spaces = {a: spaces.Box(0, high, shape=(self.prompt_length + 2,), dtype=np.int64)
                                   for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(len(self.action_token_ids)) for a in self.possible_agents}
        self._tokens = np.zeros(self.prompt_length, dtype=np.int64)
        self._t = 0
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    @property
    def prompt(self) -> str:
        """The prompt text of the tokens chosen so far (decoded as in PromptTokensEnv)."""
        return decode_prompt(self.tokenizer, self._tokens[: self._t])

    def observe(self, agent: str) -> np.ndarray:
        return observation(self._tokens[None], self._t, self.possible_agents.index(agent))[0]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None:
            self.scorer.reseed(seed)
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self._tokens[:] = 0
        self._t = 0
        self.agent_selection = self.agents[0]

    def step(self, action: int | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if action is None or np.ndim(action) != 0 or not self.action_spaces[agent].contains(np.int64(action)):
            raise ValueError(f"action {action!r} of {agent} is outside Discrete({len(self.action_token_ids)})")
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self._tokens[self._t] = self.action_token_ids[int(action)]
        self._t += 1
        if self._t == self.prompt_length:
            rewards, infos = self.scorer.score([self.prompt])
            for a in self.agents:
                self.rewards[a] = float(rewards[0])
                self.terminations[a] = True
                self.infos[a] = {"prompt": self.prompt, "token_ids": self._tokens.tolist(), **infos[0]}
        done = self._t == self.prompt_length
        self.agent_selection = (self.agents[0] if done
                                else self.possible_agents[acting_agent(self._t, self.segment_length)])
        self._accumulate_rewards()

    def render(self) -> None:
        """No rendering: the prompt is in ``infos`` and :attr:`prompt`."""
        return

    def close(self) -> None:
        return None


__all__ = ["MultiPrompterEnv", "acting_agent", "observation"]
