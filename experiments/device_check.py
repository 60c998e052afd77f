"""Device check: does everything run on this device, how fast does the target score, and does it agree with the CPU?

One command for a machine lent with an accelerator (``bash experiments/device_check.sh run`` wraps it after
installing the wheels carried with the tree); with ``--device cpu`` it runs the same steps on the CPU, and the
results say so. Steps, each timed and recorded even when it fails:

1. ``bench_target``: ``experiments/bench_target.py`` on the device (naive scoring vs shared-prefix KV reuse,
   sequences/s, tokens/s, fraction of the measured matmul peak);
2. ``agreement``: 256 sequences (8 random 5-token prompts x 32 SST-2 train sentences, or the built-in sentiment
   task when the SST-2 data is absent) scored by the target on the device in bf16 against the CPU in fp32: argmax
   agreement and the largest log-prob difference;
3. ``methods``: every method's demo config for a few steps on the device through ``rlprompt train`` (and
   ``rlprompt prefs`` for Sem-DPO), in subprocesses with a time limit each.

Writes ``experiments/results/device_check.{json,md}`` (or ``--out``).

    python experiments/device_check.py --device cuda
    python experiments/device_check.py --device cpu --out /tmp/device_check      # the same steps on the CPU
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import bench_target  # noqa: E402  (a sibling script, not a package)

from rlprompt.devices import resolve_device  # noqa: E402
from rlprompt.runs import write_atomic  # noqa: E402
from rlprompt.targets.hf import HFTarget  # noqa: E402
from rlprompt.tasks import load_task  # noqa: E402

SST2 = ROOT.parent.parent / "shared" / "data" / "rlprompt-16shot" / "sst-2"
CONFIGS = ROOT / "configs"
METHODS: dict[str, list[str]] = {
    "rlprompt": ["rlprompt_sentiment_demo.yaml", "steps=2", "eval_every=1", "checkpoint_every=2"],
    "multiprompter": ["multiprompter_sentiment_demo.yaml", "steps=2", "eval_every=1", "checkpoint_every=2"],
    "prewrite": ["prewrite_sentiment_demo.yaml", "steps=2", "checkpoint_every=2", "num_samples=2"],
    "sem-dpo": ["semdpo_sentiment_demo.yaml", "steps=2", "checkpoint_every=2", "samples_per_original=3"],
    "promptagent": ["promptagent_sentiment_demo.yaml", "steps=1", "max_evaluations=4"],
}
"""Each method's demo config and the overrides that cut it to a few steps."""


def timed(step):
    """Run ``step()``; its result dict plus ``seconds`` and ``ok`` (and ``error`` when it raised)."""
    start = time.perf_counter()
    try:
        out = {**step(), "ok": True}
    except Exception as err:  # the check records a failing step and goes on with the others
        out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return {**out, "seconds": round(time.perf_counter() - start, 1)}


def agreement(device: str, n_prompts: int = 8, n_inputs: int = 32) -> dict:
    """Argmax agreement and max |log-prob difference| of the target on ``device`` (bf16) vs the CPU (fp32)."""
    task = load_task(str(SST2), seed="16-42") if SST2.is_dir() else load_task("sentiment")
    texts = list(task.split("train").texts)[:n_inputs]
    reference = HFTarget(dtype="float32", device="cpu")
    rng = np.random.default_rng(0)
    vocab = len(reference.tokenizer)
    prompts = [reference.tokenizer.decode(rng.integers(0, vocab, 5).tolist()) for _ in range(n_prompts)]
    args = (task.template, prompts, texts, list(task.verbalizers))
    cpu = reference.classify(*args)
    on_device = HFTarget(dtype="bfloat16", device=device).classify(*args)
    return {"data": "SST-2 16-shot 16-42 train" if SST2.is_dir() else "built-in sentiment train",
            "sequences": cpu.shape[0] * cpu.shape[1], "reference": "cpu float32", "compared": f"{device} bfloat16",
            "argmax_agreement": float((cpu.argmax(-1) == on_device.argmax(-1)).mean()),
            "max_abs_logprob_diff": float(np.abs(cpu - on_device).max())}


def run_method(method: str, device: str, workdir: Path, timeout: int) -> dict:
    """``rlprompt train`` of one method's demo config for a few steps on ``device`` (``prefs`` first for Sem-DPO)."""
    config, *overrides = METHODS[method]
    run_dir = workdir / method
    overrides = [*overrides, f"device={device}"]
    commands = []
    if method == "sem-dpo":
        overrides.append(f"preferences={workdir / 'preferences.jsonl'}")
        commands.append([sys.executable, "-m", "rlprompt.cli", "prefs", str(CONFIGS / config), *overrides])
    commands.append([sys.executable, "-m", "rlprompt.cli", "train", str(CONFIGS / config), "--run-dir", str(run_dir),
                     *overrides])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"`{shlex.join(command[2:])}` exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    keep = ("steps", "target_queries", "best_prompt", "dev_accuracy", "stop_reason")
    return {"command": shlex.join(["rlprompt", *command[3:]]), **{k: summary[k] for k in keep}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, auto or cpu")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--method-timeout", type=int, default=240, help="seconds each method's run may take")
    parser.add_argument("--out", default=str(ROOT / "results" / "device_check"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)  # a missing device fails here, with one line
    out = Path(args.out)
    result: dict = {"command": shlex.join(["python", "experiments/device_check.py", *sys.argv[1:]]),
                    "device": str(device), "cpu_run": device.type == "cpu",
                    "machine": bench_target.machine(device), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="device_check-") as tmp:
        data = str(SST2) if SST2.is_dir() else "sentiment"
        batch = "32" if device.type == "cpu" else "512"
        bench = ["--device", str(device), "--data", data, "--batch-size", batch, "--out", str(Path(tmp) / "bench"),
                 "--repeats", "2"] + ([] if device.type == "cpu" else ["--prompts", "64", "--instructions", "32"])
        result["bench_target"] = timed(lambda: bench_target.main(bench))
        write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
        result["agreement"] = timed(lambda: agreement(str(device)))
        result["methods"] = {}
        for method in args.methods:
            result["methods"][method] = timed(lambda: run_method(method, str(device), Path(tmp), args.method_timeout))
            write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0 if all(step["ok"] for step in [result["bench_target"], result["agreement"], *result["methods"].values()]) else 1


def markdown(result: dict) -> str:
    """The check as a short markdown page (regenerable from the JSON)."""
    lines = [f"# Device check on {result['device']}" + (" (a CPU run: no accelerator was used)" if result["cpu_run"] else ""),
             "", f"Command: `{result['command']}`  ", f"Machine: {result['machine']}", ""]
    bench = result["bench_target"]
    if bench["ok"]:
        lines += ["| template | path | sequences/s | tokens/s | fraction of matmul peak |", "|---|---|---|---|---|"]
        for order in ("input_first", "prompt_first"):
            for path in ("naive", "kv_reuse"):
                r = bench[order][path]
                lines.append(f"| {order} | {path} | {r['sequences_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
                             f"{r['flops_per_s'] / bench['matmul_peak_flops_per_s']:.2f} |")
        lines += ["", f"KV reuse over naive: {bench['input_first']['kv_speedup_vs_naive']:.2f}x (input first), "
                  f"{bench['prompt_first']['kv_speedup_vs_naive']:.2f}x (prompt first); matmul peak "
                  f"{bench['matmul_peak_flops_per_s'] / 1e12:.2f} TFLOP/s ({bench['dtype']}).", ""]
    else:
        lines += [f"bench_target failed: {bench['error']}", ""]
    agree = result["agreement"]
    lines.append(f"Agreement ({agree['compared']} vs {agree['reference']}, {agree['sequences']} sequences of "
                 f"{agree['data']}): same argmax {100 * agree['argmax_agreement']:.1f}%, max |log-prob diff| "
                 f"{agree['max_abs_logprob_diff']:.3f}." if agree["ok"] else f"Agreement failed: {agree['error']}")
    lines += ["", "| method | ok | seconds | steps | target queries | command or error |", "|---|---|---|---|---|---|"]
    for method, r in result["methods"].items():
        lines.append(f"| {method} | {'yes' if r['ok'] else 'no'} | {r['seconds']} | {r.get('steps', r.get('iterations', ''))} | "
                     f"{r.get('target_queries', '')} | `{r['command'] if r['ok'] else r['error'][:300]}` |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
