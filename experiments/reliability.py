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
- kill -9: the trainer (RLPrompt, MultiPrompter, PRewrite with trl's GRPOTrainer checkpoints, Sem-DPO on a small
  synthetic preferences file, PromptAgent with a tiny random optimizer LM) is SIGKILLed at random moments (several
  times per run, each after a newer checkpoint exists, the last after the final one) and resumed until it
  finishes; the resumed run must end exactly where an uninterrupted run of the same seed ends (compare_runs);
- corrupt checkpoint: the newest checkpoint's weights are truncated before `--resume`;
- hostile clients against `rlprompt serve` (in-process, a scripted enhancer over the tiny model's tokenizer,
  a fake upstream that drips, dies mid-stream or refuses the key): every bad kind of request from issue 17
  sent concurrently with good ones; each bad one must get its designed answer and every good one its 200
  with the right rewrite;
- full disk: from a random write on (cut part of the way through), every write into the run directory
  fails with ENOSPC (injected in a child process around `rlprompt train`, see FULL_DISK_CHILD); the run
  must stop with one clear error, and `--resume` (space freed) must finish from the last complete
  checkpoint with the result of an uninterrupted run.

"Data lost" counts logged updates missing or duplicated in the finished run's metrics.jsonl, a
non-finite reward anywhere in it, or a finished run without a loadable final checkpoint; for the service,
a good request lost, failed or answered with a wrong rewrite. Writes experiments/results/reliability.json
and reliability.md; with --scenarios, only those scenarios run and their rows replace the matching rows
(same scenario, method and seed) of the existing results, the other rows are kept.

    python experiments/reliability.py                                # about 25 minutes on 2 CPU cores
    python experiments/reliability.py --scenarios hostile_serve     # about a minute
    python experiments/reliability.py --scenarios full_disk --runs 5
    python experiments/reliability.py --scenarios kill_sem_dpo kill_promptagent
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
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
import traceback
from collections.abc import Callable
from pathlib import Path

import httpx

from rlprompt.cli import add_renamed_option
from rlprompt.runs import RunDir, write_atomic
from rlprompt.serve import create_app, running_in_background
from rlprompt.targets.faulty import FAULTS, FaultyEndpoint

ROOT = Path(__file__).resolve().parent
TOKENS = [" terrible", " great"]  # the built-in sentiment task's verbalizers
RLPROMPT = ("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\nprompt_length: 2\n"
            "n_envs: 4\nmlp_hidden: 16\nvalue_hidden: 8\ninput_batch_size: 4\nvocab: [{vocab}]\n"
            "eval_every: 5\ncheckpoint_every: 2\ntarget: {target}\ntarget_dtype: float32\n")
MULTIPROMPTER = ("method: multiprompter\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\n"
                 "n_agents: 2\nsegment_length: 1\nn_episodes: 4\nmlp_hidden: 16\nvalue_hidden: 8\ninput_batch_size: 4\n"
                 "vocab: [{vocab}]\neval_every: 5\ncheckpoint_every: 2\ntarget: tiny-random\ntarget_dtype: float32\n")
PREWRITE = ("method: prewrite\ntask: sentiment\nrewriter_model: tiny-random\ntarget: tiny-random\n"
            "target_dtype: float32\nnum_generations: 2\nmax_completion_length: 4\ninput_batch_size: 2\nnum_samples: 2\n"
            "dev_limit: 4\ncheckpoint_every: 1\nlora_target_modules: [q_proj]\n")
SEM_DPO = ("method: sem-dpo\ntask: sentiment\nrewriter_model: tiny-random\ntarget: tiny-random\ntarget_dtype: float32\n"
           "preferences: {preferences}\nbatch_size: 2\nlora_r: 2\nlora_alpha: 4\nlora_target_modules: [q_proj]\n"
           "max_length: 160\nmax_new_tokens: 6\nlearning_rate: 0.01\ncheckpoint_every: 1\n"
           "eval_originals: ['Is the review positive?']\n")
PROMPTAGENT = ("method: promptagent\ntask: sentiment\ntarget: tiny-random\ntarget_dtype: float32\n"
               "optimizer_model: tiny-random\noptimizer_model_dtype: float32\nmax_evaluations: 200\nexpand_width: 3\n"
               "depth_limit: 6\nerror_batch_size: 4\nmax_errors: 2\ngradient_tokens: 8\nrevision_tokens: 8\n"
               "prefill: true\nparse_fallback: true\neval_test: false\n")
ENV = {**os.environ, "TQDM_DISABLE": "1"}
VOCAB = ", ".join(map(str, range(300, 364)))  # the policies' token ids


def train_cmd(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlprompt.cli", "train", str(config), "--run-dir", str(run_dir), *extra]


def train(config: Path, run_dir: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``rlprompt train CONFIG --run-dir RUN_DIR EXTRA...`` run to its end, its output captured."""
    return subprocess.run(train_cmd(config, run_dir, *extra), capture_output=True, text=True, env=ENV, timeout=timeout)


def endpoint_target(endpoint: FaultyEndpoint, max_retries: int) -> str:
    """The target spec of the fake OpenAI-compatible ``endpoint`` with short timeouts and backoff."""
    return f"openai:{endpoint.url}:fake?timeout=5&max_retries={max_retries}&backoff=0.01"


def write_config(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def rlprompt_config(folder: Path, name: str, target: str) -> Path:
    return write_config(folder, name, RLPROMPT.format(vocab=VOCAB, target=target))


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
        config = rlprompt_config(work, f"transient{seed}", endpoint_target(endpoint, max_retries=10))
        run_dir = work / f"transient{seed}"
        out = train(config, run_dir, f"steps={updates}", f"seed={seed}")
        injected = dict(endpoint.injected)
    return {"description": "transient target faults (30% of requests)", "method": "rlprompt", "seed": seed,
            "faults_injected": sum(injected.values()), "fault_kinds": injected, "interruptions": 0,
            "survived": out.returncode == 0, "exit_code": out.returncode, "error": last_line(out.stderr),
            **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


def outage(work: Path, seed: int, updates: int = 10) -> dict:
    with FaultyEndpoint(TOKENS, outage_after=100 + 16 * seed) as endpoint:
        config = rlprompt_config(work, f"outage{seed}", endpoint_target(endpoint, max_retries=2))
        run_dir = work / f"outage{seed}"
        first = train(config, run_dir, f"steps={updates}", f"seed={seed}")
        error = last_line(first.stderr)
        endpoint.outage(False)
        second = train(config, run_dir, "--resume", f"steps={updates}", f"seed={seed}")
        injected = endpoint.injected["outage"]
    clean_stop = first.returncode == 1 and "TargetError" in error and "503" in error
    return {"description": "target outage (503 until lifted), then --resume", "method": "rlprompt", "seed": seed,
            "faults_injected": injected, "interruptions": 1, "stopped_cleanly": clean_stop, "error": error,
            "survived": clean_stop and second.returncode == 0, "exit_code": second.returncode,
            **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


def write_preferences(folder: Path) -> Path:
    """A small synthetic preferences JSONL in trl's conversational format (as build_preferences writes it): one
    pair per default sentiment original, the chosen rewrite naming the labels, the rejected one vague."""
    from rlprompt.policies.dpo import SemDPOConfig
    from rlprompt.policies.preferences import DEFAULT_ORIGINALS, meta_messages

    cfg = SemDPOConfig()
    rows = [{"prompt": meta_messages(cfg, original),
             "chosen": [{"role": "assistant", "content": f"{original} Answer negative or positive."}],
             "rejected": [{"role": "assistant", "content": "Say something."}],
             "original": original, "chosen_reward": 0.5, "rejected_reward": 0.0}
            for original in DEFAULT_ORIGINALS["sentiment"]]
    path = folder / "preferences.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# method -> (config text, its format fields, updates of one run, the override setting them, reward keys audited;
# the first key marks a training update's record)
KILL_RUNS: dict[str, tuple[str, Callable[[Path], dict], int, str, tuple[str, ...]]] = {
    "rlprompt": (RLPROMPT, lambda work: {"vocab": VOCAB, "target": "tiny-random"}, 60, "steps",
                 ("charts/raw_reward", "charts/reward")),
    "multiprompter": (MULTIPROMPTER, lambda work: {"vocab": VOCAB}, 60, "steps",
                      ("charts/raw_reward", "charts/reward")),
    "prewrite": (PREWRITE, lambda work: {}, 8, "steps", ("charts/reward",)),
    "sem-dpo": (SEM_DPO, lambda work: {"preferences": write_preferences(work)}, 10, "steps",
                ("losses/loss", "charts/rewards_chosen", "charts/rewards_rejected")),
    "promptagent": (PROMPTAGENT, lambda work: {}, 16, "steps", ("charts/best_reward", "charts/final_reward")),
}


# What differs between two runs of one seed by design rather than by what they learned: wall-clock figures,
# target queries (a resumed process starts with an empty in-memory score cache) and the run directory.
VOLATILE = re.compile(r"seconds|runtime|per_second|_time$|wall|target_queries|^run_dir$")
# transformers' Trainer logs, when train() returns, the mean loss of the steps that process trained (its running
# sum starts at 0 on a resume, transformers.Trainer._finalize_training), so after a resume it averages fewer
# steps: reported apart, not counted as a difference.
PER_PROCESS = {"losses/train_loss"}


def final_tensors(run_dir: Path) -> dict[str, Path]:
    """The safetensors files (weights, and the optimizer state where a RunDir checkpoint keeps it) of the run's
    newest checkpoint, by name."""
    found = checkpoints(run_dir)
    return {p.name: p for p in found[max(found)].glob("*.safetensors")} if found else {}


def flat_summary(summary: dict) -> dict:
    """A run's summary.json with its ``details`` lifted to the top level as ``details.<key>`` (so VOLATILE and
    the comparison see every key)."""
    return {**{k: v for k, v in summary.items() if k != "details"},
            **{f"details.{k}": v for k, v in summary.get("details", {}).items()}}


def compare_runs(reference: Path, run: Path) -> dict:
    """How the interrupted ``run`` ended against the uninterrupted ``reference`` of the same seed: summary.json,
    prompt.txt, tree.json (PromptAgent), every logged metric of every record and the final checkpoint's tensors,
    all compared exactly (VOLATILE keys aside). ``differences`` names each mismatch (the first 20);
    ``per_process_differences`` the PER_PROCESS values that differ."""
    import torch
    from safetensors.torch import load_file

    differences, per_process = [], []
    for name in ("summary.json", "prompt.txt", "tree.json"):
        texts = [(d / name).read_text(encoding="utf-8") if (d / name).is_file() else None for d in (reference, run)]
        if name == "summary.json" and None not in texts:
            a, b = ({k: v for k, v in flat_summary(json.loads(t)).items() if not VOLATILE.search(k)} for t in texts)
            differences += [f"summary.json {k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
                            if a.get(k) != b.get(k)]
        elif texts[0] != texts[1]:
            differences.append(f"{name} differs")
    records = [RunDir(d, resume=True).read_metrics() for d in (reference, run)]
    steps = [[r["step"] for r in rs] for rs in records]
    if steps[0] != steps[1]:
        differences.append(f"metrics.jsonl records by step {steps[0]} vs {steps[1]}")
    for ra, rb in zip(*records):
        for key in sorted((ra.keys() | rb.keys()) - {"step"}):
            if not VOLATILE.search(key) and ra.get(key) != rb.get(key):
                found = f"step {ra['step']} {key}: {ra.get(key)!r} vs {rb.get(key)!r}"
                (per_process if key in PER_PROCESS else differences).append(found)
    weights = [final_tensors(d) for d in (reference, run)]
    if weights[0].keys() != weights[1].keys():
        differences.append(f"final checkpoint files {sorted(weights[0])} vs {sorted(weights[1])}")
    for name in sorted(weights[0].keys() & weights[1].keys()):
        a, b = (load_file(str(w[name])) for w in weights)
        changed = [k for k in a.keys() | b.keys() if k not in a or k not in b or a[k].dtype != b[k].dtype
                   or not torch.equal(a[k], b[k])]
        if changed:
            differences.append(f"final {name}: {len(changed)} of {len(a)} tensors differ")
    return {"same_result_as_uninterrupted": not differences, "differences": differences[:20],
            "differences_count": len(differences), "per_process_differences": per_process}


def kill_and_resume(work: Path, seed: int, method: str, kills: int) -> dict:
    """Train once uninterrupted, then again with the same seed, SIGKILLed up to ``kills`` times, each at a random
    moment after a checkpoint newer than the one it started from exists (the last one after the final checkpoint),
    and resumed each time; audit the resumed run and compare it with the uninterrupted one (the run survived when
    it finished with the same result)."""
    rng = random.Random(seed)
    template, fields, updates, budget, reward_keys = KILL_RUNS[method]
    config = write_config(work, f"kill-{method}{seed}", template.format(**fields(work)))
    extra = [f"{budget}={updates}", f"seed={seed}"]
    reference_dir, run_dir = work / f"kill-{method}{seed}-reference", work / f"kill-{method}{seed}"
    reference = train(config, reference_dir, *extra, timeout=1800)
    kill_steps, redone, done, error = [], 0, False, ""
    for attempt in range(kills + 1):
        proc = subprocess.Popen(train_cmd(config, run_dir, *(["--resume"] if attempt else []), *extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        if attempt < kills:
            # the last kill lands after the final checkpoint (while the run evaluates and writes its summary),
            # the window where a resume must not train again; the others after any newer checkpoint
            start = updates - 1 if attempt == kills - 1 else newest_valid_checkpoint(run_dir)
            try:
                wait_for(lambda: newest_valid_checkpoint(run_dir) > start, proc, 600)
                time.sleep(rng.uniform(0.0, 1.5))
                proc.send_signal(signal.SIGKILL)  # a no-op when the run has just ended by itself
            except RuntimeError:  # the run ended before a newer checkpoint: nothing left to kill
                pass
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != -signal.SIGKILL:
            done, error = proc.returncode == 0, last_line(err)
            break
        kill_steps.append(newest_valid_checkpoint(run_dir))
        logged = {r["step"] for r in RunDir(run_dir, resume=True).read_metrics()}
        redone += max(0, max(logged, default=0) - kill_steps[-1])
    if reference.returncode == 0 and done:
        compared = compare_runs(reference_dir, run_dir)
    else:
        compared = {"same_result_as_uninterrupted": False, "differences": [
            f"reference exit {reference.returncode}: {last_line(reference.stderr)}; run exit {proc.returncode}"]}
    return {"description": f"kill -9 at random moments ({kills}x), then --resume; compared with an uninterrupted run",
            "method": method, "seed": seed, "faults_injected": len(kill_steps), "interruptions": len(kill_steps),
            "survived": done and compared["same_result_as_uninterrupted"], "exit_code": proc.returncode,
            "error": error, "killed_after_checkpoint_steps": kill_steps,
            "kills_after_final_checkpoint": sum(step >= updates for step in kill_steps), "updates_redone": redone,
            **compared, **audit(run_dir, updates, reward_keys)}


def corrupt_checkpoint(work: Path, seed: int) -> dict:
    config = rlprompt_config(work, f"corrupt{seed}", "tiny-random")
    run_dir = work / f"corrupt{seed}"
    first = train(config, run_dir, "steps=6", f"seed={seed}")
    newest = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    second = train(config, run_dir, "--resume", "steps=10", f"seed={seed}")
    return {"description": "newest checkpoint truncated, then --resume", "method": "rlprompt", "seed": seed,
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
    extra = [f"steps={updates}", f"seed={seed}"]

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
    second = train(config, run_dir, "--resume", *extra)
    clean_stop = (first.returncode == 1 and "Traceback" not in first.stderr and "No space left on device" in error
                  and error.startswith("rlprompt train: RunWriteError: cannot write "))
    compared = compare_runs(reference_dir, run_dir) if reference.returncode == 0 and second.returncode == 0 else {
        "same_result_as_uninterrupted": False, "differences": [f"reference exit {reference.returncode}, resumed run "
                                                               f"exit {second.returncode}"]}
    # the scorer's in-memory cache of dev accuracies starts empty in the resumed process, so prompts scored
    # before the stop may be scored (and counted) again
    summaries = [json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
                 for d in (reference_dir, run_dir)]
    extra_queries = summaries[1].get("target_queries", 0) - summaries[0].get("target_queries", 0)
    return {"description": "disk full (ENOSPC on every run-dir write from a random one on), then --resume",
            "method": "rlprompt", "seed": seed, "faults_injected": disk["enospc"], "interruptions": 1,
            "disk_budget_bytes": budget, "run_bytes": measured["bytes"],
            "failing_write": measured["writes"][failing][0], "stopped_cleanly": clean_stop, "error": error,
            "resumed_from_step": resumed_from, "updates_redone": max(0, max(logged, default=0) - resumed_from),
            **compared, "extra_target_queries_after_resume": extra_queries,
            "survived": clean_stop and second.returncode == 0 and compared["same_result_as_uninterrupted"],
            "exit_code": second.returncode, **audit(run_dir, updates, ("charts/raw_reward", "charts/reward"))}


# -- hostile clients against the enhancer service ----------------------------------------------------------
SERVE_KEY, UPSTREAM_KEY = "client-key", "upstream-key"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


class ScriptedEnhancer:
    """The tiny random PromptEnhancer's tokenizer and limits (``count_tokens``; ``max_input_tokens``: 512
    positions minus 8 new tokens) with a scripted rewrite, ``better: <PROMPT>``, so that every good answer can be
    checked (the tiny random model's own rewrites are blank). Each call tokenizes its prompts like the real
    one (a lone surrogate would break it the same way), costs 0.2 ms per padded token, and fails on the prompt
    ``poison`` (a request that passes validation but breaks the model)."""

    def __init__(self) -> None:
        from rlprompt.enhancer import PromptEnhancer
        from rlprompt.models import load_model

        model, tokenizer = load_model("tiny-random")
        self.model = PromptEnhancer(model, tokenizer, base_model="tiny-random", meta_prompt="Rewrite: {instruction}",
                                    max_new_tokens=8)
        self.count_tokens, self.max_input_tokens = self.model.count_tokens, self.model.max_input_tokens

    def enhance(self, prompts: list[str]) -> list[str]:
        tokens = [self.count_tokens(p) for p in prompts]
        time.sleep(0.0002 * len(prompts) * max(tokens))
        if "poison" in prompts:
            raise RuntimeError("the scripted enhancer breaks on 'poison'")
        return [f"better: {p.upper()}" for p in prompts]


def hostile_upstream():
    """An OpenAI-compatible upstream that needs ``UPSTREAM_KEY`` and behaves by model: ``echo`` answers with
    the user content it got (SSE when ``stream`` is true), ``drip`` sends one byte per 0.2 s, ``die`` breaks off
    mid-stream, ``revoked`` answers 401."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def chat(request):
        body = await request.json()
        model = body.get("model")
        if model == "revoked" or request.headers.get("authorization") != f"Bearer {UPSTREAM_KEY}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        content = body["messages"][-1]["content"]

        async def drip():
            for _ in range(60):
                yield b" "
                await asyncio.sleep(0.2)

        async def die():
            yield b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
            raise ConnectionAbortedError("the upstream dies mid-stream")

        async def events():
            yield f"data: {json.dumps({'choices': [{'delta': {'content': content}}]})}\n\ndata: [DONE]\n\n"

        if model in ("drip", "die"):
            return StreamingResponse(drip() if model == "drip" else die(), media_type="text/event-stream")
        if body.get("stream") is True:
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"object": "chat.completion",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def chat_body(content, model: str = "echo", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_error(response: httpx.Response) -> str | None:
    """The ``error.code`` of the last SSE event of ``response``, if it is an error event."""
    last = response.text.strip().splitlines()[-1] if response.text.strip() else ""
    try:
        return json.loads(last.removeprefix("data: "))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


JSON_HEADERS = {"Authorization": f"Bearer {SERVE_KEY}", "Content-Type": "application/json"}
# kind -> (method, path, request keywords, the designed answer: a status and a check of the response)
BAD_KINDS = {
    "lone surrogate in a prompt": ("POST", "/v1/enhance", {"content": b'{"prompt": "x\\ud800y"}'}, 422,
                                   lambda r: error_code(r) == "invalid_text"),
    "prompt over the token limit": ("POST", "/v1/enhance", {"json": {"prompt": "\U0001F600" * 2000}}, 422,
                                    lambda r: error_code(r) == "too_many_tokens"),
    "prompt that crashes the enhancer": ("POST", "/v1/enhance", {"json": {"prompt": "poison"}}, 500,
                                         lambda r: error_code(r) == "enhancer_failed" and "poison" not in r.text),
    "upstream dripping 1 byte / 0.2 s": ("POST", "/v1/chat/completions", {"json": chat_body("hi", "drip")}, 504,
                                         lambda r: error_code(r) == "upstream_timeout"),
    "upstream dying mid-stream": ("POST", "/v1/chat/completions", {"json": chat_body("hi", "die", stream=True)},
                                  200, lambda r: sse_error(r) == "upstream_stream_broken"),
    "upstream refusing the key (401)": ("POST", "/v1/chat/completions", {"json": chat_body("hi", "revoked")}, 502,
                                       lambda r: error_code(r) == "upstream_auth"),
    "multimodal [text, image_url]": ("POST", "/v1/chat/completions",
                                     {"json": chat_body([{"type": "text", "text": "look"}, IMAGE])}, 200,
                                     lambda r: r.json()["choices"][0]["message"]["content"]
                                     == [{"type": "text", "text": "better: LOOK"}, IMAGE]),
    '"stream": "no"': ("POST", "/v1/chat/completions", {"json": chat_body("hi", stream="no")}, 200,
                       lambda r: r.json()["choices"][0]["message"]["content"] == "better: HI"),
    "JSON nested 50,000 deep": ("POST", "/v1/enhance", {"content": b"[" * 50_000 + b"]" * 50_000}, 400,
                                lambda r: error_code(r) == "invalid_json"),
    "NaN in the JSON": ("POST", "/v1/enhance", {"content": b'{"prompt": NaN}'}, 400,
                        lambda r: error_code(r) == "invalid_json"),
    "text/plain body": ("POST", "/v1/enhance", {"content": b'{"prompt": "hi"}',
                                                "headers": {"Authorization": f"Bearer {SERVE_KEY}",
                                                            "Content-Type": "text/plain"}}, 415,
                        lambda r: error_code(r) == "unsupported_media_type"),
    "body over the size limit": ("POST", "/v1/enhance", {"content": b'{"prompt": "' + b"x" * 200_000 + b'"}'}, 413,
                                 lambda r: error_code(r) == "body_too_large"),
    "wrong API key": ("POST", "/v1/enhance", {"json": {"prompt": "hi"}, "headers": {"Authorization": "Bearer no"}},
                      401, lambda r: error_code(r) == 401),
    "unknown route": ("GET", "/v1/nope", {}, 404, lambda r: error_code(r) == "not_found"),
    "wrong method": ("GET", "/v1/enhance", {}, 405, lambda r: "error" in r.json()),
    "/docs": ("GET", "/docs", {}, 404, lambda r: "error" in r.json()),
}
HALF_SENT = "body half-sent, then silence"


async def half_sent_body(base: str) -> int:
    """Send the headers and part of a body, then nothing: the status the server answers before hanging up."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/enhance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SERVE_KEY}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return int(data.split()[1]) if data else 0


def good_requests(seed: int, n: int) -> list[tuple[str, dict, Callable[[httpx.Response], bool]]]:
    """``n`` good requests of four shapes, each with the check of its right answer."""
    good = []
    for i in range(n):
        text = f"good request {seed}-{i}"
        want = f"better: {text.upper()}"
        shape = i % 4
        if shape == 0:
            good.append(("/v1/enhance", {"json": {"prompt": text}}, lambda r, w=want: r.json() == {"enhanced": w}))
        elif shape == 1:
            good.append(("/v1/enhance", {"json": {"prompts": [text, "hi"]}},
                         lambda r, w=want: r.json() == {"enhanced": [w, "better: HI"]}))
        elif shape == 2:
            good.append(("/v1/chat/completions", {"json": chat_body(text)},
                         lambda r, w=want: r.json()["choices"][0]["message"]["content"] == w))
        else:
            good.append(("/v1/chat/completions", {"json": chat_body(text, stream=True)},
                         lambda r, w=want: json.dumps(w) in r.text and sse_error(r) is None))
    return good


def hostile_clients(seed: int, copies: int = 3, n_good: int = 120, window: float = 4.0) -> dict:
    """``copies`` of every bad kind and ``n_good`` good requests, all started at seeded random moments within
    ``window`` seconds against one server; per kind the statuses, and every good request's answer checked."""
    rng = random.Random(seed)
    enhancer = ScriptedEnhancer()
    uvicorn_records: list[logging.LogRecord] = []
    service_records: list[logging.LogRecord] = []  # the service's own log lines, counted instead of printed
    uvicorn_log, service_log = logging.getLogger("uvicorn.error"), logging.getLogger("rlprompt.serve")
    handlers = [logging.Handler(), logging.Handler()]
    handlers[0].emit, handlers[1].emit = uvicorn_records.append, service_records.append
    service_log.addHandler(handlers[1])
    service_log.propagate = False

    async def storm(base: str) -> tuple[list, list, list]:
        async def at(delay: float, coro):
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                return await coro, time.monotonic() - started
            except (httpx.HTTPError, OSError) as err:  # a request the server dropped: counted as lost
                return err, time.monotonic() - started

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=base, headers=JSON_HEADERS, timeout=60, limits=limits) as client:
            bad = [(kind, at(rng.uniform(0, window), client.request(method, path, **kwargs)))
                   for kind, (method, path, kwargs, _, _) in BAD_KINDS.items() for _ in range(copies)]
            bad += [(HALF_SENT, at(rng.uniform(0, window), half_sent_body(base))) for _ in range(copies)]
            good = good_requests(seed, n_good)
            good_tasks = [at(rng.uniform(0, window), client.post(path, **kwargs)) for path, kwargs, _ in good]
            bad_answers = await asyncio.gather(*(task for _, task in bad))
            good_answers = await asyncio.gather(*good_tasks)
            health = await client.get("/health")
        return [(kind, *answer) for (kind, _), answer in zip(bad, bad_answers)], \
            [(check, *answer) for (_, _, check), answer in zip(good, good_answers)], health

    try:
        with running_in_background(hostile_upstream(), log_level="critical") as up:
            app = create_app(enhancer, upstream=f"{up}/v1", api_key=SERVE_KEY, upstream_api_key=UPSTREAM_KEY,
                             max_body_bytes=128_000, body_timeout=2.0, upstream_timeout=2.0, batch_window_ms=10)
            with running_in_background(app) as base:
                uvicorn_log.addHandler(handlers[0])  # after start-up: uvicorn's log config drops earlier handlers
                bad, good, health = asyncio.run(storm(base))
    finally:
        uvicorn_log.removeHandler(handlers[0])
        service_log.removeHandler(handlers[1])
        service_log.propagate = True

    kinds: dict[str, dict] = {}
    for kind, answer, _ in bad:
        status = answer if isinstance(answer, int) else getattr(answer, "status_code", type(answer).__name__)
        if kind == HALF_SENT:
            expected, as_designed = 408, answer == 408
        else:
            expected, check = BAD_KINDS[kind][3], BAD_KINDS[kind][4]
            as_designed = isinstance(answer, httpx.Response) and status == expected and check(answer)
        entry = kinds.setdefault(kind, {"expected": expected, "statuses": collections.Counter(), "as_designed": 0})
        entry["statuses"][str(status)] += 1
        entry["as_designed"] += as_designed
    lost = [i for i, (check, answer, _) in enumerate(good)
            if not (isinstance(answer, httpx.Response) and answer.status_code == 200 and check(answer))]
    latencies = sorted(seconds for _, _, seconds in good)
    tracebacks = sum(rec.exc_info is not None and "dies mid-stream" not in "".join(traceback.format_exception(
        *rec.exc_info)) for rec in uvicorn_records)  # the scripted upstream's own death is logged there too
    survived = sum(k["as_designed"] for k in kinds.values())
    return {"description": "hostile clients against rlprompt serve (every bad kind of issue 17, concurrently)",
            "method": "serve", "seed": seed, "faults_injected": len(bad), "faults_survived": survived,
            "fault_kinds": {kind: {**k, "statuses": dict(k["statuses"])} for kind, k in kinds.items()},
            "good_requests": len(good), "good_requests_lost": len(lost),
            "good_latency_s": {"median": round(latencies[len(latencies) // 2], 3), "max": round(latencies[-1], 3)},
            "server_tracebacks": tracebacks, "healthy_after": health.status_code == 200,
            "service_log_lines": dict(collections.Counter(rec.levelname for rec in service_records)),
            "survived": survived == len(bad) and not lost and health.status_code == 200 and not tracebacks,
            "data_lost": bool(lost)}


def faults_survived(row: dict) -> int:
    """For the service, the bad requests answered as designed; for a training run, all its faults when it finished
    with its data intact, else none."""
    return row.get("faults_survived", row["faults_injected"] if row["survived"] and not row["data_lost"] else 0)


def summary(rows: list[dict]) -> list[str]:
    """One table row per scenario (issue 17's done-when): runs, faults injected and survived, good requests lost
    ("-" where no service ran), runs with data lost, and the command(s) that made its rows."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["scenario"], []).append(r)
    lines = ["| scenario | what | runs | faults injected | faults survived | good requests lost | runs with data lost "
             "| command |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for name in sorted(groups, key=lambda n: list(SCENARIOS).index(n) if n in SCENARIOS else len(SCENARIOS)):
        group = groups[name]
        served = [r for r in group if "good_requests" in r]
        lost = (f"{sum(r['good_requests_lost'] for r in served)} / {sum(r['good_requests'] for r in served)}"
                if served else "-")
        commands = "; ".join(f"`{c}`" for c in sorted({r["command"] for r in group}))
        lines.append(f"| {name} | {group[0]['description']} ({group[0]['method']}) | {len(group)} | "
                     f"{sum(r['faults_injected'] for r in group)} | {sum(map(faults_survived, group))} | {lost} | "
                     f"{sum(r['data_lost'] for r in group)} | {commands} |")
    return lines


def kill_paragraphs(rows: list[dict]) -> list[str]:
    """Per kill -9 scenario: kills landed (and how many after the final checkpoint), resumed runs that ended where
    the uninterrupted run ends, and what differed where one did not."""
    lines = []
    for name in SCENARIOS:
        group = [r for r in rows if r["scenario"] == name and "killed_after_checkpoint_steps" in r]
        if not group:
            continue
        same = [r for r in group if r["same_result_as_uninterrupted"]]
        lines.append(f"- {name}: {sum(r['faults_injected'] for r in group)} kills over {len(group)} runs "
                     f"({sum(r['kills_after_final_checkpoint'] for r in group)} after the final checkpoint, during "
                     f"the run's last steps: final evaluation, summary); {len(same)} of {len(group)} resumed runs "
                     "ended where the uninterrupted run of the same seed ends (summary.json, prompt.txt, "
                     "PromptAgent's tree.json, every logged metric and the final checkpoint's tensors, compared "
                     "exactly).")
        for r in group:
            if r["same_result_as_uninterrupted"]:
                continue
            steps = r["killed_after_checkpoint_steps"]
            lines.append(f"  - seed {r['seed']} (killed after checkpoints {steps}): "
                         f"{r.get('differences_count', len(r['differences']))} differences, first "
                         + "; ".join(f"`{d[:160]}`" for d in r["differences"][:3]) + ".")
            if r["kills_after_final_checkpoint"] and r["logged_updates"] > max(steps):
                lines[-1] += (f" Resumed from its final checkpoint (step {max(steps)}), it trained "
                              f"{r['logged_updates'] - max(steps)} more step(s): transformers' Trainer, resumed at "
                              "max_steps in the middle of an epoch, skips the epoch's trained batches and takes a "
                              "step before it checks max_steps (DefaultFlowCallback.on_step_end).")
        per_process = [r for r in group if r.get("per_process_differences")]
        if per_process:
            lines.append(f"  - In {len(per_process)} runs the end-of-run `losses/train_loss` differs (e.g. "
                         f"`{per_process[0]['per_process_differences'][0]}`): transformers' Trainer averages it over "
                         "the steps of the last process only (its running sum restarts on a resume); every per-step "
                         "loss is compared and counted above.")
    return [*lines, ""] if lines else []


def markdown(result: dict) -> str:
    """The results page: the per-scenario table, totals, the per-run table, then what each scenario saw."""
    t = result["totals"]
    lines = ["# Reliability: faults injected into real `rlprompt train` runs, and hostile clients of `rlprompt serve`",
             "",
             "Tiny random models on CPU; the OpenAI-compatible target is rlprompt.targets.faulty.FaultyEndpoint on "
             "loopback. *Faults survived*: for a training run, all its faults when it finished with its data intact; "
             "for the service, the bad requests answered as designed. *Good requests lost*: a good request to the "
             "service lost, failed or answered with a wrong rewrite (\"-\": no service in that scenario). *Data lost* "
             "= an update missing or logged twice in the finished run's metrics.jsonl, a non-finite reward in it, or a "
             "good request lost. *Redone* = updates computed again after a kill (at most one checkpoint interval "
             "each).", "", *summary(result["scenarios"]), "",
             f"Totals: {t['faults_injected']} faults injected over {t['runs']} runs; {t['faults_survived']} survived; "
             f"{t['survived']} runs survived; good requests lost: {t['good_requests_lost']}; runs with data lost: "
             f"{t['runs_with_data_lost']}.", "", "Every run:", "",
             "| scenario | method | seed | faults injected | faults survived | good requests lost | survived | "
             "updates kept | redone | non-finite rewards | same as uninterrupted | data lost |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for r in result["scenarios"]:
        lost = f"{r['good_requests_lost']} / {r['good_requests']}" if "good_requests" in r else "-"
        rewards = f"{r['non_finite_rewards']} / {r['rewards_checked']}" if "rewards_checked" in r else "-"
        same = {True: "yes", False: "NO", None: "-"}[r.get("same_result_as_uninterrupted")]
        lines.append(f"| {r['scenario']} | {r['method']} | {r['seed']} | {r['faults_injected']} | "
                     f"{faults_survived(r)} | {lost} | {'yes' if r['survived'] else 'NO'} | "
                     f"{r.get('logged_updates', '-')} | {r.get('updates_redone', '-')} | {rewards} | {same} | "
                     f"{'YES' if r['data_lost'] else 'none'} |")
    lines.append("")
    kinds: dict[str, int] = {}
    for r in result["scenarios"]:
        if r["scenario"] == "transient":
            for k, v in r["fault_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
    if kinds:
        lines += ["Transient faults by kind: " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in FAULTS) + ".", ""]
    lines += kill_paragraphs(result["scenarios"])
    disk = [r for r in result["scenarios"] if r["scenario"] == "full_disk"]
    if disk:
        lines += [f"Disk full: {sum(r['stopped_cleanly'] for r in disk)} of {len(disk)} runs stopped with one error "
                  f"line and exit code 1 (e.g. `{disk[0]['error']}`); the disk filled during a write of "
                  + ", ".join(f"`{r['failing_write']}`" for r in disk)
                  + f"; --resume continued from steps {[r['resumed_from_step'] for r in disk]}. "
                  f"{sum(r['same_result_as_uninterrupted'] for r in disk)} of {len(disk)} resumed runs ended where an "
                  "uninterrupted run with the same seed ends (the same summary, every logged metric and the final "
                  f"checkpoint's tensors); they used {[r['extra_target_queries_after_resume'] for r in disk]} more "
                  "target queries (dev accuracies cached in memory before the stop are scored again).", ""]
    served = [r for r in result["scenarios"] if r["scenario"] == "hostile_serve"]
    for r in served:
        lines.append(f"- Hostile clients, seed {r['seed']}: {r['good_requests']} good requests, "
                     f"{r['good_requests_lost']} lost (latency median {r['good_latency_s']['median']} s, "
                     f"max {r['good_latency_s']['max']} s); "
                     f"uvicorn tracebacks {r['server_tracebacks']}; the service's log lines {r['service_log_lines']}; "
                     f"healthy after: {'yes' if r['healthy_after'] else 'NO'}.")
    if served:
        lines += ["", f"Bad requests by kind, over the {len(served)} hostile-client runs:", "",
                  "| bad request | designed answer | statuses seen | as designed |", "|---|---:|---|---:|"]
        for kind, first in served[0]["fault_kinds"].items():
            statuses: collections.Counter[str] = collections.Counter()
            for r in served:
                statuses.update(r["fault_kinds"][kind]["statuses"])
            designed = sum(r["fault_kinds"][kind]["as_designed"] for r in served)
            seen = ", ".join(f"{code} x{n}" for code, n in sorted(statuses.items()))
            lines.append(f"| {kind} | {first['expected']} | {seen} | {designed} / {sum(statuses.values())} |")
        lines.append("")
    return "\n".join(lines)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with those of the same scenario, method and seed replaced by ``new`` ones; rows of scenarios
    that did not run are kept as they were, new keys are appended."""
    def key(row: dict) -> tuple:
        return row["scenario"], row["method"], row["seed"]

    fresh = {key(r): r for r in new}
    kept = [fresh.pop(key(r), r) for r in old]
    return kept + list(fresh.values())


# Every scenario by the name --scenarios selects: a function of (work dir, seed, parsed arguments) -> one row.
SCENARIOS: dict[str, Callable[[Path, int, argparse.Namespace], dict]] = {
    "transient": lambda work, seed, args: transient_faults(work, seed),
    "outage": lambda work, seed, args: outage(work, seed),
    "kill_rlprompt": lambda work, seed, args: kill_and_resume(work, seed, "rlprompt", args.kills),
    "corrupt_checkpoint": lambda work, seed, args: corrupt_checkpoint(work, seed),
    "kill_multiprompter": lambda work, seed, args: kill_and_resume(work, seed, "multiprompter", args.kills),
    "kill_prewrite": lambda work, seed, args: kill_and_resume(work, seed, "prewrite", args.kills),
    "kill_sem_dpo": lambda work, seed, args: kill_and_resume(work, seed, "sem-dpo", args.kills),
    "kill_promptagent": lambda work, seed, args: kill_and_resume(work, seed, "promptagent", args.kills),
    "hostile_serve": lambda work, seed, args: hostile_clients(seed),
    "full_disk": lambda work, seed, args: full_disk(work, seed),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (run i uses seed i)")
    add_renamed_option(parser, "--seeds", "--runs", type=int)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per kill -9 run")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS), metavar="NAME",
                        help=f"scenarios to run, of {', '.join(SCENARIOS)} (default all); their rows replace the "
                             "matching ones (same scenario, method and seed) in --out, the others are kept")
    parser.add_argument("--out", default=str(ROOT / "results" / "reliability.json"))
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "experiments/reliability.py", *sys.argv[1:]])
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="rlprompt-reliability-") as tmp:
        for seed in range(args.runs):
            for name in args.scenarios:
                scenarios.append({"scenario": name, **SCENARIOS[name](Path(tmp), seed, args), "command": command})
                print(json.dumps(scenarios[-1]), file=sys.stderr)
    out = Path(args.out)
    partial = set(args.scenarios) != set(SCENARIOS)
    previous = json.loads(out.read_text(encoding="utf-8"))["scenarios"] if out.is_file() and partial else []
    rows = merge(previous, scenarios)
    totals = {"runs": len(rows), "faults_injected": sum(r["faults_injected"] for r in rows),
              "faults_survived": sum(map(faults_survived, rows)), "survived": sum(r["survived"] for r in rows),
              "good_requests_lost": sum(r.get("good_requests_lost", 0) for r in rows),
              "runs_with_data_lost": sum(r["data_lost"] for r in rows)}
    result = {"scenarios": rows, "totals": totals, "command": command}
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0 if all(r["survived"] and not r["data_lost"] for r in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
