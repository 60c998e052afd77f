"""Benchmark: PRewrite (Kong et al. 2024) on RLPrompt's 16-shot SST-2 and AG News, the bundled SmolLM2-135M-Instruct
as rewriter and target: the initial instruction against PRewrite-I (the greedy rewrite) and PRewrite-S (the best on
dev of K sampled rewrites).

Protocol (:mod:`rlprompt.benchmarking`, shared with the other benchmarks): for each task and RLPrompt data seed (the
first three of RLPrompt's list by default: 16-100, 16-13, 16-21), train a rewriter with GRPO (policies/prewrite.py)
on ``<data>/<task>/<seed>/train.tsv`` with the policy seed of that data seed (its position in RLPrompt's list), then
score the three arms on the test examples: the whole SST-2 test split, a fixed seeded sample of 1000 AG News test
articles (``--test-limit N`` sets one size for every task), the same for every arm and seed, so the arms pair example
by example. Earlier versions of this bench ran data seeds 16-42, 16-100, 16-13, all with policy seed 0.

Budget (experiments/configs/prewrite_sst2.yaml and prewrite_agnews.yaml; ``key=value`` arguments override both):
150 GRPO steps of 8 rewrites, every rewrite scored on the whole train split at every step (32 SST-2 / 64 AG News
inputs, so a rewrite's reward is its exact train score, not a noisy minibatch estimate), PRewrite-S over K = 16
samples picked on the whole dev split. The results say which runs reached this budget (:data:`BUDGET`).

Every (task, seed) result lands in ``<runs-dir>/parts/<task>-<seed>.json`` (every arm's instruction, dev accuracy
and per-example test predictions as a digit string, the PRewrite-S candidates with their dev accuracy, the run's
config, and the command and commit that made it); each task's gold test labels are stored once
(``parts/test-<task>.json``). The results file is rebuilt after each part. Rerunning a command skips complete parts,
scores a run that finished training, and resumes an unfinished one from its last sealed trl checkpoint (a run killed
before its first checkpoint starts again); two processes (say, one per task) may share a runs dir.
``--report-only`` rebuilds the JSON and markdown from the parts; :func:`markdown` rebuilds the markdown from the JSON
alone: per-seed figures, means over seeds with 95% t-intervals, and PRewrite-I and PRewrite-S minus the initial
instruction with 95% paired bootstrap intervals over seeds x test examples. Each arm's ``eval_command`` re-scores
its figure (``--rescore TASK SEED ARM``: the recorded instruction, template and verbalizers on the recorded test
examples, compared prediction by prediction).

    python experiments/prewrite_bench.py --tasks agnews --runs-dir runs/prewrite_bench    # AG News, 3 data seeds
    python experiments/prewrite_bench.py --tasks sst-2 --runs-dir runs/prewrite_bench     # SST-2 (same runs dir)
    python experiments/prewrite_bench.py --report-only --runs-dir runs/prewrite_bench
    OMP_NUM_THREADS=1 python experiments/prewrite_bench.py --tasks sst-2 --task-seeds 16-100 --test-limit 64 \\
        --runs-dir /tmp/pwb --out /tmp/pwb/prewrite.json steps=2                            # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.benchmarking import BENCHMARK_SEEDS, RLPROMPT_SEEDS, code_commit, policy_seed, sample_indices
from rlprompt.cli import add_renamed_option
from rlprompt.config import config_from_dict, dump_config, load_config
from rlprompt.evaluation import evaluate
from rlprompt.policies.prewrite import PRewriteConfig, balanced_subset, build_task, train_prewrite
from rlprompt.runs import RunDir, resume_trainer_checkpoint, write_atomic
from rlprompt.stats import Interval, correctness, digits, mean_interval, paired_bootstrap
from rlprompt.targets import Target, make_target
from rlprompt.tasks import load_task

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "rlprompt-16shot"
TASKS = {"sst-2": ROOT / "configs" / "prewrite_sst2.yaml", "agnews": ROOT / "configs" / "prewrite_agnews.yaml"}
"""Task (its directory under the data root) -> its benchmark config."""
TEST_LIMITS: dict[str, int | None] = {"sst-2": None, "agnews": 1000}
"""Test examples scored per task: all (None) or a fixed seeded sample of this many."""
ARMS = ("initial", "prewrite_i", "prewrite_s")
BUDGET = {"steps": 150, "num_samples": 16}
"""The benchmark budget a run must reach to count as complete (also: whole train split per step, whole dev split)."""


def seed_config(name: str, seed: str, data: Path, overrides: list[str]) -> PRewriteConfig:
    """The config of one (task, data seed): the task's benchmark config with ``overrides``, its data directory under
    ``data``, the data seed and the policy seed of that data seed."""
    base = load_config(TASKS[name], PRewriteConfig, overrides)
    return load_config(dump_config(base), PRewriteConfig,
                       [f"task={data / name}", f"task_seed={seed}", f"seed={policy_seed(seed)}"])


def finished_summary(cfg: PRewriteConfig, run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run in ``run_dir`` that finished training and selection with this very config, else None."""
    if not (run_dir / "summary.json").is_file():
        return None
    saved = RunDir(run_dir, resume=True, tensorboard=False).read_config()
    if dump_config(config_from_dict(saved, PRewriteConfig)) != dump_config(cfg):  # old key names and paths read as now
        return None
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return summary if summary["steps"] == cfg.steps else None


def run_part(cfg: PRewriteConfig, target: Target, run_dir: Path, test_idx: np.ndarray) -> dict[str, Any]:
    """Train one (task, seed) (reusing a finished run in ``run_dir``, resuming an unfinished one from its last sealed
    checkpoint, starting again one killed before its first), then score the three arms on the test examples
    ``test_idx``: the part's record."""
    start, resumed_from = time.perf_counter(), 0
    summary = finished_summary(cfg, run_dir)
    if summary is None:
        checkpoint = resume_trainer_checkpoint(run_dir / "checkpoints")
        if checkpoint is None and run_dir.exists():
            print(f"{run_dir} has no sealed checkpoint to resume from: starting it again", file=sys.stderr)
            shutil.rmtree(run_dir)
        resumed_from = 0 if checkpoint is None else int(checkpoint.name.rsplit("-", 1)[1])
        summary = train_prewrite(cfg, run_dir, resume=checkpoint is not None, target=target)
    task = build_task(cfg, target)
    test, train, dev = task.split("test"), task.split("train"), task.split("dev")
    texts, labels = [test.texts[i] for i in test_idx], [test.labels[i] for i in test_idx]
    instructions = dict(zip(ARMS, (summary["initial_instruction"], summary["prewrite_i"], summary["prewrite_s"])))
    scored = {}
    for instruction in dict.fromkeys(instructions.values()):  # PRewrite-I may repeat another arm's instruction
        scored[instruction] = evaluate(target, template=task.template, prompt=instruction,
                                       verbalizers=task.verbalizers, texts=texts, labels=labels)
    arms = {arm: {"instruction": instruction, "dev_accuracy": summary[f"{arm}_dev_accuracy"],
                  "test_accuracy": scored[instruction].accuracy,
                  "test_predictions": digits(scored[instruction].predictions),
                  "predictions_per_class": scored[instruction].predictions_per_class}
            for arm, instruction in instructions.items()}
    metrics = RunDir(run_dir, resume=True, tensorboard=False).read_metrics()
    seconds = list({r["step"]: r["perf/seconds_per_step"] for r in metrics  # one per step (the last is logged twice)
                    if r.get("perf/seconds_per_step") is not None}.values())
    curve = {r["step"]: r["charts/minibatch_accuracy_mean"] for r in metrics
             if r.get("charts/minibatch_accuracy_mean") is not None}
    candidates = json.loads((run_dir / "rewrites.json").read_text(encoding="utf-8"))["prewrite_s_candidates"]
    return {"task": Path(cfg.task).name, "data_seed": cfg.task_seed, "policy_seed": cfg.seed, **arms,
            "template": task.template, "verbalizers": list(task.verbalizers), "steps": summary["steps"],
            "train_inputs_per_step": min(cfg.input_batch_size, len(train)), "train_examples": len(train),
            "dev_examples": len(balanced_subset(dev.labels, cfg.dev_limit)), "num_samples": cfg.num_samples,
            "prewrite_s_candidates": candidates, "seconds_per_step": float(np.mean(seconds)) if seconds else None,
            "train_accuracy_curve": sorted(curve.items()), "target_queries": summary["target_queries"],
            "resumed_from_step": resumed_from, "wall_seconds": round(time.perf_counter() - start, 1),
            "run_dir": str(run_dir), "config": dump_config(cfg)}


def complete(record: dict[str, Any]) -> bool:
    """Whether a (task, seed) run reached the benchmark budget :data:`BUDGET` (train and dev splits scored whole)."""
    return (record["steps"] >= BUDGET["steps"] and record["num_samples"] >= BUDGET["num_samples"]
            and record["train_inputs_per_step"] == record["train_examples"] and record["config"]["dev_limit"] is None)


def rescore_command(out: Path, task: str, seed: str, arm: str) -> str:
    """The command that re-scores one arm's test figure of one seed from the results file ``out`` (a path relative to
    the repository root when ``out`` lies inside it)."""
    path = out.resolve()
    shown_out = path.relative_to(ROOT.parent) if ROOT.parent in path.parents else path
    return shlex.join(["python", "experiments/prewrite_bench.py", "--out", str(shown_out), "--rescore", task, seed,
                       arm])


def assemble(runs_dir: Path, out: Path) -> dict[str, Any]:
    """The results from every part in ``runs_dir``: ``tasks.<task>.<arm>`` (the first data seed's instruction and
    figures, as ``eval_command`` reproduces them, beside the means over seeds), ``tasks.<task>.seeds`` (every seed's
    figures, seeds in RLPrompt's order), the gold test labels once per task, the intervals, which runs reached the
    benchmark budget, the service load test, and the commands and commits that made the parts."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((runs_dir / "parts").glob("*.json"))]
    parts = [r for r in records if "data_seed" in r]
    tasks: dict[str, Any] = {}
    for name in dict.fromkeys(r["task"] for r in parts):
        meta = json.loads((runs_dir / "parts" / f"test-{name}.json").read_text(encoding="utf-8"))
        seeds = sorted((r for r in parts if r["task"] == name), key=lambda r: RLPROMPT_SEEDS.index(r["data_seed"]))
        for r in seeds:
            for arm in ARMS:
                r[arm]["eval_command"] = rescore_command(out, name, r["data_seed"], arm)
        first = seeds[0]
        entry: dict[str, Any] = {arm: {
            "instruction": first[arm]["instruction"], "template": first["template"],
            "verbalizers": first["verbalizers"], "test_accuracy": first[arm]["test_accuracy"],
            "dev_accuracy": first[arm]["dev_accuracy"], "predictions_per_class": first[arm]["predictions_per_class"],
            "mean_test_accuracy_over_seeds": float(np.mean([r[arm]["test_accuracy"] for r in seeds])),
            "std_test_accuracy_over_seeds": float(np.std([r[arm]["test_accuracy"] for r in seeds])),
            "mean_dev_accuracy_over_seeds": float(np.mean([r[arm]["dev_accuracy"] for r in seeds])),
            "test_examples": meta["test_examples"], "data": first["config"]["task"], "data_seed": first["data_seed"],
            "eval_command": first[arm]["eval_command"]} for arm in ARMS}
        entry.update(seeds=seeds, **meta)
        entry["intervals"] = intervals(entry)
        tasks[name] = entry
    service = next((r for r in records if "levels" in r), {})
    return {"tasks": tasks, "service": service, "target": parts[0]["config"]["target"] if parts else None,
            "command": "; ".join(sorted({r["command"] for r in parts})),
            "commits": sorted({r["commit"] for r in parts}),
            "budget": {**BUDGET, "complete": [f"{r['task']}/{r['data_seed']}" for r in parts if complete(r)],
                       "short": [f"{r['task']}/{r['data_seed']}" for r in parts if not complete(r)]}}


def _plain(interval: Interval) -> dict[str, float | int | None]:
    """An interval as JSON (None for the nan bounds of a single seed)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in interval.as_dict().items()}


def intervals(entry: dict[str, Any]) -> dict[str, dict]:
    """Per arm: the mean test accuracy over seeds with its 95% t-interval; PRewrite-I and PRewrite-S minus the initial
    instruction: the mean difference with its 95% paired bootstrap interval over seeds x test examples."""
    labels, seeds = entry["test_labels"], entry["seeds"]
    out = {arm: _plain(mean_interval([r[arm]["test_accuracy"] for r in seeds])) for arm in ARMS}
    initial = [correctness(r["initial"]["test_predictions"], labels) for r in seeds]
    for arm in ("prewrite_i", "prewrite_s"):
        diff = paired_bootstrap([correctness(r[arm]["test_predictions"], labels) for r in seeds], initial)
        out[f"{arm}-initial"] = {**_plain(diff), "seeds": [r["data_seed"] for r in seeds]}
    return out


def shown(text: str, limit: int = 160) -> str:
    """An instruction as one markdown table cell: control characters and pipes escaped, cut at ``limit`` chars."""
    cell = json.dumps(text if len(text) <= limit else text[:limit] + "...", ensure_ascii=False)[1:-1]
    return cell.replace("|", "\\|")


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown, from the results JSON alone (intervals recomputed from the per-example predictions)."""
    budget = result["budget"]
    lines = ["# PRewrite (Kong et al. 2024) on RLPrompt's 16-shot tasks: initial instruction, PRewrite-I, PRewrite-S",
             "", f"Target and rewriter: `{result['target']}`. Commands: `{result['command']}` at commit(s) "
             f"{', '.join(result['commits']) or '?'}.", "",
             f"Benchmark budget: {budget['steps']} GRPO steps, every rewrite scored on the whole train split, "
             f"PRewrite-S over K >= {budget['num_samples']} samples picked on the whole dev split. Complete: "
             f"{', '.join(budget['complete']) or 'none'}; short of it: {', '.join(budget['short']) or 'none'}.", ""]
    for name, entry in result["tasks"].items():
        cfg, seeds = entry["seeds"][0]["config"], entry["seeds"]
        lines += [f"## {name} ({entry['test_examples']} test examples"
                  f"{'' if entry['test_indices'] == 'all' else ', a fixed seeded sample'}, raw accuracy)", "",
                  f"Per run: {cfg['num_generations']} rewrites per GRPO step (<= {cfg['max_completion_length']} "
                  f"tokens, temperature {cfg['temperature']}), learning rate {cfg['learning_rate']}, beta {cfg['beta']}"
                  f", LoRA r={cfg['lora_r']}, reward {cfg['reward']} with {cfg['stabilizer']}; policy seed = the data "
                  "seed's position in RLPrompt's list.", "",
                  "| seed | policy seed | steps | train inputs / step | K | dev examples | s / step | train acc of "
                  "sampled rewrites, first 10 -> last 10 steps | target queries (training + dev selection) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in seeds:
            accs = [a for _, a in r["train_accuracy_curve"]]
            trend = f"{np.mean(accs[:10]):.3f} -> {np.mean(accs[-10:]):.3f}" if accs else "-"
            per_step = "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.1f}"
            lines.append(f"| {r['data_seed']} | {r['policy_seed']} | {r['steps']} | {r['train_inputs_per_step']} of "
                         f"{r['train_examples']} | {r['num_samples']} | {r['dev_examples']} | {per_step} | {trend} | "
                         f"{r['target_queries']} |")
        lines += ["", "| seed | arm | instruction | dev acc | test acc | dev-test gap |", "|---|---|---|---|---|---|"]
        for r in seeds:
            for arm in ARMS:
                a = r[arm]
                lines.append(f"| {r['data_seed']} | {arm} | `{shown(a['instruction'])}` | {a['dev_accuracy']:.3f} | "
                             f"{a['test_accuracy']:.3f} | {a['dev_accuracy'] - a['test_accuracy']:+.3f} |")
        ci = intervals(entry)

        def fmt(d: dict, sign: str = "") -> str:
            text = f"{d['mean']:{sign}.3f}"
            return text if d["low"] is None else f"{text} [{d['low']:{sign}.3f}, {d['high']:{sign}.3f}]"

        lines += ["", "Means over seeds with 95% t-intervals; differences with 95% paired bootstrap intervals over "
                  "seeds and test examples (an arm beats the initial instruction only when the interval excludes 0).",
                  "", "| arm | seeds | test acc | dev acc | mean dev-test gap | minus initial (same seeds) |",
                  "|---|---|---|---|---|---|"]
        for arm in ARMS:
            gap = np.mean([r[arm]["dev_accuracy"] - r[arm]["test_accuracy"] for r in seeds])
            diff = ci.get(f"{arm}-initial")
            verdict = "" if diff is None or diff["low"] is None else (
                " (better)" if diff["low"] > 0 else " (worse)" if diff["high"] < 0 else " (inside the noise)")
            lines.append(f"| {arm} | {len(seeds)} | {fmt(ci[arm])} | {entry[arm]['mean_dev_accuracy_over_seeds']:.3f}"
                         f" | {gap:+.3f} | {'-' if diff is None else fmt(diff, '+') + verdict} |")
        lines.append("")
    service = result.get("service")
    if service:
        lines += [f"Service load test: `{service['enhancer_dir']}` served in-process.", "",
                  "| clients | requests | errors | requests/s | p50 s | p99 s | enhancer calls |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for level in service["levels"]:
            lines.append(f"| {level['clients']} | {level['requests']} | {sum(level['errors'].values())} | "
                         f"{level['requests_per_second']:.2f} | {level['p50_latency_s']:.2f} | "
                         f"{level['p99_latency_s']:.2f} | {level['enhancer_calls']} |")
        lines.append("")
    return "\n".join(lines)


def write_results(result: dict[str, Any], out: Path) -> None:
    """The results JSON and its markdown, each written atomically."""
    write_atomic(out, json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))


def rescore(result: dict[str, Any], task: str, seed: str, arm: str, target: Target | None = None) -> int:
    """Score one arm of one seed again from the results alone (its instruction, template and verbalizers on the
    recorded test examples) and print both figures; 0 when every prediction matches the recorded one."""
    entry = result["tasks"][task]
    record = next(r for r in entry["seeds"] if r["data_seed"] == seed)
    cfg = record["config"]
    test = load_task(cfg["task"], seed=seed).split("test")
    idx = range(len(test.texts)) if entry["test_indices"] == "all" else entry["test_indices"]
    target = target or make_target(cfg["target"], dtype=cfg["target_dtype"], device=cfg["device"])
    again = evaluate(target, template=record["template"], prompt=record[arm]["instruction"],
                     verbalizers=record["verbalizers"], texts=[test.texts[i] for i in idx],
                     labels=[test.labels[i] for i in idx])
    same = digits(again.predictions) == record[arm]["test_predictions"]
    print(json.dumps({"task": task, "seed": seed, "arm": arm, "test_accuracy": again.accuracy,
                      "recorded_test_accuracy": record[arm]["test_accuracy"], "same_predictions": same}))
    return 0 if same else 1


def main(argv: list[str] | None = None, *, target: Target | None = None) -> int:
    """Run the benchmark (``target`` overrides the configs' target: tests pass a scripted fake)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every task's PRewrite config")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--task-seeds", nargs="+", default=list(BENCHMARK_SEEDS),
                        help="RLPrompt dataset seed directories (a config's task_seed)")
    add_renamed_option(parser, "--seeds", "--task-seeds", nargs="+")
    parser.add_argument("--data", default=str(DATA), help="RLPrompt 16-shot data root (holds sst-2/ and agnews/)")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="score a fixed seeded sample of N test examples of every task (default: all of SST-2, "
                             "1000 of AG News)")
    parser.add_argument("--runs-dir", default="runs/prewrite_bench", help="run directories and parts")
    parser.add_argument("--out", default=str(ROOT / "results" / "prewrite.json"))
    parser.add_argument("--report-only", action="store_true", help="rebuild the results from the parts, train nothing")
    parser.add_argument("--rescore", nargs=3, metavar=("TASK", "SEED", "ARM"),
                        help="score one arm of --out again and compare its predictions (what eval_command runs)")
    parser.add_argument("--service-requests", type=int, default=0,
                        help="also serve the last trained enhancer and send this many requests at each --clients count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent clients of the service test")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after the options
    runs_dir, out = Path(args.runs_dir), Path(args.out)
    if args.rescore:
        return rescore(json.loads(out.read_text(encoding="utf-8")), *args.rescore, target=target)
    if args.report_only:
        write_results(assemble(runs_dir, out), out)
        print(out.with_suffix(".md").read_text(encoding="utf-8"))
        return 0

    configs = {(name, seed): seed_config(name, seed, Path(args.data), args.overrides)
               for name in args.tasks for seed in args.task_seeds}  # bad seeds or overrides fail before any training
    command = shlex.join(["python", "experiments/prewrite_bench.py", *(sys.argv[1:] if argv is None else argv)])
    first = next(iter(configs.values()))
    target = target or make_target(first.target, dtype=first.target_dtype, device=first.device)
    for name in args.tasks:
        test = build_task(configs[name, args.task_seeds[0]], target).split("test")
        limit = args.test_limit if args.test_limit is not None else TEST_LIMITS[name]
        test_idx = sample_indices(len(test.texts), limit)
        meta = {"test_examples": len(test_idx),
                "test_indices": "all" if len(test_idx) == len(test.texts) else test_idx.tolist(),
                "test_labels": digits([test.labels[i] for i in test_idx])}
        meta_path = runs_dir / "parts" / f"test-{name}.json"
        if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")) != meta:
            raise ValueError(f"{runs_dir} holds {name} parts scored on other test examples; use another --runs-dir")
        write_atomic(meta_path, json.dumps(meta))
        for seed in args.task_seeds:
            cfg, part = configs[name, seed], runs_dir / "parts" / f"{name}-{seed}.json"
            if part.is_file() and json.loads(part.read_text(encoding="utf-8"))["config"] == dump_config(cfg):
                continue
            record = run_part(cfg, target, runs_dir / name / seed, test_idx)
            write_atomic(part, json.dumps({**record, "command": command, "commit": code_commit()}))
            print(name, seed, json.dumps({arm: [record[arm]["test_accuracy"], record[arm]["instruction"]]
                                          for arm in ARMS}), file=sys.stderr, flush=True)
            write_results(assemble(runs_dir, out), out)
    if args.service_requests:
        sys.path.insert(0, str(ROOT))
        from load_enhancer import measure_in_process

        enhancer = runs_dir / args.tasks[-1] / args.task_seeds[-1] / "enhancer"
        write_atomic(runs_dir / "parts" / "service.json",
                     json.dumps(measure_in_process(enhancer, args.service_requests, clients=args.clients)))
    write_results(assemble(runs_dir, out), out)
    print(out.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
