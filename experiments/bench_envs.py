"""Throughput of the PromptTokens-v0 vector env: one batched scorer call per step vs one call per env.

Runs ``rounds`` episodes per env with seeded random actions for N in ``--n-envs``, over ONE shared
target (the bundled SmolLM2, bf16) on the built-in sentiment task, and writes
``experiments/results/bench_envs.{json,md}``.

    python experiments/bench_envs.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlprompt.envs import make_prompt_tokens_vec_env
from rlprompt.runs import write_atomic
from rlprompt.targets import Target, make_target


@dataclass
class Args:
    n_envs: list[int] = field(default_factory=lambda: [1, 4, 16])
    """vector sizes to time"""
    rounds: int = 3
    """episodes per env per measurement (after one warm-up episode)"""
    prompt_length: int = 5
    """tokens per prompt"""
    batch_size: int = 16
    """inputs per reward minibatch"""
    target: str = "smollm2-135m-instruct"
    """target model (bf16)"""
    task: str = "sentiment"
    """task name or path"""
    seed: int = 0
    """seed of actions and minibatches"""
    out: str = "experiments/results/bench_envs"
    """output path without suffix"""


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Args()
    parser.add_argument("--n-envs", type=int, nargs="+", default=defaults.n_envs)
    for name in ("rounds", "prompt_length", "batch_size", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("target", "task", "out"):
        parser.add_argument(f"--{name}", default=getattr(defaults, name))
    return Args(**vars(parser.parse_args()))


def run(args: Args, target: Target, n: int, batched: bool) -> dict:
    vec = make_prompt_tokens_vec_env(n, seed=args.seed, task=args.task, target=target, batched=batched,
                                     prompt_length=args.prompt_length, batch_size=args.batch_size)
    vec.action_space.seed(args.seed)
    vec.reset()

    def episode_round() -> list[float]:
        rewards = []
        for _ in range(args.prompt_length):
            _, r, dones, _ = vec.step(np.array([vec.action_space.sample() for _ in range(n)]))
        assert dones.all()
        rewards.extend(r.tolist())
        return rewards

    episode_round()  # warm-up
    calls, start = target.stats.calls, time.perf_counter()
    rewards = [x for _ in range(args.rounds) for x in episode_round()]
    seconds = time.perf_counter() - start
    episodes = n * args.rounds
    return {"n_envs": n, "batched": batched, "episodes": episodes, "seconds": round(seconds, 3),
            "episodes_per_s": round(episodes / seconds, 3), "forward_passes": target.stats.calls - calls,
            "mean_reward": round(float(np.mean(rewards)), 3)}


def markdown(result: dict) -> str:
    """The results table with the command that produced it, from the results JSON alone."""
    meta, rows = result["meta"], result["results"]
    a = meta["args"]
    lines = [
        "# PromptTokens-v0 vector env: batched scoring vs one call per env",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Target {a['target']} (bf16, CPU, {meta['torch_threads']} torch threads, {meta['cpu_count']} cores), task "
        f"{a['task']!r}, prompt_length={a['prompt_length']}, {a['batch_size']} inputs per minibatch, "
        f"{a['rounds']} timed episodes per env after one warm-up episode, random actions.",
        "A single run (noisy: absolute times vary between runs on these machines): compare ratios within this table, not absolute "
        "times across runs. With N=1 both modes do exactly the same work (one prompt per call), so any "
        "difference in that row is machine noise, which bounds how far the other rows can be trusted.",
        "",
        "| N envs | scoring | episodes | seconds | episodes/s | target forward passes | speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n_envs']} | {'one batched call' if r['batched'] else 'one call per env'} | "
                     f"{r['episodes']} | {r['seconds']} | {r['episodes_per_s']} | {r['forward_passes']} | "
                     f"{r['speedup_vs_per_env']}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    rows, target = [], make_target(args.target, dtype="bfloat16")  # one model for every row
    for n in args.n_envs:
        for batched in (True, False):
            rows.append(run(args, target, n, batched))
            print(rows[-1], flush=True)
    for row in rows:
        base = next(r for r in rows if r["n_envs"] == row["n_envs"] and not r["batched"])
        row["speedup_vs_per_env"] = round(row["episodes_per_s"] / base["episodes_per_s"], 2)
    meta = {"command": command, "args": asdict(args), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}
    out = Path(args.out)
    result = {"meta": meta, "results": rows}
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    write_atomic(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
