"""PromptAgent (MCTS) vs greedy vs beam vs APE at an equal number of prompt evaluations
(Wang et al. 2023, "PromptAgent: Strategic Planning with Language Models Enables Expert-level Prompt
Optimization", section 4 ablations), with one model as target and optimizer.

Every arm starts from the task's prompt, scores prompts on the dev split through the same
``PromptScorer`` recipe, stops after ``--max-evaluations`` new prompts, and its final prompt is scored
on the test split. Writes ``<out>.json`` shaped ``{"tasks": {TASK: {"mcts": ARM, ...}}, "command": ...}``
and ``<out>.md``.

    python experiments/promptagent_bench.py --tasks sentiment --seeds 0 --max-evaluations 7
    python experiments/promptagent_bench.py --tasks sentiment ../shared/data/rlprompt-16shot/sst-2 \\
        ../shared/data/rlprompt-16shot/agnews --seeds 0 1 2 --max-evaluations 30
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rlprompt.envs.scoring import shared_target
from rlprompt.policies.promptagent import SEARCHES, PromptAgentConfig, make_agent
from rlprompt.runs import write_atomic
from rlprompt.tasks import ClassificationTask, Split, load_task


def load(spec: str, test_limit: int | None, seed: int = 0) -> ClassificationTask:
    """The task; a test-only task (BIG-bench) is split 16/16/rest into train/dev/test with ``seed``."""
    task = load_task(spec)
    if not isinstance(task, ClassificationTask):
        raise ValueError(f"{spec!r} is not a classification task")
    if "train" not in task.splits or "dev" not in task.splits:
        data = task.split("test")
        order = np.random.default_rng(seed).permutation(len(data))
        part = {"train": order[:16], "dev": order[16:32], "test": order[32:]}
        task = ClassificationTask(task.name, task.label_names, task.verbalizers, task.template, task.prompt,
                                  {s: Split(tuple(data.texts[i] for i in idx), tuple(data.labels[i] for i in idx))
                                   for s, idx in part.items()})
    if test_limit is not None and len(task.split("test")) > test_limit:
        test = task.split("test")
        idx = np.random.default_rng(seed).permutation(len(test))[:test_limit]
        splits = {**task.splits, "test": Split(tuple(test.texts[i] for i in idx), tuple(test.labels[i] for i in idx))}
        task = ClassificationTask(task.name, task.label_names, task.verbalizers, task.template, task.prompt, splits)
    return task


def markdown(results: dict) -> str:
    lines = [f"Command: `{results['command']}`", "", f"Settings: `{json.dumps(results['settings'])}`", "",
             "| task | arm | seeds | test acc (mean ± std over seeds) | dev reward | evaluations | optimizer requests | "
             "dropped proposals | final prompt (first seed) |", "|---|---|---|---|---|---|---|---|---|"]
    for task, arms in results["tasks"].items():
        init = results["init"][task]
        lines.append(f"| {task} | initial prompt | - | {init['test_accuracy']:.3f} | {init['reward']:.3f} | 1 | 0 | - | "
                     f"`{init['prompt']}` |")
        for arm, r in arms.items():
            dropped = sum(sum(v for k, v in s["drops"].items() if k != "no_errors") for s in r["seeds"])
            lines.append(f"| {task} | {arm} | {len(r['seeds'])} | {r['test_accuracy']:.3f} ± {r['test_accuracy_std']:.3f} | "
                         f"{r['reward']:.3f} | {r['evaluations']:.1f} | {r['optimizer_requests']:.1f} | {dropped} | "
                         f"`{r['prompt'][:120]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["sentiment"], help="built-in names or data paths (16-shot dirs, task.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="search seeds (paper-style runs use 3)")
    p.add_argument("--arms", nargs="+", default=list(SEARCHES), choices=SEARCHES)
    p.add_argument("--max-evaluations", type=int, default=7, help="new prompts scored on dev per arm (root included)")
    p.add_argument("--iterations", type=int, default=50, help="step cap per arm (the budget normally stops first)")
    p.add_argument("--expand-width", type=int, default=3)
    p.add_argument("--depth-limit", type=int, default=4)
    p.add_argument("--min-depth", type=int, default=2)
    p.add_argument("--beam-width", type=int, default=2)
    p.add_argument("--gradient-tokens", type=int, default=48)
    p.add_argument("--revision-tokens", type=int, default=40)
    p.add_argument("--strict", action="store_true", help="no <START> prefill and no fallback parsing")
    p.add_argument("--model", default="smollm2-135m-instruct", help="target and optimizer model")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--test-limit", type=int, default=400, help="score final prompts on at most this many test examples")
    p.add_argument("--out", default="experiments/results/promptagent", help="output path without suffix")
    p.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                   help="merge result files of earlier runs (say, one seed or task each, run in parallel) into --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.combine:
        return combine([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.combine], out)

    target = shared_target(args.model, dtype=args.dtype)
    settings = {k: v for k, v in vars(args).items() if k not in ("tasks", "out", "combine")}
    results = {"tasks": {}, "init": {}, "settings": settings,
               "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])}
    for spec in args.tasks:
        task = load(spec, args.test_limit)
        name = task.name
        results["tasks"][name] = {}
        for arm in args.arms:
            per_seed = []
            for seed in args.seeds:
                cfg = PromptAgentConfig(
                    task=spec, target=args.model, optimizer=args.model, target_dtype=args.dtype,
                    optimizer_dtype=args.dtype, search=arm, seed=seed, iterations=args.iterations,
                    max_evaluations=args.max_evaluations, expand_width=args.expand_width, depth_limit=args.depth_limit,
                    min_depth=args.min_depth, beam_width=args.beam_width, gradient_tokens=args.gradient_tokens,
                    revision_tokens=args.revision_tokens, prefill=not args.strict, parse_fallback=not args.strict)
                agent = make_agent(cfg, target, target, task)
                start, q0 = time.monotonic(), target.stats.sequences
                final = agent.run(lambda a: print(f"[{name} {arm} seed {seed}] step {a.iteration}: "
                                                  f"{a.evaluations} evals, best {max(n.reward for n in a.nodes):.3f}",
                                                  file=sys.stderr, flush=True))
                record = {"seed": seed, "prompt": final.prompt, "reward": final.reward,
                          "test_accuracy": agent.scorer.evaluate(final.prompt, "test"),
                          "evaluations": agent.evaluations, "iterations": agent.iteration,
                          "stop_reason": agent.stop_reason, "drops": dict(agent.drops), "counts": dict(agent.counts),
                          "tree_prompts": [(n.prompt, n.reward, n.depth) for n in agent.nodes],
                          "wall_seconds": round(time.monotonic() - start, 1),
                          "target_sequences": target.stats.sequences - q0}
                per_seed.append(record)
                if name not in results["init"]:
                    root = agent.nodes[0]
                    results["init"][name] = {"prompt": root.prompt, "reward": root.reward,
                                             "test_accuracy": agent.scorer.evaluate(root.prompt, "test")}
                print(json.dumps({k: v for k, v in record.items() if k != "tree_prompts"}), file=sys.stderr, flush=True)
            results["tasks"][name][arm] = summarize(per_seed)
            write_atomic(out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
            write_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


def summarize(per_seed: list[dict]) -> dict:
    """An arm's means over seeds (its ``prompt`` is the first seed's), with the per-seed records."""
    accs = [r["test_accuracy"] for r in per_seed]
    return {"prompt": per_seed[0]["prompt"], "test_accuracy": float(np.mean(accs)),
            "test_accuracy_std": float(np.std(accs)), "reward": float(np.mean([r["reward"] for r in per_seed])),
            "evaluations": float(np.mean([r["evaluations"] for r in per_seed])),
            "optimizer_requests": float(np.mean([r["counts"].get("optimizer_requests", 0) for r in per_seed])),
            "seeds": per_seed}


def combine(parts: list[dict], out: Path) -> int:
    """Merge results of runs over disjoint seeds, tasks and/or arms with the same settings otherwise."""
    settings = [{k: v for k, v in part["settings"].items() if k not in ("seeds", "arms", "combine")} for part in parts]
    if any(s != settings[0] for s in settings):
        raise ValueError(f"cannot combine runs with different settings: {settings}")
    seeds: dict[str, dict[str, list[dict]]] = {}
    arms_run = list(dict.fromkeys(arm for part in parts for arm in part["settings"]["arms"]))
    results = {"tasks": {}, "init": {}, "settings": {**settings[0], "arms": arms_run, "seeds": []},
               "command": " && ".join(part["command"] for part in parts)}
    for part in parts:
        results["init"].update(part["init"])
        results["settings"]["seeds"] += [s for s in part["settings"]["seeds"] if s not in results["settings"]["seeds"]]
        for task, arms in part["tasks"].items():
            for arm, summary in arms.items():
                seeds.setdefault(task, {}).setdefault(arm, []).extend(summary["seeds"])
    results["tasks"] = {task: {arm: summarize(sorted(rs, key=lambda r: r["seed"])) for arm, rs in arms.items()}
                        for task, arms in seeds.items()}
    write_atomic(out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
