"""The OpenAI-compatible side of the enhancer service (:mod:`rlprompt.serve`, PRewrite, Kong et al. 2024): which
text of a request the enhancer rewrites, and the upstream server the request then goes to.

Routes (registered by :func:`rlprompt.serve.create_app`, behind the service's bearer token):

* ``POST /v1/chat/completions``: the request's text is rewritten as below, then the request goes to
  ``{upstream}/chat/completions`` (any OpenAI-compatible server: vLLM, ``transformers serve``, llama.cpp, a
  hosted API); the answer is relayed, streamed only when ``stream`` is literally ``true``.
* ``POST /v1/completions``: goes to ``{upstream}/completions`` unchanged unless the request opts in: a completion
  prompt is raw text to continue (a document, few-shot examples), not an instruction a rewriter was trained on.
  Opted in, its ``prompt`` (a string or a list of strings) is rewritten. Streaming as for chat.
* ``GET /v1/models``: the upstream's model list, relayed.

**What is rewritten.** A request may carry a switch, the header ``x-rlprompt-enhance: on|off`` or the body
field ``"rlprompt_enhance": true|false`` (OpenAI clients send them with ``extra_headers`` / ``extra_body``; the
field is removed before forwarding; when both are given they must agree). The server's ``enhance_scope``
(:data:`ENHANCE_SCOPES`) decides the rest; ``off`` always forwards the request unchanged:

======  ==============================  ==============================  ==================
scope   chat, no switch                 chat, ``on``                    completion, ``on``
======  ==============================  ==============================  ==================
all     the last user message           the last user message           the prompt
opt-in  nothing                         the last user message           the prompt
system  every system/developer message  every system/developer message  nothing
======  ==============================  ==============================  ==================

Only text is rewritten (a string content, or the non-blank text parts of a content list; images and every
other field are kept). A rewrite that is blank or fails keeps the original text, and the
``x-rlprompt-enhance-fallback`` response header says why. ``x-rlprompt-enhance`` (``on``/``off``) says whether
the request's text went to the enhancer, ``x-rlprompt-enhanced-prompt`` shows the rewrite (JSON, cut at 2,000
characters).

**The upstream** gets the operator's key (``upstream_api_key``), never the client's, under ONE deadline per
exchange (headers, body and every streamed chunk). Its failures reach the client as 502/504 without internals
(URL, exception text), which go to the server log; an upstream 401/403 is a 502 ``upstream_auth``; the key is
redacted from relayed error bodies.
"""

# no `from __future__ import annotations`, like rlprompt.serve: FastAPI resolves the route annotations at runtime

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

log = logging.getLogger("rlprompt.serve.proxy")  # a child of the service's log: the operator reads one log

ENHANCE_SCOPES = ("all", "opt-in", "system")
"""Values of ``ServeConfig.enhance_scope``: what a chat request without a switch gets rewritten (module docstring)."""
SWITCH_HEADER = "x-rlprompt-enhance"
SWITCH_FIELD = "rlprompt_enhance"
INSTRUCTION_ROLES = ("system", "developer")  # OpenAI's newer models name the system message "developer"

Rewrite = Callable[[list[str], str], Awaitable[tuple[list[str], str | None]]]
"""``rewrite(texts, what)``: the enhancer's rewrites of ``texts`` (at least one; the original text where a rewrite
is blank or fails) and, when any fell back, why (an error code)."""

Spot = tuple[Any, Any]
"""Where a text to rewrite lies in a request body: ``(container, key)`` with ``container[key]`` the text."""


class HTTPError(Exception):
    """An error answered in OpenAI's envelope, ``{"error": {"message", "type", "code"}}``, with ``status`` (and
    extra response ``headers``)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers


def error_body(status: int, message: str, kind: str, code: str | None) -> dict[str, Any]:
    """OpenAI's error envelope (``code`` defaults to the HTTP status)."""
    return {"error": {"message": message, "type": kind, "code": code or status}}


def enhance_switch(header: str | None, body: dict[str, Any]) -> bool | None:
    """The request's own choice, from the ``x-rlprompt-enhance: on|off`` header or the ``rlprompt_enhance``
    body field (removed from ``body``); ``None`` when it makes none. 422 for another value or a disagreement."""
    choices = []
    if header is not None:
        value = header.strip().lower()
        if value not in ("on", "off"):
            raise HTTPError(422, f"header {SWITCH_HEADER} must be on or off, got {header[:50]!r}",
                            code="invalid_enhance_switch")
        choices.append(value == "on")
    if SWITCH_FIELD in body:
        value = body.pop(SWITCH_FIELD)
        if not isinstance(value, bool):
            raise HTTPError(422, f"{SWITCH_FIELD} must be true or false, got {json.dumps(value)[:50]}",
                            code="invalid_enhance_switch")
        choices.append(value)
    if len(set(choices)) > 1:
        raise HTTPError(422, f"header {SWITCH_HEADER} and field {SWITCH_FIELD} disagree", code="invalid_enhance_switch")
    return choices[0] if choices else None


def _message_spots(message: dict[str, Any], what: str) -> list[Spot]:
    """The texts of one chat message: its string content, or its non-blank text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [(message, "content")]
    if isinstance(content, list):
        return [(part, "text") for part in content if isinstance(part, dict) and part.get("type") == "text"
                and isinstance(part.get("text"), str) and part["text"].strip()]
    raise HTTPError(422, f"the {what}'s content must be a string or a list of content parts", code="invalid_content")


def chat_spots(messages: list[dict[str, Any]], scope: str) -> tuple[list[Spot], str]:
    """The texts of a chat request to rewrite under ``scope`` and what they are: the last user message's, or
    every system (developer) message's with scope ``system`` (none is fine there: the request goes unchanged)."""
    if scope == "system":
        what = "system message"
        return [s for m in messages if m.get("role") in INSTRUCTION_ROLES for s in _message_spots(m, what)], what
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise HTTPError(422, "messages hold no user message to enhance", code="no_user_message")
    return _message_spots(users[-1], "last user message"), "user message"


def completion_spots(body: dict[str, Any]) -> list[Spot]:
    """The texts of a completion request's ``prompt``: the string, or each non-blank string of a list."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [(body, "prompt")]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return [(prompt, i) for i, p in enumerate(prompt) if p.strip()]
    raise HTTPError(422, "to be rewritten, prompt must be a string or a list of strings (token ids are not text)",
                    code="invalid_prompt")


class Upstream:
    """The OpenAI-compatible server at ``url`` (``http://host:port/v1``), called with ``api_key`` under ONE
    deadline of ``timeout`` seconds per exchange (the headers, the body and every streamed chunk, so a server
    that drips bytes cannot hold a request). ``count_error`` is called for each failure met mid-stream, which
    reaches the client as a final SSE error event instead of an error response."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float, count_error: Callable[[], None]) -> None:
        self.url, self.api_key, self.timeout, self.count_error = url, api_key, timeout, count_error
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def error(self, err: Exception, *, streaming: bool = False) -> HTTPError:
        """The client's error for a failed exchange; the details go to the log only."""
        if isinstance(err, (TimeoutError, httpx.TimeoutException)):
            log.warning("upstream %s: no complete answer within %s s", self.url, self.timeout)
            return HTTPError(504, f"the upstream did not answer within {self.timeout} s", "upstream_error",
                             "upstream_timeout")
        log.warning("upstream %s failed%s: %s: %s", self.url, " mid-stream" if streaming else "",
                    type(err).__name__, err)
        if streaming:
            return HTTPError(502, "the upstream stream broke off", "upstream_error", "upstream_stream_broken")
        if isinstance(err, httpx.TransportError):
            return HTTPError(502, "the upstream is unreachable or hung up", "upstream_error", "upstream_unreachable")
        return HTTPError(502, "the upstream sent a broken answer", "upstream_error", "upstream_bad_response")

    async def send(self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
        """``method`` ``{url}{path}`` with the JSON ``body`` (none for a GET); the response to relay, with
        ``headers`` added: streamed when ``body["stream"]`` is true and the upstream answers 2xx, else the
        whole JSON answer."""
        from starlette.responses import StreamingResponse

        assert self.client is not None and self.url is not None, "Upstream.open() first, with a URL"
        upstream_headers = {"content-type": "application/json"} if body is not None else {}
        if self.api_key:
            upstream_headers["authorization"] = f"Bearer {self.api_key}"
        content = json.dumps(body).encode() if body is not None else None
        request = self.client.build_request(method, self.url.rstrip("/") + path, content=content,
                                            headers=upstream_headers)
        streaming = body is not None and body.get("stream") is True
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.client.send(request, stream=True)
                if not (streaming and response.is_success):
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
        except (TimeoutError, httpx.RequestError) as err:
            raise self.error(err) from None
        if response.is_closed:
            return self._whole(response, headers)
        return StreamingResponse(self._relay(response, deadline), status_code=response.status_code,
                                 media_type=response.headers.get("content-type", "text/event-stream"), headers=headers)

    def _whole(self, response: httpx.Response, headers: dict[str, str]) -> Any:
        from starlette.responses import Response

        if response.status_code in (401, 403):
            log.warning("upstream %s refused the proxy's credentials: HTTP %d", self.url, response.status_code)
            raise HTTPError(502, f"the upstream refused this proxy's credentials (HTTP {response.status_code}); "
                            "its operator must set --upstream-api-key-env", "upstream_error", "upstream_auth")
        text = response.text
        if self.api_key:  # an upstream that echoes the key in an error must not show it
            text = text.replace(self.api_key, "[redacted]")
        try:
            json.loads(text)
        except ValueError:
            raise HTTPError(502, f"the upstream answered {response.status_code} with a non-JSON body",
                            "upstream_error", "upstream_bad_response") from None
        return Response(text.encode("utf-8", "replace"), status_code=response.status_code,
                        media_type="application/json", headers=headers)

    async def _relay(self, response: httpx.Response, deadline: float) -> AsyncIterator[bytes]:
        """The upstream's chunks until it ends, the deadline passes or it breaks off: then one SSE error event
        ends the stream (the status line has gone already) and one warning line goes to the log."""
        chunks = response.aiter_raw()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except (TimeoutError, httpx.RequestError) as err:
                    failure = self.error(err, streaming=True)
                    self.count_error()
                    event = error_body(failure.status, failure.message, failure.kind, failure.code)
                    yield f"data: {json.dumps(event)}\n\n".encode()
                    return
                yield chunk
        finally:
            await response.aclose()


class Proxy:
    """The OpenAI-compatible routes (module docstring): rewrite what ``scope`` and the request's switch ask for
    with ``rewrite``, then forward to ``upstream``. Each handler takes the parsed JSON body (which it may
    change) and the request's ``x-rlprompt-enhance`` header."""

    def __init__(self, upstream: Upstream, rewrite: Rewrite, scope: str) -> None:
        self.upstream, self.rewrite, self.scope = upstream, rewrite, scope

    async def chat(self, body: Any, switch: str | None) -> Any:
        """``POST /v1/chat/completions``."""
        self._require_upstream()
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise HTTPError(422, "body must be an object with a list of message objects in 'messages'",
                            code="invalid_messages")
        wanted = enhance_switch(switch, body)
        if wanted is False or (wanted is None and self.scope == "opt-in"):
            return await self._forward("/chat/completions", body, [], "")
        spots, what = chat_spots(messages, self.scope)
        return await self._forward("/chat/completions", body, spots, what)

    async def completions(self, body: Any, switch: str | None) -> Any:
        """``POST /v1/completions``: the prompt is rewritten only when the request opts in (and the scope is
        not ``system``)."""
        self._require_upstream()
        if not isinstance(body, dict):
            raise HTTPError(422, "body must be a JSON object", code="invalid_body")
        if enhance_switch(switch, body) is not True or self.scope == "system":
            return await self._forward("/completions", body, [], "")
        return await self._forward("/completions", body, completion_spots(body), "prompt")

    async def models(self) -> Any:
        """``GET /v1/models``: the upstream's list."""
        self._require_upstream()
        return await self.upstream.send("GET", "/models", None, {})

    def _require_upstream(self) -> None:  # before any enhancer work for a request that cannot be forwarded
        if self.upstream.url is None:
            raise HTTPError(501, "no upstream configured: start the server with --upstream", "server_error")

    async def _forward(self, path: str, body: dict[str, Any], spots: list[Spot], what: str) -> Any:
        """Rewrite the texts at ``spots`` (none: leave the request alone) and send ``body`` upstream."""
        headers = {SWITCH_HEADER: "on" if spots else "off"}
        if spots:
            rewrites, fallback = await self.rewrite([c[k] for c, k in spots], what)
            for (container, key), text in zip(spots, rewrites):
                container[key] = text
            whole = len(spots) == 1 and spots[0][1] in ("content", "prompt")  # one string, not parts or a list
            headers["x-rlprompt-enhanced-prompt"] = json.dumps(rewrites[0] if whole else rewrites)[:2000]
            if fallback:
                headers["x-rlprompt-enhance-fallback"] = fallback
        if "stream" in body:
            body["stream"] = body["stream"] is True  # only a literal true streams
        return await self.upstream.send("POST", path, body, headers)


__all__ = ["ENHANCE_SCOPES", "HTTPError", "Proxy", "Upstream", "chat_spots", "completion_spots", "enhance_switch",
           "error_body"]
