"""PromptAgent's search (Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables
Expert-level Prompt Optimization"): MCTS, greedy, beam and APE (Zhou et al. 2023) over the same evaluation budget.
The tree and its math are in :mod:`rlprompt.policies.promptagent_tree`, the config and the run entry point in
:mod:`rlprompt.policies.promptagent`.

A state is a prompt; an action is a revision an optimizer LM proposes from the target's errors:
meta-prompt 1 (:data:`GRADIENT_REQUEST`) asks why a minibatch of failed examples failed (the "gradient"),
meta-prompt 2 (:data:`REVISION_REQUEST`) asks for a revised prompt given the errors, the gradient and the
path so far, wrapped in ``<START>...<END>`` (:func:`parse_proposals`). The reward of a prompt is its
accuracy on the reward split, always from :meth:`rlprompt.envs.scoring.PromptScorer.evaluate` (cached per
prompt), so MCTS and ``rlprompt/PromptEdit-v0`` score a prompt identically. The official code draws the
reward set from the training data; the reward split may therefore be the error split.

MCTS, one iteration, following the official code (XinyuanWangCS/PromptAgent, ``search_algo/mcts.py``):

* selection: from the root, move to the child maximizing :func:`uct`, ``Q + c sqrt(ln(N_parent + 1) /
  max(1, N))``, until a node without children or a terminal one (at ``depth_limit``, or pruned);
* expansion: ``expand_width`` actions, each from its own error minibatch, each giving one child;
* simulation: from the expanded leaf, move to the highest-reward child (expanding a childless node first)
  until a terminal node, or stop early at a node deeper than ``min_depth`` whose reward is strictly above
  the best reward of every node simulations have reached so far (:func:`simulation_best`);
* min-threshold pruning (:func:`pruned`): a node deeper than ``min_depth`` whose reward is below the mean
  of the root's reward and its parent's is terminal: never expanded;
* back-propagation (:func:`backpropagate`): node ``i`` of the path ``n_0..n_L`` receives the sum of the
  rewards ``r_i + ... + r_L`` below it; ``Q`` is the mean of everything it received.

The output prompt is the official one too (:func:`select_final`). Departures: every search stops at
``max_evaluations`` prompts new to it (the initial prompt included; target queries spent finding errors and
optimizer calls are logged, not budgeted: a run's ``max_target_queries`` bounds every target query, see
:meth:`PromptAgent.step_cost`), and a node whose expansion yields no usable child (tried twice in
one iteration, as in the official code) stays a leaf that a later iteration may try again, where the official
code marks it terminal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from rlprompt.envs.scoring import PromptScorer
from rlprompt.evaluation import evaluate
from rlprompt.targets.base import Target

from rlprompt.policies.promptagent_tree import Node, backpropagate, pruned, select_final, simulation_best, uct

if TYPE_CHECKING:
    from rlprompt.policies.promptagent import PromptAgentConfig

SEARCHES = ("mcts", "greedy", "beam", "ape")


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


class BudgetSpent(RuntimeError):
    """Raised when a search would score more new prompts than ``max_evaluations``."""


# -- the searches -------------------------------------------------------------------------------------
class PromptAgent:
    """Tree search over prompts with an optimizer LM proposing revisions (Wang et al. 2023).

    ``scorer`` scores prompts (its ``evaluate(prompt, split)``) and its target answers the error
    minibatches; ``optimizer`` is any :class:`~rlprompt.targets.base.Target` used for ``generate``.
    A run drives it through :class:`~rlprompt.policies.promptagent.PromptAgentMethod` (the run loop checks
    :meth:`exhausted` and the budget before each :meth:`step`); :meth:`run` steps it alone, without a run directory
    (the bench). :meth:`state_dict` resumes a search.
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
    def terminal(self, node: Node) -> bool:
        """MCTS never expands ``node``: it sits at ``depth_limit`` or is :func:`pruned`."""
        parent = None if node.parent is None else self.nodes[node.parent]
        return node.depth >= self.cfg.depth_limit or pruned(node, parent, self.nodes[0].reward, self.cfg.min_depth)

    def _mcts(self) -> None:
        """One iteration of the official MCTS: selection, expansion of the leaf, simulation, back-propagation."""
        c, node, path = self.cfg.exploration, self.nodes[0], [0]
        while node.children and not self.terminal(node):  # selection
            parent = node
            node = max((self.nodes[i] for i in parent.children), key=lambda ch: uct(ch, parent, c))
            path.append(node.id)
        if not self.terminal(node):
            self.expand(node)
            self._simulate(path)
        backpropagate(self.nodes, path)
        self.traces.append(path)

    def _simulate(self, path: list[int]) -> None:
        """Walk greedily from ``path[-1]`` (already expanded), appending to ``path``: stop early at a node
        deeper than ``min_depth`` strictly better than :func:`simulation_best`, at a terminal node, or where
        an expansion adds no child (no error found, nothing usable proposed, or the budget spent)."""
        node = self.nodes[path[-1]]
        best = simulation_best(self.nodes, self.traces, path[:-1])
        while True:
            if node.depth > self.cfg.min_depth and node.reward > best:
                self.counts["early_stops"] += 1
                return
            best = max(best, node.reward)
            if self.terminal(node):
                return
            if not node.children:
                self.expand(node)
            if not node.children:
                return
            node = max((self.nodes[i] for i in node.children), key=lambda ch: ch.reward)
            path.append(node.id)

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

    def exhausted(self) -> str | None:
        """Why the search itself can take no further step: ``max_evaluations`` (its evaluation budget is spent)
        or ``tree_exhausted`` (MCTS: every node is expanded or terminal); None while it can."""
        if self.evaluations >= self.cfg.max_evaluations:
            return "max_evaluations"
        if self.cfg.search == "mcts" and self.nodes and all(n.expanded or self.terminal(n) for n in self.nodes):
            return "tree_exhausted"
        return None

    def step(self) -> None:
        """One MCTS iteration (or greedy/beam/APE step), scoring the root first when it is not yet; the caller
        checks :meth:`exhausted` and ``steps`` before."""
        self.root()
        self.iteration += 1
        search = self.cfg.search
        if search == "mcts":
            self._mcts()
        elif search == "ape":
            self._ape()
        else:
            self._greedy_or_beam(1 if search == "greedy" else self.cfg.beam_width)

    def step_cost(self) -> int:
        """An upper bound on the target sequences the next :meth:`step` uses, ignoring every cache: the root's
        score when it has none yet; a score on the whole reward split for each new prompt (at most
        ``max_evaluations`` minus those scored); the error minibatches' predictions of each expansion (at most
        ``min(width x error_batch_size, |error split|)``); and, when the optimizer LM is the target itself, two
        requests per action (gradient and revision; APE: one). An MCTS iteration expands the selected leaf and, in
        simulation, one new node per level down to ``depth_limit``; each expansion adds a child or ends the walk
        (the leaf may be tried twice): at most ``min(left, depth_limit) + 2`` expansions, ``depth_limit`` of them
        adding up to ``expand_width`` children. Greedy and beam expand each frontier node (at most 1 / ``beam_width``);
        APE predicts nothing and samples ``expand_width`` instructions."""
        cfg, n = self.cfg, len(self.errors_from)
        root = 0 if self.nodes else 1
        left = cfg.max_evaluations - self.evaluations - root  # new prompts after the root
        width = max(0, min(cfg.expand_width, left))
        if cfg.search == "ape":
            expansions, adding, requests = 0, 1, width
        else:
            adding = cfg.depth_limit if cfg.search == "mcts" else 1 if cfg.search == "greedy" else cfg.beam_width
            expansions = min(left, cfg.depth_limit) + 2 if cfg.search == "mcts" else adding
            requests = 2 * width * expansions
        new = min(left, adding * width)
        predictions = expansions * min(width * min(cfg.error_batch_size, n), n)
        asked = requests if self.optimizer is self.scorer.target else 0
        return (root + new) * len(self.task.split(cfg.reward_split)) + predictions + asked

    def run(self, callback: Callable[[PromptAgent], None] | None = None) -> Node:
        """Step alone (no run directory, no query budget: the bench, the tests) until ``steps`` are done or the
        search is :meth:`exhausted` (:attr:`stop_reason` says which), calling ``callback(self)`` after each step;
        returns :meth:`final`. A run goes through :func:`~rlprompt.policies.promptagent.train_promptagent`."""
        self.root()
        while (reason := "steps" if self.iteration >= self.cfg.steps else self.exhausted()) is None:
            self.step()
            if callback is not None:
                callback(self)
        self.stop_reason = reason
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
        """Everything needed to continue the search exactly (JSON-able), the target's predictions on the error
        split included, so a resumed search asks the target for no more than a straight one."""
        return {"nodes": [asdict(n) for n in self.nodes], "traces": self.traces, "frontier": self.frontier,
                "drops": dict(self.drops), "counts": dict(self.counts), "iteration": self.iteration,
                "search_rng": self.rng.bit_generator.state,
                "predictions": {p: sorted(cache.items()) for p, cache in self._predictions.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.nodes = [Node(**n) for n in state["nodes"]]
        self.traces, self.frontier = [list(t) for t in state["traces"]], list(state["frontier"])
        self.drops, self.counts = Counter(state["drops"]), Counter(state["counts"])
        self.iteration, self.stop_reason = int(state["iteration"]), None
        self.rng.bit_generator.state = state["search_rng"]
        self._predictions = {p: {int(i): int(y) for i, y in pairs} for p, pairs in state["predictions"].items()}


__all__ = ["SEARCHES", "BudgetSpent", "PromptAgent", "parse_proposals"]
