"""PRewrite benchmark (Kong et al. 2024) on RLPrompt's 16-shot SST-2 and AG News with the bundled target.

For each task and training seed: train a PRewrite rewriter with GRPO (policies/prewrite.py), then score on
the test split the initial instruction, PRewrite-I (greedy rewrite) and PRewrite-S (best of K on dev).
Writes experiments/results/prewrite.json; every arm records ``instruction``, ``template``, ``verbalizers``
and ``test_accuracy`` so that

    rlprompt eval --task <data dir> --split test --template "<template>" --prompt "<instruction>" \
        --verbalizers <v1> <v2> ... [--limit <test_limit>]

reproduces the figure (same target, bfloat16). Full runs (3 seeds, ~50 steps) take hours on 2 CPU cores:
``--seeds``, ``--steps`` and ``--test-limit`` shrink them.

    python experiments/prewrite_bench.py --seeds 0 --steps 2 --test-limit 64
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from rlprompt.runs import write_atomic

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "rlprompt-16shot"
TASKS = {"sst-2": DATA / "sst-2", "agnews": DATA / "agnews"}


def eval_command(data: str | Path, data_seed: str, arm: dict, limit: int | None) -> str:
    """The ``rlprompt eval`` command line that reproduces ``arm["test_accuracy"]`` (shell-quoted)."""
    command = ["rlprompt", "eval", "--task", str(data), "--seed", data_seed, "--split", "test", "--template",
               arm["template"], "--prompt", arm["instruction"], "--verbalizers", *arm["verbalizers"], "--json"]
    return shlex.join(command + (["--limit", str(limit)] if limit else []))


def add_eval_commands(results: dict) -> dict:
    """Give every arm of a results dict its reproducing ``eval_command`` (single-seed arms only)."""
    for arms in results["tasks"].values():
        for arm in arms.values():
            if len(arm["test_accuracy_per_seed"]) == 1:
                arm["eval_command"] = eval_command(arm["data"], arm["data_seed"], arm, arm["test_examples"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--data-seed", default="16-42", help="RLPrompt 16-shot seed directory")
    parser.add_argument("--steps", type=int, default=50, help="GRPO steps per run")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=8, help="K of PRewrite-S")
    parser.add_argument("--dev-limit", type=int, default=None, help="dev examples used to pick PRewrite-S")
    parser.add_argument("--test-limit", type=int, default=None, help="score the first N test examples only")
    parser.add_argument("--input-batch-size", type=int, default=16)
    parser.add_argument("--runs", default=str(REPO / "runs" / "prewrite_bench"), help="run directories root")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "prewrite.json"))
    parser.add_argument("--service-requests", type=int, default=0,
                        help="also serve the last trained enhancer and send this many requests at 1 and 8 clients")
    args = parser.parse_args(argv)

    from rlprompt.evaluation import evaluate
    from rlprompt.policies.prewrite import PRewriteConfig, build_task, train_prewrite
    from rlprompt.targets.hf import HFTarget

    target = HFTarget("smollm2-135m-instruct", dtype="bfloat16", batch_size=32)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict = {"tasks": {}, "service": {}, "target": target.name,
                     "command": "python experiments/prewrite_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                     "settings": vars(args), "runs": []}
    last_enhancer = None
    for name in args.tasks:
        per_seed = []
        for seed in args.seeds:
            cfg = PRewriteConfig(task=str(TASKS[name]), task_seed=args.data_seed, steps=args.steps,
                                 num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                                 num_samples=args.num_samples, dev_limit=args.dev_limit, seed=seed,
                                 input_batch_size=args.input_batch_size, checkpoint_every=max(1, args.steps))
            run_dir = Path(args.runs) / f"{name}-seed{seed}-{stamp}"
            summary = train_prewrite(cfg, run_dir, target=target)
            task = build_task(cfg)
            test = task.split("test")
            texts, labels = list(test.texts[: args.test_limit]), list(test.labels[: args.test_limit])
            arms = {"initial": summary["initial_instruction"], "prewrite_i": summary["prewrite_i"],
                    "prewrite_s": summary["prewrite_s"]}
            scored = {}
            for arm, instruction in arms.items():
                r = evaluate(target, template=task.template, prompt=instruction, verbalizers=task.verbalizers,
                             texts=texts, labels=labels)
                scored[arm] = {"instruction": instruction, "test_accuracy": r.accuracy,
                               "predictions_per_class": r.predictions_per_class,
                               "dev_accuracy": summary[f"{arm}_dev_accuracy" if arm != "initial" else "initial_dev_accuracy"]}
                print(f"{name} seed {seed} {arm}: test {r.accuracy:.3f} {instruction!r}", flush=True)
            per_seed.append(scored)
            results["runs"].append({"task": name, "seed": seed, "run_dir": str(run_dir),
                                    "seconds_per_step": summary["seconds_per_step"],
                                    "train_seconds": summary["train_seconds"]})
            last_enhancer = run_dir / "enhancer"
        results["tasks"][name] = {
            arm: {"instruction": per_seed[-1][arm]["instruction"], "template": task.template,
                  "verbalizers": list(task.verbalizers), "test_accuracy": float(np.mean([s[arm]["test_accuracy"]
                                                                                       for s in per_seed])),
                  "test_accuracy_per_seed": [s[arm]["test_accuracy"] for s in per_seed],
                  "instructions_per_seed": [s[arm]["instruction"] for s in per_seed],
                  "dev_accuracy_per_seed": [s[arm]["dev_accuracy"] for s in per_seed],
                  "predictions_per_class_last_seed": per_seed[-1][arm]["predictions_per_class"],
                  "test_examples": len(texts), "data": str(TASKS[name]), "data_seed": args.data_seed}
            for arm in ("initial", "prewrite_i", "prewrite_s")}
        if len(args.seeds) > 1:
            for arm in results["tasks"][name].values():
                arm["note"] = "instruction is the last seed's; test_accuracy is the mean over seeds"
    if args.service_requests and last_enhancer is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from load_enhancer import measure_in_process

        results["service"] = measure_in_process(last_enhancer, args.service_requests, clients=(1, 8))
    add_eval_commands(results)
    out = Path(args.out)
    write_atomic(out, json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    """A short table of the arms' test accuracy and the service's latency, with the producing command."""
    lines = ["# PRewrite benchmark", "", f"`{results['command']}`", "",
             "| task | arm | test accuracy | instruction |", "|---|---|---:|---|"]
    for task, arms in results["tasks"].items():
        for name, arm in arms.items():
            lines.append(f"| {task} | {name} | {arm['test_accuracy']:.3f} | {arm['instruction']!r} |")
    service = results.get("service")
    if service:
        lines += ["", "| clients | requests | errors | requests/s | p50 s | p99 s | enhancer calls |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for level in service["levels"]:
            lines.append(f"| {level['clients']} | {level['requests']} | {sum(level['errors'].values())} | "
                         f"{level['requests_per_second']:.2f} | {level['p50_latency_s']:.2f} | "
                         f"{level['p99_latency_s']:.2f} | {level['enhancer_calls']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
