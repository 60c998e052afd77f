"""Benchmark: MultiPrompter (Kim et al. 2023) with K=2 and K=3 agents against single-agent RLPrompt
(Deng et al. 2022) on SST-2 16-shot, with the same total prompt length and the same target-query budget.

Every arm trains on ``<data>/<seed>/train.tsv`` and selects its prompt on ``dev.tsv`` until
``--budget`` target sequences (training + dev evaluation) are spent, then its best prompt is scored on
the test set (raw accuracy). Arms: ``single`` (``train_rlprompt``, prompt_length = L), ``k2`` and ``k3``
(``train_multiprompter``, segment_length = L / K). Writes ``experiments/results/multiprompter.json``,
``.md`` and ``.png`` (raw train reward vs target queries, mean over seeds).

    python experiments/multiprompter_bench.py --seeds 16-42 16-13 --budget 20000          # hours on CPU
    python experiments/multiprompter_bench.py --seeds 16-42 --budget 600 --test-limit 64 n_episodes=4 input_batch_size=8
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from rlprompt.config import dump_config, load_config
from rlprompt.evaluation import evaluate
from rlprompt.policies.multiprompter import MultiPrompterConfig, train_multiprompter
from rlprompt.policies.rlprompt import RLPromptConfig, TokenPPOConfig, build_task, train_rlprompt
from rlprompt.runs import RunDir, write_atomic
from rlprompt.targets import make_target

ROOT = Path(__file__).resolve().parent
SEEDS = ("16-100", "16-13", "16-21")
def arm_configs(base: MultiPrompterConfig, length: int, budget: int, task_seed: str, seed: int) -> dict:
    """The three arms' configs for one dataset seed: same prompt length, budget, data, target and PPO settings."""
    common = {"task_seed": task_seed, "seed": seed, "max_target_queries": budget, "total_updates": 10**6}
    shared = {f.name: getattr(base, f.name) for f in fields(TokenPPOConfig)}  # task, target, PPO, reward, run
    single = shared | common | {"prompt_length": length, "n_envs": base.n_episodes}
    arms = {"single": RLPromptConfig(**single)}
    for k in (2, 3):
        if length % k:
            raise ValueError(f"prompt length {length} must be divisible by 2 and 3")
        arms[f"k{k}"] = load_config(dump_config(base), MultiPrompterConfig, [f"{key}={value}" for key, value in (
            common | {"n_agents": k, "segment_length": length // k}).items()])
    return arms


def curve(run_dir: str) -> list[tuple[int, float]]:
    """(target queries, raw train reward) after each update of a run."""
    return [(r["target_queries"], r["charts/raw_reward"]) for r in RunDir(run_dir, resume=True).read_metrics()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the MultiPrompter config")
    parser.add_argument("--config", default=str(ROOT / "configs" / "multiprompter_sst2.yaml"))
    parser.add_argument("--seeds", nargs="+", default=list(SEEDS), help="dataset seed directories")
    parser.add_argument("--length", type=int, default=6, help="total prompt tokens (divisible by 2 and 3)")
    parser.add_argument("--budget", type=int, default=20_000, help="target sequences per arm and seed")
    parser.add_argument("--test-limit", type=int, default=None, help="score only the first N test sentences")
    parser.add_argument("--runs-dir", default="runs/multiprompter_bench")
    parser.add_argument("--out", default=str(ROOT / "results" / "multiprompter.json"))
    parser.add_argument("--arms", nargs="+", default=["single", "k2", "k3"], choices=["single", "k2", "k3"])
    parser.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                        help="merge result files of earlier runs (say, one dataset seed each, run in parallel) into --out")
    args = parser.parse_args(argv)
    if args.combine:
        parts = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.combine]
        runs: dict[str, list[dict]] = {}
        for part in parts:
            for name, arm in part["arms"].items():
                runs.setdefault(name, []).extend(arm["runs"])
        meta = {k: parts[0][k] for k in ("prompt_length", "budget", "test_examples", "config")}
        meta["seeds"] = sorted({s for part in parts for s in part["seeds"]})
        meta["command"] = " && ".join(part["command"] for part in parts)
        return finish(runs, meta, Path(args.out))

    base = load_config(args.config, MultiPrompterConfig, args.overrides)
    target = make_target(base.target, dtype=base.target_dtype)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: dict[str, list[dict]] = {name: [] for name in args.arms}
    for i, task_seed in enumerate(args.seeds):
        for name, cfg in arm_configs(base, args.length, args.budget, task_seed, i).items():
            if name not in runs:
                continue
            train = train_rlprompt if name == "single" else train_multiprompter
            started = time.perf_counter()
            summary = train(cfg, Path(args.runs_dir) / f"{stamp}-{name}-{task_seed}", target=target, progress=False)
            task = build_task(cfg)
            test = task.split("test")
            prompt = summary["best_prompt"] or ""
            acc = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                           texts=test.texts[: args.test_limit], labels=test.labels[: args.test_limit]).accuracy
            runs[name].append({"seed": task_seed, "prompt": prompt, "dev_accuracy": summary["best_dev_accuracy"],
                               "test_accuracy": acc, "target_queries": summary["target_queries"],
                               "updates": summary["steps"], "wall_seconds": round(time.perf_counter() - started, 1),
                               "run_dir": summary["run_dir"], "curve": curve(summary["run_dir"])})
            print(name, json.dumps({k: v for k, v in runs[name][-1].items() if k != "curve"}), file=sys.stderr)

    task = build_task(arm_configs(base, args.length, args.budget, args.seeds[0], 0)["k2"])
    meta = {"prompt_length": args.length, "budget": args.budget, "seeds": args.seeds,
            "test_examples": len(task.split("test").texts[: args.test_limit]), "config": dump_config(base),
            "command": " ".join(shlex.quote(a) for a in ["python", "experiments/multiprompter_bench.py", *sys.argv[1:]])}
    return finish(runs, meta, Path(args.out))


def finish(runs: dict[str, list[dict]], meta: dict, out: Path) -> int:
    """Aggregate the arms' runs (means over seeds), write ``out`` (.json, .md, .png) and print the table."""
    arms = {name: {"test_accuracy": float(np.mean([r["test_accuracy"] for r in rs])),
                   "target_queries": int(np.mean([r["target_queries"] for r in rs])),
                   "prompts": {r["seed"]: r["prompt"] for r in rs}, "runs": rs} for name, rs in runs.items()}
    result = {"arms": arms, **meta, "plot": out.with_suffix(".png").name}
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))
    return 0


def plot(result: dict, path: Path) -> None:
    """Raw train reward vs target queries: a thin line per seed, a thick one for each arm's mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, arm), color in zip(result["arms"].items(), ("C0", "C1", "C2")):
        curves = [run["curve"] for run in arm["runs"] if run["curve"]]
        for curve_ in curves:
            ax.plot(*zip(*curve_), color=color, alpha=0.25, linewidth=0.8)
        if curves:  # mean over seeds, update by update (every run logs one point per PPO update)
            n = min(len(c) for c in curves)
            mean = np.mean([np.asarray(c[:n], dtype=float) for c in curves], axis=0)
            ax.plot(mean[:, 0], mean[:, 1], color=color, linewidth=2, label=f"{name} (mean of {len(curves)})")
    ax.set_xlabel("target queries (sequences)")
    ax.set_ylabel("raw train reward (gap, mean over batch)")
    ax.set_title(f"SST-2 16-shot, {result['prompt_length']}-token prompts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    """One row per arm and seed, then the means."""
    lines = [f"# MultiPrompter vs RLPrompt on SST-2 16-shot ({result['prompt_length']}-token prompts, "
             f"budget {result['budget']} target sequences, {result['test_examples']} test sentences, raw accuracy)",
             "", f"Command: `{result['command']}`", "",
             "| arm | seed | prompt | dev acc | test acc | target queries | updates | wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, arm in result["arms"].items():
        for r in arm["runs"]:
            lines.append(f"| {name} | {r['seed']} | `{r['prompt']}` | {r['dev_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                         f"{r['target_queries']} | {r['updates']} | {r['wall_seconds']} |")
    lines += ["", "Mean test accuracy: " + "; ".join(f"{n} {a['test_accuracy']:.3f}" for n, a in result["arms"].items()),
              "", f"Curves: {result['plot']} (raw train reward vs target queries).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
