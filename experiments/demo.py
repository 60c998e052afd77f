"""`make demo`: the main job on the embedded default (bundled SmolLM2 target, built-in sentiment task).

Scores a few hand-written prompts on the built-in task's test split, raw and with contextual
calibration, and prints a table.
"""

from __future__ import annotations

import time

from rlprompt.evaluation import evaluate
from rlprompt.targets.hf import HFTarget
from rlprompt.tasks import load_task

PROMPTS = ("It was", "All in all, it was", "My verdict: it was")


def main() -> None:
    task = load_task("sentiment")
    test = task.split("test")
    target = HFTarget()
    print(f"task {task.name}: {len(test)} test examples, template {task.template!r}, verbalizers {task.verbalizers}")
    print(f"| prompt | raw acc | calibrated acc | seconds |\n|---|---|---|---|")
    for prompt in PROMPTS:
        start = time.perf_counter()
        common = dict(template=task.template, prompt=prompt, verbalizers=task.verbalizers, texts=test.texts, labels=test.labels)
        raw = evaluate(target, **common)
        calibrated = evaluate(target, calibrate="contextual", **common)
        print(f"| {prompt!r} | {raw.accuracy:.3f} | {calibrated.accuracy:.3f} | {time.perf_counter() - start:.1f} |")
    print(f"target queries: {target.stats.sequences} sequences in {target.stats.calls} calls")


if __name__ == "__main__":
    main()
