"""PRewrite benchmark (Kong et al. 2024) on RLPrompt's 16-shot SST-2 and AG News with the bundled target.

For each task and RLPrompt data seed (16-42, 16-100, 16-13): train a PRewrite rewriter with GRPO
(policies/prewrite.py) on that seed's train split, then score on the test split the initial instruction,
PRewrite-I (greedy rewrite) and PRewrite-S (best of K on that seed's dev split).
Writes experiments/results/prewrite.json; every arm records ``instruction``, ``template``, ``verbalizers``
and ``test_accuracy`` so that

    rlprompt eval --task <data dir> --split test --template "<template>" --prompt "<instruction>" \
        --verbalizers <v1> <v2> ... [--limit <test_limit>]

reproduces the figure (same target, bfloat16). Full runs (3 seeds, ~50 steps) take hours on 2 CPU cores:
``--data-seeds``, ``--steps`` and ``--test-limit`` shrink them; tasks can run as separate processes whose result
files ``--combine`` merges.

    python experiments/prewrite_bench.py --data-seeds 16-42 --steps 2 --test-limit 64
    python experiments/prewrite_bench.py --tasks sst-2 --out /tmp/sst2.json & \
        python experiments/prewrite_bench.py --tasks agnews --out /tmp/agnews.json; wait
    python experiments/prewrite_bench.py --combine /tmp/sst2.json /tmp/agnews.json
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
    """Give every arm of a results dict its reproducing ``eval_command``."""
    for arms in results["tasks"].values():
        for name in ARMS:
            arm = arms[name]
            arm["eval_command"] = eval_command(arm["data"], arm["data_seed"], arm, arm["test_examples"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--data-seeds", nargs="+", default=["16-42", "16-100", "16-13"],
                        help="RLPrompt 16-shot seed directories, one run each; the first gives the arms' figures")
    parser.add_argument("--seed", type=int, default=0, help="training seed (torch, trl, reward sampler)")
    parser.add_argument("--steps", type=int, default=50, help="GRPO steps per run")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=8, help="K of PRewrite-S")
    parser.add_argument("--dev-limit", type=int, default=None, help="dev examples used to pick PRewrite-S")
    parser.add_argument("--test-limit", type=int, default=None, help="score the first N test examples only")
    parser.add_argument("--input-batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate of the LoRA adapter")
    parser.add_argument("--runs", default=str(REPO / "runs" / "prewrite_bench"), help="run directories root")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "prewrite.json"))
    parser.add_argument("--service-requests", type=int, default=0,
                        help="also serve the last trained enhancer and send this many requests at each --clients count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients of the service test")
    parser.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                        help="merge result files of earlier runs (say, one task each, run in parallel) into --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.combine:
        return combine([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.combine], out)

    from rlprompt.evaluation import evaluate
    from rlprompt.policies.prewrite import PRewriteConfig, build_task, train_prewrite
    from rlprompt.targets.hf import HFTarget

    target = HFTarget("smollm2-135m-instruct", dtype="bfloat16", batch_size=32)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict = {"tasks": {}, "service": {}, "target": target.name,
                     "command": "python experiments/prewrite_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                     "settings": {k: v for k, v in vars(args).items() if k not in ("out", "combine")}, "runs": []}
    last_enhancer = None
    for name in args.tasks:
        per_seed: list[dict] = []
        tested: dict = {}  # instruction -> its test evaluation
        for data_seed in args.data_seeds:
            cfg = PRewriteConfig(task=str(TASKS[name]), task_seed=data_seed, steps=args.steps,
                                 num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                                 num_samples=args.num_samples, dev_limit=args.dev_limit, seed=args.seed,
                                 input_batch_size=args.input_batch_size, learning_rate=args.learning_rate, checkpoint_every=max(1, args.steps))
            run_dir = Path(args.runs) / f"{name}-{data_seed}-{stamp}"
            summary = train_prewrite(cfg, run_dir, target=target)
            task = build_task(cfg)
            test = task.split("test")
            texts, labels = list(test.texts[: args.test_limit]), list(test.labels[: args.test_limit])
            arms = {"initial": summary["initial_instruction"], "prewrite_i": summary["prewrite_i"],
                    "prewrite_s": summary["prewrite_s"]}
            scored = {}
            for arm, instruction in arms.items():
                if instruction not in tested:  # the initial instruction is the same for every seed
                    tested[instruction] = evaluate(target, template=task.template, prompt=instruction,
                                                   verbalizers=task.verbalizers, texts=texts, labels=labels)
                r = tested[instruction]
                scored[arm] = {"instruction": instruction, "test_accuracy": r.accuracy,
                               "predictions_per_class": r.predictions_per_class,
                               "dev_accuracy": summary[f"{arm}_dev_accuracy" if arm != "initial" else "initial_dev_accuracy"]}
                print(f"{name} {data_seed} {arm}: test {r.accuracy:.3f} {instruction!r}", flush=True)
            per_seed.append({"data_seed": data_seed, **scored})
            results["runs"].append({"task": name, "data_seed": data_seed, "run_dir": str(run_dir),
                                    "seconds_per_step": summary["seconds_per_step"],
                                    "train_seconds": summary["train_seconds"]})
            last_enhancer = run_dir / "enhancer"
            results["tasks"][name] = task_arms(per_seed, name, task, args, len(texts))
            write_atomic(out, json.dumps(add_eval_commands(results), indent=2) + "\n")  # what is done so far
    if args.service_requests and last_enhancer is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from load_enhancer import measure_in_process

        results["service"] = measure_in_process(last_enhancer, args.service_requests, clients=args.clients)
    return finish(results, out)


ARMS = ("initial", "prewrite_i", "prewrite_s")


def task_arms(per_seed: list[dict], name: str, task, args: argparse.Namespace, test_examples: int) -> dict:
    """A task's arms with the first data seed's figures (``rlprompt eval`` reproduces them), each with its mean
    over all data seeds, and beside them a ``seeds`` list holding every data seed's figures."""
    first = per_seed[0]
    arms: dict = {
        arm: {"instruction": first[arm]["instruction"], "template": task.template, "verbalizers": list(task.verbalizers),
              "test_accuracy": first[arm]["test_accuracy"], "dev_accuracy": first[arm]["dev_accuracy"],
              "predictions_per_class": first[arm]["predictions_per_class"],
              "mean_test_accuracy_over_seeds": float(np.mean([s[arm]["test_accuracy"] for s in per_seed])),
              "std_test_accuracy_over_seeds": float(np.std([s[arm]["test_accuracy"] for s in per_seed])),
              "test_examples": test_examples, "data": str(TASKS[name]), "data_seed": first["data_seed"]}
        for arm in ARMS}
    arms["seeds"] = per_seed
    return arms


def finish(results: dict, out: Path) -> int:
    add_eval_commands(results)
    write_atomic(out, json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


def combine(parts: list[dict], out: Path) -> int:
    """Merge results of runs over disjoint tasks with the same settings (tasks and service excepted)."""
    ignored = ("tasks", "service_requests", "clients")
    settings = [{k: v for k, v in part["settings"].items() if k not in ignored} for part in parts]
    if any(s != settings[0] for s in settings):
        raise ValueError(f"cannot combine runs with different settings: {settings}")
    overlap = [t for i, part in enumerate(parts) for t in part["tasks"] if any(t in p["tasks"] for p in parts[:i])]
    if overlap:
        raise ValueError(f"tasks {overlap} appear in more than one result file")
    services = [part["service"] for part in parts if part.get("service")]
    results = {"tasks": {t: arms for part in parts for t, arms in part["tasks"].items()},
               "service": services[-1] if services else {}, "target": parts[0]["target"],
               "command": " && ".join(part["command"] for part in parts),
               "settings": {**settings[0], "tasks": [t for part in parts for t in part["tasks"]]},
               "runs": [run for part in parts for run in part["runs"]]}
    return finish(results, out)


def markdown(results: dict) -> str:
    """A short table of the arms' test accuracy and the service's latency, with the producing command."""
    lines = ["# PRewrite benchmark", "", f"`{results['command']}`", "",
             "| task | arm | test acc (data seed " + " / ".join(results["settings"]["data_seeds"]) + ") | mean ± std | "
             f"dev acc | instruction (first data seed) |", "|---|---|---|---:|---|---|"]
    for task, arms in results["tasks"].items():
        for name in ARMS:
            arm = arms[name]
            test, dev = (" / ".join(f"{s[name][key]:.3f}" for s in arms["seeds"]) for key in ("test_accuracy", "dev_accuracy"))
            lines.append(f"| {task} | {name} | {test} | {arm['mean_test_accuracy_over_seeds']:.3f} ± "
                         f"{arm['std_test_accuracy_over_seeds']:.3f} | {dev} | {arm['instruction']!r} |")
    runs = results["runs"]
    if runs:
        lines += ["", "Seconds per GRPO step (mean over a run): " + ", ".join(
            f"{r['task']} {r['data_seed']} {r['seconds_per_step']:.1f}" for r in runs if r["seconds_per_step"])]
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
