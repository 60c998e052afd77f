"""MaskablePPO on PromptEdit-v0 (GrIPS-style phrase edits, Prasad et al. 2023) with the bundled SmolLM2
target on SST-2 16-shot: edit a start instruction to raise dev accuracy, then report dev and test
accuracy of the start and of the best instruction found (by dev accuracy).

    python experiments/train_prompt_edit.py --data ../shared/data/rlprompt-16shot/sst-2 --minutes 6 --n-steps 8

Writes ``experiments/results/prompt_edit_sst2.{json,md}`` (the command and config included).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from rlprompt.envs import PromptEditEnv
from rlprompt.envs.prompt_edit import PHRASE_BANK
from rlprompt.evaluation import evaluate
from rlprompt.runs import write_atomic
from rlprompt.targets import make_target
from rlprompt.tasks import load_task


@dataclass
class Args:
    data: str = "../shared/data/rlprompt-16shot/sst-2"
    """RLPrompt 16-shot directory (seed 16-42 is read), or a built-in task name"""
    instruction: str = "All in all, in my honest opinion, the movie was"
    """start instruction (filled as {sentence} {prompt}, verbalizers ' terrible'/' great')"""
    minutes: float = 6.0
    """wall-clock budget of the training loop (stops at the end of the current PPO rollout)"""
    total_timesteps: int = 2048
    """upper bound on environment steps"""
    budget: int = 3
    """edits per episode"""
    max_phrases: int = 6
    """phrase slots of the fixed action space"""
    n_steps: int = 32
    """PPO rollout length"""
    test_limit: int = 0
    """score only the first N test sentences (0: all; the full 1821 take ~10 min per prompt on a busy 2-core CPU)"""
    seed: int = 0
    """seeds PPO, the env and torch"""
    out: str = "experiments/results/prompt_edit_sst2"
    """output path without suffix"""


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return Args(**vars(parser.parse_args()))


class WallClock(BaseCallback):
    """Stop training after ``seconds``; record every finished episode's instruction and return."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.start, self.episodes = seconds, time.perf_counter(), []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done:
                self.episodes.append({"instruction": info["instruction"], "dev": info["score"],
                                      "return": info["episode"]["r"] if "episode" in info else None})
        return time.perf_counter() - self.start < self.seconds


def main() -> None:
    args = parse()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    task = load_task(args.data)
    target = make_target("smollm2-135m-instruct", dtype="bfloat16")
    env = PromptEditEnv(task=task, target=target, instructions=[args.instruction], budget=args.budget,
                        max_phrases=args.max_phrases, eval_split="dev")
    env.reset(seed=args.seed)
    start_dev = env.score(args.instruction)
    print(f"start {args.instruction!r}: dev {start_dev:.3f}", flush=True)

    model = MaskablePPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=args.n_steps, n_epochs=4,
                        learning_rate=3e-4, ent_coef=0.01, gamma=1.0, seed=args.seed, verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default makes an empty temp dir per learn()
    clock = WallClock(args.minutes * 60)
    model.learn(args.total_timesteps, callback=clock)
    train_seconds = time.perf_counter() - clock.start

    # every instruction the run evaluated on dev, best first (ties: the earliest found)
    seen = [(acc, p) for (p, split), acc in env.scorer._eval_cache.items() if split == "dev"]
    ranked = sorted(seen, key=lambda x: -x[0])
    best_dev, best = ranked[0]
    test = task.split("test")
    if args.test_limit:
        test = type(test)(test.texts[: args.test_limit], test.labels[: args.test_limit])
    scores = {}
    for name, prompt in (("start", args.instruction), ("best", best)):
        result = evaluate(target, template=task.template, prompt=prompt, verbalizers=task.verbalizers,
                          texts=test.texts, labels=test.labels)
        scores[name] = {"instruction": prompt, "dev_accuracy": env.score(prompt), "test_accuracy": result.accuracy,
                        "test_predictions_per_class": result.predictions_per_class}
        print(name, scores[name], flush=True)
    returns = [e["return"] for e in clock.episodes if e["return"] is not None]
    summary = {
        "command": command, "config": asdict(args), "phrase_bank": list(PHRASE_BANK),
        "template": task.template, "verbalizers": list(task.verbalizers),
        "dev_size": len(task.split("dev")), "test_size": len(test),
        "start": scores["start"], "best": scores["best"],
        "timesteps": model.num_timesteps, "episodes": len(clock.episodes),
        "distinct_instructions_evaluated": len(seen),
        "top_dev": [{"instruction": p, "dev_accuracy": a} for a, p in ranked[:8]],
        "mean_episode_dev_gain_first_quarter": float(np.mean(returns[: max(1, len(returns) // 4)])) if returns else None,
        "mean_episode_dev_gain_last_quarter": float(np.mean(returns[-max(1, len(returns) // 4):])) if returns else None,
        "paraphrases": env._paraphrases,
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.perf_counter() - started, 1),
        "target_stats": target.stats.as_dict(),
    }
    out = Path(args.out)
    write_atomic(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    write_atomic(out.with_suffix(".md"), text)
    print(text)


def markdown(summary: dict) -> str:
    """The start and best instructions' dev and test accuracy, with the command, from the results JSON alone."""
    s, b = summary["start"], summary["best"]
    lines = [
        "# PromptEdit-v0 + MaskablePPO on SST-2 16-shot (seed 16-42), bundled SmolLM2-135M (bf16, CPU)",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Template `{summary['template']}`, verbalizers {summary['verbalizers']}; reward = change of dev accuracy "
        f"({summary['dev_size']} dev sentences); best = highest dev accuracy among the "
        f"{summary['distinct_instructions_evaluated']} instructions the run evaluated (so its dev number is "
        f"optimistic: selected on dev); test = {summary['test_size']} sentences.",
        "",
        "| instruction | dev acc | test acc | test predictions per class |",
        "|---|---:|---:|---|",
        f"| start: `{s['instruction']}` | {s['dev_accuracy']:.3f} | {s['test_accuracy']:.3f} | {s['test_predictions_per_class']} |",
        f"| best: `{b['instruction']}` | {b['dev_accuracy']:.3f} | {b['test_accuracy']:.3f} | {b['test_predictions_per_class']} |",
        "",
        f"{summary['timesteps']} env steps, {summary['episodes']} episodes, training {summary['train_seconds']} s, "
        f"whole script {summary['wall_seconds']} s. Mean episode return (dev gain) first quarter "
        f"{summary['mean_episode_dev_gain_first_quarter']}, last quarter {summary['mean_episode_dev_gain_last_quarter']}.",
        "",
        "Top instructions by dev accuracy:",
        "",
        *[f"- {r['dev_accuracy']:.3f} `{r['instruction']}`" for r in summary["top_dev"]],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
