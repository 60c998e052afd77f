"""A fault-injecting OpenAI-compatible endpoint on loopback, to prove that runs against remote targets
survive what real endpoints do: 429 with Retry-After, 5xx, slow replies past the client's timeout,
truncated or non-JSON bodies, replies without logprobs, and outages; and, when asked for, replies that
drip in a byte at a time (``"drip"``) or a ``Retry-After`` of any text (``retry_after="1e400"``).

:class:`FaultyEndpoint` answers ``POST /v1/completions`` like a small deterministic classifier: the
first-token log-probabilities over ``tokens`` come from a hash of the prompt text, so the same text
always gets the same scores and a prompt change moves them (a policy has something to learn).
A seeded RNG picks which requests get a fault; an outage (from request ``outage_after`` on, or
switched by :meth:`FaultyEndpoint.outage`) makes every request fail with 503 until it is lifted.
Counters record what was injected and what was served.

    with FaultyEndpoint(tokens=[" terrible", " great"], fault_rate=0.2) as endpoint:
        target = make_target(f"openai:{endpoint.url}:fake?timeout=1&max_retries=4&backoff=0.05")
"""

import asyncio
import collections
import contextlib
import hashlib
import json
import random
import threading
from collections.abc import Sequence

import numpy as np

FAULTS = ("429", "500", "timeout", "truncated", "non_json", "no_logprobs")
#: Faults injected only when named in ``faults``: a client survives them only with a total deadline.
SLOW_FAULTS = ("drip",)


class FaultyEndpoint:
    """A FastAPI + uvicorn server in a background thread; use as a context manager (or :meth:`start` /
    :meth:`stop`). ``fault_rate`` of the requests get one of ``faults`` (uniformly, seeded by ``seed``);
    ``slow_seconds`` is how long a "timeout" fault waits before answering (set it above the client's timeout);
    a "drip" fault sends the status line at once and then the body one byte every ``drip_seconds``.
    ``retry_after`` is the ``Retry-After`` header of a "429" fault, sent as given (a number or any text)."""

    def __init__(self, tokens: Sequence[str], *, fault_rate: float = 0.0, faults: Sequence[str] = FAULTS,
                 seed: int = 0, slow_seconds: float = 2.0, drip_seconds: float = 1.0,
                 retry_after: float | str = 0.05, outage_after: int | None = None) -> None:
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault_rate must lie in [0, 1], got {fault_rate}")
        unknown = sorted(set(faults) - set(FAULTS + SLOW_FAULTS))
        if unknown or not faults:
            raise ValueError(f"faults must be a non-empty subset of {FAULTS + SLOW_FAULTS}, got {list(faults)}")
        if len(tokens) < 2:
            raise ValueError(f"need at least two tokens to score, got {list(tokens)}")
        self.tokens, self.fault_rate, self.faults = list(tokens), fault_rate, tuple(faults)
        self.slow_seconds, self.drip_seconds, self.retry_after = slow_seconds, drip_seconds, retry_after
        self.injected: collections.Counter[str] = collections.Counter()  #: faults injected, by kind
        self.served = 0  #: requests answered normally
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._outage = False
        self._outage_after = outage_after
        self.requests = 0  #: requests received
        self._server = contextlib.ExitStack()  # holds the running server between start() and stop()
        self.url = ""

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "FaultyEndpoint":
        from rlprompt.serve import running_in_background

        self.url = self._server.enter_context(running_in_background(self._app(), log_level="error")) + "/v1"
        return self

    def stop(self) -> None:
        self._server.close()

    def __enter__(self) -> "FaultyEndpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def outage(self, on: bool = True) -> None:
        """While on, every request gets HTTP 503 (counted as ``"outage"``)."""
        with self._lock:
            self._outage, self._outage_after = on, None

    # -- behaviour -----------------------------------------------------------------------------------
    def logprobs(self, text: str) -> dict[str, float]:
        """The endpoint's first-token log-probabilities over its tokens for ``text`` (deterministic)."""
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        logits = np.random.default_rng(seed).normal(size=len(self.tokens))
        logits -= logits.max() + np.log(np.exp(logits - logits.max()).sum())
        return dict(zip(self.tokens, logits.tolist()))

    def _pick_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self._outage_after is not None and self.requests > self._outage_after:
                self._outage, self._outage_after = True, None
            if self._outage:
                self.injected["outage"] += 1
                return "outage"
            if self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.faults)
                self.injected[kind] += 1
                return kind
            self.served += 1
            return None

    def _app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        app = FastAPI()

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            fault = self._pick_fault()
            if fault == "outage":
                return JSONResponse({"error": {"message": "service unavailable"}}, status_code=503)
            if fault == "429":
                return JSONResponse({"error": {"message": "rate limited"}}, status_code=429,
                                    headers={"Retry-After": str(self.retry_after)})
            if fault == "500":
                return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
            if fault == "timeout":
                await asyncio.sleep(self.slow_seconds)
            text = str(body.get("prompt", ""))
            top = self.logprobs(text)
            token = max(top, key=top.get)
            logprobs = None if fault == "no_logprobs" else {"tokens": [token], "token_logprobs": [top[token]],
                                                             "top_logprobs": [top]}
            reply = {"object": "text_completion", "choices": [{"index": 0, "text": token, "logprobs": logprobs}],
                     "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 1,
                               "total_tokens": len(text.split()) + 1}}
            content = json.dumps(reply)
            if fault == "truncated":
                content = content[: len(content) // 2]
            elif fault == "non_json":
                content = "<html><body>502 Bad Gateway</body></html>"
            elif fault == "drip":
                return StreamingResponse(self._drip(content.encode()), media_type="application/json")
            return Response(content, media_type="application/json")

        return app

    async def _drip(self, body: bytes):
        for i in range(len(body)):
            yield body[i:i + 1]
            await asyncio.sleep(self.drip_seconds)
