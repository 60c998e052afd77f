"""Benchmark: RLPrompt (Deng et al. 2022) on SST-2 or AG News 16-shot against manual and random-search baselines.

For each arm (a policy setting) and dataset seed: train on ``<data>/<seed>/train.tsv`` (prompts selected on
``dev.tsv``), then score the learned prompt on the test set (raw accuracy, no calibration). Arms:

- ``residual``: the project's policy (frozen LM + residual MLP through the LM head, fluent top-k of the frozen LM,
  the tokenizer's start token, which is SmolLM2's chat token ``<|im_start|>``);
- ``paper``: the original code's policy (non-residual adaptor MLP with near-zero init, so the policy starts near
  uniform; sampling from the top-256 of its own logits; GPT-2's neutral ``<|endoftext|>`` as the start token).

Baselines on the same test examples: the manual prompt (raw, and calibrated by removing each label's mean
log-prob) and random search: uniformly sampled ``prompt_length``-token prompts from the same action vocabulary,
each scored on the whole dev split, keeping the best on dev, with the SAME number of target queries as that RL
run. Random search for a seed draws one fixed sequence of prompts and keeps their dev scores in
``<runs-dir>/random/<seed>.json``, so arms with different budgets share its prefix and a killed benchmark resumes.

Every (arm, seed) result lands in ``<runs-dir>/parts/<arm>-<seed>.json`` when it is complete (with per-example test
predictions as a digit string), and the results file is rebuilt from all parts after each one; rerunning the same
command skips complete parts and resumes unfinished runs from their checkpoints. Two processes (one per arm, or per
seed) can share a runs dir. ``--report-only`` rebuilds the JSON and markdown from the parts alone.

    python experiments/rlprompt_bench.py --runs-dir runs/bench_sst2                                 # SST-2
    python experiments/rlprompt_bench.py --config experiments/configs/rlprompt_agnews.yaml \\
        --out experiments/results/rlprompt_agnews.json --test-limit 1000 --runs-dir runs/bench_ag     # AG News
    python experiments/rlprompt_bench.py --task-seeds 16-42 --arms residual --test-limit 64 \\
        --runs-dir /tmp/rlb --out /tmp/rlb/r.json steps=2                                          # a quick check
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from rlprompt.benchmarking import BENCHMARK_SEEDS, RLPROMPT_SEEDS, code_commit, policy_seed, sample_indices
from rlprompt.cli import add_renamed_option
from rlprompt.config import dump_config, load_config
from rlprompt.envs.prompt_tokens import action_vocabulary, decode_prompt
from rlprompt.evaluation import evaluate
from rlprompt.policies.rlprompt import RLPromptConfig, build_task, train_rlprompt
from rlprompt.runs import write_atomic
from rlprompt.stats import correctness, digits, mean_interval, paired_bootstrap
from rlprompt.targets import make_target

ROOT = Path(__file__).resolve().parent

ARMS: dict[str, list[str]] = {
    "residual": [],
    "paper": ["policy_head=adaptor", "top_k=256", "top_k_from=policy", "policy_start=<|endoftext|>"],
}
"""Config overrides of each arm on top of the benchmark config."""


def score_test(target, task, prompt: str, idx: np.ndarray, calibrate: str = "none") -> dict:
    """Test accuracy of ``prompt`` on the examples ``idx`` with the per-example predictions as a digit string."""
    test = task.split("test")
    result = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                      texts=[test.texts[i] for i in idx], labels=[test.labels[i] for i in idx], calibrate=calibrate)
    return {"test_accuracy": result.accuracy, "test_predictions": digits(result.predictions),
            "test_predictions_per_class": result.predictions_per_class}


def random_search(target, task, cfg: RLPromptConfig, budget: int, seed: int, state_path: Path) -> dict:
    """Best-on-dev of uniformly sampled prompts using at most ``budget`` target queries (each prompt costs one
    query per dev input). The prompts come from one fixed draw per ``seed``; their dev scores are kept in
    ``state_path`` (written every few target calls), so a longer budget extends a shorter one."""
    dev = task.split("dev")
    tokenizer = target.tokenizer
    vocab = action_vocabulary(tokenizer, cfg.vocab)
    n = max(1, budget // len(dev))
    rng = np.random.default_rng(seed)
    prompts = [decode_prompt(tokenizer, rng.choice(vocab, size=cfg.prompt_length)) for _ in range(n)]
    scores: list[float] = json.loads(state_path.read_text())["dev_accuracy"] if state_path.is_file() else []
    for i in range(len(scores), n, cfg.n_envs):  # as many prompts per target call as the RL run scores per step
        chunk = prompts[i: i + cfg.n_envs]
        logprobs = target.classify(task.template, chunk, list(dev.texts), list(task.verbalizers))
        scores += (logprobs.argmax(-1) == np.asarray(dev.labels)).mean(-1).tolist()
        if (i // cfg.n_envs) % 20 == 0 or i + cfg.n_envs >= n:
            write_atomic(state_path, json.dumps({"seed": seed, "dev_accuracy": scores}))
    best = int(np.argmax(scores[:n]))  # first best wins ties
    return {"prompt": prompts[best], "dev_accuracy": scores[best], "prompts_tried": n,
            "target_queries": n * len(dev)}


def run_part(base: RLPromptConfig, arm: str, seed: str, target, args) -> dict:
    """Train one (arm, seed), score it and its random-search baseline on test; the part's record."""
    cfg = load_config(dump_config(base), RLPromptConfig, [*ARMS[arm], f"task_seed={seed}", f"seed={policy_seed(seed)}"])
    task = build_task(cfg)
    idx = sample_indices(len(task.split("test").texts), args.test_limit)
    run_dir = Path(args.runs_dir) / arm / seed  # an interrupted benchmark resumes each run
    summary = train_rlprompt(cfg, run_dir, resume=(run_dir / "config.yaml").is_file(), target=target)
    prompt = summary["best_prompt"] or ""
    record = {"arm": arm, "seed": seed, "policy_seed": cfg.seed, "learned_prompt": prompt,
              "greedy_prompt": summary["greedy_prompt"], "dev_accuracy": summary["best_dev_accuracy"],
              **score_test(target, task, prompt, idx), "target_queries": summary["target_queries"],
              "wall_seconds": round(summary["wall_seconds"], 1), "updates": summary["steps"],
              "run_dir": summary["run_dir"], "overrides": ARMS[arm]}
    state = Path(args.runs_dir) / "random" / f"{seed}.json"
    search = random_search(target, task, cfg, summary["target_queries"], policy_seed(seed), state)
    record["random_search"] = {**search, **score_test(target, task, search["prompt"], idx)}
    return record


def baselines(base: RLPromptConfig, target, seed: str, limit: int | None) -> dict:
    """The manual prompt raw and mean-calibrated on the test examples, with per-example predictions and gold labels."""
    task = build_task(load_config(dump_config(base), RLPromptConfig, [f"task_seed={seed}"]))
    test = task.split("test")
    idx = sample_indices(len(test.texts), limit)
    raw, calibrated = score_test(target, task, task.prompt, idx), score_test(target, task, task.prompt, idx, "mean")
    return {"manual_prompt": task.prompt, "manual_raw_test_accuracy": raw["test_accuracy"],
            "manual_raw_test_predictions": raw["test_predictions"],
            "manual_calibrated_test_accuracy": calibrated["test_accuracy"],
            "manual_calibrated_test_predictions": calibrated["test_predictions"],
            "test_labels": digits([test.labels[i] for i in idx]), "test_indices": "all" if limit is None else idx.tolist()}


def assemble(runs_dir: Path, config: dict, command: str) -> dict:
    """The results file from every complete part: ``runs`` (one per arm and seed, arms in ARMS order), the
    baselines, a ``budgets`` line saying which (arm, seed) runs reached the config's steps (its key keeps the old
    name total_updates, so earlier results still read), and the commands and commits that made the parts
    (``command`` when there is no part yet)."""
    parts = [json.loads(p.read_text()) for p in sorted((runs_dir / "parts").glob("*.json"))]
    base = json.loads((runs_dir / "parts" / "baselines.json").read_text()) if (runs_dir / "parts" / "baselines.json").is_file() else {}
    runs = sorted((p for p in parts if "arm" in p), key=lambda r: (list(ARMS).index(r["arm"]), RLPROMPT_SEEDS.index(r["seed"])))
    complete = [f"{r['arm']}/{r['seed']}" for r in runs if r["updates"] >= config["steps"]]
    return {"runs": runs, "baselines": base, "test_examples": len(base.get("test_labels", "")), "config": config,
            "budgets": {"total_updates": config["steps"], "complete": complete,
                        "incomplete": [f"{r['arm']}/{r['seed']}" for r in runs if f"{r['arm']}/{r['seed']}" not in complete]},
            "command": "; ".join(sorted({p["command"] for p in runs if "command" in p})) or command,
            "commits": sorted({p["commit"] for p in runs if "commit" in p})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--config", default=str(ROOT / "configs" / "rlprompt_sst2.yaml"))
    parser.add_argument("--task-seeds", nargs="+", default=list(BENCHMARK_SEEDS),
                        help="dataset seed directories (a config's task_seed)")
    add_renamed_option(parser, "--seeds", "--task-seeds", nargs="+")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--test-limit", type=int, default=None, help="score a fixed seeded sample of N test examples")
    parser.add_argument("--runs-dir", default="runs/rlprompt_bench", help="run directories, random-search state, parts")
    parser.add_argument("--out", default=str(ROOT / "results" / "rlprompt_sst2.json"))
    parser.add_argument("--report-only", action="store_true", help="rebuild the results from the parts, train nothing")
    args = parser.parse_args(argv)
    for seed in args.task_seeds:
        policy_seed(seed)  # a bad seed fails before any training

    base = load_config(args.config, RLPromptConfig, args.overrides)
    runs_dir = Path(args.runs_dir)
    command = " ".join(shlex.quote(a) for a in ["python", "experiments/rlprompt_bench.py", *sys.argv[1:]])
    if not args.report_only:
        target = make_target(base.target, dtype=base.target_dtype)
        base_path = runs_dir / "parts" / "baselines.json"
        if not base_path.is_file():
            write_atomic(base_path, json.dumps(baselines(base, target, args.task_seeds[0], args.test_limit)))
        for arm in args.arms:
            for seed in args.task_seeds:
                part = runs_dir / "parts" / f"{arm}-{seed}.json"
                if part.is_file() and json.loads(part.read_text())["updates"] >= base.steps:
                    continue
                record = run_part(base, arm, seed, target, args)
                write_atomic(part, json.dumps({**record, "command": command, "commit": code_commit()}))
                print(json.dumps({k: v for k, v in record.items() if "predictions" not in k}), file=sys.stderr)
                write_results(assemble(runs_dir, dump_config(base), command), Path(args.out))
    result = assemble(runs_dir, dump_config(base), command)
    write_results(result, Path(args.out))
    print(markdown(result))
    return 0


def write_results(result: dict, out: Path) -> None:
    write_atomic(out, json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))


def shown(prompt: str) -> str:
    """A prompt as one table cell: newlines and other control characters escaped, pipes too."""
    return json.dumps(prompt, ensure_ascii=False)[1:-1].replace("|", "\\|")


def markdown(result: dict) -> str:
    """The results as markdown (regenerable from the JSON alone): per arm and seed, then means over seeds with 95%
    intervals and paired bootstrap intervals (seeds x test examples) of each difference that matters."""
    b, runs = result["baselines"], result["runs"]
    name = Path(result["config"]["task"]).name
    labels = b.get("test_labels", "")
    lines = [f"# RLPrompt on {name} 16-shot ({result['test_examples']} test examples, raw accuracy)", "",
             f"Command: `{result['command']}` at commit(s) {', '.join(result.get('commits', [])) or '?'}", "",
             f"Budget: {result['budgets']['total_updates']} PPO updates per run; complete: "
             f"{', '.join(result['budgets']['complete']) or 'none'}; incomplete: "
             f"{', '.join(result['budgets']['incomplete']) or 'none'}.", "",
             "| arm | seed | learned prompt | dev acc | test acc | dev-test gap | target queries | updates | wall s "
             "| random search: prompt, dev, test (same queries) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rs = r["random_search"]
        lines.append(f"| {r['arm']} | {r['seed']} | `{shown(r['learned_prompt'])}` | {r['dev_accuracy']:.3f} | "
                     f"{r['test_accuracy']:.3f} | {r['dev_accuracy'] - r['test_accuracy']:+.3f} | {r['target_queries']} | "
                     f"{r['updates']} | {r['wall_seconds']} | `{shown(rs['prompt'])}`, {rs['dev_accuracy']:.3f}, "
                     f"{rs['test_accuracy']:.3f} |")
    if not runs or not labels:
        return "\n".join(lines + [""])
    lines += ["", "Means over seeds with 95% t-intervals; differences with 95% paired bootstrap intervals over seeds "
              "and test examples (a method is better only when the interval excludes 0).", "",
              "| arm | seeds | RLPrompt test | random search test | RLPrompt - random search | RLPrompt - manual raw "
              "| mean dev-test gap |", "|---|---|---|---|---|---|---|"]
    manual = correctness(b["manual_raw_test_predictions"], labels)
    for arm in dict.fromkeys(r["arm"] for r in runs):
        rows = [r for r in runs if r["arm"] == arm]
        ours = [correctness(r["test_predictions"], labels) for r in rows]
        rand = [correctness(r["random_search"]["test_predictions"], labels) for r in rows]
        vs_random = paired_bootstrap(ours, rand)
        vs_manual = paired_bootstrap(ours, [manual] * len(rows))
        lines.append(f"| {arm} | {len(rows)} | {mean_interval([r['test_accuracy'] for r in rows])} | "
                     f"{mean_interval([r['random_search']['test_accuracy'] for r in rows])} | {vs_random:+.3f}"
                     f"{' (better)' if vs_random.low > 0 else ''} | {vs_manual:+.3f} | "
                     f"{np.mean([r['dev_accuracy'] - r['test_accuracy'] for r in rows]):+.3f} |")
    arms = {a: {r["seed"]: r for r in runs if r["arm"] == a} for a in dict.fromkeys(r["arm"] for r in runs)}
    if "paper" in arms and "residual" in arms and (common := sorted(set(arms["paper"]) & set(arms["residual"]))):
        gap = paired_bootstrap([correctness(arms["paper"][s]["test_predictions"], labels) for s in common],
                               [correctness(arms["residual"][s]["test_predictions"], labels) for s in common])
        lines += ["", f"Paper setting minus residual head, same seeds ({', '.join(common)}): {gap:+.3f}."]
    lines += ["", f"Manual prompt `{shown(b['manual_prompt'])}`: raw {b['manual_raw_test_accuracy']:.3f}, calibrated "
              f"(mean log-prob removed, transductive) {b['manual_calibrated_test_accuracy']:.3f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
