"""PromptAgent: prompt optimization as strategic planning with Monte Carlo tree search
(Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables Expert-level Prompt
Optimization"), plus greedy, beam and APE (Zhou et al. 2023) baselines over the same budget.

This module holds the typed config, the search as a method of the one run loop (:class:`PromptAgentMethod`,
:mod:`rlprompt.loop`) and the run entry point (:func:`train_promptagent`, ``method: promptagent``); the searches are in :mod:`rlprompt.policies.promptagent_search`, the tree and its math in
:mod:`rlprompt.policies.promptagent_tree` (both re-exported here). MCTS follows the official code
(XinyuanWangCS/PromptAgent): UCT with ``ln(N_parent + 1)``, back-propagation of the sum of future rewards along the
path, min-threshold pruning, and an early stop of a simulation only on a strictly better reward than every node
simulations have reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rlprompt.config import RunConfig, check_dtypes, check_positive
from rlprompt.envs.scoring import PromptScorer
from rlprompt.errors import ConfigError
from rlprompt.figures import save_figure
from rlprompt.loop import MethodState, RunLoop
from rlprompt.models import BUNDLED
from rlprompt.policies.promptagent_search import SEARCHES, PromptAgent, parse_proposals
from rlprompt.policies.promptagent_tree import Node, backpropagate, pruned, select_final, simulation_best, uct
from rlprompt.runs import RunDir, seed_everything
from rlprompt.targets import Target, make_target
from rlprompt.tasks import ClassificationTask


@dataclass
class PromptAgentConfig(RunConfig):
    """Everything a PromptAgent run reads (Wang et al. 2023; the task needs the error and reward splits); YAML
    files may only set these fields."""

    method: ClassVar[str] = "promptagent"

    optimizer_model: str = BUNDLED
    """Optimizer LM writing gradients and revisions: a model name, or openai:<base_url>:<model> (formerly
    optimizer)."""
    optimizer_model_dtype: str = "bfloat16"
    """dtype of a local optimizer LM (the target's model is reused when name and dtype match; formerly
    optimizer_dtype)."""
    init_prompt: str | None = None
    """Root prompt of the search; None uses the task's default prompt."""
    search: str = "mcts"
    """Search strategy: mcts (PromptAgent), greedy, beam or ape (sample-and-select baseline)."""
    steps: int = 12
    """MCTS iterations (paper and official default: 12; greedy/beam/ape: search steps; formerly iterations); the
    search also stops at max_evaluations."""
    max_evaluations: int = 60
    """Prompts new to this search that may be scored on the reward split (root included)."""
    expand_width: int = 3
    """Actions (children) per expansion (official default: 3); APE: instructions sampled per step."""
    depth_limit: int = 8
    """Nodes at this depth are never expanded; the root has depth 0 (official default: 8)."""
    min_depth: int = 2
    """Early stop and min-threshold pruning apply only to nodes deeper than this (official default: 2)."""
    exploration: float = 2.5
    """UCT exploration weight c (official w_exp: 2.5)."""
    beam_width: int = 3
    """Prompts kept per beam-search step."""
    error_split: str = "train"
    """Split whose examples the target fails on (the errors shown to the optimizer)."""
    reward_split: str = "dev"
    """Split whose accuracy is the reward and selects the output prompt (not test; the official code draws
    it from the training data, so it may be error_split)."""
    error_batch_size: int = 8
    """Examples sampled per action to look for errors."""
    max_errors: int = 3
    """Errors shown to the optimizer per action."""
    ape_demos: int = 4
    """Input-label demonstrations per APE request."""
    optimizer_temperature: float = 0.8
    """Sampling temperature of the optimizer LM (0: greedy)."""
    optimizer_top_p: float = 0.95
    """Nucleus sampling threshold of the optimizer LM."""
    gradient_tokens: int = 96
    """Max new tokens of a gradient (meta-prompt 1) answer."""
    revision_tokens: int = 64
    """Max new tokens of a revision (meta-prompt 2) or APE answer."""
    prefill: bool = False
    """Start a local optimizer's answer with <START> (helps small models emit the format)."""
    parse_fallback: bool = False
    """Accept a first quoted span or an unterminated <START> block when no <START>...<END> pair is found."""
    max_prompt_chars: int = 300
    """Longer proposals are dropped (counted as too_long)."""
    eval_test: bool = True
    """Evaluate the final prompt on the test split (when the task has one) at the end (its queries count in
    target_queries, but max_target_queries does not bound this evaluation)."""
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {list(SEARCHES)}, got {self.search!r}")
        check_positive(self, "max_evaluations", "expand_width", "depth_limit", "beam_width",
                       "error_batch_size", "max_errors", "ape_demos", "gradient_tokens", "revision_tokens",
                       "max_prompt_chars")
        if not 0 <= self.min_depth <= self.depth_limit:
            raise ValueError(f"min_depth must lie in [0, depth_limit={self.depth_limit}], got {self.min_depth}")
        if self.exploration < 0:
            raise ValueError(f"exploration must be >= 0, got {self.exploration}")
        if self.optimizer_temperature < 0 or not 0 < self.optimizer_top_p <= 1:
            raise ValueError(f"need optimizer_temperature >= 0 and 0 < optimizer_top_p <= 1, got "
                             f"{self.optimizer_temperature}, {self.optimizer_top_p}")
        check_dtypes(self, "optimizer_model_dtype")
        if self.reward_split == "test":
            raise ValueError("reward_split='test' would select prompts on the test split; use dev (held out)")



# -- plotting and the run entry point -----------------------------------------------------------------
def plot_tree(agent: PromptAgent, path: Path) -> Path:
    """Write a PNG (atomically): node reward by depth (final path highlighted), and reward by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    depth, step, reward = (np.array([getattr(n, k) for n in agent.nodes]) for k in ("depth", "step", "reward"))
    final = agent.ancestry(agent.final())
    left.scatter(depth, reward, alpha=0.6, label="node")
    left.plot(depth[final], reward[final], "r-o", label="path to final prompt")
    left.set(xlabel="depth", ylabel=f"reward ({agent.cfg.reward_split} accuracy)", title=f"{agent.cfg.search}: reward by depth")
    left.legend()
    right.scatter(step, reward, alpha=0.6, label="node")
    right.plot(np.arange(len(reward)), np.maximum.accumulate(reward), "g-", label="best so far (by evaluation)")
    right.set(xlabel="iteration / evaluation index", ylabel="reward", title="reward by iteration")
    right.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def build_task(cfg: PromptAgentConfig) -> ClassificationTask:
    """The config's classification task with its template/verbalizer overrides and the error and reward splits."""
    return cfg.classification_task((cfg.error_split, cfg.reward_split))


def make_agent(cfg: PromptAgentConfig, target: Target | None = None, optimizer: Target | None = None,
               task: ClassificationTask | None = None) -> PromptAgent:
    """Build the scorer (reward split, whole split, cached) and the agent; ``target``/``optimizer``/``task``
    override the config's (tests pass scripted fakes). The target is built here, once (behind ``target_cache`` when
    set); an optimizer naming the target's model and dtype is that same target object, else it is built apart."""
    seed_everything(cfg.seed)
    target = cfg.build_target(target)
    if optimizer is None:
        same = cfg.optimizer_model == cfg.target and (cfg.optimizer_model_dtype == cfg.target_dtype
                                                      or cfg.target.startswith("openai:"))
        optimizer = target if same else make_target(cfg.optimizer_model, dtype=cfg.optimizer_model_dtype,
                                                    device=cfg.device)
    scorer = PromptScorer(target, task or build_task(cfg), split=cfg.reward_split, batch_size=None, reward="accuracy")
    return PromptAgent(cfg, scorer, optimizer)


class PromptAgentMethod:
    """PromptAgent's search as a stepped method of the run loop (:class:`rlprompt.loop.Method`).

    :meth:`step` is one search iteration (:meth:`PromptAgent.step`); it returns the tree's ``charts/*`` figures and
    rewrites ``tree.json``. :meth:`step_cost` is the search's own bound (:meth:`PromptAgent.step_cost`), so the
    loop's query budget stops the search before an iteration that could pass ``max_target_queries``.
    :meth:`stop_reason` is the search's (``max_evaluations``, ``tree_exhausted``); steps and budget are the loop's.

    Candidates: PromptAgent picks its output prompt itself (:meth:`PromptAgent.final`, by reward on the reward
    split), so the run's ``best_prompt`` is that prompt, set at the end. When the reward split is dev, the loop's
    evaluation scores the current final prompt (``eval/final_accuracy``) with the reward the search has already
    computed: no query. With another reward split, scoring on dev would cost queries the paper's method does not
    spend and select on a split it does not select on, so there is no candidate (``eval/best_accuracy`` is null).
    With dev as the reward split, ``best_prompt.json`` holds the best final prompt seen at an iteration (MCTS's path
    rule may later move away from it); ``prompt.txt`` and ``summary.json`` end with the search's final choice.
    """

    def __init__(self, agent: PromptAgent, run: RunDir) -> None:
        self.agent, self.run = agent, run

    def step(self) -> dict[str, float]:
        """One search iteration; the tree's figures after it (``charts/*``), ``tree.json`` rewritten."""
        agent = self.agent
        agent.step()
        new = [n.reward for n in agent.nodes if n.step == agent.iteration]
        self.run.write_json("tree.json", agent.tree())
        return {"charts/best_reward": max(n.reward for n in agent.nodes), "charts/final_reward": agent.final().reward,
                "charts/step_best_reward": max(new) if new else math.nan, "charts/evaluations": agent.evaluations,
                "charts/nodes": len(agent.nodes), "charts/max_depth": max(n.depth for n in agent.nodes),
                "charts/dropped_proposals": sum(v for k, v in agent.drops.items() if k != "no_errors")}

    def step_cost(self) -> int:
        """The search's bound on the target sequences of its next iteration (evaluating candidates costs none)."""
        return self.agent.step_cost()

    def candidates(self) -> dict[str, list[str]]:
        """The current final prompt when the reward split is dev (its reward is its dev accuracy), else none."""
        agent = self.agent
        return {"final": [agent.final().prompt]} if agent.cfg.reward_split == "dev" and agent.nodes else {}

    def evaluate(self, prompt: str) -> float:
        """Dev accuracy of a prompt of the tree: its reward, already computed (the reward split is dev)."""
        return self.agent.reward(prompt)

    def stop_reason(self) -> str | None:
        """``max_evaluations`` or ``tree_exhausted`` once the search can take no further step."""
        return self.agent.exhausted()

    def state_dict(self) -> MethodState:
        """The search's state, all JSON (no tensors)."""
        return MethodState(state=self.agent.state_dict())

    def load_state_dict(self, state: MethodState) -> None:
        """Continue the search saved in ``state``."""
        self.agent.load_state_dict(state.state)

    def details(self) -> dict[str, Any]:
        """The search, its reward split, the final and best rewards, evaluations, drops and optimizer counts."""
        agent = self.agent
        return {"search": agent.cfg.search, "reward_split": agent.cfg.reward_split, "reward": agent.final().reward,
                "best_reward": max(n.reward for n in agent.nodes), "evaluations": agent.evaluations,
                "drops": dict(agent.drops), "counts": dict(agent.counts)}


def train_promptagent(cfg: PromptAgentConfig, run_dir: str | Path | RunDir, resume: bool = False, *,
                      target: Target | None = None, optimizer: Target | None = None,
                      task: ClassificationTask | None = None) -> dict[str, Any]:
    """Run PromptAgent's search (Wang et al. 2023) on the run loop (:class:`~rlprompt.loop.RunLoop`: budget,
    checkpoints every ``checkpoint_every`` iterations, ``--resume``) and write ``config.yaml``, ``metrics.jsonl``,
    ``tree.json`` (every iteration), ``prompt.txt``, ``reward_by_depth.png`` and ``summary.json``; return the summary
    (:class:`~rlprompt.runs.RunResult`: ``best_prompt`` is the search's final prompt, ``dev_accuracy`` its reward when
    ``reward_split`` is dev; ``details``: :meth:`PromptAgentMethod.details`). ``optimizer``/``task`` override the
    config's (tests pass scripted fakes). A budget that cannot pay for the first iteration is a
    :class:`~rlprompt.errors.ConfigError`."""
    loop = RunLoop(cfg, run_dir, resume=resume, target=target, desc=f"promptagent ({cfg.search})")
    agent = make_agent(cfg, loop.target, optimizer, task)
    method = PromptAgentMethod(agent, loop.run_dir)
    if loop.step == 0 and not loop.budget.affords(method.step_cost()):
        loop.run_dir.close()
        raise ConfigError(f"max_target_queries={cfg.max_target_queries} cannot pay for PromptAgent's first iteration "
                          f"(up to {method.step_cost()} target sequences): raise it or shrink the search")
    agent.stop_reason = loop.run(method)
    final = agent.final()
    test_accuracy = None
    if cfg.eval_test and "test" in agent.task.splits:
        test_accuracy = agent.scorer.evaluate(final.prompt, "test")
        loop.log(loop.step, {"eval/test_accuracy": test_accuracy, "eval/final_reward": final.reward})
    loop.run_dir.write_json("tree.json", agent.tree())
    plot_tree(agent, loop.run_dir.file("reward_by_depth.png"))
    return loop.finish(details=method.details(), test_accuracy=test_accuracy, best_prompt=final.prompt,
                       dev_accuracy=final.reward if cfg.reward_split == "dev" else None)


__all__ = ["SEARCHES", "Node", "PromptAgent", "PromptAgentConfig", "PromptAgentMethod", "backpropagate", "build_task",
           "make_agent", "parse_proposals", "plot_tree", "pruned", "select_final", "simulation_best", "train_promptagent",
           "uct"]
