"""Intervals for benchmark results: means over seeds, and paired differences over test examples and seeds.

The project's rule for claims: one method "beats" another only when the 95% interval of their difference
excludes zero; otherwise the two are "inside the noise". :func:`mean_interval` gives the Student-t interval of
a mean over seeds (the run-to-run spread); :func:`paired_bootstrap` gives the interval of a difference between
two methods scored on the same test examples with the same data seeds, resampling both the seeds and the
examples (a two-level bootstrap, so neither source of variance is left out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """A point estimate with the bounds of its confidence interval (``nan`` bounds when one value cannot give any)."""

    mean: float
    low: float
    high: float
    n: int
    """How many seeds (or values) the estimate rests on."""

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies above or below zero."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def reading(self) -> str:
        """The project's words for a difference: "better" or "worse" when its interval excludes zero, else
        "inside the noise"."""
        if not self.excludes_zero:
            return "inside the noise"
        return "better" if self.low > 0 else "worse"

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: bounds that do not exist (one seed) are None, as strict JSON has no NaN."""
        return {"mean": self.mean, "low": finite_or_none(self.low), "high": finite_or_none(self.high), "n": self.n}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        if math.isnan(self.low):
            return f"{self.mean:{spec}}"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def finite_or_none(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite (what strict JSON can hold)."""
    return value if math.isfinite(value) else None


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` (one per seed) with its Student-t ``confidence`` interval; with one value the bounds are nan."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty list of numbers, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def paired_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``a - b`` with a percentile bootstrap interval, resampling seeds and test examples.

    ``a[s][i]`` and ``b[s][i]`` are the scores (1/0 for correct/wrong) of two methods on example ``i`` of data seed
    ``s``: paired by seed and example. Each resample draws the seeds with replacement and the examples with
    replacement; when every seed has the same examples (one test set) the same example draw serves all seeds, as
    the examples are shared, else each seed draws its own. A single seed resamples the examples only.
    """
    pairs = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in zip(a, b, strict=True)]
    if not pairs:
        raise ValueError("need at least one seed")
    for s, (x, y) in enumerate(pairs):
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError(f"seed {s}: the two methods' scores must be non-empty and paired, got {x.shape} vs {y.shape}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    rng = np.random.default_rng(seed)
    diffs = [x - y for x, y in pairs]
    n_seeds = len(diffs)
    seed_counts = (rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples) if n_seeds > 1
                   else np.ones((resamples, 1)))
    if len({d.size for d in diffs}) == 1:  # one shared test set: one example draw per resample, crossed with seeds
        d = np.stack(diffs)  # (S, E)
        n = d.shape[1]
        totals = np.empty(resamples)
        for start in range(0, resamples, 500):  # chunks keep the (chunk, E) count matrix small
            stop = min(start + 500, resamples)
            counts = rng.multinomial(n, np.full(n, 1 / n), size=stop - start)
            totals[start:stop] = ((seed_counts[start:stop] @ d) * counts).sum(1)
        estimates = totals / (n_seeds * n)
    else:
        per_seed = np.stack([np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(resamples)])
                             for d in diffs], axis=1)  # (R, S)
        estimates = (seed_counts * per_seed).sum(1) / n_seeds
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Interval(float(np.mean([d.mean() for d in diffs])), float(low), float(high), n_seeds)


def correctness(predictions: str | Sequence[int], labels: str | Sequence[int]) -> np.ndarray:
    """1.0 where a prediction equals its gold label. Either may be a digit string (how result files store
    per-example labels compactly: ``"0110"`` is labels 0, 1, 1, 0)."""
    pred, gold = (np.array([int(c) for c in x] if isinstance(x, str) else list(x), dtype=int)
                  for x in (predictions, labels))
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.size} predictions for {gold.size} labels")
    return (pred == gold).astype(float)


def digits(predictions: Sequence[int]) -> str:
    """Per-example predicted labels (each 0-9) as one digit string, the compact form result files store."""
    out = "".join(str(int(p)) for p in predictions)
    if len(out) != len(predictions):
        raise ValueError("digit strings hold labels 0-9 only")
    return out


__all__ = ["Interval", "correctness", "finite_or_none", "digits", "mean_interval", "paired_bootstrap"]
