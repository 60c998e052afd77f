"""DPO vs Sem-DPO (Mohamed et al. 2025) with the same rewriter, the same preference pairs and the same budget.

For each seed, both arms train a fresh LoRA adapter of the rewriter on one shared preference file
(:func:`rlprompt.policies.dpo.build_preferences`, built once), then rewrite the held-out originals
(``eval_originals``) greedily. Reported per arm: the task reward of the rewrites (mean over the held-out
originals of the reward on the whole dev split) and semantic drift (mean cosine similarity original vs rewrite,
bundled MiniLM). ``base`` is the untrained rewriter (no adapter), for reference.

    python experiments/semdpo_bench.py experiments/configs/semdpo_bench.yaml --seeds 0 1

Writes ``experiments/results/semdpo.json`` and ``semdpo.md`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import yaml

from rlprompt.config import config_from_dict, dump_config
from rlprompt.models import load_model
from rlprompt.policies.dpo import (
    DPOMethodConfig,
    build_preferences,
    build_task,
    config_target,
    evaluate_rewriter,
    load_preferences,
    method_config,
    train_dpo,
)
from rlprompt.runs import write_atomic

ARMS = ("dpo", "sem-dpo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config with DPOMethodConfig fields (its method: key is ignored)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (same pairs for all)")
    parser.add_argument("--runs", default="runs/semdpo_bench", help="directory for the per-arm run directories")
    parser.add_argument("--out", default="experiments/results/semdpo", help="output stem (.json and .md)")
    parser.add_argument("--preferences", default=None, help="preference JSONL path (overrides the config's)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the preference file even if it exists")
    args = parser.parse_args(argv)

    data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    data.pop("method", None)
    if args.preferences:
        data["preferences"] = args.preferences
    base_cfg = config_from_dict(data, DPOMethodConfig)
    if not base_cfg.eval_originals:
        raise ValueError("the benchmark needs eval_originals (held-out instructions) in the config")
    task = build_task(base_cfg)
    target = config_target(base_cfg)
    t0 = time.perf_counter()
    if args.rebuild or not Path(base_cfg.preferences).is_file():
        build_preferences(base_cfg, target=target, task=task)
    pairs = len(load_preferences(base_cfg.preferences))
    prefs_seconds = time.perf_counter() - t0

    model, tokenizer = load_model(base_cfg.rewriter_model, dtype="float32")
    base = evaluate_rewriter(model, tokenizer, base_cfg, base_cfg.eval_originals, target=target, task=task)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    per_seed = []
    for seed in args.seeds:
        record: dict = {"seed": seed}
        for arm in ARMS:
            cfg = method_config(arm)(**{**dataclasses.asdict(base_cfg), "seed": seed})
            run_dir = Path(args.runs) / f"{stamp}-{arm}-s{seed}"
            summary = train_dpo(cfg, run_dir, rewriter=load_model(cfg.rewriter_model, dtype="float32"),
                                target=target, task=task)
            record[arm] = {"reward": summary["eval_reward"], "similarity": summary["eval_similarity"],
                           "train_seconds": summary["train_seconds"], "rewrites": summary["eval_rewrites"],
                           "run_dir": str(run_dir)}
            print(json.dumps({"arm": arm, "seed": seed, "reward": summary["eval_reward"],
                              "similarity": summary["eval_similarity"]}), flush=True)
        per_seed.append(record)
        write_results(per_seed, base, base_cfg, pairs, prefs_seconds, argv, Path(args.out))  # what is done so far
    print(Path(args.out).with_suffix(".md").read_text(encoding="utf-8"))
    return 0


def write_results(per_seed: list[dict], base: dict, base_cfg: DPOMethodConfig, pairs: int, prefs_seconds: float,
                  argv: list[str] | None, stem: Path) -> None:
    """``<stem>.json`` (means over seeds in ``arms``, per-seed figures in ``seeds``) and ``<stem>.md``."""
    def mean_std(arm: str, key: str) -> dict[str, float]:
        values = [r[arm][key] for r in per_seed]
        return {key: float(np.mean(values)), f"{key}_std": float(np.std(values))}

    out = {
        "arms": {arm: {**mean_std(arm, "reward"), **mean_std(arm, "similarity"), **mean_std(arm, "train_seconds")}
                 for arm in ARMS},
        "seeds": per_seed,
        "base": {"reward": base["eval_reward"], "similarity": base["eval_similarity"],
                 "rewrites": base["eval_rewrites"]},
        "pairs": pairs, "preferences_seconds": prefs_seconds, "eval_originals": list(base_cfg.eval_originals),
        "config": dump_config(base_cfg),
        "command": " ".join(["python", *map(shlex.quote, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])]),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(stem.with_suffix(".json"), json.dumps(out, indent=2) + "\n")
    write_atomic(stem.with_suffix(".md"), markdown(out))


def markdown(out: dict) -> str:
    """The results table: means over seeds, per-seed figures and Sem-DPO's relative change against DPO."""
    cfg, base = out["config"], out["base"]
    lines = [
        "# DPO vs Sem-DPO (same rewriter, same pairs, same budget)", "",
        f"Command: `{out['command']}`  ", f"Task: {cfg['task']}; rewriter: {cfg['rewriter_model']}; target: "
        f"{cfg['target']}; {out['pairs']} preference pairs; {cfg['steps']} steps x {cfg['batch_size']} pairs; "
        f"alpha={cfg['alpha']}, beta={cfg['beta']}, learning rate {cfg['learning_rate']}; seeds "
        f"{[r['seed'] for r in out['seeds']]}; "
        f"{len(cfg['eval_originals'])} held-out originals; reward = {cfg['reward']} on the dev split.", "",
        "| arm | reward (mean ± std over seeds) | per seed | similarity to original | per seed |", "|---|---|---|---|---|",
        f"| base (no adapter) | {base['reward']:.3f} | - | {base['similarity']:.3f} | - |",
    ]
    for arm in ARMS:
        a = out["arms"][arm]
        rewards, sims = (" / ".join(f"{r[arm][key]:.3f}" for r in out["seeds"]) for key in ("reward", "similarity"))
        lines.append(f"| {arm} | {a['reward']:.3f} ± {a['reward_std']:.3f} | {rewards} | "
                     f"{a['similarity']:.3f} ± {a['similarity_std']:.3f} | {sims} |")
    dpo, sem = out["arms"]["dpo"], out["arms"]["sem-dpo"]
    gain = 100 * (sem["similarity"] / dpo["similarity"] - 1)
    wins = sum(r["sem-dpo"]["similarity"] > r["dpo"]["similarity"] for r in out["seeds"])
    lines += ["", f"Sem-DPO vs DPO: similarity {gain:+.1f}% (higher on {wins} of {len(out['seeds'])} seeds), reward "
              f"{sem['reward'] - dpo['reward']:+.3f}. Training seconds per arm (mean): dpo {dpo['train_seconds']:.0f}, "
              f"sem-dpo {sem['train_seconds']:.0f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
