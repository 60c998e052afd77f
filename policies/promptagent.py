"""PromptAgent: prompt optimization as strategic planning with Monte Carlo tree search
(Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables Expert-level Prompt
Optimization"), plus greedy, beam and APE (Zhou et al. 2023) baselines over the same budget.

This module holds the typed config and the run entry point (:func:`train_promptagent`, ``method:
promptagent``); the searches are in :mod:`rlprompt.policies.promptagent_search`, the tree and its math in
:mod:`rlprompt.policies.promptagent_tree` (both re-exported here). MCTS follows the official code
(XinyuanWangCS/PromptAgent): UCT with ``ln(N_parent + 1)``, back-propagation of the sum of future rewards along the
path, min-threshold pruning, and an early stop of a simulation only on a strictly better reward than every node
simulations have reached.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from rlprompt.config import TaskTargetConfig, check_dtypes, check_positive, check_resume_config, dump_config
from rlprompt.envs.scoring import PromptScorer
from rlprompt.errors import DataError
from rlprompt.figures import save_figure
from rlprompt.models import BUNDLED
from rlprompt.policies.promptagent_search import SEARCHES, PromptAgent, parse_proposals
from rlprompt.policies.promptagent_tree import Node, backpropagate, pruned, select_final, simulation_best, uct
from rlprompt.runs import RunClock, RunDir, RunResult, seed_everything
from rlprompt.targets import Target, make_target
from rlprompt.tasks import ClassificationTask


@dataclass
class PromptAgentConfig(TaskTargetConfig):
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
    """Evaluate the final prompt on the test split (when the task has one) at the end."""
    max_target_queries: int | None = None
    """Stop before a step once the target has scored this many sequences (None: no limit)."""
    seed: int = 0
    """Seeds minibatch sampling and optimizer sampling."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {list(SEARCHES)}, got {self.search!r}")
        check_positive(self, "steps", "max_evaluations", "expand_width", "depth_limit", "beam_width",
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
        if self.max_target_queries is not None and self.max_target_queries < 1:
            raise ValueError(f"max_target_queries must be >= 1 or null, got {self.max_target_queries}")



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


def train_promptagent(cfg: PromptAgentConfig, run_dir: str | Path | RunDir, resume: bool = False, *,
                      target: Target | None = None, optimizer: Target | None = None,
                      task: ClassificationTask | None = None) -> dict[str, Any]:
    """Run PromptAgent's search (Wang et al. 2023) and write ``config.yaml``, ``metrics.jsonl``, ``prompt.txt``,
    ``tree.json``, ``reward_by_depth.png``, ``search_state.json`` (for ``resume=True``) and ``summary.json``; return
    the summary (:class:`~rlprompt.runs.RunResult`: ``dev_accuracy`` is the final prompt's reward when
    ``reward_split`` is dev; ``details``: the search, its reward split, the final and best rewards, evaluations,
    dropped proposals and optimizer counts)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, resume=resume)
    agent = make_agent(cfg, target, optimizer, task)
    saved = run.file("search_state.json")
    if resume and saved.is_file():
        state = json.loads(saved.read_text(encoding="utf-8"))
        check_resume_config(state["config"], cfg, "the saved search")
        agent.load_state_dict(state["agent"])
        run.truncate_to(agent.iteration)
    elif resume and run.read_metrics():
        raise DataError(f"cannot resume {str(run.path)!r}: it has metrics but no search_state.json")
    run.write_config(dump_config(cfg))
    clock = RunClock(run)

    def log(agent: PromptAgent) -> None:
        rewards = [n.reward for n in agent.nodes]
        new = [n.reward for n in agent.nodes if n.step == agent.iteration]
        best = agent.final()
        run.log(agent.iteration, {
            "charts/best_reward": max(rewards), "charts/final_reward": best.reward,
            "charts/step_best_reward": max(new) if new else math.nan, "charts/evaluations": agent.evaluations,
            "charts/nodes": len(agent.nodes), "charts/max_depth": max(n.depth for n in agent.nodes),
            "charts/dropped_proposals": sum(v for k, v in agent.drops.items() if k != "no_errors"),
            "perf/wall_seconds": clock(),
        }, target_queries=agent.target_queries)
        run.write_prompt(best.prompt)
        run.write_json("tree.json", agent.tree())
        run.write_json("search_state.json", {"config": dump_config(cfg), "agent": agent.state_dict()})

    bar = tqdm(total=cfg.steps, initial=agent.iteration, desc=f"promptagent ({cfg.search})", unit="step",
               dynamic_ncols=True)

    def log_and_show(agent: PromptAgent) -> None:
        log(agent)
        bar.update(agent.iteration - bar.n)
        bar.set_postfix(evaluations=agent.evaluations, reward=f"{agent.final().reward:.3f}", refresh=False)

    try:
        agent.root()
        final = agent.run(log_and_show)
        test_accuracy = None
        if cfg.eval_test and "test" in agent.task.splits:
            test_accuracy = agent.scorer.evaluate(final.prompt, "test")
            run.log(agent.iteration, {"eval/test_accuracy": test_accuracy, "eval/final_reward": final.reward},
                    target_queries=agent.target_queries)
        run.write_prompt(final.prompt)
        run.write_json("tree.json", agent.tree())
        plot_tree(agent, run.file("reward_by_depth.png"))
        return RunResult(
            method=cfg.method, best_prompt=final.prompt,
            dev_accuracy=final.reward if cfg.reward_split == "dev" else None, test_accuracy=test_accuracy,
            target_queries=agent.target_queries, steps=agent.iteration, stop_reason=agent.stop_reason,
            wall_seconds=clock(),
            details={"search": cfg.search, "reward_split": cfg.reward_split, "reward": final.reward,
                     "best_reward": max(n.reward for n in agent.nodes), "evaluations": agent.evaluations,
                     "drops": dict(agent.drops), "counts": dict(agent.counts)},
        ).write(run)
    finally:
        bar.close()
        run.close()


__all__ = ["SEARCHES", "Node", "PromptAgent", "PromptAgentConfig", "backpropagate", "build_task", "make_agent",
           "parse_proposals", "plot_tree", "pruned", "select_final", "simulation_best", "train_promptagent", "uct"]
