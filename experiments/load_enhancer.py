"""Load test of the enhancer service (rlprompt/serve.py): N requests from 1, 8 and 32 concurrent clients.

Against a running server:
    python experiments/load_enhancer.py --url http://127.0.0.1:8000 --requests 64 [--api-key-env KEY_VAR]
Or start one in-process (uvicorn in a background thread) on a saved enhancer:
    python experiments/load_enhancer.py --enhancer runs/x/enhancer --requests 64
Reports requests/s, p50/p99 latency and errors per client count as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rlprompt.runs import write_atomic

PROMPTS = ["Classify the sentiment of the movie review as negative or positive.",
           "Classify the news article into World, Sports, Business, or Tech.",
           "Summarize the text in one sentence.", "Answer the question with yes or no."]


async def _load(url: str, requests: int, clients: int, headers: dict[str, str], timeout: float) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(requests))

    async def worker(client):
        for i in counter:
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/enhance", json={"prompt": PROMPTS[i % len(PROMPTS)]})
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
            except Exception as err:  # count transport errors, keep loading
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)

    import httpx

    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"clients": clients, "requests": requests, "ok": len(latencies), "errors": errors,
            "wall_seconds": wall, "requests_per_second": len(latencies) / wall,
            "p50_latency_s": float(np.percentile(lat, 50)), "p99_latency_s": float(np.percentile(lat, 99))}


def measure(url: str, requests: int, clients: Sequence[int] = (1, 8, 32), api_key: str | None = None,
            timeout: float = 600.0) -> dict:
    """Run the load at each client count against ``url``; add the server's enhancer-call counters."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = {"url": url, "levels": []}
    for n in clients:
        before = httpx.get(f"{url}/health", timeout=30).json()
        level = asyncio.run(_load(url, requests, n, headers, timeout))
        after = httpx.get(f"{url}/health", timeout=30).json()
        level["enhancer_calls"] = after["enhancer_calls"] - before["enhancer_calls"]
        out["levels"].append(level)
        print(json.dumps(level), flush=True)
    return out


def measure_in_process(enhancer_dir: str | Path, requests: int, clients: Sequence[int] = (1, 8, 32),
                       batch_window_ms: float = 20.0) -> dict:
    """Serve ``enhancer_dir`` with uvicorn in a background thread on a free port and :func:`measure` it."""
    from rlprompt.enhancer import PromptEnhancer
    from rlprompt.serve import create_app, running_in_background

    app = create_app(PromptEnhancer.from_pretrained(enhancer_dir), batch_window_ms=batch_window_ms)
    with running_in_background(app) as url:
        result = measure(url, requests, clients)
    return {**result, "enhancer_dir": str(enhancer_dir), "batch_window_ms": batch_window_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL of a running server")
    where.add_argument("--enhancer", help="saved enhancer directory: start a server in-process")
    parser.add_argument("--requests", type=int, default=64, help="requests per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the bearer token")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.url:
        result = measure(args.url, args.requests, args.clients,
                         api_key=os.environ.get(args.api_key_env) if args.api_key_env else None)
    else:
        result = measure_in_process(args.enhancer, args.requests, args.clients)
    text = json.dumps(result, indent=2)
    if args.out:
        write_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
