"""A weighted sum of rewards that keeps each component's name and last values for logging.

Combining a task reward with a semantic-consistency term is how PRewrite and Sem-DPO shape their
rewriters (Kong et al. 2024; Mohamed et al. 2025); ``None`` entries combine as trl combines reward
functions (skipped, and ``None`` only where every component is ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlprompt.rewards.protocol import Completion, RewardFn, checked, reward_name


class Weighted:
    """``sum_i weight_i * reward_i`` per completion; the components' values of the last call are kept in
    ``last_components`` (a dict keyed by component name) so a trainer can log each term."""

    def __init__(self, pairs: Sequence[tuple[RewardFn, float]]) -> None:
        if not pairs:
            raise ValueError("weighted() needs at least one (reward, weight) pair")
        names: list[str] = []
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and callable(pair[0])):
                raise TypeError(f"expected (reward, weight) pairs, got {pair!r}")
            names.append(reward_name(pair[0]))
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be distinct to be logged apart, got {names}")
        self.rewards = [r for r, _ in pairs]
        self.weights = [float(w) for _, w in pairs]
        self.names = names
        self.__name__ = "+".join(f"{w:g}*{n}" for n, w in zip(names, self.weights))
        self.last_components: dict[str, list[float | None]] = {}

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """Weighted sum per completion, skipping ``None`` components (trl's reward signature)."""
        parts = {
            n: checked(n, completions, r(prompts, completions, **columns)) for n, r in zip(self.names, self.rewards)
        }
        self.last_components = parts
        out: list[float | None] = []
        for i in range(len(completions)):
            terms = [w * parts[n][i] for n, w in zip(self.names, self.weights) if parts[n][i] is not None]
            out.append(sum(terms) if terms else None)
        return checked(self.__name__, completions, out)

    def __repr__(self) -> str:
        return f"weighted({', '.join(f'({n}, {w:g})' for n, w in zip(self.names, self.weights))})"


def weighted(*pairs: tuple[RewardFn, float]) -> Weighted:
    """Combine ``(reward, weight)`` pairs into one reward named like ``"1*gap+0.5*similarity"``."""
    return Weighted(pairs)


__all__ = ["Weighted", "weighted"]
