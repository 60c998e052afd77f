"""PromptAgent (Wang et al. 2023): UCT math, tree rules and budgets with a scripted optimizer and target."""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib

import numpy as np
import pytest

from rlprompt.errors import ConfigError
from rlprompt.policies.promptagent import (
    SEARCHES,
    Node,
    PromptAgent,
    PromptAgentConfig,
    backpropagate,
    make_agent,
    parse_proposals,
    pruned,
    select_final,
    simulation_best,
    train_promptagent,
    uct,
)
from rlprompt.tasks import ClassificationTask, Split
from tests.conftest import FakeTarget

N = 10
TASK = ClassificationTask(
    name="toy", label_names=("negative", "positive"), verbalizers=(" terrible", " great"),
    template="{sentence} {prompt}", prompt="root",
    splits={s: Split(tuple(f"{s} {i}" for i in range(N)), tuple(i % 2 for i in range(N))) for s in ("train", "dev", "test")},
)


def hashed(prompt: str) -> float:
    """A deterministic reward in {0, 0.1, ..., 1} that depends on the whole prompt."""
    return (zlib.crc32(prompt.encode()) % (N + 1)) / N


def by_depth(prompt: str) -> float:
    """Reward rising with depth (children are named parent/x), capped at 0.9."""
    return min(0.9, 0.3 + 0.2 * prompt.count("/"))


def fake_target(accuracy=hashed, generate=None) -> FakeTarget:
    """Answers example ``i`` of a split correctly iff ``i < accuracy(prompt) * N``; ``generate`` makes it the
    optimizer LM too."""

    def scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
        i = int(text.split()[1])
        label = i % 2
        out = np.full(k, math.log(0.1))
        out[label if i < round(accuracy(prompt) * N) else 1 - label] = math.log(0.8)
        return out

    return FakeTarget(scores, generate=generate, loglikelihood=lambda context, continuation: 0.0, name="fake-target")


def dev_prompts(target: FakeTarget) -> list[str]:
    """The prompts ``target`` scored on the dev split, one entry per request."""
    return [prompt for prompts, inputs in target.classify_calls if inputs[0].startswith("dev ") for prompt in prompts]


class OptimizerScript:
    """Gradient requests get a fixed diagnosis; revision requests of prompt P get ``<START>P/k<END>`` (k
    counts revisions of P), unless ``script(P, k)`` returns another answer; APE requests ``<START>ape-k<END>``.
    With ``seeded`` the seed of the call is part of the name (so the tree depends on the search's seed)."""

    def __init__(self, script=None, seeded: bool = False) -> None:
        self.script, self.seeded, self.counter = script, seeded, {}

    def __call__(self, text: str, sample: int, seed: int | None) -> str:
        if "Diagnosis of the mistakes" in text:
            prompt = re.search(r'Current prompt: "(.*)"', text).group(1)
            k = self.counter[prompt] = self.counter.get(prompt, 0) + 1
            answer = self.script(prompt, k) if self.script else None
            suffix = f"{k}s{seed % 7}" if self.seeded else str(k)
            return answer if answer is not None else f"Sure.\n<START>{prompt}/{suffix}<END>"
        if "Examples of texts" in text:
            k = self.counter["ape"] = self.counter.get("ape", 0) + 1
            return f"<START>ape-{k}<END>"
        return "The prompt does not say which word to answer with."


def scripted_optimizer(script=None, seeded: bool = False) -> FakeTarget:
    """The optimizer LM of PromptAgent, answering by :class:`OptimizerScript`; it never classifies."""
    return FakeTarget(generate=OptimizerScript(script, seeded), loglikelihood=lambda context, continuation: 0.0,
                      name="scripted")


def request_named(text: str, sample: int, seed: int | None) -> str:
    """A stateless optimizer: a revision of P is ``P/<crc32 of the request>`` (the request shows the errors drawn), an
    APE answer ``ape-<crc32>``; the same request always gets the same answer, so a resumed search gets the answers
    a straight one got."""
    crc = zlib.crc32(text.encode()) % 1000
    if "Diagnosis of the mistakes" in text:
        prompt = re.search(r'Current prompt: "(.*)"', text).group(1)
        return f"<START>{prompt}/{crc}<END>"
    if "Examples of texts" in text:
        return f"<START>ape-{crc}<END>"
    return "The prompt does not say which word to answer with."


def agent(accuracy=hashed, script=None, seeded=False, **kwargs) -> PromptAgent:
    cfg = PromptAgentConfig(**{"error_batch_size": N, "eval_test": False, **kwargs})
    return make_agent(cfg, fake_target(accuracy), scripted_optimizer(script, seeded), TASK)


# -- math against hand computation (the official code's rules) ---------------------------------------
def test_uct_matches_hand_computation():
    parent = Node(0, "p", None, 0, 0.5, returns=[0.5, 0.6, 0.7])
    visited = Node(1, "a", 0, 1, 0.9, returns=[0.4, 0.6])
    fresh = Node(2, "b", 0, 1, 0.3)
    assert visited.q == pytest.approx(0.5) and visited.visits == 2
    assert uct(visited, parent, 2.5) == pytest.approx(0.5 + 2.5 * math.sqrt(math.log(4) / 2))
    # an unvisited child: Q is its own reward, N counts as 1
    assert uct(fresh, parent, 2.5) == pytest.approx(0.3 + 2.5 * math.sqrt(math.log(4)))
    assert uct(fresh, Node(0, "p", None, 0, 0.5), 2.5) == pytest.approx(0.3)  # ln(0 + 1) = 0


def test_uct_explores_at_a_parents_second_visit():
    """ln(N_parent + 1): a parent visited once already gives its children an exploration bonus."""
    once = Node(0, "p", None, 0, 0.5, returns=[1.2])
    low, high = Node(1, "a", 0, 1, 0.3), Node(2, "b", 0, 1, 0.4, returns=[0.4])
    assert uct(low, once, 2.5) == pytest.approx(0.3 + 2.5 * math.sqrt(math.log(2)))
    assert uct(high, once, 2.5) == pytest.approx(0.4 + 2.5 * math.sqrt(math.log(2)))
    assert uct(low, once, 2.5) - low.q == pytest.approx(2.0814, abs=1e-4)


def test_backpropagate_gives_each_node_the_sum_of_the_rewards_below_it():
    nodes = [Node(0, "r", None, 0, 0.2), Node(1, "a", 0, 1, 0.4), Node(2, "b", 1, 2, 0.9)]
    assert backpropagate(nodes, [0, 1, 2]) == pytest.approx([1.5, 1.3, 0.9])
    backpropagate(nodes, [0, 1])
    assert nodes[0].returns == pytest.approx([1.5, 0.6]) and nodes[0].q == pytest.approx(1.05)
    assert nodes[1].returns == pytest.approx([1.3, 0.4]) and nodes[1].q == pytest.approx(0.85)
    assert nodes[1].visits == 2 and nodes[2].visits == 1


def test_pruned_below_the_mean_of_root_and_parent_rewards_only_deeper_than_min_depth():
    root, parent = Node(0, "r", None, 0, 0.4), Node(1, "p", 0, 2, 0.6)
    def child(reward: float) -> Node:
        return Node(2, "c", 1, 3, reward)
    assert pruned(child(0.49), parent, root.reward, min_depth=2)  # 0.49 < (0.4 + 0.6) / 2
    assert not pruned(child(0.5), parent, root.reward, min_depth=2)  # equal: kept
    assert not pruned(child(0.1), parent, root.reward, min_depth=3)  # depth 3 is not deeper than 3
    assert not pruned(root, None, root.reward, min_depth=0)


def test_simulation_best_counts_only_nodes_simulations_reached():
    nodes = [Node(0, "r", None, 0, 0.5), Node(1, "a", 0, 1, 0.9), Node(2, "b", 0, 1, 0.6), Node(3, "c", 2, 2, 0.7)]
    assert simulation_best(nodes, [], []) == 0.5  # the root's reward to start with
    assert simulation_best(nodes, [[0, 2]], []) == 0.6  # node 1 (0.9) was scored but never reached
    assert simulation_best(nodes, [[0, 2]], [0, 2, 3]) == 0.7


def test_final_node_is_best_node_of_best_mean_path_not_best_node_overall():
    rewards = {0: 0.5, 1: 0.4, 2: 0.8, 3: 0.95}
    nodes = [Node(i, f"n{i}", None, 0, r) for i, r in rewards.items()]
    traces = [[0, 1, 3], [0, 2]]  # means 0.617 and 0.65
    assert select_final(nodes, traces).id == 2
    assert select_final(nodes, [[0, 1, 3]]).id == 3
    assert select_final(nodes, []).id == 3


def test_parse_proposals():
    assert parse_proposals("a <START> Be  precise. <END> b <START>Two<END>") == (["Be precise.", "Two"], False)
    assert parse_proposals("<START>  <END>") == ([""], False)
    assert parse_proposals('I suggest "Rate the review:" here') == ([], False)
    assert parse_proposals('I suggest "Rate the review:" here', fallback=True) == (["Rate the review:"], True)
    assert parse_proposals("<START> Overall it was\nmore", fallback=True) == (["Overall it was"], True)


# -- the search on scripted fakes ---------------------------------------------------------------------
def test_mcts_respects_width_and_depth_limit():
    a = agent(steps=6, max_evaluations=100, expand_width=3, depth_limit=3, min_depth=3)
    a.run()
    assert max(n.depth for n in a.nodes) <= 3
    assert all(len(n.children) <= 3 for n in a.nodes)
    assert all(not n.children for n in a.nodes if n.depth == 3)
    assert all(len(n.children) == 3 for n in a.nodes if n.expanded)
    assert a.nodes[0].visits == 6 == len(a.traces)
    for trace in a.traces:  # every trace is a root-to-node chain
        assert [a.nodes[i].depth for i in trace] == list(range(len(trace)))
        assert all(a.nodes[c].parent == p for p, c in zip(trace, trace[1:]))
    # visits along the tree are consistent: a parent is visited at least as often as all its children
    for n in a.nodes:
        assert n.visits >= sum(a.nodes[c].visits for c in n.children)


def test_unparseable_and_empty_proposals_are_dropped_and_counted():
    answers = {1: "I cannot help with that.", 2: "<START>   <END>"}
    a = agent(script=lambda prompt, k: answers.get(k), steps=2, max_evaluations=100, expand_width=3,
              depth_limit=3, min_depth=3)
    a.run()  # iteration 1 expands depths 0, 1, 2; iteration 2 selects down to the depth limit
    assert a.drops["unparseable"] == 3 and a.drops["empty"] == 3  # one of each per expansion
    assert all(len(n.children) == 1 for n in a.nodes if n.expanded)
    assert a.nodes[0].children == [1]


def levels(rewards: dict[int, float], default: float = 0.1):
    """Reward by depth (children are named parent/k); ``rewards`` maps a depth to its reward."""
    return lambda prompt: rewards.get(prompt.count("/"), default)


def test_mcts_back_propagates_the_hand_computed_sum_of_future_rewards():
    a = agent(accuracy=by_depth, steps=1, max_evaluations=100, depth_limit=5, min_depth=2)
    a.run()  # rewards 0.3, 0.5, 0.7, 0.9 by depth; the depth-3 node is the first deeper than 2 to beat the best
    path = a.traces[0]
    assert [a.nodes[i].depth for i in path] == [0, 1, 2, 3] and a.counts["early_stops"] == 1
    assert [a.nodes[i].returns for i in path] == [pytest.approx([2.4]), pytest.approx([2.1]), pytest.approx([1.6]),
                                                   pytest.approx([0.9])]
    assert a.tree()["nodes"][0]["q"] == pytest.approx(2.4)


def test_mcts_early_stop_needs_a_node_deeper_than_min_depth():
    a = agent(accuracy=levels({0: 0.3, 1: 0.5, 2: 0.7, 3: 0.6}), steps=1, max_evaluations=100,
              depth_limit=3, min_depth=2)
    a.run()  # 0.7 at depth 2 beats everything, but 2 is not deeper than min_depth: the simulation goes on
    assert a.counts["early_stops"] == 0 and [a.nodes[i].depth for i in a.traces[0]] == [0, 1, 2, 3]


def test_mcts_equal_reward_does_not_stop_a_simulation_a_strictly_better_one_does():
    a = agent(accuracy=levels({0: 0.5, 1: 0.7}, default=0.7), steps=1, max_evaluations=100, depth_limit=4,
              min_depth=1)
    a.run()  # every node below the root ties the best reached (0.7): the simulation runs to the depth limit
    assert a.counts["early_stops"] == 0 and len(a.traces[0]) == 5
    # the bar is the best node reached (0.9 at depth 1), not the parent: 0.8 at depth 3 does not stop, 0.95 does
    b = agent(accuracy=levels({0: 0.5, 1: 0.9, 2: 0.7, 3: 0.8, 4: 0.95}), steps=1, max_evaluations=100,
              depth_limit=6, min_depth=1)
    b.run()
    assert b.counts["early_stops"] == 1 and [b.nodes[i].depth for i in b.traces[0]] == [0, 1, 2, 3, 4]


def test_mcts_never_expands_a_node_below_the_min_threshold():
    rewards = levels({0: 0.6, 1: 0.6, 2: 0.2, 3: 0.9})
    a = agent(accuracy=rewards, steps=1, max_evaluations=100, depth_limit=4, min_depth=1)
    a.run()  # depth 2 scores 0.2 < (0.6 + 0.6) / 2: terminal, so the simulation ends there unexpanded
    leaf = a.nodes[a.traces[0][-1]]
    assert [a.nodes[i].depth for i in a.traces[0]] == [0, 1, 2] and not leaf.children and a.terminal(leaf)
    b = agent(accuracy=rewards, steps=1000, max_evaluations=1000, depth_limit=4, min_depth=1, expand_width=2)
    b.run()  # the whole tree: every depth-1 node expanded once, no depth-2 node ever
    assert b.stop_reason == "tree_exhausted" and len(b.nodes) == 1 + 2 + 4 and max(n.depth for n in b.nodes) == 2


def test_mcts_final_prompt_follows_promptagent_rule():
    a = agent(steps=5, max_evaluations=100, depth_limit=3)
    final = a.run()
    assert final is select_final(a.nodes, a.traces)
    tree = a.tree()
    assert tree["final"] == final.id
    assert {"prompt", "reward", "visits", "q", "parent", "depth"} <= set(tree["nodes"][0])
    json.dumps(tree)


@pytest.mark.parametrize("search", ["mcts", "greedy", "beam", "ape"])
def test_every_search_stops_at_the_evaluation_budget(search):
    a = agent(search=search, steps=1000, max_evaluations=14, depth_limit=3 if search == "mcts" else 2, beam_width=2)
    a.run()
    target = a.scorer.target
    assert a.stop_reason == "max_evaluations" and a.evaluations == 14
    assert len(set(dev_prompts(target))) == 14  # the scorer scored exactly the budget's prompts on dev
    if search == "ape":
        assert all(n.depth == 1 for n in a.nodes[1:])
    if search in ("greedy", "beam"):  # the frontier restarts at the root after reaching the depth limit
        assert len(a.nodes[0].children) > 3 and max(n.depth for n in a.nodes) == 2


def test_mcts_stops_when_every_node_is_expanded_or_at_the_depth_limit():
    a = agent(steps=1000, max_evaluations=1000, depth_limit=2, expand_width=2)
    a.run()
    assert a.stop_reason == "tree_exhausted" and len(a.nodes) == 1 + 2 + 4


def test_greedy_follows_the_best_child():
    a = agent(search="greedy", steps=2, max_evaluations=100, depth_limit=5)
    a.run()
    first = max((a.nodes[c] for c in a.nodes[0].children), key=lambda n: n.reward)
    assert a.nodes[a.traces[1][1]] is first and len(first.children) == 3


def test_budget_counts_new_prompts_only():
    a = agent(script=lambda prompt, k: "<START>root/1<END>" if k > 1 else None, steps=3,
              max_evaluations=100, depth_limit=1, min_depth=1)
    a.run()
    assert [n.prompt for n in a.nodes] == ["root", "root/1"]
    assert a.evaluations == 2 and a.drops["duplicate"] == 2


def test_same_seed_same_tree():
    agents = [agent(seeded=True, seed=s, steps=5, max_evaluations=40) for s in (3, 3, 4)]
    for a in agents:
        a.run()
    a, b, c = (a.tree() for a in agents)
    assert a == b
    assert a != c


def test_config_validation_names_bad_values():
    with pytest.raises(ValueError, match="'dfs'"):
        PromptAgentConfig(search="dfs")
    with pytest.raises(ValueError, match="min_depth"):
        PromptAgentConfig(min_depth=9, depth_limit=8)
    with pytest.raises(ValueError, match="expand_width"):
        PromptAgentConfig(expand_width=0)
    with pytest.raises(ValueError, match="test"):
        PromptAgentConfig(reward_split="test")


# -- the run entry point ------------------------------------------------------------------------------
def test_train_writes_outputs_and_resume_continues_the_same_search(tmp_path):
    def run(path, iterations, resume=False, target=None):
        cfg = PromptAgentConfig(steps=iterations, max_evaluations=100, error_batch_size=N, depth_limit=3, seed=1)
        return train_promptagent(cfg, path, resume=resume, target=target or fake_target(),
                                 optimizer=scripted_optimizer(seeded=True), task=TASK)

    target = fake_target()
    summary = run(tmp_path / "full", 4, target=target)
    for name in ("prompt.txt", "tree.json", "reward_by_depth.png", "metrics.jsonl", "config.yaml", "summary.json"):
        assert (tmp_path / "full" / name).is_file(), name
    assert not (tmp_path / "full" / "search_state.json").exists()  # the loop's checkpoints hold the search
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["step_3", "step_4"]
    tree = json.loads((tmp_path / "full" / "tree.json").read_text())
    final = tree["nodes"][tree["final"]]["prompt"]
    assert (tmp_path / "full" / "prompt.txt").read_text() == summary["best_prompt"] == final
    assert summary["dev_accuracy"] == pytest.approx(hashed(final)) == summary["details"]["reward"]
    assert summary["test_accuracy"] == pytest.approx(hashed(summary["best_prompt"]))
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 4] and "eval/test_accuracy" in records[-1]
    # the loop's evaluation of the final prompt is its reward (dev is the reward split): no extra query
    assert all(r["eval/final_accuracy"] == r["charts/final_reward"] for r in records[:4])
    assert sorted(dev_prompts(target)) == sorted(n["prompt"] for n in tree["nodes"])  # each scored on dev once

    run(tmp_path / "resumed", 2)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tmp_path / "resumed", 4)
    resumed = run(tmp_path / "resumed", 4, resume=True)
    assert json.loads((tmp_path / "resumed" / "tree.json").read_text()) == tree
    assert resumed["best_prompt"] == summary["best_prompt"]
    # the query count carries over the resume (a fresh target starts at 0)
    assert resumed["target_queries"] == summary["target_queries"] > 0
    resumed_records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    def search_queries(rows):  # the finished 2-step run's test row stays before the resumed steps
        return [r["target_queries"] for r in rows if "charts/evaluations" in r]
    assert search_queries(resumed_records) == search_queries(records)
    shared = fake_target()
    shared.stats.sequences = 10_000  # another run used this target before: its queries are not this run's
    assert run(tmp_path / "shared", 4, target=shared)["target_queries"] == summary["target_queries"]


def test_a_target_cache_answers_a_repeated_search_without_querying_the_target(tmp_path):
    cfg = PromptAgentConfig(steps=3, max_evaluations=100, error_batch_size=N, depth_limit=3, seed=1,
                            target_cache=str(tmp_path / "cache.sqlite"))
    first, second = fake_target(), fake_target()
    a = train_promptagent(cfg, tmp_path / "a", target=first, optimizer=scripted_optimizer(seeded=True), task=TASK)
    b = train_promptagent(cfg, tmp_path / "b", target=second, optimizer=scripted_optimizer(seeded=True), task=TASK)
    assert 0 < a["target_queries"] <= first.stats.sequences  # the summary leaves the final test evaluation out
    assert b["target_queries"] == second.stats.sequences == 0 and dev_prompts(second) == []  # all from the cache
    assert second.stats.cache_hits >= first.stats.sequences and b["best_prompt"] == a["best_prompt"]


@pytest.mark.parametrize("search", SEARCHES)
def test_step_cost_bounds_the_target_sequences_of_every_iteration(search):
    target = fake_target(by_depth, generate=request_named)  # the optimizer LM is the target: its requests count too
    cfg = PromptAgentConfig(search=search, steps=8, max_evaluations=30, error_batch_size=4, depth_limit=3,
                            min_depth=1, beam_width=2, eval_test=False)
    a = make_agent(cfg, target, task=TASK)
    assert a.optimizer is target
    if search == "mcts":  # root (1 + 9 new prompts) x 10 dev examples + 5 expansions x 10 predictions + 30 requests
        assert a.step_cost() == (1 + 9) * N + 5 * 10 + 2 * 3 * 5 == 180
    used = []
    while a.iteration < cfg.steps and a.exhausted() is None:
        bound, before = a.step_cost(), target.stats.sequences
        a.step()
        used.append((target.stats.sequences - before, bound))
    assert len(used) > 2 and all(0 < spent <= bound for spent, bound in used[:1]) and all(s <= b for s, b in used)


def budget_run(path, *, resume=False, target=None, **overrides):
    """A PromptAgent run whose optimizer LM is the (stateless, scripted) target itself, rewards rising with depth."""
    cfg = PromptAgentConfig(**{"steps": 8, "max_evaluations": 60, "error_batch_size": 4, "depth_limit": 4,
                               "min_depth": 1, "seed": 2, "checkpoint_every": 2, "eval_test": False, **overrides})
    return train_promptagent(cfg, path, resume=resume, target=target or fake_target(by_depth, generate=request_named),
                             task=TASK)


def test_the_query_budget_stops_the_search_before_an_iteration_that_could_pass_it(tmp_path):
    free = fake_target(by_depth, generate=request_named)
    unlimited = budget_run(tmp_path / "free", target=free)
    assert unlimited["stop_reason"] == "steps" and unlimited["target_queries"] == free.stats.sequences
    # the search's own check used to start an iteration below the limit: step 7 went from 197 to 291 sequences past
    # 280; the loop stops before an iteration whose bound (the first's is 226: 13 new prompts x 10 dev examples +
    # 6 expansions x 10 predictions + 36 requests) could pass it
    limit = 280
    target = fake_target(by_depth, generate=request_named)
    summary = budget_run(tmp_path / "limited", target=target, max_target_queries=limit)
    assert summary["stop_reason"] == "max_target_queries" and 1 <= summary["steps"] < 8
    assert summary["target_queries"] == target.stats.sequences <= limit
    rows = [json.loads(line) for line in (tmp_path / "limited" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, summary["steps"] + 1))
    with pytest.raises(ConfigError, match="max_target_queries=50 cannot pay for PromptAgent's first iteration"):
        budget_run(tmp_path / "tiny", max_target_queries=50)


@pytest.mark.parametrize("search, limit", [("mcts", 500), ("greedy", 300)])
def test_a_killed_run_resumes_to_the_straight_runs_result(tmp_path, search, limit):
    """Killed in step 6 or 7 and resumed from step 4: the same metrics, tree and summary as a straight run, down to the
    query counts and the budget's stop (greedy re-expands the root at step 5: the saved predictions are reused)."""
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k != "perf/wall_seconds"}
                for line in (path / "metrics.jsonl").read_text().splitlines()]

    straight_target = fake_target(by_depth, generate=request_named)
    settings = {"max_target_queries": limit, "checkpoint_every": 4, "search": search}
    straight = budget_run(tmp_path / "straight", target=straight_target, **settings)
    assert straight["stop_reason"] == "max_target_queries" and straight["steps"] >= 4
    calls, kill_at = itertools.count(), 3 * len(sum(straight_target.generated, [])) // 4

    def dying(text, sample, seed):
        if next(calls) == kill_at:
            raise KeyboardInterrupt("killed")
        return request_named(text, sample, seed)

    path = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        budget_run(path, target=fake_target(by_depth, generate=dying), **settings)
    newest = max(int(p.name.split("_")[1]) for p in (path / "checkpoints").iterdir())
    assert newest == 4 and rows(path)[-1]["step"] > 4  # the resume drops the metrics after step 4 and redoes them
    resumed = budget_run(path, resume=True, **settings)
    ignored = ("run_dir", "wall_seconds")
    assert {k: v for k, v in resumed.items() if k not in ignored} == {k: v for k, v in straight.items()
                                                                      if k not in ignored}
    assert rows(path) == rows(tmp_path / "straight")
    assert (path / "tree.json").read_text() == (tmp_path / "straight" / "tree.json").read_text()


def test_error_driven_revision_is_a_prompt_edit_action():
    """PromptEdit-v0 offers PromptAgent's revision as its `revise` action, scored by the same target."""
    from gymnasium.utils.env_checker import check_env

    from rlprompt.envs.prompt_edit import PromptEditEnv

    def embed(texts):
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    a = agent()
    env = PromptEditEnv(task=TASK, target=a.scorer.target, embedder=embed, reviser=a.revise, max_phrases=4, budget=2)
    env.reset(seed=0, options={"instruction": "root"})
    revise = env.edits.index(("revise",))
    assert env.action_masks()[revise]
    _, reward, _, _, info = env.step(revise)
    assert info["instruction"] == "root/1" == env.revise("root")  # the scripted optimizer's first revision, cached
    assert reward == pytest.approx(hashed("root/1") - hashed("root"))
    assert a.evaluations == 0  # revising evaluates nothing in the agent: the env scores the edit itself
    env.reviser = lambda prompt: None  # an optimizer with nothing usable to say leaves the instruction alone
    env.reset(seed=0, options={"instruction": "plain"})
    assert env.step(revise)[4]["instruction"] == "plain"
    env.reviser, env.paraphrase = a.revise, lambda phrase: f"{phrase}!"  # the fake target does not generate
    check_env(env, skip_render_check=True)


# -- the benchmark script (experiments/promptagent_bench.py) on the fakes ------------------------------
def load_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "promptagent_bench.py"
    spec = importlib.util.spec_from_file_location("promptagent_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_pools_the_reward_set_and_holds_out_a_seeded_test_subset():
    bench = load_bench()
    task = bench.pool(TASK, test_limit=6)
    assert set(task.splits) == {"train", "test"}
    assert task.split("train").texts == TASK.split("train").texts + TASK.split("dev").texts
    test = task.split("test").texts
    assert len(test) == 6 and set(test) < set(TASK.split("test").texts)
    assert sorted(test, key=lambda t: int(t.split()[1])) == list(test)  # original order kept
    only_test = ClassificationTask(TASK.name, TASK.label_names, TASK.verbalizers, TASK.template, TASK.prompt,
                                   {"test": TASK.split("test")})
    drawn = bench.pool(only_test, test_limit=None, pool_size=4)
    assert len(drawn.split("train")) == 4 and len(drawn.split("test")) == N - 4
    assert not set(drawn.split("train").texts) & set(drawn.split("test").texts)


def test_bench_writes_predictions_resumes_and_regenerates_its_report(tmp_path):
    from rlprompt.stats import correctness

    bench = load_bench()
    task, out = bench.pool(TASK, test_limit=8), tmp_path / "pa"
    argv = ["--arms", "mcts", "greedy", "--max-evaluations", "5", "--depth-limit", "3", "--test-limit", "8",
            "--iterations", "10"]
    optimizer = scripted_optimizer(seeded=True)

    def run(*extra: str) -> dict:
        settings = bench.settings_of(bench.parser().parse_args(argv + list(extra)))
        return bench.bench([task], settings, "cmd " + " ".join(extra), out, fake_target(), optimizer)

    first = run("--seeds", "0")
    record = first["tasks"]["toy"]["mcts"]["seeds"][0]
    gold = [int(c) for c in first["gold"]["toy"]]
    assert gold == list(task.split("test").labels) and len(record["test_predictions"]) == 8
    assert record["test_accuracy"] == pytest.approx(correctness(record["test_predictions"], gold).mean())
    assert record["test_accuracy"] == pytest.approx(hashed(record["prompt"]), abs=0.13)  # 8 of the 10 examples
    assert first["init"]["toy"]["reward"] == pytest.approx(hashed("root")) and record["command"] == "cmd --seeds 0"
    asked = sum(map(len, optimizer.generated))
    both = run("--seeds", "0", "1")  # seed 0 is already there: only seed 1 runs
    assert [r["seed"] for r in both["tasks"]["toy"]["mcts"]["seeds"]] == [0, 1]
    assert both["tasks"]["toy"]["mcts"]["seeds"][0] == record
    new = [both["tasks"]["toy"][arm]["seeds"][1]["counts"]["optimizer_requests"] for arm in ("mcts", "greedy")]
    assert sum(map(len, optimizer.generated)) - asked == sum(new)
    assert json.loads(out.with_suffix(".json").read_text()) == both
    report = out.with_suffix(".md").read_text()
    assert report == bench.markdown(both) and "| toy | mcts - greedy | 2 |" in report
    assert "| toy | greedy - initial | 2 |" in report
    with pytest.raises(ValueError, match="max_evaluations"):
        run("--seeds", "0", "--max-evaluations", "6")
