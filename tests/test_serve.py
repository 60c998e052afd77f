"""The enhancer HTTP service, started for real with uvicorn on 127.0.0.1 and queried with httpx:
enhance, auth, limits, malformed bodies, the OpenAI-compatible proxy (fake upstream, dead and slow
upstreams, and a live ``transformers serve``), batching of concurrent requests, survival after errors, and
hostile clients and upstreams (issue 17: surrogates, token limits, dripping and dying upstreams, multimodal
content, upstream credentials, deep JSON, half-sent bodies, leaks)."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import logging
import socket
import threading
import subprocess
import sys
import time

import httpx
import pytest
from fastapi import Request  # at module level: FastAPI resolves the handlers' string annotations here

from rlprompt.serve import create_app
from rlprompt.serve import running_in_background as running

KEY = "s3cret-token"


class FakeEnhancer:
    """Upper-cases prompts (``blank`` ones come back empty); records each call's batch; ``fail_on`` makes a
    call raise; a prompt that is not valid UTF-8 text fails the whole call, as a real tokenizer does."""

    def __init__(self, delay: float = 0.05, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.delay, self.fail_on = delay, fail_on

    def enhance(self, prompts):
        self.calls.append(list(prompts))
        time.sleep(self.delay)
        for p in prompts:
            p.encode("utf-8")
        if self.fail_on is not None and self.fail_on in prompts:
            raise RuntimeError("scripted failure")
        return ["" if p == "blank" else p.upper() + "!" for p in prompts]


class CountingEnhancer(FakeEnhancer):
    """A FakeEnhancer whose prompts cost one token per character, with a model that takes ``limit`` tokens."""

    def __init__(self, limit: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_input_tokens = limit

    def count_tokens(self, prompt: str) -> int:
        return len(prompt)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_upstream(delay: float = 0.0, key: str | None = None):
    """A minimal OpenAI-compatible upstream: chat echoes the last message it received, completions echo the
    prompt, ``/v1/models`` lists two models. With ``key`` it answers 401 to any other bearer token; it streams
    (SSE) whenever ``stream`` is truthy, as a naive server does; model ``leak`` gets a 400 whose message echoes
    the caller's authorization header. ``app.state.seen`` and ``app.state.auth`` record every POST."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    app.state.seen = []
    app.state.auth = []

    def refusal(request: Request) -> JSONResponse | None:
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        return None

    def events(chunks: list[dict]):
        async def stream():
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def received(request: Request) -> tuple[dict, JSONResponse | None]:
        body = await request.json()
        app.state.seen.append(body)
        app.state.auth.append(request.headers.get("authorization"))
        if refusal(request) is not None:
            return body, refusal(request)
        if body.get("model") == "leak":
            echoed = f"no model leak for {request.headers.get('authorization')}"
            return body, JSONResponse({"error": {"message": echoed}}, status_code=400)
        if delay:
            await asyncio.sleep(delay)
        return body, None

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body, error = await received(request)
        if error is not None:
            return error
        text = body["messages"][-1]["content"]
        head = {"id": "x", "created": 0, "model": body.get("model", "m")}
        if body.get("stream"):
            return events([{**head, "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": f"echo: {text}"}}]},
                           {**head, "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {text}"},
                             "finish_reason": "stop"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body, error = await received(request)
        if error is not None:
            return error
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        head = {"id": "c", "object": "text_completion", "created": 0, "model": body.get("model", "m")}
        choices = [{"index": i, "text": f"echo: {p}", "finish_reason": "stop", "logprobs": None}
                   for i, p in enumerate(prompts)]
        if body.get("stream"):
            return events([{**head, "choices": [choice]} for choice in choices])
        return {**head, "choices": choices}

    @app.get("/v1/models")
    async def models(request: Request):
        app.state.auth.append(request.headers.get("authorization"))
        if refusal(request) is not None:
            return refusal(request)
        if delay:
            await asyncio.sleep(delay)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                                           for name in ("m", "org/other")]}

    return app


def dripping_upstream(interval: float = 0.2, count: int = 100):
    """An upstream that answers at once, then drips its body one byte per ``interval`` (a slow-loris server)."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        async def drip():
            for _ in range(count):
                yield b" "
                await asyncio.sleep(interval)

        return StreamingResponse(drip(), media_type="text/event-stream")

    return app


@pytest.fixture
def dying_upstream():
    """A raw-socket upstream that starts a chunked SSE answer, sends one event and hangs up mid-body."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            event = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{len(event):x}\r\n".encode() + event + b"\r\n")
            time.sleep(0.2)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()


@pytest.fixture
def enhancer():
    return FakeEnhancer()


@pytest.fixture
def server(enhancer):
    app = create_app(enhancer, upstream=None, api_key=KEY, max_body_bytes=2000, max_prompt_chars=100,
                     batch_window_ms=50)
    with running(app) as base:
        yield base


AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def test_enhance_single_and_list(server):
    r = httpx.post(f"{server}/v1/enhance", json={"prompt": "hello"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"enhanced": "HELLO!"}
    r = httpx.post(f"{server}/v1/enhance", json={"prompts": ["a", "b"]}, headers=AUTH)
    assert r.json() == {"enhanced": ["A!", "B!"]}
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_auth(server):
    assert httpx.post(f"{server}/v1/enhance", json={"prompt": "x"}).status_code == 401
    r = httpx.post(f"{server}/v1/enhance", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"


def test_limits_and_malformed_bodies(server, enhancer):
    r = httpx.post(f"{server}/v1/enhance", content=b'{"prompt": "' + b"x" * 5000 + b'"}', headers=JSON)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no content-length: the limit must hold while streaming the body
        for _ in range(10):
            yield b"x" * 500

    assert httpx.post(f"{server}/v1/enhance", content=chunks(), headers=JSON).status_code == 413
    r = httpx.post(f"{server}/v1/enhance", json={"prompt": "y" * 101}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "prompt_too_long"
    r = httpx.post(f"{server}/v1/enhance", content=b"{not json", headers=JSON)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    for body in ({"prompt": 3}, {"nothing": 1}, [1, 2], {"prompts": []}, {"prompts": ["ok", 5]}):
        r = httpx.post(f"{server}/v1/enhance", json=body, headers=AUTH)
        assert r.status_code == 422, body
        assert "error" in r.json()
    assert enhancer.calls == []  # nothing invalid reached the model
    assert httpx.post(f"{server}/v1/enhance", json={"prompt": "still up"}, headers=AUTH).json()["enhanced"] == "STILL UP!"


def test_concurrent_requests_are_batched(server, enhancer):
    async def burst():
        async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{server}/v1/enhance", json={"prompt": f"p{i}"})
                                          for i in range(16)))

    responses = asyncio.run(burst())
    assert [r.json()["enhanced"] for r in responses] == [f"P{i}!" for i in range(16)]
    assert sum(len(c) for c in enhancer.calls) == 16
    assert len(enhancer.calls) < 16, f"no batching: {len(enhancer.calls)} enhancer calls for 16 requests"
    health = httpx.get(f"{server}/health").json()
    assert health["enhancer_calls"] == len(enhancer.calls) and health["enhanced_prompts"] == 16


def test_200_concurrent_clients_mixed_with_bad_requests(server, enhancer):
    """200 concurrent good requests get no error while malformed and oversized ones get 4xx beside them."""
    async def storm():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(headers=AUTH, timeout=60, limits=limits) as client:
            good = [client.post(f"{server}/v1/enhance", json={"prompt": f"q{i}"}) for i in range(200)]
            bad = [client.post(f"{server}/v1/enhance", content=b"{oops", headers=JSON) for _ in range(20)]
            bad += [client.post(f"{server}/v1/enhance", json={"prompt": "z" * 500}) for _ in range(20)]
            return await asyncio.gather(*good), await asyncio.gather(*bad)

    good, bad = asyncio.run(storm())
    assert [r.status_code for r in good] == [200] * 200
    assert [r.json()["enhanced"] for r in good] == [f"Q{i}!" for i in range(200)]
    assert all(400 <= r.status_code < 500 and "error" in r.json() for r in bad)
    assert sum(len(c) for c in enhancer.calls) == 200


def test_enhancer_failure_is_a_json_500_and_the_server_survives():
    enhancer = FakeEnhancer(fail_on="boom")
    with running(create_app(enhancer, batch_window_ms=1)) as base:
        r = httpx.post(f"{base}/v1/enhance", json={"prompt": "boom"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "enhancer_failed"
        assert "scripted failure" not in r.text  # the exception's text stays in the server log
        assert httpx.post(f"{base}/v1/enhance", json={"prompt": "fine"}).json() == {"enhanced": "FINE!"}


def test_proxy_rewrites_the_last_user_message():
    upstream_app = fake_upstream()
    enhancer = FakeEnhancer()
    with running(upstream_app) as up, running(create_app(enhancer, upstream=f"{up}/v1", api_key=KEY)) as base:
        body = {"model": "m", "messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                                           {"role": "user", "content": "summarize this"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=AUTH)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "echo: SUMMARIZE THIS!"
        seen = upstream_app.state.seen[-1]["messages"]
        assert [m["content"] for m in seen] == ["first", "ok", "SUMMARIZE THIS!"]  # only the last user message
        assert httpx.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]},
                          headers=AUTH).status_code == 422


def test_proxy_upstream_down_and_slow():
    port = _free_port()  # nothing listens here
    with running(create_app(FakeEnhancer(delay=0), upstream=f"http://127.0.0.1:{port}/v1")) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    slow = fake_upstream(delay=3.0)
    with running(slow) as up, running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1",
                                                 upstream_timeout=0.5)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                       timeout=30)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert httpx.post(f"{base}/v1/enhance", json={"prompt": "alive"}).json() == {"enhanced": "ALIVE!"}


@pytest.mark.model
def test_real_tiny_enhancer_behind_the_server():
    from rlprompt.enhancer import PromptEnhancer
    from rlprompt.models import load_model

    model, tokenizer = load_model("tiny-random")
    enhancer = PromptEnhancer(model, tokenizer, base_model="tiny-random", meta_prompt="Rewrite: {instruction}",
                              max_new_tokens=4)
    expected = enhancer.enhance(["one", "two"])
    with running(create_app(enhancer, batch_window_ms=20)) as base:
        r = httpx.post(f"{base}/v1/enhance", json={"prompts": ["one", "two"]}, timeout=60)
        assert r.json() == {"enhanced": expected}


@pytest.mark.slow
def test_proxy_to_live_transformers_serve(tmp_path):
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("transformers.cli") is None:
        pytest.skip('needs "transformers[serving]"')
    from rlprompt.models import bundled_model_dir

    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve",
                                 str(bundled_model_dir()), "--device", "cpu", "--host", "127.0.0.1", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready:\n{log.read_text()[-2000:]}")
            time.sleep(1)
        enhancer = FakeEnhancer(delay=0)
        with running(create_app(enhancer, upstream=f"http://127.0.0.1:{port}/v1")) as base:
            body = {"model": str(bundled_model_dir()), "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": "what is the capital of france?"}]}
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=240)
            assert r.status_code == 200, r.text
            answer = r.json()["choices"][0]["message"]["content"]
            assert isinstance(answer, str) and answer.strip()
            assert enhancer.calls == [["what is the capital of france?"]]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- issue 17: hostile clients and upstreams -------------------------------------------------------------
USER = [{"role": "user", "content": "hi"}]


def _gather(*requests):
    """Send ``(method, url, kwargs)`` requests concurrently; the responses, in order."""
    async def run():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.request(method, url, **kwargs) for method, url, kwargs in requests))

    return asyncio.run(run())


def test_surrogate_prompt_gets_422_and_does_not_fail_its_batch():
    enhancer = FakeEnhancer()
    with running(create_app(enhancer, batch_window_ms=300)) as base:
        bad = b'{"prompt": "x\\ud800y"}'  # valid JSON holding a lone surrogate
        requests = [("POST", f"{base}/v1/enhance", {"json": {"prompt": f"good {i}"}}) for i in range(5)]
        requests.append(("POST", f"{base}/v1/enhance",
                         {"content": bad, "headers": {"content-type": "application/json"}}))
        responses = _gather(*requests)
    assert [r.status_code for r in responses] == [200] * 5 + [422]
    assert [r.json()["enhanced"] for r in responses[:5]] == [f"GOOD {i}!" for i in range(5)]
    assert responses[5].json()["error"]["code"] == "invalid_text"
    assert all("\ud800" not in p for call in enhancer.calls for p in call)  # it never reached the model


def test_surrogate_or_any_poison_in_a_batch_fails_only_its_own_request():
    """A prompt that passes validation but breaks the enhancer: its batch is retried request by request."""
    enhancer = FakeEnhancer(fail_on="boom")
    with running(create_app(enhancer, batch_window_ms=300)) as base:
        responses = _gather(*[("POST", f"{base}/v1/enhance", {"json": {"prompt": p}})
                              for p in ["a", "b", "boom", "c", "d", "e"]])
    assert [r.status_code for r in responses] == [200, 200, 500, 200, 200, 200]
    assert [r.json()["enhanced"] for r in responses if r.status_code == 200] == ["A!", "B!", "C!", "D!", "E!"]
    assert len(enhancer.calls[0]) == 6  # one batch, then each request alone
    assert sorted(map(tuple, enhancer.calls[1:])) == [(p,) for p in sorted(["a", "b", "boom", "c", "d", "e"])]


@pytest.mark.model
def test_token_limit_rejects_prompts_the_model_cannot_take():
    from rlprompt.enhancer import PromptEnhancer
    from rlprompt.models import load_model

    model, tokenizer = load_model("tiny-random")  # a 512-position model
    enhancer = PromptEnhancer(model, tokenizer, base_model="tiny-random", meta_prompt="Rewrite: {instruction}",
                              max_new_tokens=4)
    assert enhancer.max_input_tokens == 512 - 4
    assert enhancer.count_tokens("hi") == len(enhancer._encode("hi")) > 1
    with pytest.raises(ValueError, match="max_prompt_tokens=9999"):
        create_app(enhancer, max_prompt_tokens=9999)
    long = "\U0001F600" * 300  # 300 characters (under max_prompt_chars), over 600 tokens
    with running(create_app(enhancer, batch_window_ms=5)) as base:
        started = time.monotonic()
        big, small = _gather(("POST", f"{base}/v1/enhance", {"json": {"prompt": long}}),
                             ("POST", f"{base}/v1/enhance", {"json": {"prompt": "hi"}}))
        assert big.status_code == 422 and big.json()["error"]["code"] == "too_many_tokens"
        assert str(enhancer.max_input_tokens) in big.json()["error"]["message"]
        assert small.status_code == 200 and time.monotonic() - started < 10
    with running(create_app(enhancer, max_prompt_tokens=20)) as base:  # a lower limit than the model's
        r = httpx.post(f"{base}/v1/enhance", json={"prompt": "a few words " * 10}, timeout=30)
        assert r.status_code == 422 and "limit of 20" in r.json()["error"]["message"]


def test_token_limit_caps_padded_tokens_per_batch():
    enhancer = CountingEnhancer(limit=1000)
    with running(create_app(enhancer, batch_window_ms=300, max_batch_tokens=100)) as base:
        prompts = ["x" * 90] + [f"s{i}" for i in range(6)] + ["y" * 200]
        responses = _gather(*[("POST", f"{base}/v1/enhance", {"json": {"prompt": p}}) for p in prompts])
    assert [r.status_code for r in responses] == [200] * len(prompts)
    assert sorted(p for call in enhancer.calls for p in call) == sorted(prompts)
    for call in enhancer.calls:  # a prompt over the cap runs alone; no other batch pads past it
        assert len(call) == 1 or len(call) * max(map(len, call)) <= 100, call


def test_proxy_deadline_is_total_for_a_dripping_upstream():
    with running(dripping_upstream(interval=0.2, count=100)) as up, \
            running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1", upstream_timeout=1.0)) as base:
        started = time.monotonic()
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER}, timeout=15)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 5
        started = time.monotonic()
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER, "stream": True}, timeout=15)
        assert r.status_code == 200 and time.monotonic() - started < 5
        assert r.text.rstrip().endswith("}") and '"upstream_timeout"' in r.text.splitlines()[-2]


def test_multimodal_content_keeps_other_parts_and_falls_back_on_blank_rewrites():
    upstream_app = fake_upstream()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with running(upstream_app) as up, \
            running(create_app(FakeEnhancer(fail_on="boom"), upstream=f"{up}/v1")) as base:
        def send(parts, **extra):
            message = {"role": "user", "name": "bob", "content": parts, **extra}
            body = {"model": "m", "temperature": 0.5, "messages": [message]}
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200, r.text
            seen = upstream_app.state.seen[-1]
            assert seen["temperature"] == 0.5 and seen["model"] == "m"
            assert {k: v for k, v in seen["messages"][0].items() if k != "content"} == \
                {k: v for k, v in message.items() if k != "content"}
            return r, seen["messages"][0]["content"]

        r, content = send([{"type": "text", "text": "describe"}, image, {"type": "text", "text": "briefly"}])
        assert content == [{"type": "text", "text": "DESCRIBE!"}, image, {"type": "text", "text": "BRIEFLY!"}]
        assert "x-rlprompt-enhance-fallback" not in r.headers
        r, content = send([{"type": "text", "text": "blank"}, image])  # the rewrite comes back empty
        assert content == [{"type": "text", "text": "blank"}, image]
        assert r.headers["x-rlprompt-enhance-fallback"] == "blank_rewrite"
        r, content = send([image, {"type": "text", "text": "boom"}])  # the enhancer fails
        assert content == [image, {"type": "text", "text": "boom"}]
        assert r.headers["x-rlprompt-enhance-fallback"] == "enhancer_failed"
        r, content = send("blank", tool_call_id="t1")  # plain-string content falls back the same way
        assert content == "blank"
        _, content = send([image])  # nothing to rewrite: forwarded untouched
        assert content == [image]


def test_upstream_auth_key_is_sent_and_refusals_are_502():
    upstream_app = fake_upstream(key="up-key")
    with running(upstream_app) as up:
        with running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1", api_key=KEY)) as base:
            for stream in (False, True):
                r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER, "stream": stream}, headers=AUTH)
                assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth", r.text
        with running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1", api_key=KEY,
                                upstream_api_key="up-key")) as base:
            r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER}, headers=AUTH)
            assert r.status_code == 200 and upstream_app.state.auth[-1] == "Bearer up-key"  # not the client's key
            r = httpx.post(f"{base}/v1/chat/completions", json={"model": "leak", "messages": USER}, headers=AUTH)
            assert r.status_code == 400 and "up-key" not in r.text and "[redacted]" in r.text


def test_upstream_auth_key_env_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from rlprompt.cli import main

    monkeypatch.delenv("RLPROMPT_TEST_NO_SUCH_KEY", raising=False)
    code = main(["serve", "--enhancer", str(tmp_path), "--upstream", "http://127.0.0.1:1/v1",
                 "--upstream-api-key-env", "RLPROMPT_TEST_NO_SUCH_KEY"])
    err = capsys.readouterr().err
    assert code == 2 and "RLPROMPT_TEST_NO_SUCH_KEY" in err and len(err.strip().splitlines()) == 1


def test_hostile_deeply_nested_and_non_finite_json_are_400():
    with running(create_app(FakeEnhancer(delay=0))) as base:
        headers = {"content-type": "application/json"}
        r = httpx.post(f"{base}/v1/enhance", content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = httpx.post(f"{base}/v1/enhance", content=b'{"prompt": "x", "n": NaN}', headers=headers)
        assert r.status_code == 400 and "NaN" in r.json()["error"]["message"]


def test_hostile_bodies_must_be_json_and_a_keyless_start_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="rlprompt.serve"):
        create_app(FakeEnhancer(), api_key=KEY)
        assert not caplog.records
        app = create_app(FakeEnhancer(delay=0))
        assert any("without an API key" in rec.getMessage() for rec in caplog.records)
    with running(app) as base:
        body = b'{"prompt": "hi"}'
        for media in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"content-type": media} if media else {}
            r = httpx.post(f"{base}/v1/enhance", content=body, headers=headers)
            assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", media
        r = httpx.post(f"{base}/v1/enhance", content=body, headers={"content-type": "application/json; charset=utf-8"})
        assert r.json() == {"enhanced": "HI!"}


def _read_status(sock: socket.socket, timeout: float) -> int | None:
    """The HTTP status the server answered on ``sock`` before closing it, None if it kept it open."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return None
    return int(data.split()[1]) if data else 0


def test_hostile_half_sent_bodies_time_out_and_in_flight_requests_are_capped():
    app = create_app(FakeEnhancer(delay=0), body_timeout=1.0, max_concurrent=8)
    with running(app) as base:
        port = int(base.rsplit(":", 1)[1])
        socks = []
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/enhance HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b'Content-Length: 100\r\n\r\n{"prompt"')
            socks.append(sock)
        time.sleep(0.3)
        r = httpx.post(f"{base}/v1/enhance", json={"prompt": "x"})  # the 8 slots are held
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_requests"
        assert httpx.get(f"{base}/health").status_code == 200
        started = time.monotonic()
        statuses = collections.Counter(_read_status(sock, timeout=10) for sock in socks)
        assert statuses == {408: 8, 503: 4} and time.monotonic() - started < 3
        for sock in socks:
            sock.close()
        assert httpx.post(f"{base}/v1/enhance", json={"prompt": "x"}).json() == {"enhanced": "X!"}


def test_hostile_unknown_routes_methods_and_docs_use_the_error_envelope(server):
    for method, path, status in [("GET", "/nope", 404), ("GET", "/v1/enhance", 405), ("PUT", "/health", 405),
                                 ("GET", "/docs", 404), ("GET", "/openapi.json", 404), ("GET", "/redoc", 404)]:
        r = httpx.request(method, f"{server}{path}")
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "code"}, (method, path)


def test_hostile_health_and_errors_leak_no_internals():
    port = _free_port()  # nothing listens here
    upstream = f"http://127.0.0.1:{port}/v1"
    with running(create_app(FakeEnhancer(fail_on="boom", delay=0), upstream=upstream)) as base:
        health = httpx.get(f"{base}/health")
        assert str(port) not in health.text and health.json()["proxy"] is True
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER})
        assert r.status_code == 502 and str(port) not in r.text and "ConnectError" not in r.text
        r = httpx.post(f"{base}/v1/enhance", json={"prompt": "boom"})
        assert r.status_code == 500 and "scripted" not in r.text and "RuntimeError" not in r.text


def test_hostile_stream_only_for_a_literal_true():
    upstream_app = fake_upstream()
    with running(upstream_app) as up, running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1")) as base:
        for value in ("no", "false", 1, None):
            r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER, "stream": value})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: HI!", value
            assert upstream_app.state.seen[-1]["stream"] is False
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER, "stream": True})
        assert r.headers["content-type"].startswith("text/event-stream") and "echo: HI!" in r.text


def test_hostile_upstream_dying_mid_stream_ends_with_an_error_event(dying_upstream, caplog):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    with caplog.at_level(logging.WARNING, logger="rlprompt.serve"), \
            running(create_app(FakeEnhancer(delay=0), upstream=dying_upstream)) as base:
        logging.getLogger("uvicorn.error").addHandler(handler)  # after start-up: uvicorn's log config resets it
        try:
            r = httpx.post(f"{base}/v1/chat/completions", json={"messages": USER, "stream": True}, timeout=30)
        finally:
            logging.getLogger("uvicorn.error").removeHandler(handler)
    assert r.status_code == 200 and r.text.startswith('data: {"choices"')
    last = json.loads(r.text.strip().splitlines()[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_stream_broken"
    assert not [rec for rec in records if rec.exc_info], "a traceback reached uvicorn's log"
    assert any("mid-stream" in rec.getMessage() for rec in caplog.records)


def test_hostile_serve_port_out_of_range_is_a_one_line_error(tmp_path, capsys):
    from rlprompt.cli import main

    code = main(["serve", "--enhancer", str(tmp_path), "--port", "99999"])
    err = capsys.readouterr().err
    assert code == 2 and "port must lie in 0..65535, got 99999" in err and len(err.strip().splitlines()) == 1


def test_every_serve_limit_option_reaches_the_config_with_its_type_and_default(tmp_path, monkeypatch):
    """`rlprompt serve --<limit>` sets the ServeConfig field of that name (int or float as the field), and an
    option left out keeps the field's default."""
    from rlprompt import serve as serve_module
    from rlprompt.cli import main
    from rlprompt.serve import ServeConfig

    seen = []
    monkeypatch.setattr(serve_module, "serve", lambda enhancer_dir, config, **kw: seen.append(config))
    given = {"batch_window_ms": 2.5, "max_batch": 7, "max_batch_tokens": 99, "max_body_bytes": 4096,
             "body_timeout": 1.5, "max_prompt_chars": 120, "max_prompt_tokens": 30, "max_concurrent": 5,
             "upstream_timeout": 9.5}
    argv = [token for name, value in given.items() for token in ("--" + name.replace("_", "-"), str(value))]
    assert main(["serve", "--enhancer", str(tmp_path), *argv]) == 0
    assert main(["serve", "--enhancer", str(tmp_path)]) == 0
    for name, value in given.items():
        assert getattr(seen[0], name) == value and type(getattr(seen[0], name)) is type(value), name
        assert getattr(seen[1], name) == getattr(ServeConfig(), name), name
