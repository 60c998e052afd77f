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


def _stats(values: list[float]) -> dict[str, float | list[float]]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": [float(v) for v in values]}


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
    results: dict[str, dict[str, list]] = {
        arm: {"reward": [], "similarity": [], "rewrites": [], "seconds": []} for arm in ARMS}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for seed in args.seeds:
        for arm in ARMS:
            cfg = method_config(arm)(**{**dataclasses.asdict(base_cfg), "seed": seed})
            run_dir = Path(args.runs) / f"{stamp}-{arm}-s{seed}"
            summary = train_dpo(cfg, run_dir, rewriter=load_model(cfg.rewriter_model, dtype="float32"),
                                target=target, task=task)
            results[arm]["reward"].append(summary["eval_reward"])
            results[arm]["similarity"].append(summary["eval_similarity"])
            results[arm]["rewrites"].append(summary["eval_rewrites"])
            results[arm]["seconds"].append(summary["train_seconds"])
            print(json.dumps({"arm": arm, "seed": seed, "reward": summary["eval_reward"],
                              "similarity": summary["eval_similarity"]}), flush=True)

    out = {
        "arms": {arm: {"reward": _stats(r["reward"]), "similarity": _stats(r["similarity"]),
                       "train_seconds": _stats(r["seconds"]), "rewrites": r["rewrites"]} for arm, r in results.items()},
        "base": {"reward": base["eval_reward"], "similarity": base["eval_similarity"],
                 "rewrites": base["eval_rewrites"]},
        "seeds": list(args.seeds), "pairs": pairs, "preferences_seconds": prefs_seconds,
        "config": dump_config(base_cfg),
        "command": " ".join(["python", *map(shlex.quote, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])]),
    }
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(stem.with_suffix(".json"), json.dumps(out, indent=2) + "\n")
    lines = [
        "# DPO vs Sem-DPO (same rewriter, same pairs, same budget)", "",
        f"Command: `{out['command']}`  ", f"Task: {base_cfg.task}; rewriter: {base_cfg.rewriter_model}; target: "
        f"{base_cfg.target}; {pairs} preference pairs; {base_cfg.steps} steps x {base_cfg.batch_size} pairs; "
        f"alpha={base_cfg.alpha}, beta={base_cfg.beta}; seeds {args.seeds}; "
        f"{len(base_cfg.eval_originals)} held-out originals; reward = {base_cfg.reward} on the dev split.", "",
        "| arm | reward (mean ± std over seeds) | similarity to original |", "|---|---|---|",
        f"| base (no adapter) | {base['eval_reward']:.3f} | {base['eval_similarity']:.3f} |",
    ]
    for arm in ARMS:
        r, s = out["arms"][arm]["reward"], out["arms"][arm]["similarity"]
        lines.append(f"| {arm} | {r['mean']:.3f} ± {r['std']:.3f} | {s['mean']:.3f} ± {s['std']:.3f} |")
    write_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
