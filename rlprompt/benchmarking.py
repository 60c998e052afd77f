"""The protocol the benchmarks under ``experiments/`` share: which data seeds, which policy seed for each, which
test examples, and which code version a result came from.

- RLPrompt's few-shot data comes in five dataset seeds (``16-100``, ``16-13``, ``16-21``, ``16-42``, ``16-87``);
  benchmarks use the first three, as the paper. The policy seed of a data seed is its position in that list, so a
  run is reproducible and distinct per data seed however the seeds are split over processes.
- Test examples are all of the test split or a fixed seeded sample of them (some test files are sorted by label, so
  the first N rows can be a single class), the same for every arm and seed, so results pair example by example.
- Every result records the git commit of the code that made it (results must come from landed code).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RLPROMPT_SEEDS = ("16-100", "16-13", "16-21", "16-42", "16-87")
"""RLPrompt's five dataset seeds, in its order."""
BENCHMARK_SEEDS = RLPROMPT_SEEDS[:3]
"""The dataset seeds the benchmarks run by default (RLPrompt's seeds 0, 1, 2)."""


def policy_seed(data_seed: str) -> int:
    """The policy seed of a dataset seed: its position in :data:`RLPROMPT_SEEDS`."""
    if data_seed not in RLPROMPT_SEEDS:
        raise ValueError(f"dataset seed {data_seed!r} is not one of RLPrompt's {RLPROMPT_SEEDS}")
    return RLPROMPT_SEEDS.index(data_seed)


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of the examples scored, in file order: all ``n``, or a fixed sample of ``limit`` drawn with ``seed``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def stratified_indices(labels: Sequence[int], limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded sample of ``limit`` examples, in file order, holding each label in proportion to its
    share of ``labels`` (largest remainders round; every label present keeps at least one example when ``limit``
    allows), so a label-sorted file still gives every class; all indices when ``limit`` is None or covers them."""
    n = len(labels)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if limit is None or limit >= n:
        return np.arange(n)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = limit * counts / n
    quota = np.floor(exact).astype(int)
    if limit >= len(classes):
        quota = np.maximum(quota, 1)
    order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - np.floor(exact[c])), c))
    for c in order[: max(0, limit - int(quota.sum()))]:
        quota[c] += 1
    while quota.sum() > limit:  # the minimum of one per label overshot: take back from the largest quotas
        quota[int(np.argmax(quota))] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=int(k), replace=False)
              for label, k in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def code_commit(path: str | Path = Path(__file__).parent) -> str:
    """The git commit the code at ``path`` is at, with ``+dirty`` when tracked files differ from it ("" outside git)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=path, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "HEAD")
    return commit + ("+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")


__all__ = ["BENCHMARK_SEEDS", "RLPROMPT_SEEDS", "code_commit", "policy_seed", "sample_indices", "stratified_indices"]
