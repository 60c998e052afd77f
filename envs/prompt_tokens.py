"""RLPrompt's environment: write a discrete prompt one token at a time (Deng et al. 2022, EMNLP).

Observation contract (shared with the SB3 policy in ``rlprompt.policies``; do not change):
``Box(low=0, high=max token id, shape=(prompt_length + 1,), dtype=int64)``; entries ``[0:prompt_length]``
are the token ids chosen so far (0 where not chosen yet), the last entry is the position ``t`` (the
number of tokens chosen). Action ``Discrete(len(env.action_token_ids))``; ``env.action_token_ids[a]``
is the token id of action ``a``. The reward is 0 until the last token, then the scorer's reward of the
decoded prompt; the episode terminates after ``prompt_length`` tokens.

Decoding: the prompt text is ``tokenizer.decode(token_ids)`` with ONE leading space stripped, because
the task template (``"{sentence} {prompt}"``) already puts a space before the prompt: the target then
reads the same tokens the policy chose (a word-initial token such as ``Ġgreat`` keeps its space).

:class:`BatchedPromptVecEnv` runs many such envs over one shared :class:`PromptScorer` and scores the
prompts of all envs that finish in the same step in one call: RLPrompt's batch of candidate prompts
z-scored on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from rlprompt.envs.scoring import PromptScorer
from rlprompt.errors import ConfigError
from rlprompt.models import BUNDLED, load_tokenizer
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask


def resolve_tokenizer(target: Target, tokenizer: Any = None) -> Any:
    """``tokenizer`` if given, else the target's own ``.tokenizer``, else the bundled SmolLM2 tokenizer."""
    return tokenizer or getattr(target, "tokenizer", None) or load_tokenizer(BUNDLED)


def action_vocabulary(tokenizer: Any, vocab: Sequence[int] | None) -> np.ndarray:
    """Token ids the policy may pick: ``vocab`` checked against the tokenizer, or (``None``) every id of the
    tokenizer except its special tokens (BOS/EOS/pad would end or corrupt the prompt)."""
    size = len(tokenizer)
    if vocab is None:
        ids = np.setdiff1d(np.arange(size, dtype=np.int64), np.asarray(tokenizer.all_special_ids, dtype=np.int64))
    else:
        ids = np.asarray(list(vocab), dtype=np.int64)
        if ids.size == 0:
            raise ConfigError("vocab is empty: give at least one allowed token id (or None for the full vocabulary)")
        bad = ids[(ids < 0) | (ids >= size)]
        if bad.size:
            raise ConfigError(f"token id {int(bad[0])} in vocab is outside the tokenizer's vocabulary [0, {size})")
        if len(np.unique(ids)) != len(ids):
            raise ConfigError(f"vocab holds duplicate token ids: {sorted(ids.tolist())[:20]}")
    return ids


def decode_prompt(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Prompt text of ``token_ids``: the tokenizer's decoding minus one leading space (see module docstring)."""
    text = tokenizer.decode(list(token_ids), clean_up_tokenization_spaces=False)
    return text.removeprefix(" ")


class PromptTokensEnv(gym.Env):
    """Compose a ``prompt_length``-token prompt for a frozen target (RLPrompt, Deng et al. 2022).

    ``task``: task name/path (:func:`rlprompt.tasks.load_task`) or a task object; ``target``: a model name (built
    for this env's scorer) or a :class:`~rlprompt.targets.Target` (pass one to several envs to share its model);
    ``vocab``: allowed token ids (``None``: all non-special tokens); ``reward``/``stabilizer``/``batch_size``/``split``
    and extra ``reward_kwargs`` build the :class:`PromptScorer` unless ``scorer`` is given (then they must be left
    at their defaults). ``reset(seed=s)`` reseeds the scorer's minibatch sampler when this env owns it.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str | ClassificationTask = "sentiment",
        target: str | Target = BUNDLED,
        prompt_length: int = 5,
        vocab: Sequence[int] | None = None,
        reward: str = "gap",
        stabilizer: str = "none",
        batch_size: int = 16,
        split: str = "train",
        *,
        scorer: PromptScorer | None = None,
        tokenizer: Any = None,
        **reward_kwargs: Any,
    ) -> None:
        if not isinstance(prompt_length, (int, np.integer)) or prompt_length < 1:
            raise ValueError(f"prompt_length must be an integer >= 1, got {prompt_length!r}")
        if scorer is not None:
            given = {"reward": reward != "gap", "stabilizer": stabilizer != "none", "batch_size": batch_size != 16,
                     "split": split != "train", **{k: True for k in reward_kwargs}}
            if any(given.values()):
                raise ValueError(f"settings {sorted(k for k, v in given.items() if v)} configure the scorer; "
                                 "they cannot be combined with a ready scorer=")
        self.owns_scorer = scorer is None
        self.scorer = scorer or PromptScorer(target, task, reward=reward, stabilizer=stabilizer,
                                             split=split, batch_size=batch_size, **reward_kwargs)
        self.tokenizer = resolve_tokenizer(self.scorer.target, tokenizer)
        self.prompt_length = int(prompt_length)
        self.action_token_ids = action_vocabulary(self.tokenizer, vocab)
        self.vocab_size = len(self.tokenizer)
        if self.prompt_length > self.vocab_size - 1:
            raise ConfigError(f"prompt_length={prompt_length} must stay below the vocabulary size {self.vocab_size}")
        self.observation_space = spaces.Box(0, self.vocab_size - 1, shape=(self.prompt_length + 1,), dtype=np.int64)
        self.action_space = spaces.Discrete(len(self.action_token_ids))
        self._tokens = np.zeros(self.prompt_length, dtype=np.int64)
        self._t = 0

    # -- helpers shared with BatchedPromptVecEnv -------------------------------------------------------
    def _obs(self) -> np.ndarray:
        return np.append(self._tokens, self._t).astype(np.int64)

    @property
    def done(self) -> bool:
        """Whether all ``prompt_length`` tokens are chosen."""
        return self._t >= self.prompt_length

    @property
    def prompt(self) -> str:
        """The prompt text of the tokens chosen so far."""
        return decode_prompt(self.tokenizer, self._tokens[: self._t])

    def advance(self, action: int) -> bool:
        """Append the token of ``action`` without scoring; return whether the prompt is complete."""
        if self._t >= self.prompt_length:
            raise RuntimeError("the episode is over: call reset() before step()")
        if np.ndim(action) != 0 or not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action {action!r} is outside Discrete({self.action_space.n})")
        self._tokens[self._t] = self.action_token_ids[int(action)]
        self._t += 1
        return self.done

    def final_info(self, reward_info: dict[str, Any]) -> dict[str, Any]:
        """The info of the last step: the prompt, its token ids and the scorer's info."""
        return {"prompt": self.prompt, "token_ids": self._tokens.tolist(), **reward_info}

    # -- Gymnasium API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None and self.owns_scorer:
            self.scorer.reseed(seed)
        self._tokens[:] = 0
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.advance(action):
            return self._obs(), 0.0, False, False, {}
        rewards, infos = self.scorer.score([self.prompt])
        return self._obs(), float(rewards[0]), True, False, self.final_info(infos[0])


class BatchedPromptVecEnv(DummyVecEnv):
    """An SB3 ``VecEnv`` of :class:`PromptTokensEnv` copies over ONE shared :class:`PromptScorer`.

    The prompts of all envs that finish in a step are scored in one :meth:`PromptScorer.score` call
    (``batched=True``), i.e. on one minibatch, as RLPrompt does; ``batched=False`` scores each env's
    prompt with its own call (the baseline of ``experiments/bench_envs.py``). ``seed()`` then ``reset()``
    reseeds the shared scorer with the first env's seed. Finished episodes carry SB3's Monitor keys
    (``info["episode"] = {"r", "l", "t"}``), so no ``VecMonitor`` is needed for episode statistics.
    """

    def __init__(self, envs: Sequence[PromptTokensEnv], batched: bool = True) -> None:
        envs = list(envs)
        if not envs:
            raise ValueError("BatchedPromptVecEnv needs at least one env")
        scorers = {id(env.scorer) for env in envs}
        if len(scorers) != 1:
            raise ValueError(f"all envs must share one PromptScorer, got {len(scorers)}")
        self.scorer = envs[0].scorer
        self.batched = batched
        self._start = time.perf_counter()
        super().__init__([lambda env=env: env for env in envs])

    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self.scorer.reseed(self._seeds[0])
        return super().reset()

    def step_wait(self) -> VecEnvStepReturn:
        finished = [i for i, env in enumerate(self.envs) if env.advance(int(self.actions[i]))]
        self.buf_rews[:] = 0.0
        self.buf_dones[:] = False
        self.buf_infos = [{} for _ in range(self.num_envs)]
        if finished:
            prompts = [self.envs[i].prompt for i in finished]
            if self.batched:
                rewards, infos = self.scorer.score(prompts)
            else:
                pairs = [self.scorer.score([p]) for p in prompts]
                rewards = np.concatenate([r for r, _ in pairs])
                infos = [i[0] for _, i in pairs]
            for i, reward, info in zip(finished, rewards, infos):
                self.buf_rews[i], self.buf_dones[i] = reward, True
                self.buf_infos[i] = self.envs[i].final_info(info)
                # what SB3's Monitor would add, so PPO logs rollout/ep_rew_mean without a VecMonitor
                self.buf_infos[i]["episode"] = {"r": float(reward), "l": self.envs[i].prompt_length,
                                                "t": round(time.perf_counter() - self._start, 6)}
        for i, env in enumerate(self.envs):
            obs = env._obs()
            self.buf_infos[i]["TimeLimit.truncated"] = False
            if self.buf_dones[i]:
                self.buf_infos[i]["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self._save_obs(i, obs)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), [dict(i) for i in self.buf_infos]


def make_prompt_tokens_vec_env(n_envs: int, seed: int | None = None, batched: bool = True,
                               **env_kwargs: Any) -> BatchedPromptVecEnv:
    """``n_envs`` :class:`PromptTokensEnv` copies sharing one scorer, as a :class:`BatchedPromptVecEnv`.

    ``env_kwargs`` are :class:`PromptTokensEnv`'s (a ``scorer`` may be passed in); ``seed`` seeds the
    envs (``seed + i``) and the shared scorer's minibatch sampler at the first ``reset()``.
    """
    if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    first = PromptTokensEnv(**env_kwargs)
    kwargs = {"prompt_length": first.prompt_length, "vocab": env_kwargs.get("vocab"),
              "scorer": first.scorer, "tokenizer": first.tokenizer}
    envs = [first] + [PromptTokensEnv(**kwargs) for _ in range(n_envs - 1)]
    first.owns_scorer = False  # the vec env reseeds the shared scorer once, not once per env
    vec = BatchedPromptVecEnv(envs, batched=batched)
    if seed is not None:
        vec.seed(seed)
    return vec


__all__ = ["BatchedPromptVecEnv", "PromptTokensEnv", "action_vocabulary", "decode_prompt", "make_prompt_tokens_vec_env"]
