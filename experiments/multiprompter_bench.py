"""Benchmark: MultiPrompter (Kim et al. 2023) with K = 1, 2 and 3 agents through ONE training loop, SST-2 16-shot.

Every arm is :func:`~rlprompt.policies.multiprompter.train_multiprompter` with the same prompt length L, data,
target and PPO settings; only K differs (agent k writes L / K tokens). K = 1 is single-agent RLPrompt-style PPO
(Deng et al. 2022) in the same loop, so K = 2 or 3 against K = 1 isolates the cooperative split, not two learners.

Equal budgets: every update rolls out ``n_episodes`` prompts scored on ``input_batch_size`` train inputs, whatever
K (``n_episodes * input_batch_size`` target sequences), and dev evaluations come every ``eval_every`` updates at
no more than ``(1 + eval_top_k) * |dev|`` sequences each; so the same ``--updates`` for every arm gives every arm
the same target-query budget (up to dev prompts already scored, which are not scored again: the results show
each run's measured count).

Each arm trains on ``<data>/<seed>/train.tsv``, selects its prompt on ``dev.tsv`` and scores it on the test set
(raw accuracy, a fixed seeded sample of ``--test-limit`` examples, the same for every run). The policy seed of a
data seed is its position in RLPrompt's seed list (:func:`policy_seed`), the same for every arm (paired arms) and
distinct across data seeds, also when each ``--task-seeds`` runs in its own call.

Every (arm, seed) result lands in ``<runs-dir>/parts/<arm>-<seed>.json`` (with its per-example test predictions as
a digit string, and the command and commit that made it) and the results file is rebuilt after each one; the gold
test labels are stored once. Rerunning a command skips finished parts and resumes unfinished runs from their
checkpoints; several processes (say, one per seed) may share a runs dir. ``--report-only`` rebuilds the JSON,
markdown and plot from the parts; :func:`markdown` rebuilds the markdown from the JSON alone.

    python experiments/multiprompter_bench.py --runs-dir runs/multiprompter_bench            # K=1,2,3 x 3 seeds
    python experiments/multiprompter_bench.py --task-seeds 16-42 --updates 2 --test-limit 64 \\
        --runs-dir /tmp/mpb --out /tmp/mpb/multiprompter.json                                 # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.benchmarking import BENCHMARK_SEEDS, RLPROMPT_SEEDS, code_commit, policy_seed, sample_indices
from rlprompt.cli import add_renamed_option
from rlprompt.config import dump_config, load_config
from rlprompt.evaluation import evaluate
from rlprompt.policies.multiprompter import MultiPrompterConfig, train_multiprompter
from rlprompt.policies.token_ppo import build_task
from rlprompt.runs import RunDir, write_atomic
from rlprompt.stats import correctness, digits, mean_interval, paired_bootstrap
from rlprompt.targets import Target, make_target

ROOT = Path(__file__).resolve().parent

ARMS = {"k1": 1, "k2": 2, "k3": 3}
"""Arm name -> number of agents K."""


def arm_config(base: MultiPrompterConfig, arm: str, data_seed: str, length: int, updates: int) -> MultiPrompterConfig:
    """One arm's config for one dataset seed: ``base`` with K agents writing ``length / K`` tokens each, the data
    seed, its policy seed and ``updates`` PPO updates."""
    k = ARMS[arm]
    if length % k:
        raise ValueError(f"prompt length {length} must be divisible by K={k} (arm {arm})")
    overrides = {"n_agents": k, "segment_length": length // k, "task_seed": data_seed,
                 "seed": policy_seed(data_seed), "steps": updates}
    return load_config(dump_config(base), MultiPrompterConfig, [f"{key}={value}" for key, value in overrides.items()])


def curve(run_dir: str) -> list[tuple[int, float]]:
    """(target queries, raw train reward) after each update of a run."""
    return [(r["target_queries"], r["charts/raw_reward"]) for r in RunDir(run_dir, resume=True).read_metrics()]


def run_part(cfg: MultiPrompterConfig, arm: str, target: Target, run_dir: Path, test_idx: np.ndarray) -> dict[str, Any]:
    """Train one (arm, seed) (resuming ``run_dir`` from its latest checkpoint; a run killed before its first
    checkpoint starts again) and score its best dev prompt on the test examples ``test_idx``: the part's record."""
    resume = (run_dir / "config.yaml").is_file()
    if resume and RunDir(run_dir, resume=True, tensorboard=False).latest_checkpoint() is None:
        print(f"{run_dir} has no checkpoint to resume from: starting it again", file=sys.stderr)
        shutil.rmtree(run_dir)
        resume = False
    summary = train_multiprompter(cfg, run_dir, resume=resume, target=target, progress=False)
    task = build_task(cfg)
    test = task.split("test")
    prompt = summary["best_prompt"] or ""
    result = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                      texts=[test.texts[i] for i in test_idx], labels=[test.labels[i] for i in test_idx])
    return {"arm": arm, "n_agents": cfg.n_agents, "segment_length": cfg.segment_length, "seed": cfg.task_seed,
            "policy_seed": cfg.seed, "prompt": prompt, "greedy_prompt": summary["greedy_prompt"],
            "dev_accuracy": summary["best_dev_accuracy"], "test_accuracy": result.accuracy,
            "test_predictions": digits(result.predictions), "test_predictions_per_class": result.predictions_per_class,
            "target_queries": summary["target_queries"], "updates": summary["steps"],
            "stop_reason": summary["stop_reason"], "wall_seconds": round(summary["wall_seconds"], 1),
            "run_dir": summary["run_dir"], "curve": curve(summary["run_dir"]), "config": dump_config(cfg)}


def assemble(runs_dir: Path) -> dict[str, Any]:
    """The results from every finished part in ``runs_dir``: ``arms.<arm>`` (means and the runs, seeds in RLPrompt's
    order), the gold test labels once, the commands and commits that made the parts, and the intervals."""
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((runs_dir / "parts").glob("k*.json"))]
    meta = json.loads((runs_dir / "parts" / "test.json").read_text(encoding="utf-8"))
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = sorted((p for p in parts if p["arm"] == arm), key=lambda r: RLPROMPT_SEEDS.index(r["seed"]))
        if runs:
            arms[arm] = {"n_agents": ARMS[arm], "test_accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
                         "dev_accuracy": float(np.mean([r["dev_accuracy"] for r in runs])),
                         "target_queries": int(np.mean([r["target_queries"] for r in runs])),
                         "prompts": {r["seed"]: r["prompt"] for r in runs}, "runs": runs}
    result = {"arms": arms, **meta, "commands": sorted({p["command"] for p in parts}),
              "commits": sorted({p["commit"] for p in parts})}
    result["intervals"] = intervals(result)
    return result


def intervals(result: dict[str, Any]) -> dict[str, dict]:
    """Per arm: the mean test accuracy over seeds with its 95% t-interval; per K > 1: K minus K=1 on the seeds both
    ran, with a 95% paired bootstrap interval over seeds x test examples. Bounds are None where one seed gives none."""
    labels, arms = [int(c) for c in result["test_labels"]], result["arms"]

    def plain(interval) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in interval.as_dict().items()}

    out = {arm: plain(mean_interval([r["test_accuracy"] for r in a["runs"]])) for arm, a in arms.items()}
    if "k1" in arms:
        base = {r["seed"]: correctness(r["test_predictions"], labels) for r in arms["k1"]["runs"]}
        for arm in (a for a in arms if a != "k1"):
            mine = {r["seed"]: correctness(r["test_predictions"], labels) for r in arms[arm]["runs"]}
            common = [s for s in RLPROMPT_SEEDS if s in mine and s in base]
            if common:
                diff = paired_bootstrap([mine[s] for s in common], [base[s] for s in common])
                out[f"{arm}-k1"] = {**plain(diff), "seeds": common}
    return out


def shown(prompt: str) -> str:
    """A prompt as one markdown table cell: control characters escaped, pipes too."""
    return json.dumps(prompt, ensure_ascii=False)[1:-1].replace("|", "\\|")


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown, from the results JSON alone: every run, then per arm the mean test accuracy over
    seeds with its 95% t-interval, and K=2 and K=3 minus K=1 with 95% paired bootstrap intervals."""
    cfg, arms = result["config"], result["arms"]
    per_update = cfg["n_episodes"] * cfg["input_batch_size"]
    lines = [f"# MultiPrompter, K = {', '.join(str(a['n_agents']) for a in arms.values())} agents through one "
             f"training loop, on {Path(cfg['task']).name} 16-shot ({result['prompt_length']}-token prompts, "
             f"{result['updates']} PPO updates per run, {result['test_examples']} test examples, raw accuracy)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in result["commands"]),
             f"at commit(s) {', '.join(result['commits'])}.", "",
             f"Budget: every update scores {cfg['n_episodes']} prompts x {cfg['input_batch_size']} train inputs = "
             f"{per_update} target sequences whatever K, plus at most (1 + {cfg['eval_top_k']}) x |dev| every "
             f"{cfg['eval_every']} updates: equal updates, equal budgets (measured counts below). Policy seed = the "
             f"data seed's position in RLPrompt's list, the same for every arm.", "",
             "Runs short of the budget (fewer updates; compare them with care): " + (", ".join(
                 f"{name}/{r['seed']} ({r['updates']})" for name, arm in arms.items() for r in arm["runs"]
                 if r["updates"] < result["updates"]) or "none") + ".", "",
             "| arm | seed | policy seed | learned prompt | dev acc | test acc | dev-test gap | target queries | "
             "updates | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        for r in arm["runs"]:
            lines.append(f"| {name} | {r['seed']} | {r['policy_seed']} | `{shown(r['prompt'])}` | "
                         f"{r['dev_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                         f"{r['dev_accuracy'] - r['test_accuracy']:+.3f} | {r['target_queries']} | {r['updates']} | "
                         f"{r['wall_seconds']} |")
    ci = intervals(result)  # recomputed: the runs' predictions are the source of truth

    def fmt(d: dict, sign: str = "") -> str:
        text = f"{d['mean']:{sign}.3f}"
        return text if d["low"] is None else f"{text} [{d['low']:{sign}.3f}, {d['high']:{sign}.3f}]"

    lines += ["", "Means over seeds with 95% t-intervals; differences with 95% paired bootstrap intervals over seeds "
              "and test examples (one arm beats another only when the interval excludes 0).", "",
              "| arm | seeds | test acc | dev acc | mean dev-test gap | minus K=1 (same seeds) |",
              "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        gap = np.mean([r["dev_accuracy"] - r["test_accuracy"] for r in arm["runs"]])
        diff = ci.get(f"{name}-k1")
        verdict = "" if diff is None else (" (better)" if diff["low"] > 0 else " (worse)" if diff["high"] < 0
                                            else " (inside the noise)")
        lines.append(f"| {name} | {len(arm['runs'])} | {fmt(ci[name])} | {arm['dev_accuracy']:.3f} | {gap:+.3f} | "
                     f"{'-' if diff is None else fmt(diff, '+') + verdict} |")
    lines += ["", f"Curves: {result['plot']} (raw train reward vs target queries).", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
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
    ax.set_title(f"{Path(result['config']['task']).name} 16-shot, {result['prompt_length']}-token prompts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict[str, Any], out: Path) -> None:
    """The results JSON, its markdown and its plot, each written atomically."""
    result = {**result, "plot": out.with_suffix(".png").name}
    write_atomic(out, json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    if result["arms"]:
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.png")
        plot(result, tmp)
        tmp.replace(out.with_suffix(".png"))


def main(argv: list[str] | None = None, *, target: Target | None = None) -> int:
    """Run the benchmark (``target`` overrides the config's: tests pass a scripted fake)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the MultiPrompter config")
    parser.add_argument("--config", default=str(ROOT / "configs" / "multiprompter_sst2.yaml"))
    parser.add_argument("--task-seeds", nargs="+", default=list(BENCHMARK_SEEDS),
                        help="dataset seed directories (RLPrompt's; a config's task_seed)")
    add_renamed_option(parser, "--seeds", "--task-seeds", nargs="+")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--length", type=int, default=6, help="total prompt tokens (divisible by every arm's K)")
    parser.add_argument("--updates", type=int, default=120, help="PPO updates of every run (the equal budget)")
    parser.add_argument("--test-limit", type=int, default=None, help="score a fixed seeded sample of N test examples")
    parser.add_argument("--runs-dir", default="runs/multiprompter_bench", help="run directories and parts")
    parser.add_argument("--out", default=str(ROOT / "results" / "multiprompter.json"))
    parser.add_argument("--report-only", action="store_true", help="rebuild the results from the parts, train nothing")
    args = parser.parse_args(argv)
    runs_dir, out = Path(args.runs_dir), Path(args.out)
    if args.report_only:
        write_results(assemble(runs_dir), out)
        print(out.with_suffix(".md").read_text(encoding="utf-8"))
        return 0

    base = load_config(args.config, MultiPrompterConfig, args.overrides)
    configs = {(arm, seed): arm_config(base, arm, seed, args.length, args.updates)
               for seed in args.task_seeds for arm in args.arms}  # bad seeds or lengths fail before any training
    command = " ".join(shlex.quote(a) for a in ["python", "experiments/multiprompter_bench.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    target = make_target(base.target, dtype=base.target_dtype) if target is None else target
    test = build_task(next(iter(configs.values()))).split("test")
    test_idx = sample_indices(len(test.texts), args.test_limit)
    meta = {"prompt_length": args.length, "updates": args.updates, "test_examples": len(test_idx),
            "test_indices": "all" if len(test_idx) == len(test.texts) else test_idx.tolist(),
            "test_labels": digits([test.labels[i] for i in test_idx]), "config": dump_config(base)}
    meta_path = runs_dir / "parts" / "test.json"
    if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8"))["test_labels"] != meta["test_labels"]:
        raise ValueError(f"{runs_dir} holds parts scored on other test examples; use another --runs-dir")
    write_atomic(meta_path, json.dumps(meta))
    for (arm, seed), cfg in configs.items():
        part = runs_dir / "parts" / f"{arm}-{seed}.json"
        if part.is_file() and json.loads(part.read_text(encoding="utf-8"))["config"] == dump_config(cfg):
            continue
        record = run_part(cfg, arm, target, runs_dir / arm / seed, test_idx)
        write_atomic(part, json.dumps({**record, "command": command, "commit": code_commit()}))
        print(arm, json.dumps({k: v for k, v in record.items() if k not in ("curve", "config", "test_predictions")}),
              file=sys.stderr, flush=True)
        write_results(assemble(runs_dir), out)
    write_results(assemble(runs_dir), out)
    print(out.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
