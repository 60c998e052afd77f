"""Score every PRewrite-S candidate of a finished PRewrite run on the test split: does dev selection pick
the best rewrite the rewriter sampled, and does any sampled rewrite beat the initial instruction?

Reads ``<run>/config.yaml``, ``<run>/rewrites.json`` and ``<run>/summary.json`` (written by ``rlprompt train`` / ``prewrite_bench.py``),
scores the initial instruction and the K candidates on ``--test-limit`` test examples (the fixed seeded sample of
:func:`rlprompt.benchmarking.sample_indices`, the one prewrite_bench.py scores for the same N; some test files are
sorted by label, so the first N rows would not do) in one batched target call, and writes ``<out>.json`` +
``<out>.md`` (candidates ranked by test accuracy, with their dev accuracy).

    python experiments/prewrite_candidates.py runs/prewrite_bench/agnews/16-100 --test-limit 1000
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from rlprompt.benchmarking import sample_indices
from rlprompt.config import load_config
from rlprompt.policies.prewrite import PRewriteConfig, build_task
from rlprompt.runs import write_atomic
from rlprompt.targets import make_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished PRewrite run directory")
    parser.add_argument("--test-limit", type=int, default=400, help="score a fixed seeded sample of N test examples")
    parser.add_argument("--out", default=None, help="output stem (default: <run>/candidates_test)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    cfg = load_config(run / "config.yaml", PRewriteConfig)
    candidates = json.loads((run / "rewrites.json").read_text(encoding="utf-8"))["prewrite_s_candidates"]
    target = make_target(cfg.target, dtype=cfg.target_dtype)
    task = build_task(cfg, target)
    test = task.split("test")
    idx = sample_indices(len(test.texts), args.test_limit)
    texts, labels = [test.texts[i] for i in idx], np.asarray([test.labels[i] for i in idx])
    prompts = [task.prompt, *candidates]
    scores = target.classify(task.template, prompts, texts, list(task.verbalizers))  # [prompt, input, label]
    accuracy = (scores.argmax(-1) == labels).mean(-1)
    rows = [{"instruction": p, "test_accuracy": float(a), "dev_accuracy": candidates.get(p)} for p, a in zip(prompts, accuracy)]
    initial, ranked = rows[0], sorted(rows[1:], key=lambda r: -r["test_accuracy"])
    chosen = json.loads((run / "summary.json").read_text(encoding="utf-8"))["prewrite_s"]  # the run's own pick
    picked = next(r for r in rows[1:] if r["instruction"] == chosen)
    result = {"run": str(run), "test_examples": len(texts), "test_sample": "seeded", "initial": initial, "picked_on_dev": picked,
              "best_on_test": ranked[0], "beat_initial": sum(r["test_accuracy"] > initial["test_accuracy"] for r in ranked),
              "candidates": ranked,
              "command": "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])}
    out = Path(args.out) if args.out else run / "candidates_test"
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    write_atomic(out.with_suffix(".md"), text)
    print(text)
    return 0


def markdown(result: dict) -> str:
    """The candidates ranked by test accuracy, with the command that scored them, from the results JSON alone."""
    ranked, initial, picked = result["candidates"], result["initial"], result["picked_on_dev"]
    sample = "a seeded sample of" if result.get("test_sample") == "seeded" else "first"  # older files: the first N
    lines = [f"`{result['command']}`", "", f"{len(ranked)} candidates, {sample} {result['test_examples']} test "
             f"examples; initial instruction {initial['test_accuracy']:.3f}; picked on dev "
             f"{picked['test_accuracy']:.3f}; best on test {ranked[0]['test_accuracy']:.3f}; {result['beat_initial']} "
             "candidates beat the initial instruction.", "", "| test acc | dev acc | instruction |", "|---:|---:|---|"]
    lines += [f"| {r['test_accuracy']:.3f} | {r['dev_accuracy']:.3f} | {r['instruction'][:100]!r} |" for r in ranked]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
