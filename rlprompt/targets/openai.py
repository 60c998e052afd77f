"""A model behind any OpenAI-compatible HTTP endpoint (vLLM, hosted APIs, llama.cpp's server,
``transformers serve``) as the frozen target.

Scoring follows RLPrompt (Deng et al., 2022): the score of class ``k`` is the log-probability of its
verbalizer as the next token, read here from the endpoint's ``top_logprobs`` of a one-token
completion. Requests run concurrently (``httpx.AsyncClient`` under an ``asyncio.Semaphore``) on a
private event loop in a background thread, so the synchronous methods work from any thread, also
one whose own event loop is running.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import numpy as np

from rlprompt.errors import ConfigError
from rlprompt.targets.base import Target, TargetError, fill

#: Label-parsing scores: the parsed class gets probability ``1 - EPS``, the others share ``EPS``.
EPS = 1e-6
SCORINGS = ("logprobs", "labels")
"""How classification is scored: next-token log-probabilities (RLPrompt), or a parsed greedy answer (hard labels)."""
POOL_SIZE = 16
"""Most connections one httpx client holds; a higher concurrency spreads requests over several clients."""
_SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece renderings of a leading space


def _normalise(token: str) -> str:
    for marker in _SPACE_MARKERS:
        if token.startswith(marker):
            return " " + token[len(marker):]
    return token


def match_verbalizers(top: dict[str, float], verbalizers: Sequence[str]) -> list[float | None]:
    """Find each verbalizer's log-probability among returned ``{token text: logprob}`` entries.

    Exact string match first, then with a leading ``Ġ``/``▁`` read as a space, then (for servers that
    decode single tokens without their leading space) by stripped text; ``None`` where absent.
    """
    out: list[float | None] = []
    normalised = {}
    stripped = {}
    for token, logprob in top.items():
        normalised.setdefault(_normalise(token), logprob)
        stripped.setdefault(_normalise(token).strip(), logprob)
    for verbalizer in verbalizers:
        for table, key in ((top, verbalizer), (normalised, verbalizer), (stripped, verbalizer.strip())):
            if key in table:
                out.append(float(table[key]))
                break
        else:
            out.append(None)
    return out


def parse_label(answer: str, verbalizers: Sequence[str]) -> int | None:
    """Index of the verbalizer a generated answer names: the first whose stripped, lowercased text the
    answer starts with, else the one occurring earliest in it; ``None`` if none occurs."""
    text = answer.strip().lower()
    keys = [v.strip().lower() for v in verbalizers]
    for k, key in enumerate(keys):
        if key and text.startswith(key):
            return k
    found = [(text.find(key), -len(key), k) for k, key in enumerate(keys) if key and key in text]
    return min(found)[2] if found else None


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """Seconds a 429/5xx reply asks the client to wait (``Retry-After`` as seconds or an HTTP date), at
    most ``cap``; ``None`` when the header is absent or unusable (garbage, negative, NaN or infinite), so
    the caller falls back to its own backoff."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def _field(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]...`` or a :class:`TargetError` naming the first missing field."""
    here = obj
    for depth, key in enumerate(path):
        try:
            here = here[key]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{k!r}]" for k in path[: depth + 1])
            raise TargetError(f"malformed reply: missing field {where} in {str(obj)[:300]!r}") from None
    return here


class OpenAITarget(Target):
    """A frozen model behind an OpenAI-compatible ``/completions`` or ``/chat/completions`` endpoint.

    ``base_url`` includes the version prefix (``http://127.0.0.1:8000/v1``). ``mode="completions"``
    scores the filled template as raw text; ``mode="chat"`` sends it as one user message and scores the
    first token of the reply. An endpoint that returns no log-probabilities (``transformers serve``) is a
    :class:`TargetError` naming the opt-in, ``scoring="labels"`` (``?scoring=labels`` on a target spec):
    *label parsing*, where a greedy answer of ``label_tokens`` tokens is mapped to a verbalizer
    (:func:`parse_label`), which gets ``log(1 - EPS)`` and the others ``log(EPS / (K - 1))``; an unparsable
    answer gets ``log(1/K)`` for every class and is counted in ``stats.unparsed``. These are not model
    probabilities: rewards built on probability gaps see only hard labels.

    A verbalizer missing from the top ``top_logprobs`` is read by one more request that forces it as
    the next token with ``logit_bias={id: bias}`` (ids come from ``tokenizer``; the bundled tokenizer
    by default when ``model`` names the bundled SmolLM2), taking the chosen token's log-probability
    and undoing the bias where the server reports post-bias values (:meth:`_unbias`). Without a
    tokenizer a missing verbalizer raises :class:`TargetError` unless ``missing="bound"``, which uses
    the smallest returned log-probability (an upper bound on the true one) and counts it in
    :attr:`bounded`.

    ``timeout`` is a total deadline per attempt (connecting, sending, and reading the whole reply), so an
    endpoint that drips its reply a byte at a time cannot hold a request longer. Failed attempts (429,
    5xx, timeouts, connection errors, unusable bodies) are retried ``max_retries`` times after a pause:
    the reply's ``Retry-After`` when it is a usable number of seconds or date, else an exponential
    backoff from ``backoff`` seconds with jitter; either is cut to ``max_wait`` seconds. The API key (from
    ``$api_key_env``) is replaced by ``***`` in every error message, in case an endpoint echoes it.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        mode: Literal["completions", "chat"] = "completions",
        scoring: Literal["logprobs", "labels"] = "logprobs",
        tokenizer: Any = None,
        max_sequences: int | None = None,
        top_logprobs: int = 20,
        bias: float = 100.0,
        missing: Literal["error", "bound"] = "error",
        label_tokens: int = 8,
        echo_loglikelihood: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(max_sequences=max_sequences)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if mode not in ("completions", "chat"):
            raise ConfigError(f"mode must be 'completions' or 'chat', got {mode!r}")
        if scoring not in SCORINGS:
            raise ConfigError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        if missing not in ("error", "bound"):
            raise ConfigError(f"missing must be 'error' or 'bound', got {missing!r}")
        finite = all(math.isfinite(v) for v in (timeout, backoff, max_wait))
        if not finite or concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0 or max_wait < 0 \
                or top_logprobs < 1:
            raise ConfigError(
                f"bad settings: concurrency={concurrency}, max_retries={max_retries}, timeout={timeout}, "
                f"backoff={backoff}, max_wait={max_wait}, top_logprobs={top_logprobs}"
            )
        self.base_url, self.model, self.mode = base_url.rstrip("/"), model, mode
        self.concurrency, self.timeout, self.max_retries, self.backoff = concurrency, timeout, max_retries, backoff
        self.max_wait = max_wait
        self.scoring, self.top_logprobs, self.bias, self.missing = scoring, top_logprobs, bias, missing
        self.label_tokens, self.echo_loglikelihood, self.transport = label_tokens, echo_loglikelihood, transport
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.tokenizer = tokenizer if tokenizer is not None else self._default_tokenizer(model)
        self.bounded = 0  #: verbalizer scores replaced by an upper bound (``missing="bound"``)
        self.retries = 0  #: requests repeated after a 429, 5xx, timeout or connection error
        self._n_supported = True
        self._logprobs_seen = False  # set by the first reply that carries logprobs
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] | None = None
        self._pid = -1

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"openai:{self.base_url}:{self.model}:{self.mode}" + ("" if self.scoring == "logprobs" else ":labels")

    @staticmethod
    def _default_tokenizer(model: str) -> Any:
        if "smollm2" not in model.lower():
            return None
        from rlprompt.models import BUNDLED, _GGUF_FILE, load_tokenizer

        if model in (BUNDLED, _GGUF_FILE) or model.endswith(_GGUF_FILE):
            return load_tokenizer(BUNDLED)
        return None

    # -- event loop and HTTP ------------------------------------------------------------------------
    def _run(self, coro):
        """Run ``coro`` on this target's private loop (started on first use, again after a fork); the API
        key never leaves in an error message."""
        if self._loop is None or self._pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="OpenAITarget-loop", daemon=True).start()
            self._loop, self._pid = loop, os.getpid()
            self._clients = self._semaphore = None
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        except TargetError as err:
            if self.api_key and self.api_key in str(err):
                raise type(err)(self._redact(str(err))) from None
            raise

    def _redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (endpoints may echo it in error bodies)."""
        return text.replace(self.api_key, "***") if self.api_key else text

    async def _ensure_client(self) -> httpx.AsyncClient:
        """The HTTP client for the next request: requests go round-robin over ``ceil(concurrency / POOL_SIZE)``
        clients of at most :data:`POOL_SIZE` connections each, because httpcore's pool scans all its connections
        for every queued request (measured: 1 ms of client CPU per request at 1 connection, 8 ms at 128 in one
        pool; ``experiments/bench_remote.py``)."""
        if self._clients is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            n = math.ceil(self.concurrency / POOL_SIZE)
            size = math.ceil(self.concurrency / n)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._clients = [httpx.AsyncClient(timeout=self.timeout, headers=headers, limits=limits,
                                               transport=self.transport) for _ in range(n)]
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._turn = itertools.count()
        return self._clients[next(self._turn) % len(self._clients)]

    def close(self) -> None:
        """Close the HTTP client and stop the private event loop."""
        if self._loop is not None and self._pid == os.getpid():
            for client in self._clients or ():
                asyncio.run_coroutine_threadsafe(client.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop = None

    def __enter__(self) -> "OpenAITarget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_loop=None, _clients=None, _semaphore=None, _lock=None, _pid=-1)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _count(self, reply: dict, sequences: int = 0) -> None:
        usage = reply.get("usage") if isinstance(reply, dict) else None
        tokens = 0
        if isinstance(usage, dict):
            tokens = usage.get("total_tokens") or (
                (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
            )
        with self._lock:
            self.stats.calls += 1
            self.stats.sequences += sequences
            self.stats.tokens += int(tokens)

    async def _post(self, endpoint: str, payload: dict, sequences: int = 1, check=None) -> dict:
        """POST with retries on 429/5xx/timeouts/connection errors/non-JSON bodies, and on replies that
        ``check`` (if given) rejects; returns the parsed JSON reply."""
        client = await self._ensure_client()
        url = f"{self.base_url}/{endpoint}"
        payload = {"model": self.model, **payload}
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                async with self._semaphore:
                    # httpx's timeout bounds each read, not the reply: a byte per second would never trip it
                    response = await asyncio.wait_for(client.post(url, json=payload), self.timeout)
            except (httpx.TimeoutException, asyncio.TimeoutError) as err:
                last = f"timed out after {self.timeout} s ({type(err).__name__})"
            except httpx.TransportError as err:
                last = f"cannot reach the endpoint ({type(err).__name__}: {err})"
                last += f"; is a server running at {self.base_url}?"
            else:
                body = self._redact(response.text)  # redacted before it is cut, so no part of the key shows
                if response.status_code == 429 or response.status_code >= 500:
                    last = f"HTTP {response.status_code}: {body[:300]!r}"
                    wait = _retry_after(response, self.max_wait)
                elif response.status_code >= 400:
                    raise TargetError(f"POST {url} failed with HTTP {response.status_code}: {body[:500]!r}")
                else:
                    try:
                        reply = response.json()
                    except ValueError:  # a truncated or garbled body (a proxy cut it off): worth another try
                        reply = None
                        last = f"a non-JSON body: {body[:300]!r}"
                    else:
                        if not isinstance(reply, dict):
                            raise TargetError(f"POST {url} returned JSON that is not an object: {body[:300]!r}")
                        if check is None or check(reply):
                            self._count(reply, sequences)
                            return reply
                        last = f"a reply without logprobs, though this endpoint returned them before: {body[:300]!r}"
            if attempt == self.max_retries:
                break
            with self._lock:
                self.retries += 1
            if wait is None:  # exponential backoff with jitter (the exponent capped: a float cannot hold 2**2000)
                wait = min(self.max_wait, self.backoff * 2 ** min(attempt, 60) * random.uniform(0.5, 1.5))
            await asyncio.sleep(wait)
        raise TargetError(f"POST {url} failed after {self.max_retries + 1} attempts: {last}")

    def _request(self, text: str, chat: bool | None = None, **payload) -> tuple[str, dict]:
        if (self.mode == "chat") if chat is None else chat:
            return "chat/completions", {"messages": [{"role": "user", "content": text}], **payload}
        return "completions", {"prompt": text, **payload}

    # -- scoring ------------------------------------------------------------------------------------
    def _top(self, reply: dict) -> tuple[dict[str, float], tuple[str, float]] | None:
        """``({token: logprob}, (chosen token, its logprob))`` for the first generated token, or ``None``
        when the reply carries no log-probabilities. The chosen token joins the dict (llama.cpp also
        lists it there when it is outside the top ``k``)."""
        logprobs = _field(reply, "choices", 0).get("logprobs")
        if not logprobs:
            return None
        if self.mode == "chat":
            content = logprobs.get("content")
            if not content:
                return None
            top = {_field(e, "token"): float(_field(e, "logprob")) for e in _field(content, 0, "top_logprobs")}
            chosen = (_field(content, 0, "token"), float(_field(content, 0, "logprob")))
        else:
            if not logprobs.get("top_logprobs"):
                return None
            top = {str(k): float(v) for k, v in _field(logprobs, "top_logprobs", 0).items()}
            chosen = (_field(logprobs, "tokens", 0), float(_field(logprobs, "token_logprobs", 0)))
        top.setdefault(*chosen)
        return top, chosen

    def _has_logprobs(self, reply: dict) -> bool:
        return self._top(reply) is not None

    def _logprob_payload(self, logit_bias: dict[str, float] | None = None) -> dict:
        payload: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0}
        if self.mode == "chat":
            payload.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            payload.update(logprobs=self.top_logprobs)
        if logit_bias:
            payload["logit_bias"] = logit_bias
        return payload

    def _verbalizer_ids(self, verbalizers: list[str]) -> list[int] | None:
        if self.tokenizer is None:
            return None
        ids = []
        for verbalizer in verbalizers:
            tokens = self.tokenizer(verbalizer, add_special_tokens=False).input_ids
            if len(tokens) != 1:
                raise ConfigError(f"verbalizer {verbalizer!r} is not a single token of the tokenizer: ids {tokens}")
            ids.append(tokens[0])
        return ids

    def _unbias(self, plain: dict[str, float], biased: dict[str, float], verbalizer: str, value: float) -> float:
        """The unbiased log-probability of ``verbalizer``, forced as the next token by a ``logit_bias`` of
        :attr:`bias` and reported with log-probability ``value``.

        Servers differ: llama.cpp (and vLLM by default) report raw log-probabilities, unchanged by the
        bias; others report post-bias ones, ``log p(v) + b - s`` for the biased token and ``log p(t) - s``
        for the rest (``s = log Z'/Z``). ``s`` is read off tokens present in both replies: ``s = 0`` with
        ``value`` below every unbiased top-k entry means raw values; otherwise undo ``b - s``.
        """
        shifts = [plain[t] - biased[t] for t in plain if t in biased and _normalise(t).strip() != verbalizer.strip()]
        if not shifts:
            raise TargetError("cannot undo logit_bias: no other token appears in both replies")
        shift = float(np.median(shifts))
        tol = 1e-3 + 1e-4 * abs(shift)
        if max(shifts) - min(shifts) > 10 * tol or shift < -tol:
            raise TargetError(f"cannot undo logit_bias: inconsistent token shifts {sorted(shifts)[:5]}")
        if abs(shift) <= tol and value <= min(plain.values()) + tol:
            return value
        return value - self.bias + shift

    async def _force(self, text: str, plain: dict[str, float], verbalizer: str, token_id: int) -> float:
        """Log-probability of a verbalizer missing from the top ``k``, read by forcing it with ``logit_bias``."""
        reply = await self._post(*self._request(text, **self._logprob_payload({str(token_id): self.bias})), sequences=0,
                                 check=self._has_logprobs)
        biased, (token, value) = self._top(reply)
        if match_verbalizers({token: value}, [verbalizer])[0] is None:
            raise TargetError(
                f"logit_bias {{{token_id}: {self.bias}}} did not force {verbalizer!r} (the server chose {token!r}): "
                f"the endpoint ignores logit_bias or the tokenizer does not match the served model"
            )
        return self._unbias(plain, biased, verbalizer, value)

    async def _score_one(self, text: str, verbalizers: list[str], ids: list[int] | None) -> list[float] | None:
        # Once the endpoint has returned logprobs, a reply without them is a fault (retried, then an error),
        # never a silent switch to label parsing in the middle of a run.
        check = self._has_logprobs if self._logprobs_seen else None
        parsed = self._top(await self._post(*self._request(text, **self._logprob_payload()), check=check))
        if parsed is None:
            return None
        self._logprobs_seen = True
        plain = parsed[0]
        found = match_verbalizers(plain, verbalizers)
        if ids is not None and self.bias:
            missing = [k for k, f in enumerate(found) if f is None]
            forced = await asyncio.gather(*(self._force(text, plain, verbalizers[k], ids[k]) for k in missing))
            for k, value in zip(missing, forced):
                found[k] = value
        if None in found:
            missing = [v for v, f in zip(verbalizers, found) if f is None]
            if self.missing == "error":
                raise TargetError(
                    f"verbalizers {missing} are not among the top {self.top_logprobs} log-probabilities for "
                    f"{text[-80:]!r} (returned: {sorted(plain, key=plain.get, reverse=True)[:10]}); pass a tokenizer "
                    f"for logit_bias, or missing='bound' to use the smallest returned log-probability as an upper bound"
                )
            floor = min(plain.values())
            with self._lock:
                self.bounded += len(missing)
            found = [floor if f is None else f for f in found]
        return found

    async def _label_one(self, text: str, verbalizers: list[str]) -> list[float]:
        payload = {"max_tokens": self.label_tokens, "temperature": 0.0}
        reply = await self._post(*self._request(text, **payload))
        k = parse_label(self._text(reply, 0), verbalizers)
        if k is None:
            with self._lock:
                self.stats.unparsed += 1
            return [-math.log(len(verbalizers))] * len(verbalizers)
        other = math.log(EPS / (len(verbalizers) - 1))
        return [math.log1p(-EPS) if j == k else other for j in range(len(verbalizers))]

    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        texts = [fill(template, prompt, text) for prompt in prompts for text in inputs]
        if self.scoring == "logprobs":
            ids = self._verbalizer_ids(verbalizers)

            async def score_all():
                return await asyncio.gather(*(self._score_one(t, verbalizers, ids) for t in texts))

            rows = self._run(score_all())
            missing = [i for i, row in enumerate(rows) if row is None]
            if len(missing) == len(rows):  # no reply carried logprobs: an endpoint without them, not a fault
                raise TargetError(
                    f"{self.base_url} returned no logprobs for {self.model}, so classes cannot be scored by "
                    f"log-probability. To score by parsing the greedy answer into a label instead (hard labels, not "
                    f"probabilities; answers that name no label are counted as unparsed), add scoring=labels to the "
                    f"target spec in --target or a config's target: openai:{self.base_url}:{self.model}?scoring=labels "
                    f"(other options follow after &)"
                )
            if missing:  # some replies of the first batch lacked logprobs: faults, retried

                async def rescore():
                    return await asyncio.gather(*(self._score_one(texts[i], verbalizers, ids) for i in missing))

                for i, row in zip(missing, self._run(rescore())):
                    rows[i] = row
            return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(inputs), len(verbalizers))

        async def label_all():
            return await asyncio.gather(*(self._label_one(t, verbalizers) for t in texts))

        rows = self._run(label_all())
        return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(inputs), len(verbalizers))

    # -- generation and likelihood ------------------------------------------------------------------
    def _text(self, reply: dict, index: int) -> str:
        if "message" in _field(reply, "choices", index):
            content = _field(reply, "choices", index, "message", "content")
        else:
            content = _field(reply, "choices", index, "text")
        if not isinstance(content, str):
            raise TargetError(f"malformed reply: choice {index} holds {content!r} instead of text")
        return content

    async def _generate_one(self, text: str, max_new_tokens, temperature, top_p, num_samples, seed, chat) -> list[str]:
        payload: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature}
        if temperature > 0:
            payload["top_p"] = top_p
        if seed is not None:
            payload["seed"] = seed
        n = num_samples if self._n_supported else 1
        if n > 1:
            payload["n"] = n
        reply = await self._post(*self._request(text, chat, **payload), sequences=0)
        choices = _field(reply, "choices")
        out = [self._text(reply, i) for i in range(len(choices))][:num_samples]
        with self._lock:
            self.stats.sequences += len(out)
        if len(out) < num_samples:
            if len(out) == 1 and n > 1:
                self._n_supported = False  # the server ignores ``n``: ask once per sample
            more = []
            for i in range(num_samples - len(out)):
                extra = dict(payload, n=1) if seed is None else dict(payload, n=1, seed=seed + len(out) + i)
                more.append(self._post(*self._request(text, chat, **extra)))
            out += [self._text(r, 0) for r in await asyncio.gather(*more)]
        return out

    def _generate(self, texts, max_new_tokens, temperature, top_p, num_samples, seed, chat) -> list[str]:
        async def run():
            return await asyncio.gather(
                *(self._generate_one(t, max_new_tokens, temperature, top_p, num_samples, seed, chat) for t in texts)
            )

        return [sample for samples in self._run(run()) for sample in samples]

    async def _loglikelihood_one(self, context: str, continuation: str) -> float:
        payload = {"prompt": context + continuation, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}
        reply = await self._post("completions", payload)
        logprobs = _field(reply, "choices", 0, "logprobs")
        offsets, values = _field(logprobs, "text_offset"), _field(logprobs, "token_logprobs")
        total, counted = 0.0, 0
        for offset, value in zip(offsets, values):
            if len(context) <= offset < len(context) + len(continuation):
                if value is None:
                    raise TargetError(f"the endpoint returned no log-probability for a token of {continuation!r}")
                total, counted = total + float(value), counted + 1
        if not counted:
            raise TargetError(f"no echoed token falls inside the continuation {continuation!r}")
        return total

    def _loglikelihood(self, contexts: list[str], continuations: list[str]) -> np.ndarray:
        if not self.echo_loglikelihood:
            raise TargetError(
                f"{self.name}: loglikelihood needs prompt log-probabilities (completions with echo=True), which "
                f"not every server returns correctly (llama-cpp-python 0.3.36 reports each token's value from the "
                f"next position's distribution); pass echo_loglikelihood=True only for a server whose echoed "
                f"logprobs you checked against a local model (e.g. vLLM)"
            )

        async def run():
            return await asyncio.gather(*(self._loglikelihood_one(c, x) for c, x in zip(contexts, continuations)))

        return np.asarray(self._run(run()), dtype=np.float64)
