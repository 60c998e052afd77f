"""Benchmark: RLPrompt (Deng et al. 2022) on SST-2 or AG News 16-shot against manual and random-search baselines.

For each dataset seed: train on ``<data>/<seed>/train.tsv`` (prompts selected on ``dev.tsv``), then
score the learned prompt on the full test set (raw accuracy, no calibration). Baselines on the same
test set: the manual prompt (raw, and calibrated by removing each label's mean log-prob), and random
search: uniformly sampled 5-token prompts from the same action vocabulary, each scored on the whole
dev split, keeping the best, with the SAME number of target queries as the RL run of that seed.
Writes ``experiments/results/rlprompt_sst2.json`` (or ``--out``) and a markdown table next to it.

    python experiments/rlprompt_sst2.py total_updates=60                 # SST-2, 3 dataset seeds
    python experiments/rlprompt_sst2.py --config experiments/configs/rlprompt_agnews.yaml \
        --out experiments/results/rlprompt_agnews.json --test-limit 2000 total_updates=60
    python experiments/rlprompt_sst2.py --seeds 16-42 --test-limit 64 total_updates=2   # a quick check
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from rlprompt.config import dump_config, load_config
from rlprompt.envs.prompt_tokens import action_vocabulary, decode_prompt
from rlprompt.evaluation import evaluate
from rlprompt.policies.rlprompt import RLPromptConfig, build_task, train_rlprompt
from rlprompt.runs import write_atomic
from rlprompt.targets import make_target

ROOT = Path(__file__).resolve().parent
SEEDS = ("16-100", "16-13", "16-21")  # RLPrompt's dataset seeds 0, 1, 2


def random_search(target, task, cfg: RLPromptConfig, budget: int, seed: int) -> dict:
    """Best-on-dev of uniformly sampled ``prompt_length``-token prompts, using at most ``budget`` target queries."""
    dev = task.split("dev")
    tokenizer = target.tokenizer
    vocab = action_vocabulary(tokenizer, cfg.vocab)
    rng = np.random.default_rng(seed)
    n = max(1, budget // len(dev))
    prompts = [decode_prompt(tokenizer, rng.choice(vocab, size=cfg.prompt_length)) for _ in range(n)]
    best = ("", -1.0)
    start = target.stats.sequences
    for i in range(0, n, cfg.n_envs):  # as many prompts per target call as the RL run scores per step
        chunk = prompts[i: i + cfg.n_envs]
        scores = target.classify(task.template, chunk, list(dev.texts), list(task.verbalizers))
        for prompt, acc in zip(chunk, (scores.argmax(-1) == np.asarray(dev.labels)).mean(-1)):
            if acc > best[1]:
                best = (prompt, float(acc))
    return {"prompt": best[0], "dev_accuracy": best[1], "prompts_tried": n,
            "target_queries": target.stats.sequences - start}


def test_accuracy(target, task, prompt: str, limit: int | None, calibrate: str = "none") -> float:
    test = task.split("test")
    return evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                    texts=test.texts[:limit], labels=test.labels[:limit], calibrate=calibrate).accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--config", default=str(ROOT / "configs" / "rlprompt_sst2.yaml"))
    parser.add_argument("--seeds", nargs="+", default=list(SEEDS), help="dataset seed directories")
    parser.add_argument("--test-limit", type=int, default=None, help="score only the first N test sentences")
    parser.add_argument("--runs-dir", default="runs/rlprompt_sst2", help="where the run directories go")
    parser.add_argument("--out", default=str(ROOT / "results" / "rlprompt_sst2.json"))
    args = parser.parse_args(argv)

    base = load_config(args.config, RLPromptConfig, args.overrides)
    target = make_target(base.target, dtype=base.target_dtype)
    runs, random_runs = [], []
    for i, seed in enumerate(args.seeds):
        cfg = load_config(dump_config(base), RLPromptConfig, [f"task_seed={seed}", f"seed={i}"])
        task = build_task(cfg)
        run_dir = Path(args.runs_dir) / seed  # an interrupted benchmark resumes each seed's run
        summary = train_rlprompt(cfg, run_dir, resume=(run_dir / "config.yaml").is_file(), target=target)
        prompt = summary["best_prompt"] or ""
        runs.append({"seed": seed, "learned_prompt": prompt, "dev_accuracy": summary["best_dev_accuracy"],
                     "test_accuracy": test_accuracy(target, task, prompt, args.test_limit),
                     "target_queries": summary["target_queries"], "wall_seconds": round(summary["wall_seconds"], 1),
                     "updates": summary["steps"], "run_dir": summary["run_dir"]})
        search = random_search(target, task, cfg, summary["target_queries"], seed=i)
        search["test_accuracy"] = test_accuracy(target, task, search["prompt"], args.test_limit)
        random_runs.append({"seed": seed, **search})
        print(json.dumps(runs[-1]), json.dumps(random_runs[-1]), file=sys.stderr)

    task = build_task(load_config(dump_config(base), RLPromptConfig, [f"task_seed={args.seeds[0]}"]))
    manual = task.prompt
    baselines = {
        "manual_prompt": manual,
        "manual_raw_test_accuracy": test_accuracy(target, task, manual, args.test_limit),
        "manual_calibrated_test_accuracy": test_accuracy(target, task, manual, args.test_limit, calibrate="mean"),
        "random_search": random_runs,
    }
    test_n = len(task.split("test").texts[: args.test_limit])
    result = {"runs": runs, "baselines": baselines, "test_examples": test_n, "config": dump_config(base),
              "command": " ".join(shlex.quote(a) for a in ["python", "experiments/rlprompt_sst2.py", *sys.argv[1:]])}
    out = Path(args.out)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


def shown(prompt: str) -> str:
    """A prompt as one table cell: newlines and other control characters escaped, pipes too."""
    return json.dumps(prompt, ensure_ascii=False)[1:-1].replace("|", "\\|")


def markdown(result: dict) -> str:
    """The results as a markdown table: one row per seed, then the baselines."""
    b = result["baselines"]
    name = Path(result["config"]["task"]).name
    lines = [f"# RLPrompt on {name} 16-shot ({result['test_examples']} test sentences, raw accuracy)", "",
             f"Command: `{result['command']}`", "",
             "| seed | learned prompt | dev acc | test acc | target queries | wall s | random search test acc (same queries) |",
             "|---|---|---|---|---|---|---|"]
    for run, rand in zip(result["runs"], b["random_search"]):
        lines.append(f"| {run['seed']} | `{shown(run['learned_prompt'])}` | {run['dev_accuracy']:.3f} | "
                     f"{run['test_accuracy']:.3f} | {run['target_queries']} | {run['wall_seconds']} | "
                     f"{rand['test_accuracy']:.3f} (`{shown(rand['prompt'])}`) |")
    mean = np.mean([r["test_accuracy"] for r in result["runs"]])
    rand_mean = np.mean([r["test_accuracy"] for r in b["random_search"]])
    lines += ["", f"Mean test accuracy: RLPrompt {mean:.3f}; random search {rand_mean:.3f}; manual prompt "
              f"`{b['manual_prompt']}` raw {b['manual_raw_test_accuracy']:.3f}, calibrated (mean) "
              f"{b['manual_calibrated_test_accuracy']:.3f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
