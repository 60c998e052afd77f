"""Classification rewards for a candidate prompt: RLPrompt's probability-gap reward and its relatives.

A completion is the *prompt* (instruction) that is filled into the task template next to each input;
the frozen target then scores the verbalizers of the labels. Reference: Deng et al. 2022,
"RLPrompt: Optimizing Discrete Text Prompts with Reinforcement Learning" (EMNLP), section 2.3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rlprompt.rewards.protocol import Completion, checked, completion_texts
from rlprompt.targets.base import Target, check_template

Kind = Literal["gap", "accuracy", "logprob"]
KINDS: tuple[str, ...] = ("gap", "accuracy", "logprob")


def verbalizer_probs(logprobs: np.ndarray) -> np.ndarray:
    """Renormalise next-token log-probabilities ``(..., K)`` into probabilities over the K verbalizers."""
    shifted = logprobs - logprobs.max(axis=-1, keepdims=True)
    p = np.exp(shifted)
    return p / p.sum(axis=-1, keepdims=True)


def probability_gap(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``p(gold) - max_{k != gold} p(k)`` for probabilities ``(..., N, K)`` and gold labels ``(N,)``.

    Positive exactly when the gold label is the strict argmax (RLPrompt, Deng et al. 2022).
    """
    labels = np.asarray(labels)
    gold = np.take_along_axis(probs, np.broadcast_to(labels[:, None], probs.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = probs.copy()
    np.put_along_axis(others, np.broadcast_to(labels[:, None], probs.shape[:-1] + (1,)), -np.inf, axis=-1)
    return gold - others.max(axis=-1)


def gap_reward(gap: np.ndarray, correct_coef: float = 200.0, incorrect_coef: float = 180.0) -> np.ndarray:
    """RLPrompt's piecewise-linear reward of the probability gap (Deng et al. 2022, eq. 4):
    ``correct_coef * gap`` where the gap is positive (a correct prediction), else ``incorrect_coef * gap``."""
    return np.where(gap > 0, correct_coef * gap, incorrect_coef * gap)


@dataclass(frozen=True)
class Scores:
    """What one :class:`ClassificationReward` call scored: P completions on the same N inputs."""

    values: np.ndarray
    """Per-input rewards ``(P, N)``."""
    accuracy: np.ndarray
    """Share of the N inputs each completion classifies correctly ``(P,)``."""
    indices: np.ndarray
    """Indices of the N inputs in the split ``(N,)``."""
    probs: np.ndarray
    """Verbalizer probabilities renormalised over the verbalizers ``(P, N, K)``."""


class ClassificationReward:
    """Score each completion, used as the prompt, on a minibatch of labelled inputs (RLPrompt, Deng et al. 2022).

    Every call draws one minibatch of ``batch_size`` inputs (without replacement, from a numpy
    ``Generator`` seeded with ``seed`` that advances each call; the whole split when ``batch_size`` is
    ``None``) and scores *all* completions of the call on that same minibatch, so they compare fairly
    (and :class:`~rlprompt.rewards.stabilizers.InputZScore` can z-score per input).

    ``kind`` picks the per-input reward: ``"gap"`` (RLPrompt's piecewise gap reward over verbalizer
    probabilities renormalised over the verbalizers), ``"accuracy"`` (1 where the gold verbalizer is the
    strict argmax, else 0) or ``"logprob"`` (log of the renormalised gold probability).
    :meth:`score` returns what one call scored (:class:`Scores`); :meth:`rewards_with_scores` returns the
    per-completion rewards together with it, so callers never read a side channel after the call.
    """

    def __init__(
        self,
        target: Target,
        template: str,
        verbalizers: Sequence[str],
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        batch_size: int | None = 16,
        kind: Kind = "gap",
        correct_coef: float = 200.0,
        incorrect_coef: float = 180.0,
        seed: int = 0,
    ) -> None:
        check_template(template)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; valid kinds: {list(KINDS)}")
        if len(verbalizers) < 2:
            raise ValueError(f"need at least two verbalizers, got {list(verbalizers)!r}")
        if len(texts) != len(labels) or not texts:
            raise ValueError(f"need matching non-empty texts and labels (got {len(texts)} and {len(labels)})")
        labels_arr = np.asarray(labels, dtype=np.int64)
        if labels_arr.min() < 0 or labels_arr.max() >= len(verbalizers):
            raise ValueError(f"labels must lie in [0, {len(verbalizers)}), got {sorted(set(labels_arr.tolist()))}")
        if batch_size is not None and not 1 <= batch_size <= len(texts):
            raise ValueError(
                f"batch_size={batch_size} must lie in [1, {len(texts)}] (the split size); "
                "pass batch_size=None to score the whole split"
            )
        if correct_coef <= 0 or incorrect_coef <= 0:
            raise ValueError(f"coefficients must be positive, got {correct_coef} and {incorrect_coef}")
        self.target = target
        self.template = template
        self.verbalizers = list(verbalizers)
        self.texts = list(texts)
        self.labels = labels_arr
        self.batch_size = batch_size
        self.kind = kind
        self.correct_coef = float(correct_coef)
        self.incorrect_coef = float(incorrect_coef)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.__name__ = kind

    @classmethod
    def from_task(cls, target: Target, task: Any, split: str = "train", **kwargs: Any) -> ClassificationReward:
        """Build from a task object read by attribute: ``template``, ``verbalizers`` and
        ``task.split(split)`` (or ``task.splits[split]``) with ``texts`` and ``labels``."""
        data = task.split(split) if hasattr(task, "split") else task.splits[split]
        return cls(target, task.template, task.verbalizers, data.texts, data.labels, **kwargs)

    def sample_indices(self) -> np.ndarray:
        """Draw the next minibatch of input indices (advances the generator; all of them if ``batch_size`` is None)."""
        if self.batch_size is None:
            return np.arange(len(self.texts))
        return np.sort(self.rng.choice(len(self.texts), size=self.batch_size, replace=False))

    def matrix(self, completions: Sequence[Completion], indices: Sequence[int] | None = None) -> np.ndarray:
        """Per-input rewards ``(P, N)`` of P completions on one minibatch (drawn now unless ``indices`` given)."""
        return self.score(completions, indices).values

    def rewards_with_scores(self, completions: Sequence[Completion]) -> tuple[np.ndarray, Scores]:
        """The mean per-input reward ``(P,)`` of each completion on one fresh minibatch, with the :class:`Scores`."""
        scores = self.score(completions)
        return scores.values.mean(axis=1), scores

    def score(self, completions: Sequence[Completion], indices: Sequence[int] | None = None) -> Scores:
        """Score P completions on one minibatch (drawn now unless ``indices`` given): :class:`Scores`."""
        if not completions:
            raise ValueError("matrix needs at least one completion")
        prompts = completion_texts(completions)
        idx = self.sample_indices() if indices is None else np.asarray(indices, dtype=np.int64)
        # Score each distinct prompt once: groups of sampled completions often repeat.
        position = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        logprobs = self.target.classify(self.template, list(position), [self.texts[i] for i in idx], self.verbalizers)
        probs = verbalizer_probs(logprobs)[[position[p] for p in prompts]]
        labels = self.labels[idx]
        gap = probability_gap(probs, labels)
        if self.kind == "gap":
            values = gap_reward(gap, self.correct_coef, self.incorrect_coef)
        elif self.kind == "accuracy":
            values = (gap > 0).astype(np.float64)
        else:
            gold = np.take_along_axis(probs, np.broadcast_to(labels[:, None], probs.shape[:-1] + (1,)), axis=-1)[..., 0]
            values = np.log(np.maximum(gold, np.finfo(np.float64).tiny))
        for p in range(values.shape[0]):
            if np.isnan(values[p]).any():
                raise ValueError(f"reward {self.__name__!r} returned NaN for completion {prompts[p]!r}")
        return Scores(values=values, accuracy=(gap > 0).mean(axis=1), indices=idx, probs=probs)

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """Mean per-input reward of each completion on this call's shared minibatch (trl's reward signature)."""
        return checked(self.__name__, completions, self.matrix(completions).mean(axis=1).tolist())

    def __repr__(self) -> str:
        return (
            f"ClassificationReward(kind={self.kind!r}, template={self.template!r}, verbalizers={self.verbalizers!r}, "
            f"n={len(self.texts)}, batch_size={self.batch_size}, seed={self.seed})"
        )


__all__ = ["KINDS", "ClassificationReward", "Scores", "gap_reward", "probability_gap", "verbalizer_probs"]
