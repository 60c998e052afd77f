"""Reward callables with trl's signature ``f(prompts, completions, **columns) -> list[float | None]``,
and stabilizers that wrap them.

* :mod:`.classification`: RLPrompt's probability-gap reward, accuracy and gold log-probability (Deng et al. 2022).
* :mod:`.semantic`: MiniLM cosine similarity and Sem-DPO pair weights (Mohamed et al. 2025).
* :mod:`.stabilizers`: input-specific and batch z-scores, running normalisation.

:func:`make_reward` and :func:`make_stabilizer` map the short names used in configs to these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlprompt.errors import ConfigError
from rlprompt.rewards.classification import ClassificationReward, gap_reward, probability_gap, verbalizer_probs
from rlprompt.rewards.protocol import RewardFn, completion_text, reward_name
from rlprompt.rewards.semantic import cosine_similarity, load_embedder, minilm_embed, semantic_weights
from rlprompt.rewards.stabilizers import BatchZScore, InputZScore, RunningNorm, Stabilizer


def _classification(kind: str) -> Callable[..., ClassificationReward]:
    def build(**kw: Any) -> ClassificationReward:
        if "kind" in kw:
            raise ValueError(f"make_reward({kind!r}) sets kind itself; drop kind={kw['kind']!r}")
        if "task" in kw:
            target, task = kw.pop("target"), kw.pop("task")
            return ClassificationReward.from_task(target, task, kind=kind, **kw)
        return ClassificationReward(kind=kind, **kw)

    return build


REWARDS: dict[str, Callable[..., RewardFn]] = {
    "gap": _classification("gap"),
    "accuracy": _classification("accuracy"),
    "logprob": _classification("logprob"),
}

STABILIZERS: dict[str, Callable[..., RewardFn]] = {
    "input_zscore": InputZScore,
    "batch_zscore": BatchZScore,
    "running": RunningNorm,
    "none": lambda reward: reward,
}
"""Every stabilizer by the name configs and :func:`make_stabilizer` use."""
CONFIG_STABILIZERS = ("input_zscore", "batch_zscore", "running", "none")
"""The stabilizers a config's ``stabilizer`` may name (:func:`check_stabilizer`): linear and clip take settings
(scale and shift, the bounds) that no config field carries."""


def make_reward(name: str, **kw: Any) -> RewardFn:
    """Build the reward called ``name`` in configs (see ``REWARDS``) with its settings ``kw``.

    The classification names take ``target`` plus either ``template, verbalizers, texts, labels`` or
    ``task`` (and optionally ``split``).
    """
    if name not in REWARDS:
        raise ConfigError(f"unknown reward {name!r}; valid names: {sorted(REWARDS)}")
    return REWARDS[name](**kw)


def check_stabilizer(name: str, *, stateless: bool = False) -> None:
    """Raise a :class:`~rlprompt.errors.ConfigError` unless a config may name the stabilizer ``name``: one of
    :data:`CONFIG_STABILIZERS`, and with ``stateless`` one that keeps no statistics across steps (not running), for
    a method whose checkpoints do not hold them."""
    allowed = [n for n in CONFIG_STABILIZERS if not (stateless and hasattr(STABILIZERS[n], "state_dict"))]
    if name not in allowed:
        raise ConfigError(f"stabilizer must be one of {allowed}, got {name!r}")


def make_stabilizer(name: str, reward: RewardFn, **kw: Any) -> RewardFn:
    """Wrap ``reward`` in the stabilizer called ``name`` in configs (see ``STABILIZERS``); ``"none"`` returns it."""
    if name not in STABILIZERS:
        raise ConfigError(f"unknown stabilizer {name!r}; valid names: {sorted(STABILIZERS)}")
    return STABILIZERS[name](reward, **kw)


__all__ = [
    "CONFIG_STABILIZERS",
    "REWARDS",
    "STABILIZERS",
    "BatchZScore",
    "ClassificationReward",
    "InputZScore",
    "RewardFn",
    "RunningNorm",
    "Stabilizer",
    "check_stabilizer",
    "completion_text",
    "cosine_similarity",
    "gap_reward",
    "load_embedder",
    "make_reward",
    "make_stabilizer",
    "minilm_embed",
    "probability_gap",
    "reward_name",
    "semantic_weights",
    "verbalizer_probs",
]
