"""Benchmark the scale-out path: the OpenAI-compatible target (rlprompt.targets.OpenAITarget) at rising concurrency.

Two endpoints on loopback, the same scoring call (``classify``: prompts x inputs, one request per sequence):

- ``ceiling``: the project's :class:`~rlprompt.targets.faulty.FaultyEndpoint` with no faults, a server that answers
  without a model (in a child process, so it does not share this process's interpreter lock), so the figure is the
  client's own ceiling: what the async client, its retries and JSON handling can push per second before any model
  costs anything (on 2 cores the endpoint's process competes with the client for CPU);
- ``llama.cpp``: llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``, from the test extras) serving the
  bundled SmolLM2 GGUF on this machine's cores, a real model behind the same client (it returns logprobs).

For each concurrency level (after one small call that opens the connections): sequences per second, requests sent
(llama.cpp may need a second, forced request for a verbalizer outside its top logprobs), the client's own CPU time
per request (every thread of this process) and failures. Writes ``experiments/results/bench_remote.{json,md}``.

    python experiments/bench_remote.py
    python experiments/bench_remote.py --levels 1 8 --llama-levels 1 2 --sequences 64 --out /tmp/bench_remote
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rlprompt.models import bundled_gguf_path
from rlprompt.runs import write_atomic
from rlprompt.targets import OpenAITarget
from rlprompt.tasks import load_task

ROOT = Path(__file__).resolve().parent
VERBALIZERS = [" terrible", " great"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(base_url: str, model: str, concurrency: int, prompts: list[str], texts: list[str]) -> dict:
    """One ``classify`` of every (prompt, text) pair at ``concurrency``: throughput, requests and failures."""
    with OpenAITarget(base_url, model, concurrency=concurrency, timeout=120, max_retries=2) as target:
        target.classify("{sentence} {prompt}", prompts[:1], texts[:concurrency], VERBALIZERS)  # open the connections
        calls = target.stats.calls
        start, cpu = time.perf_counter(), time.process_time()
        try:
            target.classify("{sentence} {prompt}", prompts, texts, VERBALIZERS)
            error = None
        except Exception as err:  # a failed level is a result too
            error = f"{type(err).__name__}: {err}"
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        requests = target.stats.calls - calls
    sequences = len(prompts) * len(texts)
    return {"concurrency": concurrency, "sequences": sequences, "seconds": round(seconds, 3),
            "sequences_per_s": sequences / seconds, "requests": requests,
            "client_cpu_ms_per_request": 1000 * cpu / max(1, requests), "error": error}


ENDPOINT_CHILD = """
import sys, time
from rlprompt.targets.faulty import FaultyEndpoint
endpoint = FaultyEndpoint(tokens=sys.argv[1:]).start()
print(endpoint.url, flush=True)
while True:
    time.sleep(3600)
"""


def no_model_endpoint():
    """Start a fault-free FaultyEndpoint in a child process; returns (process, its /v1 URL)."""
    proc = subprocess.Popen([sys.executable, "-c", ENDPOINT_CHILD, *VERBALIZERS], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the no-model endpoint did not start (exit code {proc.poll()})")
    return proc, url


def llama_server(log: Path, threads: int):
    """Start llama.cpp's server on the bundled GGUF; returns (process, base URL) once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads), "--verbose", "False"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"llama.cpp server not ready after 240 s: {log.read_text()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 128], help="client concurrency, ceiling")
    parser.add_argument("--llama-levels", type=int, nargs="*", default=[1, 4, 16], help="client concurrency, llama.cpp")
    parser.add_argument("--sequences", type=int, default=512, help="sequences per ceiling measurement")
    parser.add_argument("--llama-sequences", type=int, default=64, help="sequences per llama.cpp measurement")
    parser.add_argument("--llama-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_remote"))
    args = parser.parse_args(argv)

    texts = list(load_task("sentiment").split("test").texts)
    prompts = ["It was", "All in all, it was", "My verdict:", "In a word,"]

    def pairs(n: int) -> tuple[list[str], list[str]]:
        per_prompt = max(1, n // len(prompts))
        return prompts[: max(1, min(len(prompts), n))], texts[:per_prompt]

    result = {"command": shlex.join(["python", "experiments/bench_remote.py", *sys.argv[1:]]),
              "machine": f"{os.cpu_count()} cores", "ceiling": [], "llama_cpp": []}
    proc, url = no_model_endpoint()
    try:
        for level in args.levels:
            result["ceiling"].append(measure(url, "fake", level, *pairs(args.sequences)))
            print(json.dumps(result["ceiling"][-1]), file=sys.stderr)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    if args.llama_levels:
        with tempfile.TemporaryDirectory() as tmp:
            proc, base = llama_server(Path(tmp) / "llama.log", args.llama_threads)
            try:
                for level in args.llama_levels:
                    result["llama_cpp"].append(measure(base + "/v1", str(bundled_gguf_path()), level,
                                                       *pairs(args.llama_sequences)))
                    print(json.dumps(result["llama_cpp"][-1]), file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    out = Path(args.out)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The measurements as a markdown table (regenerable from the JSON)."""
    lines = ["# OpenAI-compatible target at rising concurrency", "", f"Command: `{result['command']}` "
             f"({result['machine']}; every figure from one run: compare levels inside it, not across machines)", "",
             "| endpoint | concurrency | sequences | seconds | sequences/s | requests | client CPU ms/request | failed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, key in (("no-model endpoint (client ceiling)", "ceiling"), ("llama.cpp server, bundled GGUF", "llama_cpp")):
        for r in result[key]:
            lines.append(f"| {name} | {r['concurrency']} | {r['sequences']} | {r['seconds']:.2f} | "
                         f"{r['sequences_per_s']:.1f} | {r['requests']} | {r['client_cpu_ms_per_request']:.2f} | "
                         f"{r['error'] or 'no'} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
