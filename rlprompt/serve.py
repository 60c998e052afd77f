"""An HTTP service around a :class:`~rlprompt.enhancer.PromptEnhancer` (PRewrite, Kong et al. 2024).

Endpoints (FastAPI, see :func:`create_app`):

* ``POST /v1/enhance``: ``{"prompt": str}`` -> ``{"enhanced": str}``; ``{"prompts": [str, ...]}`` ->
  ``{"enhanced": [str, ...]}``.
* ``POST /v1/chat/completions``: OpenAI-compatible. The LAST user message is rewritten by the enhancer and
  the request is forwarded to ``{upstream}/chat/completions`` (any OpenAI-compatible server: vLLM,
  ``transformers serve``, llama.cpp); the upstream answer is returned as is (streamed when ``stream`` is true).
* ``GET /health``: liveness plus counters (``enhancer_calls``, ``enhanced_prompts``, ``errors``).

Every error is a JSON body ``{"error": {"message", "type", "code"}}``: 400 malformed JSON, 401 missing or
wrong bearer token (compared with :func:`hmac.compare_digest`), 413 body over ``max_body_bytes``, 422 a
body of the wrong shape or a prompt over ``max_prompt_chars``, 502 upstream unreachable or broken, 503
queue full, 504 upstream timeout. Concurrent requests are batched: a queue collects the prompts that arrive
within ``batch_window_ms`` of the first one (up to ``max_batch``) and one worker thread runs ONE enhancer
call for all of them, so the model is never used by two threads at once.
"""

# no `from __future__ import annotations`: FastAPI must see the real Request class of the handlers below

import asyncio
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Enhancer(Protocol):
    """What the service needs: ``enhance(list[str]) -> list[str]`` (PromptEnhancer fits)."""

    def enhance(self, prompt: Sequence[str]) -> list[str]: ...


class HTTPError(Exception):
    """An error answered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


@dataclass
class Stats:
    """Counters reported by ``GET /health``."""

    enhancer_calls: int = 0
    enhanced_prompts: int = 0
    requests: int = 0
    errors: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class Batcher:
    """Collects prompts of concurrent requests for ``window_s`` after the first arrives (at most
    ``max_batch``), then runs one ``enhancer.enhance`` call in a worker thread and answers every request."""

    def __init__(self, enhancer: Enhancer, stats: Stats, *, window_s: float, max_batch: int, max_queue: int) -> None:
        self.enhancer, self.stats = enhancer, stats
        self.window_s, self.max_batch = window_s, max_batch
        self.queue: "asyncio.Queue[tuple[list[str], asyncio.Future]]" = asyncio.Queue(maxsize=max_queue)
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

    async def enhance(self, prompts: list[str]) -> list[str]:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((prompts, future))
        except asyncio.QueueFull:
            raise HTTPError(503, "the enhancer queue is full; retry later", "server_overloaded") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0][0]), loop.time() + self.window_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0])
            prompts = [p for item, _ in batch for p in item]
            try:
                results = await asyncio.to_thread(self.enhancer.enhance, prompts)
                if not isinstance(results, list) or len(results) != len(prompts):
                    raise RuntimeError(f"enhancer returned {type(results).__name__} for {len(prompts)} prompts")
                self.stats.enhancer_calls += 1
                self.stats.enhanced_prompts += len(prompts)
                self.stats.batch_sizes.append(len(prompts))
            except Exception as err:  # answer every waiting request, keep serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(HTTPError(500, f"enhancer failed: {type(err).__name__}: {err}",
                                                       "server_error"))
                continue
            start = 0
            for item, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(item)])
                start += len(item)


def create_app(enhancer: Enhancer, *, upstream: str | None = None, api_key: str | None = None,
               max_body_bytes: int = 1 << 20, max_prompt_chars: int = 8000, batch_window_ms: float = 10.0,
               max_batch: int = 32, max_queue: int = 1024, upstream_timeout: float = 120.0):
    """The FastAPI app serving ``enhancer`` (see the module docstring). ``upstream`` is the base URL of an
    OpenAI-compatible server (``http://host:port/v1``); without it ``/v1/chat/completions`` answers 501.
    ``api_key`` turns on bearer-token auth for the ``/v1`` endpoints (``/health`` stays open)."""
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    if max_body_bytes < 1 or max_prompt_chars < 1 or batch_window_ms < 0 or max_batch < 1:
        raise ValueError(f"bad limits: max_body_bytes={max_body_bytes}, max_prompt_chars={max_prompt_chars}, "
                         f"batch_window_ms={batch_window_ms}, max_batch={max_batch}")
    stats = Stats()
    expected = ("Bearer " + api_key).encode() if api_key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = Batcher(enhancer, stats, window_s=batch_window_ms / 1000, max_batch=max_batch,
                                    max_queue=max_queue)
        app.state.batcher.start()
        app.state.client = httpx.AsyncClient(timeout=httpx.Timeout(upstream_timeout, connect=10.0))
        try:
            yield
        finally:
            await app.state.batcher.stop()
            await app.state.client.aclose()

    app = FastAPI(title="rlprompt enhancer", lifespan=lifespan)
    app.state.stats = stats

    def error(err: HTTPError) -> JSONResponse:
        stats.errors += 1
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse({"error": {"message": err.message, "type": err.kind, "code": err.code or err.status}},
                            status_code=err.status, headers=headers)

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, err: HTTPError):
        return error(err)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, err: Exception):
        return error(HTTPError(500, f"internal error: {type(err).__name__}: {err}", "server_error"))

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPError(401, "missing or invalid bearer token", "authentication_error")

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPError(413, f"request body over {max_body_bytes} bytes", code="body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_body_bytes:
                raise HTTPError(413, f"request body over {max_body_bytes} bytes", code="body_too_large")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPError(400, f"malformed JSON body: {err}", code="invalid_json") from None

    def check_prompt(prompt: Any, where: str) -> str:
        if not isinstance(prompt, str):
            raise HTTPError(422, f"{where} must be a string, got {type(prompt).__name__}", code="invalid_prompt")
        if len(prompt) > max_prompt_chars:
            raise HTTPError(422, f"{where} has {len(prompt)} characters, over the limit of {max_prompt_chars}",
                            code="prompt_too_long")
        return prompt

    @app.get("/health")
    async def health():
        return {"status": "ok", "upstream": upstream, "enhancer_calls": stats.enhancer_calls,
                "enhanced_prompts": stats.enhanced_prompts, "requests": stats.requests, "errors": stats.errors}

    @app.post("/v1/enhance")
    async def enhance(request: Request):
        stats.requests += 1
        authorize(request)
        body = await read_json(request)
        if isinstance(body, dict) and "prompt" in body and "prompts" not in body:
            prompt = check_prompt(body["prompt"], "prompt")
            return {"enhanced": (await request.app.state.batcher.enhance([prompt]))[0]}
        if isinstance(body, dict) and isinstance(body.get("prompts"), list) and "prompt" not in body:
            if not 1 <= len(body["prompts"]) <= max_batch:
                raise HTTPError(422, f"prompts must hold 1 to {max_batch} strings", code="invalid_prompts")
            prompts = [check_prompt(p, f"prompts[{i}]") for i, p in enumerate(body["prompts"])]
            return {"enhanced": await request.app.state.batcher.enhance(prompts)}
        raise HTTPError(422, 'body must be {"prompt": str} or {"prompts": [str, ...]}', code="invalid_body")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        stats.requests += 1
        authorize(request)
        body = await read_json(request)
        if upstream is None:
            raise HTTPError(501, "no upstream configured: start the server with --upstream", "server_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise HTTPError(422, "body must be an object with a list of message objects in 'messages'",
                            code="invalid_messages")
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            raise HTTPError(422, "messages hold no user message to enhance", code="no_user_message")
        last = messages[users[-1]]
        content = last.get("content")
        if isinstance(content, list):  # content parts: rewrite the joined text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        prompt = check_prompt(content, "the last user message's content")
        enhanced = (await request.app.state.batcher.enhance([prompt]))[0]
        messages[users[-1]] = {**last, "content": enhanced}
        url = upstream.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json"}
        client: httpx.AsyncClient = request.app.state.client
        try:
            if body.get("stream"):
                upstream_request = client.build_request("POST", url, json=body, headers=headers)
                response = await client.send(upstream_request, stream=True)

                async def relay():
                    try:
                        async for chunk in response.aiter_raw():
                            yield chunk
                    finally:
                        await response.aclose()

                return StreamingResponse(relay(), status_code=response.status_code,
                                         media_type=response.headers.get("content-type", "text/event-stream"))
            response = await client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise HTTPError(504, f"upstream {upstream} timed out", "upstream_error", "upstream_timeout") from None
        except httpx.TransportError as err:
            raise HTTPError(502, f"upstream {upstream} unreachable: {type(err).__name__}", "upstream_error",
                            "upstream_unreachable") from None
        try:
            answer = response.json()
        except ValueError:
            raise HTTPError(502, f"upstream answered {response.status_code} with a non-JSON body", "upstream_error",
                            "upstream_bad_response") from None
        return JSONResponse(answer, status_code=response.status_code,
                            headers={"x-rlprompt-enhanced-prompt": json.dumps(enhanced)[:2000]})

    return app


def serve(enhancer_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, upstream: str | None = None,
          api_key_env: str | None = None, *, dtype: str | None = None, batch_window_ms: float = 10.0,
          max_body_bytes: int = 1 << 20, max_prompt_chars: int = 8000) -> None:
    """Load the enhancer saved in ``enhancer_dir`` and serve it with uvicorn (blocks). ``api_key_env``
    names the environment variable holding the bearer token (the key itself never goes on a command line)."""
    import uvicorn

    from rlprompt.enhancer import PromptEnhancer

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"environment variable {api_key_env!r} (the API key) is not set or empty")
    enhancer = PromptEnhancer.from_pretrained(enhancer_dir, dtype=dtype)
    app = create_app(enhancer, upstream=upstream, api_key=api_key, max_body_bytes=max_body_bytes,
                     max_prompt_chars=max_prompt_chars, batch_window_ms=batch_window_ms)
    uvicorn.run(app, host=host, port=port, log_level="info")


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


def serve_main(args: Any) -> int:
    """CLI glue for ``rlprompt serve``: ``args`` has enhancer_dir, host, port, upstream, api_key_env, dtype,
    batch_window_ms, max_body_bytes, max_prompt_chars."""
    serve(args.enhancer_dir, args.host, args.port, args.upstream, args.api_key_env, dtype=args.dtype,
          batch_window_ms=args.batch_window_ms, max_body_bytes=args.max_body_bytes,
          max_prompt_chars=args.max_prompt_chars)
    return 0


__all__ = ["Batcher", "HTTPError", "create_app", "serve", "serve_main"]
