"""PromptAgent's search tree and its math (Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models
Enables Expert-level Prompt Optimization"), as the official code (XinyuanWangCS/PromptAgent, ``search_algo/mcts.py``)
computes them: :class:`Node`, the UCT score (:func:`uct`), back-propagation of cumulative future rewards
(:func:`backpropagate`), min-threshold pruning (:func:`pruned`), the early-stop bar of a simulation
(:func:`simulation_best`) and the output rule (:func:`select_final`). The searches that use them are in
:mod:`rlprompt.policies.promptagent_search`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Node:
    """A prompt in the search tree with its reward and the returns backed up through it."""

    id: int
    prompt: str
    parent: int | None
    depth: int
    reward: float
    step: int = 0
    """Iteration (step) of the search that created the node."""
    gradient: str = ""
    """The optimizer's diagnosis that led to this prompt (empty for the root and APE)."""
    children: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    """Every value back-propagated through the node (its visit count is their number)."""
    expanded: bool = False

    @property
    def visits(self) -> int:
        return len(self.returns)

    @property
    def q(self) -> float:
        """Mean back-propagated return, or the node's own reward before its first visit (as PromptAgent)."""
        return float(np.mean(self.returns)) if self.returns else self.reward


def uct(node: Node, parent: Node, c: float) -> float:
    """The official PromptAgent UCT: ``Q(s') + c * sqrt(ln(N(s) + 1) / max(1, N(s')))`` with ``N`` the number
    of returns back-propagated through a node, so a parent visited once already explores."""
    return node.q + c * math.sqrt(math.log(parent.visits + 1) / max(1, node.visits))


def backpropagate(nodes: Sequence[Node], path: Sequence[int]) -> list[float]:
    """Append to node ``path[i]`` the sum of the rewards of ``path[i:]`` (PromptAgent's cumulative future
    reward, as the official code's ``np.sum``); returns these values in path order."""
    rewards = [nodes[i].reward for i in path]
    values = [float(sum(rewards[i:])) for i in range(len(path))]
    for i, value in zip(path, values):
        nodes[i].returns.append(value)
    return values


def pruned(node: Node, parent: Node | None, root_reward: float, min_depth: int) -> bool:
    """The official min-threshold rule: a node deeper than ``min_depth`` whose reward is strictly below the
    mean of the root's reward and its parent's is terminal (never expanded)."""
    return parent is not None and node.depth > min_depth and node.reward < (root_reward + parent.reward) / 2


def simulation_best(nodes: Sequence[Node], traces: Sequence[Sequence[int]], path: Sequence[int]) -> float:
    """The bar of the early stop: the best reward among the nodes simulations have reached, i.e. the nodes of
    earlier iterations' paths and of ``path`` so far (the official code's ``mcts_threshold``, which starts
    at the root's reward, ``nodes[0]``, and rises with every node a simulation visits)."""
    return max(nodes[i].reward for i in itertools.chain([0], path, *traces))


def select_final(nodes: Sequence[Node], traces: Sequence[Sequence[int]]) -> Node:
    """PromptAgent's output rule: among the paths the search walked (``traces``, root first), take the one
    with the highest mean node reward, then its highest-reward node (first on ties: earlier trace,
    shallower node). Without traces, the highest-reward node."""
    if not traces:
        return max(nodes, key=lambda n: n.reward)
    best_path = max(traces, key=lambda path: np.mean([nodes[i].reward for i in path]))
    return nodes[max(best_path, key=lambda i: nodes[i].reward)]


__all__ = ["Node", "backpropagate", "pruned", "select_final", "simulation_best", "uct"]
