"""An HTTP service around a :class:`~rlprompt.enhancer.PromptEnhancer` (PRewrite, Kong et al. 2024).

Endpoints (FastAPI, see :func:`create_app`; no ``/docs`` or OpenAPI schema is served):

* ``POST /v1/enhance``: ``{"prompt": str}`` -> ``{"enhanced": str}``; ``{"prompts": [str, ...]}`` ->
  ``{"enhanced": [str, ...]}``.
* ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``: an OpenAI-compatible proxy to
  ``upstream`` that rewrites what ``enhance_scope`` and each request's ``x-rlprompt-enhance`` switch ask for
  (by default the last user message of a chat; a completion's raw prompt only when the request opts in).
  See :mod:`rlprompt.proxy`.
* ``GET /health``: liveness plus counters (``enhancer_calls``, ``enhanced_prompts``, ``errors``).

Every error is a JSON body ``{"error": {"message", "type", "code"}}``: 400 malformed JSON (NaN, nesting too
deep), 401 missing or wrong bearer token (compared with :func:`hmac.compare_digest`), 404/405 unknown route
or method, 408 body not received within ``body_timeout``, 413 body over ``max_body_bytes``, 415 a body that
is not ``application/json`` (so a web page cannot post a "simple" cross-site request), 422 a body of the
wrong shape, a bad ``x-rlprompt-enhance`` switch, a prompt that is not valid Unicode text (a lone surrogate)
or over ``max_prompt_chars`` or the enhancer's token limit, 500 enhancer failure (details only in the server
log), 501 no upstream configured, 502 upstream unreachable, broken or refusing the proxy's credentials
(``upstream_auth``), 503 queue full or too many requests in flight, 504 upstream past its deadline.

Concurrent requests are batched: a queue collects the prompts that arrive within ``batch_window_ms`` of the
first one (up to ``max_batch`` prompts and ``max_batch_tokens`` padded tokens) and one worker thread runs ONE
enhancer call for all of them, so the model is never used by two threads at once. When a batch fails, each
of its requests is retried alone, so one bad request never fails another.
"""

# no `from __future__ import annotations`: FastAPI must see the real Request class of the handlers below

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, Protocol

from rlprompt.errors import ConfigError, DataError
from rlprompt.proxy import ENHANCE_SCOPES, SWITCH_HEADER, HTTPError, Proxy, Upstream, error_body

log = logging.getLogger("rlprompt.serve")


class Enhancer(Protocol):
    """What the service needs: ``enhance(list[str]) -> list[str]`` (PromptEnhancer fits). An enhancer that
    also has ``count_tokens(str) -> int`` and ``max_input_tokens`` gets a token limit and token-capped batches."""

    def enhance(self, prompt: Sequence[str]) -> list[str]: ...


@dataclass
class ServeConfig:
    """Settings of the enhancer service (:func:`create_app`); every limit is checked in ``__post_init__``."""

    upstream: str | None = None
    """Base URL of the OpenAI-compatible server behind ``/v1/chat/completions`` (``http://host:port/v1``)."""
    api_key: str | None = field(default=None, repr=False)
    """Bearer token clients must send to the ``/v1`` endpoints; ``None`` serves without auth (warned)."""
    upstream_api_key: str | None = field(default=None, repr=False)
    """Bearer token the proxy sends upstream (the client's own token is never forwarded)."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted (413 beyond)."""
    body_timeout: float = 10.0
    """Seconds allowed to receive a whole request body (408 beyond): half-sent bodies do not hold slots."""
    max_prompt_chars: int = 8000
    """Longest prompt in characters (422 beyond), checked before any tokenization."""
    max_prompt_tokens: int | None = None
    """Longest prompt in enhancer input tokens (422 beyond); ``None``: what the enhancer's model can take."""
    max_batch: int = 32
    """Most prompts per enhancer call (and per ``/v1/enhance`` request)."""
    max_batch_tokens: int = 8192
    """Most padded tokens (prompts x the longest) per enhancer call; a request above it runs alone."""
    batch_window_ms: float = 10.0
    """How long the first queued request waits for others to batch with."""
    max_queue: int = 1024
    """Requests waiting for the enhancer (503 beyond)."""
    max_concurrent: int = 256
    """Requests in flight, ``/health`` excepted (503 beyond)."""
    upstream_timeout: float = 120.0
    """Total seconds for one upstream exchange, streamed answers included (504, or an error event, beyond)."""
    enhance_scope: str = "all"
    """What the proxy rewrites: ``all`` (the last user message of every chat), ``opt-in`` (only requests that
    send ``x-rlprompt-enhance: on``), ``system`` (the system messages); see :mod:`rlprompt.proxy`."""

    def __post_init__(self) -> None:
        positive = {name: getattr(self, name) for name in ("max_body_bytes", "body_timeout", "max_prompt_chars",
                                                           "max_batch", "max_batch_tokens", "max_queue",
                                                           "max_concurrent", "upstream_timeout")}
        if self.max_prompt_tokens is not None:
            positive["max_prompt_tokens"] = self.max_prompt_tokens
        bad = {name: value for name, value in positive.items() if not value > 0}
        if bad:
            raise ConfigError(f"serve limits must be > 0, got {bad}")
        if not self.batch_window_ms >= 0:
            raise ConfigError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.enhance_scope not in ENHANCE_SCOPES:
            raise ConfigError(f"enhance_scope must be one of {', '.join(ENHANCE_SCOPES)}, got {self.enhance_scope!r}")
        if self.upstream is not None and not self.upstream.startswith(("http://", "https://")):
            raise ConfigError(f"upstream must be an http:// or https:// URL, got {self.upstream!r}")


@dataclass
class Stats:
    """Counters reported by ``GET /health``."""

    enhancer_calls: int = 0
    enhanced_prompts: int = 0
    requests: int = 0
    errors: int = 0

    def count_error(self) -> None:
        """One more error (for a failure answered outside the app's error handler: mid-stream)."""
        self.errors += 1


class Job(NamedTuple):
    """One request's prompts waiting in the :class:`Batcher`, with their token counts."""

    prompts: list[str]
    tokens: list[int]
    future: asyncio.Future


def _enhancer_failed() -> HTTPError:
    return HTTPError(500, "the enhancer failed on this request (details are in the server log)", "server_error",
                     "enhancer_failed")


class Batcher:
    """Collects the jobs of concurrent requests for ``window_s`` after the first arrives (at most ``max_batch``
    prompts and ``max_tokens`` padded tokens; a job that does not fit opens the next batch), runs one
    ``enhancer.enhance`` call in a worker thread and answers every request. When the call fails, each job is
    retried alone, so only the job that breaks the enhancer gets the error."""

    def __init__(self, enhancer: Enhancer, stats: Stats, *, window_s: float, max_batch: int, max_queue: int,
                 max_tokens: int) -> None:
        self.enhancer, self.stats = enhancer, stats
        self.window_s, self.max_batch, self.max_tokens = window_s, max_batch, max_tokens
        self.queue: "asyncio.Queue[Job]" = asyncio.Queue(maxsize=max_queue)
        self.held: Job | None = None  # the job that did not fit the last batch
        self.task: "asyncio.Task | None" = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def enhance(self, prompts: list[str], tokens: list[int]) -> list[str]:
        """Queue ``prompts`` (with their token counts) and wait for their rewrites."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Job(prompts, tokens, future))
        except asyncio.QueueFull:
            raise HTTPError(503, "the enhancer queue is full; retry later", "server_overloaded",
                            "queue_full") from None
        return await future

    def _fits(self, batch: list[Job], job: Job) -> bool:
        size = sum(len(j.prompts) for j in batch) + len(job.prompts)
        widest = max(max(j.tokens) for j in (*batch, job))
        return size <= self.max_batch and size * widest <= self.max_tokens

    async def _collect(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        first = self.held if self.held is not None else await self.queue.get()
        self.held = None
        batch, deadline = [first], loop.time() + self.window_s
        while sum(len(j.prompts) for j in batch) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                break
            if not self._fits(batch, job):
                self.held = job
                break
            batch.append(job)
        return batch

    async def _call(self, prompts: list[str]) -> list[str]:
        results = await asyncio.to_thread(self.enhancer.enhance, prompts)
        if not (isinstance(results, list) and len(results) == len(prompts)
                and all(isinstance(r, str) for r in results)):
            raise RuntimeError(f"enhancer returned {type(results).__name__} for {len(prompts)} prompts")
        self.stats.enhancer_calls += 1
        self.stats.enhanced_prompts += len(prompts)
        return results

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                results = await self._call([p for job in batch for p in job.prompts])
            except Exception as err:
                if len(batch) == 1:
                    log.error("the enhancer failed on a request of %d prompts", len(batch[0].prompts), exc_info=err)
                    _settle(batch[0].future, error=_enhancer_failed())
                    continue
                log.warning("the enhancer failed on a batch of %d requests (%s); retrying each alone",
                            len(batch), type(err).__name__)
                for job in batch:
                    try:
                        _settle(job.future, await self._call(job.prompts))
                    except Exception as alone:
                        log.error("the enhancer failed on a request of %d prompts", len(job.prompts), exc_info=alone)
                        _settle(job.future, error=_enhancer_failed())
                continue
            start = 0
            for job in batch:
                _settle(job.future, results[start:start + len(job.prompts)])
                start += len(job.prompts)


def _settle(future: asyncio.Future, result: Any = None, *, error: Exception | None = None) -> None:
    """Answer a waiting request unless it has gone (cancelled by a client that hung up)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in flight (``GET /health`` excepted); the next ones get
    503 at once instead of piling up (slow or half-sent clients cannot exhaust the server)."""

    def __init__(self, app: Any, limit: int, stats: Stats) -> None:
        self.app, self.limit, self.stats, self.active = app, limit, stats, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            from fastapi.responses import JSONResponse

            self.stats.errors += 1
            body = error_body(503, f"over {self.limit} requests in flight; retry later", "server_overloaded",
                               "too_many_requests")
            return await JSONResponse(body, status_code=503, headers={"Connection": "close"})(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Any, config: ServeConfig) -> Any:
    """The request's JSON body: ``application/json`` only (415), at most ``max_body_bytes`` (413) received
    within ``body_timeout`` (408), parsed strictly (400 for bad JSON, NaN/Infinity or nesting too deep)."""
    from starlette.requests import ClientDisconnect

    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPError(415, f"the body must be application/json, got {media or 'no content-type'}",
                        code="unsupported_media_type")
    too_large = HTTPError(413, f"request body over {config.max_body_bytes} bytes", code="body_too_large",
                          headers={"Connection": "close"})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(config.body_timeout):
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > config.max_body_bytes:
                    raise too_large
    except TimeoutError:
        raise HTTPError(408, f"request body not received within {config.body_timeout} s", code="body_timeout",
                        headers={"Connection": "close"}) from None
    except ClientDisconnect:  # nobody is left to answer; no traceback for it
        raise HTTPError(400, "the client hung up before sending its whole body", code="client_disconnected") from None
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise HTTPError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN / Infinity
        raise HTTPError(400, f"malformed JSON body: {err}", code="invalid_json") from None


class PromptCheck:
    """What a prompt must be before it is queued for the enhancer: a string of at most ``max_prompt_chars``
    characters, valid Unicode (no lone surrogate, which breaks a tokenizer), and at most ``max_prompt_tokens``
    enhancer input tokens (default: what the enhancer's model can take, its context minus the tokens it
    generates). Calling it returns the prompts and their token counts (characters when the enhancer cannot
    count tokens), which the :class:`Batcher` uses to cap padded tokens."""

    def __init__(self, enhancer: Enhancer, config: ServeConfig) -> None:
        self.count = getattr(enhancer, "count_tokens", None)
        self.max_chars, self.max_tokens = config.max_prompt_chars, config.max_prompt_tokens
        model_limit = getattr(enhancer, "max_input_tokens", None) if self.count is not None else None
        if self.max_tokens is not None and self.count is None:
            raise ConfigError(f"max_prompt_tokens={self.max_tokens} needs an enhancer with count_tokens")
        if model_limit is not None:
            if model_limit < 1:
                raise DataError(f"the enhancer's model takes no input: max_input_tokens={model_limit}")
            if self.max_tokens is not None and self.max_tokens > model_limit:
                raise ConfigError(f"max_prompt_tokens={self.max_tokens} is over what the enhancer's model can take "
                                  f"({model_limit}: its context minus the tokens it generates)")
            self.max_tokens = self.max_tokens or model_limit

    def text(self, text: Any, where: str) -> str:
        """``text`` if it is a string within the character limit and valid Unicode; a 422 naming ``where``."""
        if not isinstance(text, str):
            raise HTTPError(422, f"{where} must be a string, got {type(text).__name__}", code="invalid_prompt")
        if len(text) > self.max_chars:
            raise HTTPError(422, f"{where} has {len(text)} characters, over the limit of {self.max_chars}",
                            code="prompt_too_long")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise HTTPError(422, f"{where} is not valid Unicode text: a lone surrogate at character {err.start}",
                            code="invalid_text") from None
        return text

    def __call__(self, texts: list[Any], wheres: list[str]) -> tuple[list[str], list[int]]:
        checked = [self.text(t, w) for t, w in zip(texts, wheres)]
        if self.count is None:
            return checked, [len(t) for t in checked]
        tokens = [self.count(t) for t in checked]
        for where, n in zip(wheres, tokens):
            if self.max_tokens is not None and n > self.max_tokens:
                raise HTTPError(422, f"{where} makes {n} enhancer input tokens, over the limit of {self.max_tokens}",
                                code="too_many_tokens")
        return checked, tokens


def create_app(enhancer: Enhancer, config: ServeConfig | None = None, **settings: Any):
    """The FastAPI app serving ``enhancer`` (see the module docstring) with ``config``, whose fields
    ``settings`` may override (``create_app(enhancer, batch_window_ms=5)``). Without ``upstream``, the proxy
    routes answer 501; without ``api_key``, anyone who reaches the port may use it (a warning is logged).
    ``/health`` needs no key."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config = dataclasses.replace(config or ServeConfig(), **settings)
    check = PromptCheck(enhancer, config)
    if config.api_key is None:
        log.warning("serving without an API key: any program or web page that reaches this port can use the "
                    "enhancer%s; set --api-key-env", " and the upstream" if config.upstream else "")
    stats = Stats()
    expected = ("Bearer " + config.api_key).encode() if config.api_key else None
    upstream = Upstream(config.upstream, config.upstream_api_key, config.upstream_timeout, stats.count_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = Batcher(enhancer, stats, window_s=config.batch_window_ms / 1000,
                                    max_batch=config.max_batch, max_queue=config.max_queue,
                                    max_tokens=config.max_batch_tokens)
        app.state.batcher.start()
        await upstream.open()
        try:
            yield
        finally:
            await app.state.batcher.stop()
            await upstream.close()

    app = FastAPI(title="rlprompt enhancer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(ConcurrencyLimit, limit=config.max_concurrent, stats=stats)
    app.state.stats = stats

    def error(err: HTTPError) -> JSONResponse:
        stats.errors += 1
        headers = dict(err.headers or {})
        if err.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(err.status, err.message, err.kind, err.code), status_code=err.status,
                            headers=headers)

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, err: HTTPError):
        return error(err)

    @app.exception_handler(StarletteHTTPException)
    async def on_routing_error(request: Request, err: StarletteHTTPException):  # 404, 405
        message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed here"}
        return error(HTTPError(err.status_code, message.get(err.status_code, str(err.detail)),
                               code="not_found" if err.status_code == 404 else None, headers=err.headers))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, err: Exception):  # Starlette logs the traceback after this
        return error(HTTPError(500, "internal error (details are in the server log)", "server_error"))

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPError(401, "missing or invalid bearer token", "authentication_error")

    async def enhance_texts(texts: list[Any], wheres: list[str]) -> list[str]:
        return await app.state.batcher.enhance(*check(texts, wheres))

    @app.get("/health")
    async def health():
        return {"status": "ok", "proxy": config.upstream is not None, "enhancer_calls": stats.enhancer_calls,
                "enhanced_prompts": stats.enhanced_prompts, "requests": stats.requests, "errors": stats.errors}

    @app.post("/v1/enhance")
    async def enhance(request: Request):
        stats.requests += 1
        authorize(request)
        body = await read_json(request, config)
        if isinstance(body, dict) and "prompt" in body and "prompts" not in body:
            return {"enhanced": (await enhance_texts([body["prompt"]], ["prompt"]))[0]}
        if isinstance(body, dict) and isinstance(body.get("prompts"), list) and "prompt" not in body:
            prompts = body["prompts"]
            if not 1 <= len(prompts) <= config.max_batch:
                raise HTTPError(422, f"prompts must hold 1 to {config.max_batch} strings", code="invalid_prompts")
            return {"enhanced": await enhance_texts(prompts, [f"prompts[{i}]" for i in range(len(prompts))])}
        raise HTTPError(422, 'body must be {"prompt": str} or {"prompts": [str, ...]}', code="invalid_body")

    async def rewrite_or_keep(texts: list[str], what: str) -> tuple[list[str], str | None]:
        """The rewrites of ``texts``; the original text where a rewrite is blank or fails (and why)."""
        try:
            rewrites = await enhance_texts(texts, [f"the {what}'s text"] * len(texts))
        except HTTPError as err:
            log.warning("forwarding the %s unenhanced: %s", what, err.message)
            return texts, err.code or str(err.status)
        kept = [r if r.strip() else t for r, t in zip(rewrites, texts)]
        return kept, "blank_rewrite" if any(not r.strip() for r in rewrites) else None

    proxy = Proxy(upstream, rewrite_or_keep, config.enhance_scope)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        stats.requests += 1
        authorize(request)
        return await proxy.chat(await read_json(request, config), request.headers.get(SWITCH_HEADER))

    @app.post("/v1/completions")
    async def completions(request: Request):
        stats.requests += 1
        authorize(request)
        return await proxy.completions(await read_json(request, config), request.headers.get(SWITCH_HEADER))

    @app.get("/v1/models")
    async def models(request: Request):
        stats.requests += 1
        authorize(request)
        return await proxy.models()

    return app


def _secret(env: str | None, what: str) -> str | None:
    """The value of the environment variable ``env`` (``None`` when no variable is named)."""
    if not env:
        return None
    value = os.environ.get(env)
    if not value:
        raise ConfigError(f"environment variable {env!r} ({what}) is not set or empty")
    return value


def serve(enhancer_dir: str | Path, config: ServeConfig | None = None, *, host: str = "127.0.0.1",
          port: int = 8000, api_key_env: str | None = None, upstream_api_key_env: str | None = None,
          dtype: str | None = None) -> None:
    """Load the enhancer saved in ``enhancer_dir`` and serve it with uvicorn (blocks). ``api_key_env`` and
    ``upstream_api_key_env`` name the environment variables holding the bearer tokens clients must send and the
    proxy sends upstream (a key never goes on a command line). Bad settings fail before the model loads."""
    import uvicorn

    from rlprompt.enhancer import PromptEnhancer

    if not 0 <= port <= 65535:
        raise ConfigError(f"port must lie in 0..65535, got {port}")
    config = dataclasses.replace(config or ServeConfig(), api_key=_secret(api_key_env, "the API key"),
                                 upstream_api_key=_secret(upstream_api_key_env, "the upstream API key"))
    enhancer = PromptEnhancer.from_pretrained(enhancer_dir, dtype=dtype)
    app = create_app(enhancer, config)
    # uvicorn's own cap counts connections too (idle or sending headers): a backstop behind the app's limit
    uvicorn.run(app, host=host, port=port, log_level="info", limit_concurrency=2 * config.max_concurrent)


@contextmanager
def running_in_background(app: Any, *, log_level: str = "warning", start_timeout: float = 30.0) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free loopback port in a daemon thread; yield its base URL
    (``http://127.0.0.1:<port>``) once it accepts requests, and stop it on exit. For in-process load
    tests, test servers and :class:`~rlprompt.targets.faulty.FaultyEndpoint`."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-background", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on port {port} within {start_timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


SETTINGS = ("upstream", "max_body_bytes", "body_timeout", "max_prompt_chars", "max_prompt_tokens", "max_batch",
            "max_batch_tokens", "batch_window_ms", "max_concurrent", "upstream_timeout",
            "enhance_scope")  # CLI options of ServeConfig


def serve_main(args: Any) -> int:
    """CLI glue for ``rlprompt serve``: ``args`` has enhancer_dir, host, port, api_key_env, upstream_api_key_env,
    dtype and one attribute per name in :data:`SETTINGS`."""
    config = ServeConfig(**{name: getattr(args, name) for name in SETTINGS})
    serve(args.enhancer_dir, config, host=args.host, port=args.port, api_key_env=args.api_key_env,
          upstream_api_key_env=args.upstream_api_key_env, dtype=args.dtype)
    return 0


__all__ = ["Batcher", "HTTPError", "PromptCheck", "ServeConfig", "create_app", "read_json", "running_in_background",
           "serve", "serve_main"]
