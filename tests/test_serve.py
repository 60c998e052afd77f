"""The enhancer HTTP service, started for real with uvicorn on 127.0.0.1 and queried with httpx:
enhance, auth, limits, malformed bodies, the OpenAI-compatible proxy (fake upstream, dead and slow
upstreams, and a live ``transformers serve``), batching of concurrent requests, survival after errors."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rlprompt.serve import create_app
from rlprompt.serve import running_in_background as running

KEY = "s3cret-token"


class FakeEnhancer:
    """Upper-cases prompts; records each call's batch; ``fail_on`` makes a call raise."""

    def __init__(self, delay: float = 0.05, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.delay, self.fail_on = delay, fail_on

    def enhance(self, prompts):
        self.calls.append(list(prompts))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in prompts:
            raise RuntimeError("scripted failure")
        return [p.upper() + "!" for p in prompts]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_upstream(delay: float = 0.0):
    """A minimal OpenAI-compatible upstream that echoes the last user message it received."""
    from fastapi import FastAPI

    app = FastAPI()
    app.state.seen = []

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        app.state.seen.append(body)
        if delay:
            await asyncio.sleep(delay)
        text = body["messages"][-1]["content"]
        return {"id": "x", "object": "chat.completion", "model": body.get("model", "m"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {text}"},
                             "finish_reason": "stop"}]}

    return app


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
    r = httpx.post(f"{server}/v1/enhance", content=b'{"prompt": "' + b"x" * 5000 + b'"}', headers=AUTH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no content-length: the limit must hold while streaming the body
        for _ in range(10):
            yield b"x" * 500

    assert httpx.post(f"{server}/v1/enhance", content=chunks(), headers=AUTH).status_code == 413
    r = httpx.post(f"{server}/v1/enhance", json={"prompt": "y" * 101}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "prompt_too_long"
    r = httpx.post(f"{server}/v1/enhance", content=b"{not json", headers=AUTH)
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
            bad = [client.post(f"{server}/v1/enhance", content=b"{oops") for _ in range(20)]
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
        assert r.status_code == 500 and "scripted failure" in r.json()["error"]["message"]
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
