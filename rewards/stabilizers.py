"""Reward stabilizers: wrappers that take a reward callable and return a reward callable.

RLPrompt (Deng et al. 2022, section 2.3) found that z-scoring rewards per input across the candidate
prompts scored on it is what makes the noisy, differently scaled classification rewards learnable;
the other wrappers are the usual batch and running normalisations.
Every wrapper keeps ``None`` entries untouched, rejects NaN with a ``ValueError`` naming the reward and
the completion, and is named ``"<stabilizer>(<inner name>)"`` for logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlprompt.rewards.protocol import Completion, RewardFn, checked, completion_texts, reward_name


class Stabilizer:
    """Base of the wrappers: calls the wrapped ``reward``, checks its values, transforms the non-``None`` ones."""

    label = "stabilizer"

    def __init__(self, reward: RewardFn) -> None:
        if not callable(reward):
            raise TypeError(f"{type(self).__name__} wraps a reward callable, got {reward!r}")
        self.reward = reward
        self.__name__ = f"{self.label}({reward_name(reward)})"

    @property
    def unwrapped(self) -> RewardFn:
        """The innermost reward under any stack of stabilizers."""
        inner = self.reward
        return inner.unwrapped if isinstance(inner, Stabilizer) else inner

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Map the non-``None`` values of one call (a 1-D float array) to their stabilized values."""
        raise NotImplementedError

    def rewards_with_scores(self, completions: Sequence[Completion]) -> tuple[np.ndarray, Any]:
        """Stabilized rewards ``(P,)`` of one call with the scores of the reward at the bottom of the stack
        (:class:`~rlprompt.rewards.classification.Scores` for a ClassificationReward)."""
        inner = getattr(self.reward, "rewards_with_scores", None)
        if not callable(inner):
            raise TypeError(f"{self.__name__} has no per-input scores: {reward_name(self.reward)!r} lacks "
                            "rewards_with_scores (a ClassificationReward has it)")
        values, scores = inner(completions)
        return self.transform(np.asarray(values, dtype=np.float64)), scores

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """Stabilized values of the wrapped reward (trl's reward signature)."""
        values = checked(reward_name(self.reward), completions, self.reward(prompts, completions, **columns))
        present = [i for i, v in enumerate(values) if v is not None]
        out: list[float | None] = list(values)
        if present:
            new = self.transform(np.array([values[i] for i in present], dtype=np.float64))
            for i, v in zip(present, new):
                out[i] = float(v)
        return checked(self.__name__, completions, out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reward!r})"


class InputZScore(Stabilizer):
    """RLPrompt's input-specific z-score (Deng et al. 2022, section 2.3).

    For a reward exposing ``score(completions)`` with per-input rewards ``values`` ``(P, N)`` of P candidate
    prompts on the same N inputs (:class:`~rlprompt.rewards.ClassificationReward`), each input's column is
    z-scored across the P prompts (population std, floored at ``eps``) and the z-scores are averaged over
    inputs: one value per completion.
    """

    label = "input_zscore"

    def __init__(self, reward: RewardFn, eps: float = 1e-4) -> None:
        if not callable(getattr(reward, "score", None)):
            raise TypeError(
                f"InputZScore needs a reward with score(completions).values -> (P, N) per-input rewards, "
                f"such as ClassificationReward; {reward_name(reward)!r} has none"
            )
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(reward)
        self.eps = eps

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """Mean over inputs of the per-input z-scores across this call's completions."""
        return checked(self.__name__, completions, self.rewards_with_scores(completions)[0].tolist())

    def rewards_with_scores(self, completions: Sequence[Completion]) -> tuple[np.ndarray, Any]:
        """The z-scored rewards ``(P,)`` with the inner reward's scores of this call."""
        scores = self.reward.score(completions)
        matrix = np.asarray(scores.values, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(completions):
            raise ValueError(
                f"{reward_name(self.reward)!r}.score returned values of shape {matrix.shape} for "
                f"{len(completions)} completions"
            )
        texts = completion_texts(completions)
        for p in range(matrix.shape[0]):
            if np.isnan(matrix[p]).any():
                raise ValueError(f"reward {reward_name(self.reward)!r} returned NaN for completion {texts[p]!r}")
        std = np.maximum(matrix.std(axis=0), self.eps)
        return ((matrix - matrix.mean(axis=0)) / std).mean(axis=1), scores


class BatchZScore(Stabilizer):
    """Z-score the values of one call across its batch (population std floored at ``eps``): the
    group-normalised advantage of GRPO (Shao et al. 2024) applied to the whole call."""

    label = "batch_zscore"

    def __init__(self, reward: RewardFn, eps: float = 1e-4) -> None:
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(reward)
        self.eps = eps

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - values.mean()) / max(values.std(), self.eps)


class RunningNorm(Stabilizer):
    """Normalise by a running mean and std of every value seen so far, updated with each call's values
    before normalising them.

    ``momentum=None`` keeps exact statistics (Welford's algorithm, batched as Chan et al. 1979); a
    momentum ``m`` in (0, 1] keeps exponential moving averages ``mean <- (1-m) mean + m batch_mean``
    and ``var <- (1-m) var + m batch_var`` (the first call initialises both). The std is floored at ``eps``.
    The state round-trips through :meth:`state_dict` / :meth:`load_state_dict` for checkpoints.
    The running reward normalisation of PPO implementations (as in stable-baselines3's ``VecNormalize``).
    """

    label = "running"

    def __init__(self, reward: RewardFn, momentum: float | None = None, eps: float = 1e-4) -> None:
        if momentum is not None and not 0 < momentum <= 1:
            raise ValueError(f"momentum must lie in (0, 1] or be None for exact (Welford) statistics, got {momentum}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(reward)
        self.momentum = momentum
        self.eps = eps
        self.count = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, values: np.ndarray) -> None:
        """Fold one batch of values into the running statistics."""
        n, b_mean, b_var = len(values), float(values.mean()), float(values.var())
        if self.count == 0:
            self.mean, self.var = b_mean, b_var
        elif self.momentum is None:
            total = self.count + n
            delta = b_mean - self.mean
            m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
            self.mean += delta * n / total
            self.var = m2 / total
        else:
            m = self.momentum
            self.mean = (1 - m) * self.mean + m * b_mean
            self.var = (1 - m) * self.var + m * b_var
        self.count += n

    def transform(self, values: np.ndarray) -> np.ndarray:
        self.update(values)
        return (values - self.mean) / max(float(np.sqrt(self.var)), self.eps)

    def state_dict(self) -> dict[str, Any]:
        """The running statistics, as plain Python numbers."""
        return {"momentum": self.momentum, "count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict` (the momentum must match this wrapper's)."""
        missing = {"momentum", "count", "mean", "var"} - set(state)
        if missing:
            raise KeyError(f"RunningNorm state lacks {sorted(missing)}")
        if state["momentum"] != self.momentum:
            raise ValueError(f"state was saved with momentum={state['momentum']}, this wrapper has {self.momentum}")
        self.count, self.mean, self.var = int(state["count"]), float(state["mean"]), float(state["var"])


__all__ = ["BatchZScore", "InputZScore", "RunningNorm", "Stabilizer"]
