"""`make demo`: the main job on the embedded default (bundled SmolLM2 target, built-in sentiment task).

Trains an RLPrompt policy (Deng et al. 2022) with PPO for a few minutes on 2 CPU cores
(experiments/configs/rlprompt_sentiment_demo.yaml), then scores the learned prompt against the task's
manual prompt on the held-out test split: the same calls a user makes with
`rlprompt train CONFIG` and `rlprompt eval --prompt ...`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlprompt.config import load_config
from rlprompt.evaluation import evaluate
from rlprompt.policies.rlprompt import RLPromptConfig, build_task, train_rlprompt

CONFIG = Path(__file__).resolve().parent / "configs" / "rlprompt_sentiment_demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the demo config")
    args = parser.parse_args()

    cfg = load_config(CONFIG, RLPromptConfig, args.overrides)
    task, target = build_task(cfg), cfg.build_target()
    summary = train_rlprompt(cfg, args.run_dir, target=target)
    test = task.split("test")
    print(f"\nrun directory: {summary['run_dir']}  ({summary['steps']} PPO updates, {summary['target_queries']} target "
          f"queries, {summary['wall_seconds']:.0f} s)")
    print("\n| prompt | dev acc | test acc (raw) |\n|---|---|---|")
    rows = [("manual", task.prompt, None), ("learned (best on dev)", summary["best_prompt"], summary["best_dev_accuracy"])]
    for name, prompt, dev in rows:
        result = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                          texts=test.texts, labels=test.labels, chunk_size=16, progress=True)
        dev_acc = dev if dev is not None else evaluate(
            target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
            texts=task.split("dev").texts, labels=task.split("dev").labels).accuracy
        print(f"| {name}: {prompt!r} | {dev_acc:.3f} | {result.accuracy:.3f} |")
    print(f"\nplots: .venv/bin/rlprompt report {summary['run_dir']}")


if __name__ == "__main__":
    main()
