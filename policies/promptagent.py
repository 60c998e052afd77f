"""PromptAgent: prompt optimization as strategic planning with Monte Carlo tree search
(Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables Expert-level Prompt
Optimization"), plus greedy, beam and APE (Zhou et al. 2023) baselines over the same budget.

A state is a prompt; an action is a revision an optimizer LM proposes from the target's errors:
meta-prompt 1 (:data:`GRADIENT_REQUEST`) asks why a minibatch of failed train examples failed (the
"gradient"), meta-prompt 2 (:data:`REVISION_REQUEST`) asks for revised prompts given the errors, the
gradient and the path so far, each wrapped in ``<START>...<END>`` (:func:`parse_proposals`). The reward
of a prompt is its accuracy on the reward split (``dev``), always from
:meth:`rlprompt.envs.scoring.PromptScorer.evaluate` (cached per prompt), so MCTS and
``rlprompt/PromptEdit-v0`` score a prompt identically.

MCTS, one iteration (PromptAgent section 3.3):

* selection: from the root, move to the child maximizing :func:`uct` until a node that is not expanded
  or sits at ``depth_limit``;
* expansion: ``expand_width`` actions, each from its own error minibatch, each giving one child;
* simulation: move greedily to the highest-reward child, expanding it, until ``depth_limit``; stop early
  when a node at depth >= ``min_depth`` beats the best reward known before the expansion that created it;
* back-propagation (:func:`backpropagate`): node ``i`` of the path ``n_0..n_L`` receives the mean
  reward ``mean(r_i, ..., r_L)`` of the path below it; ``Q`` is the mean of everything it received.

Budget: every search counts evaluations of prompts NEW to it (the initial prompt included) and stops at
``max_evaluations``; target queries spent finding errors and optimizer calls are logged, not budgeted.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rlprompt.config import TaskTargetConfig, check_dtypes, dump_config
from rlprompt.envs.scoring import PromptScorer, shared_target
from rlprompt.evaluation import evaluate
from rlprompt.models import BUNDLED
from rlprompt.runs import RunDir, seed_everything
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask, load_task

SEARCHES = ("mcts", "greedy", "beam", "ape")


@dataclass
class PromptAgentConfig(TaskTargetConfig):
    """Everything a PromptAgent run reads (Wang et al. 2023; the task needs the error and reward splits); YAML
    files may only set these fields."""

    method: ClassVar[str] = "promptagent"

    template: str | None = None
    """Template with {sentence} and {prompt}; None keeps the task's."""
    verbalizers: list[str] | None = None
    """One single-token verbalizer per label; None keeps the task's."""
    optimizer: str = BUNDLED
    """Optimizer LM writing gradients and revisions: a model name, or openai:<base_url>:<model>."""
    optimizer_dtype: str = "bfloat16"
    """dtype of a local optimizer model (the target's model is reused when name and dtype match)."""
    init_prompt: str | None = None
    """Root prompt of the search; None uses the task's default prompt."""
    search: str = "mcts"
    """Search strategy: mcts (PromptAgent), greedy, beam or ape (sample-and-select baseline)."""
    iterations: int = 12
    """MCTS iterations (greedy/beam/ape: steps); the search also stops at max_evaluations."""
    max_evaluations: int = 60
    """Prompts new to this search that may be scored on the reward split (root included)."""
    expand_width: int = 3
    """Actions (children) per expansion; APE: instructions sampled per step."""
    depth_limit: int = 8
    """Nodes at this depth are never expanded (root has depth 0)."""
    min_depth: int = 2
    """Simulation stops early only at nodes at least this deep."""
    exploration: float = 2.5
    """UCT exploration weight c."""
    beam_width: int = 3
    """Prompts kept per beam-search step."""
    error_split: str = "train"
    """Split whose examples the target fails on (the errors shown to the optimizer)."""
    reward_split: str = "dev"
    """Held-out split whose accuracy is the reward (must not be test)."""
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
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {list(SEARCHES)}, got {self.search!r}")
        positive = ("iterations", "max_evaluations", "expand_width", "depth_limit", "beam_width", "error_batch_size",
                    "max_errors", "ape_demos", "gradient_tokens", "revision_tokens", "max_prompt_chars")
        bad = {k: getattr(self, k) for k in positive if getattr(self, k) < 1}
        if bad:
            raise ValueError(f"these fields must be >= 1: {bad}")
        if not 0 <= self.min_depth <= self.depth_limit:
            raise ValueError(f"min_depth must lie in [0, depth_limit={self.depth_limit}], got {self.min_depth}")
        if self.exploration < 0:
            raise ValueError(f"exploration must be >= 0, got {self.exploration}")
        if self.optimizer_temperature < 0 or not 0 < self.optimizer_top_p <= 1:
            raise ValueError(f"need optimizer_temperature >= 0 and 0 < optimizer_top_p <= 1, got "
                             f"{self.optimizer_temperature}, {self.optimizer_top_p}")
        check_dtypes(self, "optimizer_dtype")
        if self.reward_split == "test":
            raise ValueError("reward_split='test' would select prompts on the test split; use dev (held out)")
        if self.max_target_queries is not None and self.max_target_queries < 1:
            raise ValueError(f"max_target_queries must be >= 1 or null, got {self.max_target_queries}")


# -- meta-prompts (our own wording) -------------------------------------------------------------------
TASK_INTRO = ('A small language model reads "{layout}", where [TEXT] is an input text and [PROMPT] is a prompt, '
              "and its next word is taken as its answer, one of: {answers}.")
GRADIENT_REQUEST = TASK_INTRO + """

Current prompt: "{prompt}"

With this prompt the model answered these examples wrongly:
{errors}

In two or three sentences, explain what in the prompt caused these mistakes and what the prompt should say instead."""
REVISION_REQUEST = TASK_INTRO + """

Prompts tried so far, with their accuracy:
{path}

Current prompt: "{prompt}"

With this prompt the model answered these examples wrongly:
{errors}

Diagnosis of the mistakes: {gradient}

Write one improved prompt that fixes these mistakes. The prompt must end so that the next word is the answer.
Put the prompt between <START> and <END>."""
APE_REQUEST = TASK_INTRO + """

Examples of texts and their correct answers:
{demos}

Write one short prompt that makes the model give the correct answer after each text.
Put the prompt between <START> and <END>."""
_PAIR = re.compile(r"<START>(.*?)<END>", re.DOTALL)
_QUOTED = re.compile(r"\"([^\"\n]{3,})\"")


def parse_proposals(text: str, fallback: bool = False) -> tuple[list[str], bool]:
    """The prompts wrapped in ``<START>...<END>`` in ``text`` (whitespace collapsed, empty ones kept as
    ``""`` so the caller counts them), and whether the fallback produced them. With ``fallback`` and no
    complete pair: the first line after an unterminated ``<START>``, else the first double-quoted span."""
    found = [" ".join(m.split()) for m in _PAIR.findall(text)]
    if found or not fallback:
        return found, False
    if "<START>" in text:
        rest = text.rsplit("<START>", 1)[1]
        line = next((s for s in rest.splitlines() if s.strip()), "")
        return [" ".join(line.split()).strip("\"'` ")], True
    quoted = _QUOTED.search(text)
    return ([" ".join(quoted.group(1).split())], True) if quoted else ([], False)


# -- the tree and its math ----------------------------------------------------------------------------
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
    """PromptAgent's UCT: ``Q(s') + c * sqrt(ln N(s) / max(1, N(s')))``, i.e. ``W/N + c*sqrt(ln N_parent / N)``
    with ``W`` the sum of returns; ``ln N(s)`` uses ``max(1, N(s))`` so an unvisited parent adds nothing."""
    return node.q + c * math.sqrt(math.log(max(1, parent.visits)) / max(1, node.visits))


def backpropagate(nodes: Sequence[Node], path: Sequence[int]) -> list[float]:
    """Append to node ``path[i]`` the mean reward of ``path[i:]`` (PromptAgent's cumulative reward with the
    mean as aggregator); returns these values in path order."""
    rewards = [nodes[i].reward for i in path]
    values = [float(np.mean(rewards[i:])) for i in range(len(path))]
    for i, value in zip(path, values):
        nodes[i].returns.append(value)
    return values


def select_final(nodes: Sequence[Node], traces: Sequence[Sequence[int]]) -> Node:
    """PromptAgent's output rule: among the paths the search walked (``traces``, root first), take the one
    with the highest mean node reward, then its highest-reward node (first on ties: earlier trace,
    shallower node). Without traces, the highest-reward node."""
    if not traces:
        return max(nodes, key=lambda n: n.reward)
    best_path = max(traces, key=lambda path: np.mean([nodes[i].reward for i in path]))
    return nodes[max(best_path, key=lambda i: nodes[i].reward)]


class BudgetSpent(RuntimeError):
    """Raised when a search would score more new prompts than ``max_evaluations``."""


# -- the searches -------------------------------------------------------------------------------------
class PromptAgent:
    """Tree search over prompts with an optimizer LM proposing revisions (Wang et al. 2023).

    ``scorer`` scores prompts (its ``evaluate(prompt, split)``) and its target answers the error
    minibatches; ``optimizer`` is any :class:`~rlprompt.targets.base.Target` used for ``generate``.
    Call :meth:`step` until it returns False, or :meth:`run`; :meth:`state_dict` resumes a search.
    """

    def __init__(self, cfg: PromptAgentConfig, scorer: PromptScorer, optimizer: Target) -> None:
        self.cfg, self.scorer, self.optimizer, self.task = cfg, scorer, optimizer, scorer.task
        self.errors_from = self.task.split(cfg.error_split)
        self.scorer.task.split(cfg.reward_split)  # fail now when missing
        self.rng = np.random.default_rng(cfg.seed)
        self.nodes: list[Node] = []
        self.traces: list[list[int]] = []
        self.frontier: list[int] = []
        self.drops: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.iteration, self.stop_reason = 0, None
        self._predictions: dict[str, dict[int, int]] = {}
        answers = [f'"{v.strip()}"' + (f" ({n})" if n.lower() != v.strip().lower() else "")
                   for v, n in zip(self.task.verbalizers, self.task.label_names)]
        layout = scorer.template.replace("{sentence}", "[TEXT]").replace("{prompt}", "[PROMPT]")
        self._intro = {"layout": layout, "answers": ", ".join(answers)}

    # -- reward: the scorer, under the evaluation budget ---------------------------------------------
    @property
    def evaluations(self) -> int:
        """Distinct prompts this search has scored on the reward split."""
        return len({n.prompt for n in self.nodes})

    def reward(self, prompt: str) -> float:
        """Reward of ``prompt`` (accuracy on the reward split via the scorer); :class:`BudgetSpent` when new
        and the budget is used up."""
        known = next((n.reward for n in self.nodes if n.prompt == prompt), None)
        if known is not None:
            return known
        if self.evaluations >= self.cfg.max_evaluations:
            raise BudgetSpent(f"max_evaluations={self.cfg.max_evaluations} reached")
        return float(self.scorer.evaluate(prompt, self.cfg.reward_split))

    def add(self, prompt: str, parent: Node | None, gradient: str = "") -> Node:
        node = Node(len(self.nodes), prompt, None if parent is None else parent.id,
                    0 if parent is None else parent.depth + 1, self.reward(prompt), self.iteration, gradient)
        self.nodes.append(node)
        if parent is not None:
            parent.children.append(node.id)
        return node

    def root(self) -> Node:
        if not self.nodes:
            self.add(self.cfg.init_prompt if self.cfg.init_prompt is not None else self.task.prompt, None)
        return self.nodes[0]

    # -- actions: errors -> gradient -> revisions ------------------------------------------------------
    def _ask(self, requests: list[str], max_new_tokens: int, prefill: bool) -> list[str]:
        """One batched optimizer call; the seed comes from the search's generator."""
        seed = int(self.rng.integers(2**31))
        tok = getattr(self.optimizer, "tokenizer", None)
        kwargs = dict(max_new_tokens=max_new_tokens, temperature=self.cfg.optimizer_temperature,
                      top_p=self.cfg.optimizer_top_p, seed=seed)
        self.counts["optimizer_requests"] += len(requests)
        if prefill and self.cfg.prefill and getattr(tok, "chat_template", None):
            texts = [tok.apply_chat_template([{"role": "user", "content": r}], add_generation_prompt=True,
                                             tokenize=False) + "<START>" for r in requests]
            return ["<START>" + out for out in self.optimizer.generate(texts, **kwargs)]
        return self.optimizer.generate(requests, chat=True, **kwargs)

    def _predict(self, prompt: str, indices: Sequence[int]) -> dict[int, int]:
        """The target's predicted label for error-split examples (cached per prompt)."""
        cache = self._predictions.setdefault(prompt, {})
        todo = sorted({int(i) for i in indices} - set(cache))
        if todo:
            result = evaluate(self.scorer.target, template=self.scorer.template, prompt=prompt,
                              verbalizers=self.scorer.verbalizers, texts=[self.errors_from.texts[i] for i in todo],
                              labels=[self.errors_from.labels[i] for i in todo])
            cache.update(zip(todo, result.predictions))
        return cache

    def _format_examples(self, indices: Sequence[int], predictions: dict[int, int] | None = None) -> str:
        words = [v.strip() for v in self.task.verbalizers]
        lines = []
        for i in indices:
            line = f"Text: {self.errors_from.texts[i]}\nCorrect answer: {words[self.errors_from.labels[i]]}"
            lines.append(line + (f". Model answer: {words[predictions[i]]}" if predictions else ""))
        return "\n".join(lines)

    def _keep(self, proposals: list[str], taken: set[str]) -> str | None:
        """The first usable proposal; every unusable one is counted in :attr:`drops` by reason."""
        for prompt in proposals:
            reason = ("empty" if not prompt else "too_long" if len(prompt) > self.cfg.max_prompt_chars
                      else "duplicate" if prompt in taken else None)
            if reason is None:
                return prompt
            self.drops[reason] += 1
        return None

    def revisions(self, prompt: str, width: int, path: str = "") -> list[tuple[str, list[str]]]:
        """Up to ``width`` error-driven revisions of ``prompt``, one per minibatch of examples the target
        gets wrong: ``(gradient, proposed prompts)`` pairs. ``path`` describes the search path so far for
        the revision request. Minibatches without an error and unparseable answers give none (counted in
        :attr:`drops`). Nothing is evaluated here."""
        n = len(self.errors_from)
        batches = [self.rng.choice(n, size=min(self.cfg.error_batch_size, n), replace=False) for _ in range(width)]
        preds = self._predict(prompt, np.concatenate(batches))
        errors = [[int(i) for i in b if preds[int(i)] != self.errors_from.labels[int(i)]][: self.cfg.max_errors]
                  for b in batches]
        self.drops["no_errors"] += sum(not e for e in errors)
        errors = [e for e in errors if e]
        if not errors:
            return []
        shown = [self._format_examples(e, preds) for e in errors]
        asks = [GRADIENT_REQUEST.format(prompt=prompt, errors=s, **self._intro) for s in shown]
        gradients = [g.strip() for g in self._ask(asks, self.cfg.gradient_tokens, prefill=False)]
        path = path or f'"{prompt}"'
        asks = [REVISION_REQUEST.format(prompt=prompt, errors=s, gradient=" ".join(g.split()), path=path, **self._intro)
                for s, g in zip(shown, gradients)]
        answers = self._ask(asks, self.cfg.revision_tokens, prefill=True)
        return [(g, proposals) for g, a in zip(gradients, answers) if (proposals := self._parse(a))]

    def _parse(self, answer: str) -> list[str]:
        """The prompts proposed in an optimizer answer; an unparseable one gives none (counted)."""
        proposals, fallback = parse_proposals(answer, self.cfg.parse_fallback)
        self.drops["unparseable"] += int(not proposals)
        self.counts["fallback_parsed"] += int(fallback and bool(proposals))
        return proposals

    def _add_child(self, parent: Node, proposals: list[str], gradient: str = "") -> Node | None:
        """Evaluate and add the first usable proposal as a child of ``parent`` (None if none is usable)."""
        prompt = self._keep(proposals, {parent.prompt} | {self.nodes[c].prompt for c in parent.children})
        if prompt is None:
            return None
        try:
            return self.add(prompt, parent, gradient)
        except BudgetSpent:
            self.drops["over_budget"] += 1
            return None

    def revise(self, prompt: str) -> str | None:
        """One error-driven revision of ``prompt`` (the first usable proposal), or None when the target
        makes no error on the drawn minibatch or the optimizer's answer is unusable. This is the
        ``revise`` action of ``rlprompt/PromptEdit-v0`` (``PromptEditEnv(reviser=agent.revise)``)."""
        for _, proposals in self.revisions(prompt, 1):
            if (kept := self._keep(proposals, {prompt})) is not None:
                return kept
        return None

    def expand(self, node: Node, width: int | None = None) -> list[Node]:
        """Add up to ``width`` (default ``expand_width``) children to ``node``, one per action; actions
        whose minibatch holds no error or whose answer parses to nothing usable add none (counted)."""
        width = min(width or self.cfg.expand_width, self.cfg.max_evaluations - self.evaluations)
        if width < 1:
            return []
        path = " -> ".join(f'"{self.nodes[i].prompt}" ({self.nodes[i].reward:.2f})' for i in self.ancestry(node))
        added = [self._add_child(node, proposals, g) for g, proposals in self.revisions(node.prompt, width, path)]
        children = [child for child in added if child is not None]
        node.expanded = node.expanded or bool(children)
        return children

    def ancestry(self, node: Node) -> list[int]:
        """Node ids from the root to ``node``."""
        out = [node.id]
        while self.nodes[out[-1]].parent is not None:
            out.append(self.nodes[out[-1]].parent)
        return out[::-1]

    # -- one step of each search -----------------------------------------------------------------------
    def _mcts(self) -> None:
        c, limit = self.cfg.exploration, self.cfg.depth_limit
        node, path = self.nodes[0], [0]
        while node.expanded and node.children and node.depth < limit:  # selection
            parent = node
            node = max((self.nodes[i] for i in parent.children), key=lambda ch: uct(ch, parent, c))
            path.append(node.id)
        if node.depth < limit:  # expansion, then greedy simulation
            self.expand(node)
            while node.children and node.depth < limit:
                node = max((self.nodes[i] for i in node.children), key=lambda ch: ch.reward)
                path.append(node.id)
                best_before = max(n.reward for n in self.nodes[: min(self.nodes[node.parent].children)])
                if node.depth >= self.cfg.min_depth and node.reward > best_before:
                    self.counts["early_stops"] += 1
                    break
                if node.depth >= limit or self.evaluations >= self.cfg.max_evaluations:
                    break
                self.expand(node)
        backpropagate(self.nodes, path)
        self.traces.append(path)

    def _greedy_or_beam(self, keep: int) -> None:
        """Expand every frontier node, keep the ``keep`` best new children; restart at the root when the
        frontier reaches ``depth_limit`` (so the search can spend the whole budget)."""
        frontier = [self.nodes[i] for i in (self.frontier or [0])]
        children = [ch for node in frontier for ch in self.expand(node)]
        if children:
            best = sorted(children, key=lambda ch: -ch.reward)[:keep]
            self.frontier = [ch.id for ch in best]
            for ch in best:
                self.traces.append(self.ancestry(ch))
        if any(self.nodes[i].depth >= self.cfg.depth_limit for i in self.frontier):
            self.frontier = [0]

    def _ape(self) -> None:
        """APE (Zhou et al. 2023): instructions induced from input-label demos, one request per sample."""
        root, n = self.nodes[0], len(self.errors_from)
        width = min(self.cfg.expand_width, self.cfg.max_evaluations - self.evaluations)
        demos = [self.rng.choice(n, size=min(self.cfg.ape_demos, n), replace=False) for _ in range(width)]
        asks = [APE_REQUEST.format(demos=self._format_examples(d), **self._intro) for d in demos]
        for answer in self._ask(asks, self.cfg.revision_tokens, prefill=True):
            if proposals := self._parse(answer):
                self._add_child(root, proposals)
        root.expanded = bool(root.children)

    def done(self) -> bool:
        """True (and :attr:`stop_reason` set) once the search may not take another step."""
        if self.stop_reason is None:
            if self.evaluations >= self.cfg.max_evaluations:
                self.stop_reason = "max_evaluations"
            elif self.iteration >= self.cfg.iterations:
                self.stop_reason = "iterations"
            elif self.cfg.search == "mcts" and self.nodes and all(
                    n.expanded or n.depth >= self.cfg.depth_limit for n in self.nodes):
                self.stop_reason = "tree_exhausted"
            elif self.cfg.max_target_queries is not None and \
                    self.scorer.target.stats.sequences >= self.cfg.max_target_queries:
                self.stop_reason = "max_target_queries"
        return self.stop_reason is not None

    def step(self) -> bool:
        """One MCTS iteration (or greedy/beam/APE step); False when the search is over."""
        self.root()
        if self.done():
            return False
        self.iteration += 1
        search = self.cfg.search
        if search == "mcts":
            self._mcts()
        elif search == "ape":
            self._ape()
        else:
            self._greedy_or_beam(1 if search == "greedy" else self.cfg.beam_width)
        return True

    def run(self, callback: Callable[[PromptAgent], None] | None = None) -> Node:
        """Step until done, calling ``callback(self)`` after each step; returns :meth:`final`."""
        while self.step():
            if callback is not None:
                callback(self)
        return self.final()

    def final(self) -> Node:
        """The output prompt: PromptAgent's rule (:func:`select_final`) for MCTS, the best reward otherwise."""
        if self.cfg.search == "mcts":
            return select_final(self.nodes, self.traces)
        return max(self.nodes, key=lambda n: n.reward)

    # -- serialization ---------------------------------------------------------------------------------
    def tree(self) -> dict[str, Any]:
        """The tree as JSON: nodes (prompt, reward, visits, mean Q, parent, depth, ...), traces, final node."""
        nodes = [{**{k: v for k, v in asdict(n).items() if k != "returns"}, "visits": n.visits, "q": n.q}
                 for n in self.nodes]
        return {"search": self.cfg.search, "nodes": nodes, "traces": self.traces,
                "final": self.final().id if self.nodes else None, "evaluations": self.evaluations,
                "drops": dict(self.drops), "counts": dict(self.counts), "stop_reason": self.stop_reason}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the search (JSON-able)."""
        return {"nodes": [asdict(n) for n in self.nodes], "traces": self.traces, "frontier": self.frontier,
                "drops": dict(self.drops), "counts": dict(self.counts), "iteration": self.iteration,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nodes = [Node(**n) for n in state["nodes"]]
        self.traces, self.frontier = [list(t) for t in state["traces"]], list(state["frontier"])
        self.drops, self.counts = Counter(state["drops"]), Counter(state["counts"])
        self.iteration, self.stop_reason = int(state["iteration"]), None
        self.rng.bit_generator.state = state["rng"]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def build_task(cfg: PromptAgentConfig) -> ClassificationTask:
    """The config's classification task with its template/verbalizer overrides and the needed splits."""
    overrides: dict[str, Any] = {}
    if cfg.template is not None:
        overrides["template"] = cfg.template
    if cfg.verbalizers is not None:
        overrides["verbalizers"] = tuple(cfg.verbalizers)
    task = load_task(cfg.task, seed=cfg.task_seed, **overrides)
    if not isinstance(task, ClassificationTask):
        raise ValueError(f"PromptAgent needs a classification task; {cfg.task!r} is {type(task).__name__}")
    missing = [s for s in (cfg.error_split, cfg.reward_split) if s not in task.splits]
    if missing:
        raise ValueError(f"task {cfg.task!r} lacks the split(s) {missing}; it has {list(task.splits)}")
    return task


def make_agent(cfg: PromptAgentConfig, target: Target | None = None, optimizer: Target | None = None,
               task: ClassificationTask | None = None) -> PromptAgent:
    """Build the scorer (reward split, whole split, cached) and the agent; ``target``/``optimizer``/``task``
    override the config's (tests pass scripted fakes). The optimizer reuses the target's model when equal."""
    seed_everything(cfg.seed)
    target = target or shared_target(cfg.target, dtype=cfg.target_dtype)
    if optimizer is None:
        same = cfg.optimizer == cfg.target and (cfg.optimizer_dtype == cfg.target_dtype or cfg.target.startswith("openai:"))
        optimizer = target if same else shared_target(cfg.optimizer, dtype=cfg.optimizer_dtype)
    scorer = PromptScorer(target, task or build_task(cfg), split=cfg.reward_split, batch_size=None, reward="accuracy")
    return PromptAgent(cfg, scorer, optimizer)


def train_promptagent(cfg: PromptAgentConfig, run_dir: str | Path | RunDir, resume: bool = False, *,
                      target: Target | None = None, optimizer: Target | None = None,
                      task: ClassificationTask | None = None) -> dict[str, Any]:
    """Run PromptAgent's search (Wang et al. 2023) and write ``config.yaml``, ``metrics.jsonl``, ``prompt.txt``,
    ``tree.json``, ``reward_by_depth.png``, ``search_state.json`` (for ``resume=True``) and ``summary.json``."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, resume=resume)
    agent = make_agent(cfg, target, optimizer, task)
    saved = run.file("search_state.json")
    if resume and saved.is_file():
        state = json.loads(saved.read_text(encoding="utf-8"))
        if state["config"] != dump_config(cfg):
            changed = sorted(k for k, v in dump_config(cfg).items() if state["config"].get(k) != v)
            if set(changed) - {"iterations", "max_evaluations", "max_target_queries", "eval_test"}:
                raise ValueError(f"config differs from the saved search in {changed}; resume with the same config")
        agent.load_state_dict(state["agent"])
        run.truncate_to(agent.iteration)
    elif resume and run.read_metrics():
        raise ValueError(f"cannot resume {str(run.path)!r}: it has metrics but no search_state.json")
    run.write_config(dump_config(cfg))
    start, wall0 = agent.scorer.target.stats.sequences, time.monotonic()

    def log(agent: PromptAgent) -> None:
        rewards = [n.reward for n in agent.nodes]
        new = [n.reward for n in agent.nodes if n.step == agent.iteration]
        best = agent.final()
        run.log(agent.iteration, {
            "charts/best_reward": max(rewards), "charts/final_reward": best.reward,
            "charts/step_best_reward": max(new) if new else math.nan, "charts/evaluations": agent.evaluations,
            "charts/nodes": len(agent.nodes), "charts/max_depth": max(n.depth for n in agent.nodes),
            "charts/dropped_proposals": sum(v for k, v in agent.drops.items() if k != "no_errors"),
            "perf/wall_seconds": time.monotonic() - wall0,
        }, target_queries=agent.scorer.target.stats.sequences - start)
        run.write_prompt(best.prompt)
        run.write_json("tree.json", agent.tree())
        run.write_json("search_state.json", {"config": dump_config(cfg), "agent": agent.state_dict()})

    try:
        agent.root()
        final = agent.run(log)
        summary: dict[str, Any] = {"run_dir": str(run.path), "search": cfg.search, "prompt": final.prompt,
                                   "reward": final.reward, "best_reward": max(n.reward for n in agent.nodes),
                                   "evaluations": agent.evaluations, "iterations": agent.iteration,
                                   "stop_reason": agent.stop_reason, "drops": dict(agent.drops),
                                   "counts": dict(agent.counts)}
        if cfg.eval_test and "test" in agent.task.splits:
            summary["test_accuracy"] = agent.scorer.evaluate(final.prompt, "test")
            run.log(agent.iteration, {"eval/test_accuracy": summary["test_accuracy"],
                                      "eval/final_reward": final.reward},
                    target_queries=agent.scorer.target.stats.sequences - start)
        run.write_prompt(final.prompt)
        run.write_json("tree.json", agent.tree())
        plot_tree(agent, run.file("reward_by_depth.png"))
        run.write_json("summary.json", summary)
    finally:
        run.close()
    return summary


__all__ = ["PromptAgent", "PromptAgentConfig", "Node", "backpropagate", "make_agent", "parse_proposals",
           "plot_tree", "select_final", "train_promptagent", "uct"]
