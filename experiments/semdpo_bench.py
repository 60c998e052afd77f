"""DPO vs Sem-DPO (Mohamed et al. 2025) with the same rewriter, the same preference pairs and the same budget.

For each seed, both arms train a fresh LoRA adapter of the rewriter on one shared preference file
(:func:`rlprompt.policies.preferences.build_preferences`, built once from the config's training ``originals``), then
rewrite the held-out originals (``eval_originals``, none of them a training original) greedily. Each rewrite is
scored for task reward (the reward on the whole dev split) and similarity to its original (cosine, bundled
MiniLM); the result file keeps both per seed and per held-out original, so paired intervals can be computed
again without training. ``base`` is the untrained rewriter (no adapter), for reference.

    python experiments/semdpo_bench.py experiments/configs/semdpo_bench.yaml            # seeds 0-4
    python experiments/semdpo_bench.py experiments/configs/semdpo_bench.yaml --report-only

Writes ``experiments/results/semdpo.json`` and ``semdpo.md`` (``--out`` changes the stem) after every seed. Run
again with the same config and preference file, it resumes: seeds already in the JSON are skipped.
:func:`markdown` rebuilds the report from the JSON alone (``--report-only``, or from another script).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.config import config_from_dict, dump_config, load_config
from rlprompt.models import load_model
from rlprompt.policies.dpo import DPOMethodConfig, evaluate_rewriter, method_config, train_dpo
from rlprompt.policies.preferences import build_preferences, build_task, load_preferences, originals_for
from rlprompt.runs import write_atomic
from rlprompt.stats import finite_or_none, mean_interval, paired_bootstrap

ARMS = ("dpo", "sem-dpo")
REWARD_TOLERANCE = 0.05
"""The claim to check: Sem-DPO keeps more similarity than DPO at a reward no more than 5% below DPO's."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="YAML config of DPOMethodConfig fields (method: is ignored)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="training seeds (same pairs for all); seeds already in the output are skipped")
    parser.add_argument("--runs", default="runs/semdpo_bench", help="directory for the per-arm run directories")
    parser.add_argument("--out", default="experiments/results/semdpo", help="output stem (.json and .md)")
    parser.add_argument("--preferences", default=None, help="preference JSONL path (overrides the config's)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the preference file even if it exists")
    parser.add_argument("--restart", action="store_true", help="replace an existing result at --out, not resume it")
    parser.add_argument("--report-only", action="store_true", help="rewrite <out>.md from <out>.json; train nothing")
    args = parser.parse_args(argv)
    stem = Path(args.out)
    if args.report_only:
        write_atomic(stem.with_suffix(".md"), markdown(json.loads(stem.with_suffix(".json").read_text("utf-8"))))
        print(stem.with_suffix(".md").read_text(encoding="utf-8"))
        return 0
    if args.config is None:
        parser.error("a config is required unless --report-only")

    # the file's paths resolve against its folder, --preferences against the current directory
    base_cfg = load_config(args.config, DPOMethodConfig, {"preferences": args.preferences} if args.preferences else {})
    held_out = held_out_originals(base_cfg)
    command = " ".join(["python", *map(shlex.quote, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])])
    target = base_cfg.build_target()  # built once: it renders the chat template, scores the pairs and the runs
    task = build_task(base_cfg, target)
    t0 = time.perf_counter()
    if args.rebuild or not Path(base_cfg.preferences).is_file():
        build_preferences(base_cfg, target=target, task=task)
    prefs_seconds = time.perf_counter() - t0
    digest = hashlib.sha256(Path(base_cfg.preferences).read_bytes()).hexdigest()

    result = None if args.restart else resumable(stem, base_cfg, digest)
    if result is None:
        model, tokenizer = load_model(base_cfg.rewriter_model, dtype="float32")
        base = evaluate_rewriter(model, tokenizer, base_cfg, held_out, target=target, task=task)
        result = {"seeds": [], "base": figures(base), "pairs": len(load_preferences(base_cfg.preferences)),
                  "preferences_sha256": digest, "preferences_seconds": prefs_seconds, "eval_originals": held_out,
                  "config": dump_config(base_cfg), "command": command, "resumed_by": []}
    else:
        result["resumed_by"].append(command)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for seed in args.seeds:
        if any(r["seed"] == seed for r in result["seeds"]):
            print(json.dumps({"seed": seed, "skipped": "already in " + str(stem.with_suffix(".json"))}), flush=True)
            continue
        record: dict[str, Any] = {"seed": seed}
        for arm in ARMS:
            cfg = method_config(arm)(**{**dataclasses.asdict(base_cfg), "seed": seed})
            run_dir = Path(args.runs) / f"{stamp}-{arm}-s{seed}"
            summary = train_dpo(cfg, run_dir, rewriter=load_model(cfg.rewriter_model, dtype="float32"),
                                target=target, task=task)
            details = summary["details"]
            record[arm] = {**figures(details), "train_seconds": details["train_seconds"], "steps": summary["steps"],
                           "mean_weight": details["mean_weight"], "weight_scale": details["weight_scale"],
                           "run_dir": str(run_dir)}
            print(json.dumps({"arm": arm, "seed": seed, "reward": details["eval_reward"],
                              "similarity": details["eval_similarity"]}), flush=True)
        result["seeds"] = sorted([*result["seeds"], record], key=lambda r: r["seed"])
        write_results(result, stem)  # after every seed: an interrupted benchmark resumes from here
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


def held_out_originals(cfg: DPOMethodConfig) -> list[str]:
    """``cfg.eval_originals``, checked to be distinct and disjoint from the training originals."""
    held_out = list(cfg.eval_originals or [])
    if not held_out:
        raise ValueError("the benchmark needs eval_originals (held-out instructions) in the config")
    seen = {o.strip().lower() for o in originals_for(cfg)}
    leaked = [o for o in held_out if o.strip().lower() in seen]
    if leaked or len({o.strip().lower() for o in held_out}) != len(held_out):
        raise ValueError(f"eval_originals must be distinct and held out from the training originals; "
                         f"training originals among them: {leaked}")
    return held_out


def figures(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The per-original and mean figures of :func:`evaluate_rewriter` under the result file's short keys."""
    return {"reward": evaluation["eval_reward"], "similarity": evaluation["eval_similarity"],
            "rewards": evaluation["eval_rewards"], "similarities": evaluation["eval_similarities"],
            "rewrites": evaluation["eval_rewrites"]}


def resumable(stem: Path, cfg: DPOMethodConfig, digest: str) -> dict[str, Any] | None:
    """The result at ``<stem>.json`` to resume, or None when there is none; an error when it was made with
    another config or preference file (resuming would mix two experiments)."""
    path = stem.with_suffix(".json")
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    saved = dump_config(config_from_dict(result.get("config", {}), type(cfg)))  # old key names and paths read as now
    changed = sorted(k for k, v in dump_config(cfg).items() if saved.get(k) != v)
    if changed or result.get("preferences_sha256") != digest:
        raise ValueError(f"{str(path)!r} was made with another config (fields {changed}) or preference file: "
                         "pass --restart to replace it, or another --out")
    return result


def summarize(seeds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-arm means over seeds with 95% Student-t intervals (``arms``) and the Sem-DPO minus DPO differences
    with paired bootstrap intervals over seeds x held-out originals (``comparison``)."""
    arms: dict[str, Any] = {}
    for arm in ARMS:
        arms[arm] = {}
        for key in ("reward", "similarity", "train_seconds"):
            values = [r[arm][key] for r in seeds]
            interval = mean_interval(values)
            arms[arm].update({key: interval.mean, f"{key}_std": float(np.std(values)),
                              f"{key}_low": finite_or_none(interval.low),
                              f"{key}_high": finite_or_none(interval.high)})
    sim = paired_bootstrap([r["sem-dpo"]["similarities"] for r in seeds], [r["dpo"]["similarities"] for r in seeds])
    rew = paired_bootstrap([r["sem-dpo"]["rewards"] for r in seeds], [r["dpo"]["rewards"] for r in seeds])
    scale = abs(arms["dpo"]["reward"]) or math.nan
    comparison = {"similarity_difference": sim.as_dict(), "reward_difference": rew.as_dict(),
                  "reward_relative": {"mean": rew.mean / scale, "low": rew.low / scale, "high": rew.high / scale}}
    return arms, comparison


def write_results(result: dict[str, Any], stem: Path) -> None:
    """``<stem>.json`` (``arms``: means over seeds; ``seeds``: per-seed, per-original figures) and ``<stem>.md``."""
    result["arms"], result["comparison"] = summarize(result["seeds"])
    write_atomic(stem.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    write_atomic(stem.with_suffix(".md"), markdown(result))


def markdown(result: dict[str, Any]) -> str:
    """The report of a result file: arm means with 95% intervals over seeds, per-seed figures, and Sem-DPO minus
    DPO in similarity and relative reward with paired bootstrap intervals over seeds x held-out originals."""
    cfg, base, seeds = result["config"], result["base"], result["seeds"]
    arms, comparison = summarize(seeds)
    n_orig = len(result["eval_originals"])
    steps = cfg["steps"]
    lines = [
        "# DPO vs Sem-DPO (same rewriter, same pairs, same budget)", "",
        f"Command: `{result['command']}`  ",
        *(f"Resumed by: `{c}`  " for c in result.get("resumed_by", [])),
        f"Task: {cfg['task']}; rewriter: {cfg['rewriter_model']}; target: {cfg['target']}; {result['pairs']} "
        f"preference pairs; {steps} steps x {cfg['batch_size']} pairs; alpha={cfg['alpha']}, "
        f"normalize_weights={cfg['normalize_weights']}, beta={cfg['beta']}, learning rate {cfg['learning_rate']}; "
        f"seeds {[r['seed'] for r in seeds]}; {n_orig} held-out originals; reward = {cfg['reward']} of each "
        "rewrite on the whole dev split; similarity = cosine (MiniLM) of each rewrite to its original.", "",
        "| arm | reward (mean over seeds, 95% interval) | similarity to original | train seconds per step |",
        "|---|---|---|---|",
        f"| base (no adapter) | {base['reward']:.3f} | {base['similarity']:.3f} | - |",
    ]
    for arm in ARMS:
        a = arms[arm]
        reward, sim = (mean_interval([r[arm][key] for r in seeds]) for key in ("reward", "similarity"))
        lines.append(f"| {arm} | {reward:.3f} | {sim:.3f} | {a['train_seconds'] / steps:.1f} |")
    lines += ["", f"Per seed (means over the {n_orig} held-out originals):", "",
              "| seed | dpo reward | sem-dpo reward | dpo similarity | sem-dpo similarity |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['dpo']['reward']:.3f} | {r['sem-dpo']['reward']:.3f} | "
              f"{r['dpo']['similarity']:.3f} | {r['sem-dpo']['similarity']:.3f} |" for r in seeds]
    sim, rew, rel = (comparison[k] for k in ("similarity_difference", "reward_difference", "reward_relative"))
    sim_verdict = ("lies above 0: Sem-DPO keeps more similarity" if sim["low"] > 0 else
                   "lies below 0: Sem-DPO keeps less similarity" if sim["high"] < 0 else "contains 0: inside the noise")
    lines += [
        "", f"Sem-DPO minus DPO, paired over {len(seeds)} seeds x {n_orig} held-out originals (bootstrap 95% "
        "interval, seeds and originals resampled):", "",
        f"- similarity: {sim['mean']:+.3f} [{sim['low']:+.3f}, {sim['high']:+.3f}]; the interval {sim_verdict}.",
        f"- reward: {rew['mean']:+.3f} [{rew['low']:+.3f}, {rew['high']:+.3f}], i.e. {100 * rel['mean']:+.1f}% "
        f"[{100 * rel['low']:+.1f}%, {100 * rel['high']:+.1f}%] of DPO's mean reward {arms['dpo']['reward']:.3f} "
        "(interval of the difference over DPO's mean, taken as fixed).",
        f"- claim (more similarity, interval above 0, at a reward within {100 * REWARD_TOLERANCE:.0f}% of DPO's): "
        f"similarity {'yes' if sim['low'] > 0 else 'no'}; reward {'yes' if rel['mean'] >= -REWARD_TOLERANCE else 'no'} "
        f"by the point estimate, {'yes' if rel['low'] >= -REWARD_TOLERANCE else 'no'} by the whole interval.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
