"""Reliability benchmark: inject faults into real `rlprompt train` runs and count what survives.

Every scenario drives the public CLI (`python -m rlprompt.cli train ...` in a subprocess) on tiny random
models, so it runs in minutes on a CPU:

- transient target faults: the target is a fault-injecting OpenAI-compatible endpoint on loopback
  (rlprompt.targets.faulty: 429 + Retry-After, 500, replies past the client timeout, truncated and
  non-JSON bodies, replies without logprobs) answering 30% of requests with a fault; the client
  retries up to 10 times (with 6 retries, 0.3^7 per request made one run in ten stop: cleanly, as
  designed, but that is the bounded-failure path, which the outage scenario covers);
- outage: the endpoint starts answering 503 to everything mid-run; the run must stop with a clear
  error, then `--resume` after the endpoint is back must finish it;
- kill -9: the trainer (RLPrompt, MultiPrompter) is SIGKILLed at a random moment (several times per
  run) and resumed;
- corrupt checkpoint: the newest checkpoint's weights are truncated before `--resume`;
- the same kill -9 for PRewrite (trl's GRPOTrainer checkpoints);
- full disk: from a random write on (cut part of the way through), every write into the run directory
  fails with ENOSPC (injected in a child process around `rlprompt train`, see FULL_DISK_CHILD); the run
  must stop with one clear error, and `--resume` (space freed) must finish from the last complete
  checkpoint with the result of an uninterrupted run.

"Data lost" counts logged updates missing or duplicated in the finished run's metrics.jsonl, a
non-finite reward anywhere in it, or a finished run without a loadable final checkpoint. Writes
experiments/results/reliability.json and reliability.md.

    python experiments/reliability.py                          # about 15 minutes on 2 CPU cores
    python experiments/reliability.py --scenario full-disk     # one scenario; its rows replace its old ones
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlprompt.runs import RunDir, write_atomic
from rlprompt.targets.faulty import FAULTS, FaultyEndpoint

ROOT = Path(__file__).resolve().parent
TOKENS = [" terrible", " great"]  # the built-in sentiment task's verbalizers
RLPROMPT = ("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\nprompt_length: 2\n"
            "n_envs: 4\nmlp_hidden: 16\nvalue_hidden: 8\ninput_batch_size: 4\nvocab: [{vocab}]\n"
            "eval_every: 5\ncheckpoint_every: 2\ntarget: {target}\ntarget_dtype: float32\n")
MULTIPROMPTER = ("method: multiprompter\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\n"
                 "n_agents: 2\nsegment_length: 1\nn_episodes: 4\nmlp_hidden: 16\nvalue_hidden: 8\ninput_batch_size: 4\n"
                 "vocab: [{vocab}]\neval_every: 5\ncheckpoint_every: 2\ntarget: tiny-random\ntarget_dtype: float32\n")
PREWRITE = ("method: prewrite\ntask: sentiment\nrewriter_model: tiny-random\ntarget: tiny-random\ntarget_dtype: float32\n"
            "num_generations: 2\nmax_completion_length: 4\ninput_batch_size: 2\nnum_samples: 2\ndev_limit: 4\n"
            "checkpoint_every: 1\nlora_target_modules: [q_proj]\n")
ENV = {**os.environ, "TQDM_DISABLE": "1"}


def train_cmd(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlprompt.cli", "train", str(config), "--run-dir", str(run_dir), *extra]


def write_config(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def rlprompt_config(folder: Path, name: str, target: str) -> Path:
    return write_config(folder, name, RLPROMPT.format(vocab=", ".join(map(str, range(300, 364))), target=target))


def audit(run_dir: Path, expected_steps: int, reward_keys: tuple[str, ...]) -> dict:
    """What the finished run kept: missing / duplicated updates, non-finite rewards, a valid checkpoint."""
    run = RunDir(run_dir, resume=True)
    records = [r for r in run.read_metrics() if reward_keys[0] in r]  # training updates (not eval-only lines)
    steps = [r["step"] for r in records]
    rewards = [r[k] for r in records for k in reward_keys if k in r]
    missing = sorted(set(range(1, expected_steps + 1)) - set(steps))
    duplicated = len(steps) - len(set(steps))
    non_finite = sum(not math.isfinite(v) for v in rewards)
    return {"logged_updates": len(set(steps)), "missing_updates": missing, "duplicated_updates": duplicated,
            "non_finite_rewards": non_finite, "rewards_checked": len(rewards),
            "data_lost": bool(missing or duplicated or non_finite)}


def wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"training exited (code {proc.returncode}) before the fault could be injected")
        if time.monotonic() > deadline:
            raise RuntimeError(f"condition not reached within {timeout} s")
        time.sleep(0.05)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


CHECKPOINT_NAME = re.compile(r"^(?:step_|checkpoint-)(\d+)$")  # RunDir's step_<n> and trl's checkpoint-<n>


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's checkpoint folders by step, intact or not (temporary and .broken- folders excluded)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))}


def newest_valid_checkpoint(run_dir: Path) -> int:
    """Step of the newest intact checkpoint (a RunDir one, or a sealed trl one), 0 if none."""
    return max((step for step, path in checkpoints(run_dir).items() if RunDir.is_valid_checkpoint(path)), default=0)


# -- scenarios -------------------------------------------------------------------------------------------
def transient_faults(work: Path, seed: int, updates: int = 10) -> dict:
    with FaultyEndpoint(TOKENS, fault_rate=0.3, slow_seconds=6.0, seed=seed) as endpoint:
        target = f"openai:{endpoint.url}:fake?timeout=5&max_retries=10&backoff=0.01"
        config = rlprompt_config(work, f"transient{seed}", target)
        run_dir = work / f"transient{seed}"
        out = subprocess.run(train_cmd(config, run_dir, f"total_updates={updates}", f"seed={seed}"),
                             capture_output=True, text=True, env=ENV, timeout=900)
        injected = dict(endpoint.injected)
    return {"scenario": "transient target faults (30% of requests)", "method": "rlprompt", "seed": seed,
            "faults_injected": sum(injected.values()), "fault_kinds": injected, "interruptions": 0,
            "survived": out.returncode == 0, "exit_code": out.returncode, "error": last_line(out.stderr),
            **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


def outage(work: Path, seed: int, updates: int = 10) -> dict:
    with FaultyEndpoint(TOKENS, outage_after=100 + 16 * seed) as endpoint:
        target = f"openai:{endpoint.url}:fake?timeout=5&max_retries=2&backoff=0.01"
        config = rlprompt_config(work, f"outage{seed}", target)
        run_dir = work / f"outage{seed}"
        first = subprocess.run(train_cmd(config, run_dir, f"total_updates={updates}", f"seed={seed}"),
                               capture_output=True, text=True, env=ENV, timeout=900)
        error = last_line(first.stderr)
        endpoint.outage(False)
        second = subprocess.run(train_cmd(config, run_dir, "--resume", f"total_updates={updates}", f"seed={seed}"),
                                capture_output=True, text=True, env=ENV, timeout=900)
        injected = endpoint.injected["outage"]
    clean_stop = first.returncode == 1 and "TargetError" in error and "503" in error
    return {"scenario": "target outage (503 until lifted), then --resume", "method": "rlprompt", "seed": seed,
            "faults_injected": injected, "interruptions": 1, "stopped_cleanly": clean_stop, "error": error,
            "survived": clean_stop and second.returncode == 0, "exit_code": second.returncode,
            **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


def kill_and_resume(work: Path, seed: int, method: str, kills: int) -> dict:
    """SIGKILL the trainer ``kills`` times at random moments after a checkpoint exists, resuming each time."""
    rng = random.Random(seed)
    if method == "rlprompt":
        config, updates = rlprompt_config(work, f"kill{seed}", "tiny-random"), 60
        extra = [f"total_updates={updates}", f"seed={seed}"]
    elif method == "multiprompter":
        text = MULTIPROMPTER.format(vocab=", ".join(map(str, range(300, 364))))
        config, updates = write_config(work, f"killmp{seed}", text), 60
        extra = [f"total_updates={updates}", f"seed={seed}"]
    else:
        config, updates = write_config(work, f"killpw{seed}", PREWRITE), 8
        extra = [f"steps={updates}", f"seed={seed}"]
    run_dir = work / f"kill-{method}{seed}"
    redone, done = 0, False
    for attempt in range(kills + 1):
        resume = ["--resume"] if attempt else []
        proc = subprocess.Popen(train_cmd(config, run_dir, *resume, *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)
        if attempt < kills:
            try:
                before = len(checkpoints(run_dir))
                wait_for(lambda: len(checkpoints(run_dir)) > before, proc, 600)
                time.sleep(rng.uniform(0.0, 1.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            except RuntimeError:  # the run finished before this kill could land
                proc.wait(timeout=60)
                done = proc.returncode == 0
                break
            logged = {r["step"] for r in RunDir(run_dir, resume=True).read_metrics()}
            redone += max(0, max(logged, default=0) - newest_valid_checkpoint(run_dir))
        else:
            _, err = proc.communicate(timeout=900)
            done = proc.returncode == 0
    reward_keys = ("charts/reward",) if method == "prewrite" else ("charts/raw_reward", "charts/reward")
    return {"scenario": f"kill -9 at random moments ({kills}x), then --resume", "method": method, "seed": seed,
            "faults_injected": kills, "interruptions": kills, "survived": done, "updates_redone": redone,
            **audit(run_dir, updates, reward_keys)}


def corrupt_checkpoint(work: Path, seed: int) -> dict:
    config = rlprompt_config(work, f"corrupt{seed}", "tiny-random")
    run_dir = work / f"corrupt{seed}"
    first = subprocess.run(train_cmd(config, run_dir, "total_updates=6", f"seed={seed}"),
                           capture_output=True, text=True, env=ENV, timeout=900)
    newest = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    second = subprocess.run(train_cmd(config, run_dir, "--resume", "total_updates=10", f"seed={seed}"),
                            capture_output=True, text=True, env=ENV, timeout=900)
    return {"scenario": "newest checkpoint truncated, then --resume", "method": "rlprompt", "seed": seed,
            "faults_injected": 1, "interruptions": 1, "survived": first.returncode == 0 and second.returncode == 0,
            "exit_code": second.returncode, **audit(run_dir, 10, ("charts/raw_reward", "charts/reward"))}


# `rlprompt train` on a disk that fills up: every write into the run directory (text files, metrics appends,
# safetensors checkpoints; TensorBoard's event files aside, its writer thread reports its own failures) counts
# against a byte budget; the write that crosses it is cut short and fails with ENOSPC, and so does every later
# one. Arguments: run dir, budget in bytes ("inf" to only measure), report file, then the CLI's arguments. The
# report lists every write (file relative to the run dir, bytes) and the ENOSPC errors raised.
FULL_DISK_CHILD = r"""
import builtins, errno, io, json, os, sys
import safetensors.torch
import rlprompt.runs
from rlprompt.cli import main

run_dir, budget, report = os.path.realpath(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
used = {"bytes": 0, "enospc": 0, "writes": []}
real_open = io.open


class Metered:
    def __init__(self, fh, name):
        self._fh, self._name = fh, name

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        used["writes"].append([self._name, size])
        if used["bytes"] + size > budget:
            keep = max(0, int(budget - used["bytes"]))
            if keep:
                self._fh.write(data[:keep])
            used["bytes"], used["enospc"] = budget, used["enospc"] + 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        used["bytes"] += size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def metered_open(file, mode="r", *args, **kwargs):
    fh = real_open(file, mode, *args, **kwargs)
    if not any(c in mode for c in "wax+"):
        return fh
    path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fsdecode(os.path.realpath(file))
    inside = path.startswith(run_dir + os.sep) and "tfevents" not in path
    return Metered(fh, os.path.relpath(path, run_dir)) if inside else fh


def save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as fh:
        fh.write(safetensors.torch.save(tensors, metadata))


builtins.open = io.open = metered_open
rlprompt.runs.save_file = save_file
try:
    code = main(sys.argv[4:])
finally:
    with real_open(report, "w") as fh:
        fh.write(json.dumps(used))
sys.exit(code)
"""


def full_disk(work: Path, seed: int, updates: int = 12) -> dict:
    """The disk fills up at a random write of an RLPrompt run (ENOSPC from then on): the run must stop with one
    clear error naming the file, and ``--resume`` once there is space must finish it from the last complete
    checkpoint, ending where an uninterrupted run with the same seed ends."""
    rng = random.Random(seed)
    config = rlprompt_config(work, f"disk{seed}", "tiny-random")
    extra = [f"total_updates={updates}", f"seed={seed}"]

    def train_on_disk(run_dir: Path, budget: str) -> tuple[subprocess.CompletedProcess, dict]:
        report = work / f"{run_dir.name}.disk.json"
        out = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(run_dir), budget, str(report), "train",
                              str(config), "--run-dir", str(run_dir), *extra],
                             capture_output=True, text=True, env=ENV, timeout=900)
        return out, json.loads(report.read_text())

    reference_dir, run_dir = work / f"disk-reference{seed}", work / f"disk{seed}"
    reference, measured = train_on_disk(reference_dir, "inf")
    # the disk fills up during a write picked at random (every write alike) after the first checkpoint is
    # complete, part of the way through it
    sizes = [size for _, size in measured["writes"]]
    first_manifest = next(i for i, (name, _) in enumerate(measured["writes"]) if name.endswith("manifest.json"))
    failing = rng.randrange(first_manifest + 1, len(sizes))
    budget = sum(sizes[:failing]) + int(rng.random() * sizes[failing])
    first, disk = train_on_disk(run_dir, str(budget))
    error, resumed_from = last_line(first.stderr), newest_valid_checkpoint(run_dir)
    logged = {r["step"] for r in RunDir(run_dir, resume=True).read_metrics()}
    second = subprocess.run(train_cmd(config, run_dir, "--resume", *extra), capture_output=True, text=True, env=ENV,
                            timeout=900)
    clean_stop = (first.returncode == 1 and "Traceback" not in first.stderr and "No space left on device" in error
                  and error.startswith("rlprompt train: RunWriteError: cannot write "))
    keys = ("steps", "best_prompt", "best_dev_accuracy", "greedy_prompt")
    summaries = [json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
                 for d in (reference_dir, run_dir)]
    curves = [[(r["step"], r.get("charts/raw_reward"), r.get("charts/reward"))
               for r in RunDir(d, resume=True).read_metrics()] for d in (reference_dir, run_dir)]
    same = reference.returncode == 0 and all(summaries[0].get(k) == summaries[1].get(k) for k in keys) \
        and curves[0] == curves[1]
    # the scorer's in-memory cache of dev accuracies starts empty in the resumed process, so prompts scored
    # before the stop may be scored (and counted) again
    extra_queries = summaries[1].get("target_queries", 0) - summaries[0].get("target_queries", 0)
    return {"scenario": "disk full (ENOSPC on every run-dir write from a random one on), then --resume",
            "method": "rlprompt", "seed": seed, "faults_injected": disk["enospc"], "interruptions": 1,
            "disk_budget_bytes": budget, "run_bytes": measured["bytes"],
            "failing_write": measured["writes"][failing][0], "stopped_cleanly": clean_stop, "error": error,
            "resumed_from_step": resumed_from, "updates_redone": max(0, max(logged, default=0) - resumed_from),
            "same_result_as_uninterrupted": same, "extra_target_queries_after_resume": extra_queries,
            "survived": clean_stop and second.returncode == 0,
            "exit_code": second.returncode, **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


def markdown(result: dict) -> str:
    lines = ["# Reliability: faults injected into real `rlprompt train` runs", "",
             f"Command: `{result['command']}`", "",
             "Tiny random models on CPU; the OpenAI-compatible target is rlprompt.targets.faulty.FaultyEndpoint on "
             "loopback. *Data lost* = an update missing or logged twice in the finished run's metrics.jsonl, or a "
             "non-finite reward in it. *Redone* = updates computed again after a kill (at most one checkpoint "
             "interval each).", "", *summary(result["scenarios"]), "",
             "| scenario | method | seed | faults injected | survived | updates kept | redone | non-finite rewards | data lost |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in result["scenarios"]:
        lines.append(f"| {r['scenario']} | {r['method']} | {r['seed']} | {r['faults_injected']} | "
                     f"{'yes' if r['survived'] else 'NO'} | {r['logged_updates']} | {r.get('updates_redone', '-')} | "
                     f"{r['non_finite_rewards']} / {r['rewards_checked']} | {'YES' if r['data_lost'] else 'none'} |")
    t = result["totals"]
    lines += ["", f"Totals: {t['faults_injected']} faults injected over {t['runs']} runs; {t['survived']} runs survived; "
              f"runs with data lost: {t['runs_with_data_lost']}.", ""]
    kinds = {}
    for r in result["scenarios"]:
        for k, v in r.get("fault_kinds", {}).items():
            kinds[k] = kinds.get(k, 0) + v
    if kinds:
        lines += ["Transient faults by kind: " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in FAULTS) + ".", ""]
    disk = [r for r in result["scenarios"] if "disk_budget_bytes" in r]
    if disk:
        lines += [f"Disk full: {sum(r['stopped_cleanly'] for r in disk)} of {len(disk)} runs stopped with one error "
                  f"line and exit code 1 (e.g. `{disk[0]['error']}`); the disk filled during a write of "
                  + ", ".join(f"`{r['failing_write']}`" for r in disk)
                  + f"; --resume continued from steps {[r['resumed_from_step'] for r in disk]}. "
                  f"{sum(r['same_result_as_uninterrupted'] for r in disk)} of {len(disk)} resumed runs ended where an "
                  f"uninterrupted run with the same seed ends (same best and greedy prompts, dev accuracy and every "
                  f"logged reward); they used {[r['extra_target_queries_after_resume'] for r in disk]} more target "
                  f"queries (dev accuracies cached in memory before the stop are scored again).", ""]
    return "\n".join(lines)


def summary(rows: list[dict]) -> list[str]:
    """One table row per (scenario, method): runs, faults injected and survived, runs with data lost, command."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["method"]), []).append(r)
    lines = ["| scenario | method | runs | faults injected | faults survived | runs with data lost | command |",
             "|---|---|---:|---:|---:|---:|---|"]
    for (scenario, method), group in groups.items():
        injected = sum(r["faults_injected"] for r in group)
        survived = sum(r["faults_injected"] for r in group if r["survived"])
        lost = sum(r["data_lost"] for r in group)
        commands = sorted({r.get("command", "") for r in group})
        lines.append(f"| {scenario} | {method} | {len(group)} | {injected} | {survived} | {lost} | "
                     + "; ".join(f"`{c}`" for c in commands) + " |")
    return lines


# Every scenario by the name --scenario selects: a function of (work dir, seed, parsed arguments) -> one row.
SCENARIOS = {
    "transient": lambda work, seed, args: transient_faults(work, seed),
    "outage": lambda work, seed, args: outage(work, seed),
    "kill-rlprompt": lambda work, seed, args: kill_and_resume(work, seed, "rlprompt", args.kills),
    "corrupt-checkpoint": lambda work, seed, args: corrupt_checkpoint(work, seed),
    "kill-multiprompter": lambda work, seed, args: kill_and_resume(work, seed, "multiprompter", args.kills),
    "kill-prewrite": lambda work, seed, args: kill_and_resume(work, seed, "prewrite", args.kills),
    "full-disk": lambda work, seed, args: full_disk(work, seed),
}


def merge(old: list[dict], new: list[dict], command: str) -> list[dict]:
    """``old`` rows (each given ``command`` if it has none) without the (scenario, method) pairs ``new`` reran,
    then ``new``: rerunning one scenario replaces its rows and keeps every other."""
    rerun = {(r["scenario"], r["method"]) for r in new}
    return [{"command": command, **r} for r in old if (r["scenario"], r["method"]) not in rerun] + new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per scenario")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per kill -9 run")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable); its rows replace its old ones in --out")
    parser.add_argument("--out", default=str(ROOT / "results" / "reliability.json"))
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "experiments/reliability.py", *sys.argv[1:]])
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="rlprompt-reliability-") as tmp:
        work = Path(tmp)
        for seed in range(args.seeds):
            for name in args.scenario or SCENARIOS:
                scenarios.append({**SCENARIOS[name](work, seed, args), "command": command})
                print(json.dumps(scenarios[-1]), file=sys.stderr)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {"scenarios": [], "command": command}
    whole = command if args.scenario is None else previous.get("command", command)  # what made the whole table
    rows = merge(previous["scenarios"], scenarios, previous.get("command", command))
    totals = {"runs": len(rows), "faults_injected": sum(r["faults_injected"] for r in rows),
              "survived": sum(r["survived"] for r in rows), "runs_with_data_lost": sum(r["data_lost"] for r in rows)}
    result = {"scenarios": rows, "totals": totals, "command": whole}
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    fresh_ok = all(r["survived"] and not r["data_lost"] for r in scenarios)
    return 0 if fresh_ok else 1


if __name__ == "__main__":
    sys.exit(main())
