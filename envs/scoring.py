"""The one place candidate prompts become rewards: :class:`PromptScorer`.

Every environment in :mod:`rlprompt.envs` (and PromptAgent's MCTS) scores prompts through a scorer, so
that RLPrompt's recipe (Deng et al. 2022, section 2.3) holds everywhere: all candidate prompts of one
step are scored in ONE batched target call on the SAME minibatch of inputs, which is what the
input-specific z-score (:class:`rlprompt.rewards.InputZScore`) needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlprompt.evaluation import evaluate
from rlprompt.errors import ConfigError
from rlprompt.model_names import DEFAULT_DTYPE
from rlprompt.rewards import ClassificationReward, RewardFn, make_reward, make_stabilizer, reward_name
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask, load_task


def resolve_target(target: str | Target, *, dtype: str = DEFAULT_DTYPE) -> Target:
    """A :class:`Target` instance as is; a string (any spec :func:`rlprompt.targets.make_target` reads) built anew,
    a local model in ``dtype``. Nothing is shared behind the caller's back: to score several environments with one
    model, build the target once and pass it to each."""
    if isinstance(target, str):
        from rlprompt.targets import make_target  # lazy: keeps ``import rlprompt.envs`` light

        return make_target(target, dtype=dtype)
    if not callable(getattr(target, "classify", None)):
        raise TypeError(f"target must be a model name or a Target with classify(), got {target!r}")
    return target


def resolve_task(task: str | ClassificationTask) -> ClassificationTask:
    """A task object as is; a string through :func:`rlprompt.tasks.load_task`. Only classification tasks."""
    task = load_task(task) if isinstance(task, str) else task
    if not isinstance(task, ClassificationTask):
        raise ValueError(f"prompt environments need a classification task, got {type(task).__name__} {task.name!r}")
    return task


class PromptScorer:
    """Score candidate prompts on a classification task with a frozen target (RLPrompt, Deng et al. 2022).

    ``reward`` is a name for :func:`rlprompt.rewards.make_reward` (``"gap"``, ``"accuracy"``, ``"logprob"``;
    built on ``split`` with ``batch_size`` inputs per call, minibatches drawn with ``seed``) or a ready
    :class:`~rlprompt.rewards.ClassificationReward`. ``stabilizer`` is a name for
    :func:`rlprompt.rewards.make_stabilizer` (``"none"``, ``"input_zscore"``, ``"batch_zscore"``,
    ``"running"``, ...) or a callable ``reward -> reward``. ``reward_kwargs`` go to the reward. A ``target`` given
    as a string is built here (:func:`resolve_target`) in ``target_dtype``.
    """

    def __init__(
        self,
        target: str | Target,
        task: str | ClassificationTask,
        *,
        reward: str | ClassificationReward = "gap",
        stabilizer: str | Callable[[RewardFn], RewardFn] = "none",
        split: str = "train",
        batch_size: int | None = 16,
        seed: int = 0,
        template: str | None = None,
        stabilizer_kwargs: dict[str, Any] | None = None,
        target_dtype: str = DEFAULT_DTYPE,
        **reward_kwargs: Any,
    ) -> None:
        self.target = resolve_target(target, dtype=target_dtype)
        self.task = resolve_task(task)
        self.template = template or self.task.template
        self.verbalizers = list(self.task.verbalizers)
        self.split = split
        data = self.task.split(split)
        if isinstance(reward, str):
            if batch_size is not None and batch_size > len(data):
                raise ConfigError(f"batch_size={batch_size} exceeds the {len(data)} examples of split {split!r}")
            reward = make_reward(
                reward, target=self.target, template=self.template, verbalizers=self.verbalizers,
                texts=data.texts, labels=data.labels, batch_size=batch_size, seed=seed, **reward_kwargs,
            )
        elif reward_kwargs:
            raise ValueError(f"reward settings {sorted(reward_kwargs)} only apply when reward is a name")
        if not callable(getattr(reward, "rewards_with_scores", None)):
            raise TypeError(f"reward must be a ClassificationReward-like object with rewards_with_scores(), got {reward!r}")
        self.base_reward = reward
        if isinstance(stabilizer, str):
            self.reward = make_stabilizer(stabilizer, reward, **(stabilizer_kwargs or {}))
        else:
            self.reward = stabilizer(reward)
        self._eval_cache: dict[tuple[str, str], float] = {}

    def reseed(self, seed: int) -> None:
        """Restart the minibatch sampler from ``seed`` (the stabilizer's running state is kept)."""
        self.base_reward.rng = np.random.default_rng(seed)

    def score(self, prompts: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Rewards of ``prompts`` from ONE batched target call on one shared minibatch.

        Returns the (stabilized) rewards ``(P,)`` and one info dict per prompt holding ``raw_reward``
        (the unstabilized mean per-input reward) and ``accuracy`` on this minibatch. Raises
        ``ValueError`` on a NaN anywhere: a NaN reward is never passed on.
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("score needs at least one prompt")
        values, scores = self.reward.rewards_with_scores(prompts)
        rewards = np.asarray(values, dtype=np.float64)
        raw = np.asarray(scores.values, dtype=np.float64).mean(axis=1)
        accuracy = np.asarray(scores.accuracy, dtype=np.float64)
        for name, array in (("reward", rewards), ("raw reward", raw), ("accuracy", accuracy)):
            if array.shape != (len(prompts),) or not np.isfinite(array).all():
                bad = [p for p, v in zip(prompts, np.broadcast_to(array, (len(prompts),))) if not np.isfinite(v)]
                raise ValueError(f"{reward_name(self.reward)} gave a non-finite {name} for prompts {bad or prompts!r}")
        infos = [{"raw_reward": float(r), "accuracy": float(a)} for r, a in zip(raw, accuracy)]
        return rewards, infos

    def evaluate(self, prompt: str, split: str = "dev") -> float:
        """Accuracy of ``prompt`` on the whole ``split`` (cached in memory per (prompt, split))."""
        key = (prompt, split)
        if key not in self._eval_cache:
            data = self.task.split(split)
            result = evaluate(self.target, template=self.template, prompt=prompt, verbalizers=self.verbalizers,
                              texts=data.texts, labels=data.labels)
            if not math.isfinite(result.accuracy):
                raise ValueError(f"evaluation of prompt {prompt!r} on {split!r} gave {result.accuracy}")
            self._eval_cache[key] = result.accuracy
        return self._eval_cache[key]

    def evaluations(self) -> list[tuple[str, str, float]]:
        """Every evaluation :meth:`evaluate` has cached, as ``(prompt, split, accuracy)`` rows (JSON-able, for a
        checkpoint)."""
        return [(prompt, split, accuracy) for (prompt, split), accuracy in self._eval_cache.items()]

    def load_evaluations(self, rows: Sequence[Sequence[Any]]) -> None:
        """Put :meth:`evaluations` rows back into the cache, so a resumed run scores again nothing that a run going
        straight on would have found cached (its target queries stay the same)."""
        self._eval_cache.update({(str(prompt), str(split)): float(accuracy) for prompt, split, accuracy in rows})

    def __repr__(self) -> str:
        return f"PromptScorer(target={getattr(self.target, 'name', self.target)!r}, reward={self.reward!r})"


__all__ = ["PromptScorer", "resolve_target", "resolve_task"]
