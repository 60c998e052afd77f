"""PromptAgent (MCTS) vs greedy vs beam vs APE at an equal number of prompt evaluations
(Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables Expert-level Prompt
Optimization", section 4 ablations), with one model as target and optimizer.

As in the paper (and its official code), the reward set is drawn from the labelled training data and
selects the output prompt, and a held-out test set scores it: each task's train and dev splits are pooled
into one set that gives both the error minibatches and the reward (a test-only task, BIG-bench, gives
``--pool-size`` examples drawn with seed 0, the rest is test). Every arm starts from the task's prompt,
stops after ``--max-evaluations`` prompts new to it, and its final prompt is scored on the same test
examples (at most ``--test-limit``, drawn with seed 0).

``<out>.json`` holds ``tasks.TASK.ARM`` (means over seeds, and one record per seed with the command that
made it and its per-example test predictions as a digit string), ``gold.TASK`` (the test labels, digits)
and ``init.TASK`` (the initial prompt). It is rewritten after every (task, arm, seed); rerunning the same
command resumes, skipping the records already there, and more seeds, arms or tasks extend it.
``<out>.md`` is :func:`markdown` of the JSON: means with 95% intervals over seeds, and paired bootstrap
intervals over seeds x test examples for MCTS minus greedy and each arm minus the initial prompt.

    OMP_NUM_THREADS=1 python experiments/promptagent_bench.py --tasks sentiment --seeds 0 --max-evaluations 6
    python experiments/promptagent_bench.py --tasks sentiment ../shared/data/rlprompt-16shot/sst-2 \\
        ../shared/data/rlprompt-16shot/agnews --seeds 0 1 2
    python experiments/promptagent_bench.py --report-only           # rewrite <out>.md from <out>.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.benchmarking import sample_indices
from rlprompt.evaluation import evaluate
from rlprompt.policies.promptagent import SEARCHES, PromptAgentConfig, make_agent
from rlprompt.runs import write_atomic
from rlprompt.stats import Interval, correctness, digits, mean_interval, paired_bootstrap
from rlprompt.targets import Target, make_target
from rlprompt.tasks import ClassificationTask, Split, load_task

POOL = "train"
"""The split name of the pooled examples: the error minibatches and the reward set."""
RECORD_KEYS = ("arms", "seeds")
"""Settings that choose which records to make; every other setting must match to resume or combine."""


def _subset(split: Split, idx: Any) -> Split:
    return Split(tuple(split.texts[i] for i in idx), tuple(split.labels[i] for i in idx))


def pool(task: ClassificationTask, test_limit: int | None, pool_size: int = 64) -> ClassificationTask:
    """``task`` as the bench runs it: splits ``train`` (its train and dev examples pooled; for a test-only
    task, ``pool_size`` test examples drawn with seed 0) and ``test`` (the rest, at most ``test_limit`` drawn
    with seed 0, in their original order)."""
    test = task.split("test")
    if "train" in task.splits:
        parts = [task.split(name) for name in ("train", "dev") if name in task.splits]
        examples = Split(sum((s.texts for s in parts), ()), sum((s.labels for s in parts), ()))
    else:
        if len(test) <= pool_size:
            raise ValueError(f"task {task.name!r} has {len(test)} examples: none left for test after a pool of {pool_size}")
        order = np.random.default_rng(0).permutation(len(test))
        examples, test = _subset(test, np.sort(order[:pool_size])), _subset(test, np.sort(order[pool_size:]))
    test = _subset(test, sample_indices(len(test), test_limit))
    return ClassificationTask(task.name, task.label_names, task.verbalizers, task.template, task.prompt,
                              {POOL: examples, "test": test})


def score(target: Target, task: ClassificationTask, prompt: str, split: str) -> tuple[float, str]:
    """Accuracy of ``prompt`` on ``split`` and its per-example predictions as a digit string."""
    data = task.split(split)
    result = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                      texts=data.texts, labels=data.labels)
    return result.accuracy, digits(result.predictions)


def run_seed(task: ClassificationTask, arm: str, seed: int, settings: dict[str, Any], target: Target,
             optimizer: Target) -> dict[str, Any]:
    """One search of ``arm`` on ``task`` with ``seed``; its record (final prompt, reward, test predictions, cost)."""
    cfg = PromptAgentConfig(
        task=task.name, target=settings["model"], optimizer_model=settings["model"], target_dtype=settings["dtype"],
        optimizer_model_dtype=settings["dtype"], search=arm, seed=seed, steps=settings["iterations"],
        max_evaluations=settings["max_evaluations"], expand_width=settings["expand_width"],
        depth_limit=settings["depth_limit"], min_depth=settings["min_depth"], beam_width=settings["beam_width"],
        gradient_tokens=settings["gradient_tokens"], revision_tokens=settings["revision_tokens"],
        prefill=not settings["strict"], parse_fallback=not settings["strict"], error_split=POOL, reward_split=POOL,
        eval_test=False)
    agent = make_agent(cfg, target, optimizer, task)
    wall, cpu, sequences = time.monotonic(), time.process_time(), target.stats.sequences
    final = agent.run(lambda a: print(f"[{task.name} {arm} seed {seed}] step {a.iteration}: {a.evaluations} evals, "
                                      f"best {max(n.reward for n in a.nodes):.3f}", file=sys.stderr, flush=True))
    search_cpu = time.process_time() - cpu
    accuracy, predictions = score(target, task, final.prompt, "test")
    return {"seed": seed, "prompt": final.prompt, "reward": final.reward, "test_accuracy": accuracy,
            "test_predictions": predictions, "best_reward": max(n.reward for n in agent.nodes),
            "evaluations": agent.evaluations, "iterations": agent.iteration, "stop_reason": agent.stop_reason,
            "drops": dict(agent.drops), "counts": dict(agent.counts),
            "tree_prompts": [[n.prompt, n.reward, n.depth] for n in agent.nodes],
            "wall_seconds": round(time.monotonic() - wall, 1), "search_cpu_seconds": round(search_cpu, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1), "target_sequences": target.stats.sequences - sequences}


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """An arm's means over seeds (its ``prompt`` is the first seed's) with the 95% interval of the test
    accuracy over seeds, and the per-seed records sorted by seed."""
    per_seed = sorted(per_seed, key=lambda r: r["seed"])
    means = {key: float(np.mean([r[key] for r in per_seed]))
             for key in ("test_accuracy", "reward", "evaluations", "iterations", "cpu_seconds")}
    return {"prompt": per_seed[0]["prompt"], **means,
            "test_accuracy_interval": mean_interval([r["test_accuracy"] for r in per_seed]).as_dict(),
            "optimizer_requests": float(np.mean([r["counts"].get("optimizer_requests", 0) for r in per_seed])),
            "seeds": per_seed}


def merge(results: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """``part`` added to ``results`` (None: an empty one): same settings but for the record choice, same
    test labels per task; a (task, arm, seed) record in both must be the same prompt."""
    if "gold" not in part:
        raise ValueError("these results predate per-example test predictions (no 'gold'); use another --out")
    if results is None:
        results = {"command": "", "settings": {**part["settings"], "arms": [], "seeds": []}, "gold": {}, "init": {},
                   "tasks": {}}
    mine = {k: v for k, v in results["settings"].items() if k not in RECORD_KEYS}
    theirs = {k: v for k, v in part["settings"].items() if k not in RECORD_KEYS}
    if mine != theirs:
        changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise ValueError(f"results with different settings {changed}: {mine} vs {theirs}; use another --out")
    for task, gold in part["gold"].items():
        if results["gold"].setdefault(task, gold) != gold:
            raise ValueError(f"task {task!r} has other test labels in the results being merged")
    results["init"].update(part["init"])
    for task, arms in part["tasks"].items():
        for arm, summary in arms.items():
            known = {r["seed"]: r for r in results["tasks"].get(task, {}).get(arm, {}).get("seeds", [])}
            for record in summary["seeds"]:
                if record["seed"] in known and known[record["seed"]]["prompt"] != record["prompt"]:
                    raise ValueError(f"{task} {arm} seed {record['seed']}: two different results to merge")
                known[record["seed"]] = record
            results["tasks"].setdefault(task, {})[arm] = summarize(list(known.values()))
    for key in ("arms", "seeds"):
        results["settings"][key] = list(dict.fromkeys(results["settings"].get(key, []) + part["settings"][key]))
    commands = [c for c in results["command"].split(" && ") if c]
    results["command"] = " && ".join(dict.fromkeys(commands + part["command"].split(" && ")))
    return results


def _reading(diff: Interval) -> str:
    if not diff.excludes_zero:
        return "inside the noise"
    return "better" if diff.mean > 0 else "worse"


def markdown(results: dict[str, Any]) -> str:
    """The report of a results JSON (from it alone): per task and arm the test accuracy's mean over seeds with
    its 95% interval, the reward-set accuracy and its gap to test, the cost; then paired bootstrap intervals
    over seeds x test examples of MCTS minus greedy and of each arm minus the initial prompt."""
    lines = [f"Command: `{results['command']}`", "", f"Settings: `{json.dumps(results['settings'])}`", "",
             "Reward set: each task's train and dev examples pooled (they also give the error minibatches); "
             "test: held out. Test accuracy: mean over seeds [95% t-interval]; gap: reward-set minus test "
             "accuracy of the final prompt, mean over seeds. Reward-set / test examples: "
             + ", ".join(f"{t} {i['pool_size']} / {i['test_size']}" for t, i in results["init"].items()) + ".", "",
             "| task | arm | seeds | test acc | reward-set acc | gap | evaluations | iterations | optimizer requests | "
             "CPU s per seed | final prompt (first seed) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    diffs = ["", "Paired differences in test accuracy (bootstrap over seeds x test examples, 95%):", "",
             "| task | difference | seeds | mean [95% interval] | reading |", "|---|---|---|---|---|"]
    for task, arms in results["tasks"].items():
        init, gold = results["init"][task], [int(c) for c in results["gold"][task]]
        lines.append(f"| {task} | initial prompt | - | {init['test_accuracy']:.3f} | {init['reward']:.3f} | "
                     f"{init['reward'] - init['test_accuracy']:+.3f} | 1 | - | 0 | - | `{init['prompt']}` |")
        correct = {arm: {r["seed"]: correctness(r["test_predictions"], gold) for r in arm_result["seeds"]}
                   for arm, arm_result in arms.items()}
        base = correctness(init["test_predictions"], gold)
        for arm, r in arms.items():
            accuracy = mean_interval([s["test_accuracy"] for s in r["seeds"]])
            gap = np.mean([s["reward"] - s["test_accuracy"] for s in r["seeds"]])
            lines.append(f"| {task} | {arm} | {len(r['seeds'])} | {accuracy:.3f} | {r['reward']:.3f} | {gap:+.3f} | "
                         f"{r['evaluations']:.1f} | {r['iterations']:.1f} | {r['optimizer_requests']:.1f} | "
                         f"{r['cpu_seconds']:.0f} | `{r['prompt'][:120]}` |")
        initial = {seed: base for r in correct.values() for seed in r}  # the initial prompt is the same every seed
        pairs = [("mcts", "greedy")] if {"mcts", "greedy"} <= correct.keys() else []
        pairs += [(arm, "initial") for arm in arms]
        for a, b in pairs:
            first, second = correct[a], correct[b] if b in correct else initial
            seeds = sorted(first.keys() & second.keys())
            if seeds:
                diff = paired_bootstrap([first[s] for s in seeds], [second[s] for s in seeds])
                diffs.append(f"| {task} | {a} - {b} | {len(seeds)} | {diff:+.3f} | {_reading(diff)} |")
    return "\n".join(lines + diffs) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    """``<out>.json`` and its report ``<out>.md``, atomically."""
    write_atomic(out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))


def bench(tasks: list[ClassificationTask], settings: dict[str, Any], command: str, out: Path, target: Target,
          optimizer: Target) -> dict[str, Any]:
    """Run every (task, arm, seed) of ``settings`` not already in ``<out>.json``, rewriting it after each."""
    path = out.with_suffix(".json")
    results = merge(None, json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
    for task in tasks:
        gold = digits(task.split("test").labels)
        part = {"command": command, "settings": settings, "gold": {task.name: gold}, "init": {}, "tasks": {}}
        results = merge(results, part)
        if task.name not in results["init"]:
            reward, _ = score(target, task, task.prompt, POOL)
            accuracy, predictions = score(target, task, task.prompt, "test")
            results["init"][task.name] = {"prompt": task.prompt, "reward": reward, "test_accuracy": accuracy,
                                          "test_predictions": predictions, "pool_size": len(task.split(POOL)),
                                          "test_size": len(task.split("test"))}
        for arm in settings["arms"]:
            done = {r["seed"] for r in results["tasks"].get(task.name, {}).get(arm, {}).get("seeds", [])}
            for seed in settings["seeds"]:
                if seed in done:
                    continue
                record = {**run_seed(task, arm, seed, settings, target, optimizer), "command": command}
                print(json.dumps({k: v for k, v in record.items() if k not in ("tree_prompts", "test_predictions")}),
                      file=sys.stderr, flush=True)
                results = merge(results, {**part, "tasks": {task.name: {arm: {"seeds": [record]}}}})
                write(results, out)
        write(results, out)
    return results


def parser() -> argparse.ArgumentParser:
    """The bench's command line (its defaults are the full benchmark's budget)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["sentiment"], help="built-in names or data paths (16-shot dirs, task.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="search seeds (paper-style runs use 3)")
    p.add_argument("--arms", nargs="+", default=list(SEARCHES), choices=SEARCHES)
    p.add_argument("--max-evaluations", type=int, default=120, help="new prompts scored on the reward set per arm (root included)")
    p.add_argument("--iterations", type=int, default=100, help="step cap per arm (the evaluation budget normally stops first)")
    p.add_argument("--expand-width", type=int, default=3, help="official default 3")
    p.add_argument("--depth-limit", type=int, default=8, help="official default 8")
    p.add_argument("--min-depth", type=int, default=2, help="official default 2")
    p.add_argument("--beam-width", type=int, default=3, help="official default 3")
    p.add_argument("--gradient-tokens", type=int, default=48)
    p.add_argument("--revision-tokens", type=int, default=40)
    p.add_argument("--strict", action="store_true", help="no <START> prefill and no fallback parsing")
    p.add_argument("--model", default="smollm2-135m-instruct", help="target and optimizer model")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--test-limit", type=int, default=400, help="score final prompts on at most this many test examples")
    p.add_argument("--pool-size", type=int, default=64, help="reward-set size drawn from a test-only task (BIG-bench)")
    p.add_argument("--out", default="experiments/results/promptagent", help="output path without suffix")
    p.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                   help="merge result files of runs with the same settings (say, one seed or task each) into --out")
    p.add_argument("--report-only", action="store_true", help="rewrite <out>.md from <out>.json and print it")
    return p


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments a results file records (all but the task specs and the output choices)."""
    return {k: v for k, v in vars(args).items() if k not in ("tasks", "out", "combine", "report_only")}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        results = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        write_atomic(out.with_suffix(".md"), markdown(results))
        print(markdown(results))
        return 0
    if args.combine:
        results = None
        for f in args.combine:
            results = merge(results, json.loads(Path(f).read_text(encoding="utf-8")))
    else:
        settings = settings_of(args)
        command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
        target = make_target(args.model, dtype=args.dtype)
        tasks = []
        for spec in args.tasks:
            tasks.append(pool(load_task(spec), args.test_limit, args.pool_size))
        results = bench(tasks, settings, command, out, target, target)
    write(results, out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
