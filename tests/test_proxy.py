"""The OpenAI-compatible proxy of ``rlprompt serve`` (rlprompt/proxy.py), queried with the official ``openai``
client on loopback against the fake upstream of tests/test_serve.py (issue 18): ``/v1/models``,
``/v1/chat/completions`` (plain and streamed), ``/v1/completions`` (passed through, rewritten only on opt-in),
the upstream key, the per-request ``x-rlprompt-enhance`` switch and the server's ``enhance_scope``."""

from __future__ import annotations

import httpx
import openai
import pytest

from rlprompt.serve import ServeConfig, create_app
from rlprompt.serve import running_in_background as running
from tests.test_serve import AUTH, KEY, FakeEnhancer, _free_port, fake_upstream
from tests.test_serve import dying_upstream  # noqa: F401  (a fixture)

UP_KEY = "up-key"


@pytest.fixture
def upstream():
    app = fake_upstream(key=UP_KEY)
    with running(app) as base:
        app.state.base = f"{base}/v1"
        yield app


def proxy(upstream_app, enhancer: FakeEnhancer, **settings):
    """``rlprompt serve``'s app in front of ``upstream_app``, keyed both ways, on loopback."""
    return running(create_app(enhancer, upstream=upstream_app.state.base, api_key=KEY, upstream_api_key=UP_KEY,
                              **settings))


def client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def test_openai_client_lists_models_chats_streams_and_completes(upstream):
    enhancer = FakeEnhancer(delay=0)
    with proxy(upstream, enhancer) as base:
        oai = client(base)
        assert [m.id for m in oai.models.list()] == ["m", "org/other"]

        reply = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "summarize this"}])
        assert reply.choices[0].message.content == "echo: SUMMARIZE THIS!"
        stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "stream it"}],
                                             stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "echo: STREAM IT!"
        assert upstream.state.seen[-1]["stream"] is True

        # completions are raw text: passed through unchanged, plain and streamed
        calls = len(enhancer.calls)
        done = oai.completions.create(model="m", prompt="Once upon a time", max_tokens=5)
        assert done.choices[0].text == "echo: Once upon a time"
        stream = oai.completions.create(model="m", prompt=["a", "b"], stream=True)
        assert [chunk.choices[0].text for chunk in stream] == ["echo: a", "echo: b"]
        assert len(enhancer.calls) == calls and upstream.state.seen[-1]["prompt"] == ["a", "b"]
        assert set(upstream.state.auth) == {f"Bearer {UP_KEY}"}  # the operator's key, never the client's

        with pytest.raises(openai.AuthenticationError):
            client(base, key="wrong").models.list()


def test_openai_client_sees_the_enhance_headers_and_fallbacks(upstream):
    with proxy(upstream, FakeEnhancer(delay=0, fail_on="boom")) as base:
        oai = client(base)
        raw = oai.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-rlprompt-enhance"] == "on" and raw.headers["x-rlprompt-enhanced-prompt"] == '"HI!"'
        assert "x-rlprompt-enhance-fallback" not in raw.headers
        raw = oai.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "boom"}])
        assert raw.headers["x-rlprompt-enhance-fallback"] == "enhancer_failed"
        assert raw.parse().choices[0].message.content == "echo: boom"  # the original text went upstream


def test_a_request_can_switch_rewriting_off_by_header_or_body_field(upstream):
    enhancer = FakeEnhancer(delay=0)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "translate this"}]
    with proxy(upstream, enhancer) as base:
        oai = client(base)
        for extra in ({"extra_headers": {"x-rlprompt-enhance": "off"}}, {"extra_body": {"rlprompt_enhance": False}},
                      {"extra_headers": {"x-rlprompt-enhance": "OFF"}, "extra_body": {"rlprompt_enhance": False}}):
            raw = oai.chat.completions.with_raw_response.create(model="m", messages=messages, **extra)
            assert raw.parse().choices[0].message.content == "echo: translate this", extra
            assert raw.headers["x-rlprompt-enhance"] == "off" and "x-rlprompt-enhanced-prompt" not in raw.headers
            assert "rlprompt_enhance" not in upstream.state.seen[-1]  # the extension field never goes upstream
        assert enhancer.calls == []
        reply = oai.chat.completions.create(model="m", messages=messages, extra_body={"rlprompt_enhance": True})
        assert reply.choices[0].message.content == "echo: TRANSLATE THIS!"

        chat = f"{base}/v1/chat/completions"
        for headers, extra in (({"x-rlprompt-enhance": "maybe"}, {}), ({}, {"rlprompt_enhance": "no"}),
                               ({"x-rlprompt-enhance": "on"}, {"rlprompt_enhance": False})):
            r = httpx.post(chat, json={"model": "m", "messages": messages, **extra}, headers={**AUTH, **headers})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_enhance_switch", (headers, extra)
        r = httpx.post(chat, json={"messages": [{"role": "system", "content": "x"}]},  # no user message: fine when off
                       headers={**AUTH, "x-rlprompt-enhance": "off"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: x"


def test_scope_opt_in_rewrites_only_requests_that_ask(upstream):
    enhancer = FakeEnhancer(delay=0)
    with proxy(upstream, enhancer, enhance_scope="opt-in") as base:
        oai = client(base)
        raw = oai.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "plain"}])
        assert raw.parse().choices[0].message.content == "echo: plain" and raw.headers["x-rlprompt-enhance"] == "off"
        assert enhancer.calls == []
        for extra in ({"extra_headers": {"x-rlprompt-enhance": "on"}}, {"extra_body": {"rlprompt_enhance": True}}):
            reply = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "asked"}], **extra)
            assert reply.choices[0].message.content == "echo: ASKED!", extra
        stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True,
                                             extra_headers={"x-rlprompt-enhance": "on"})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "echo: S!"


def test_scope_system_rewrites_only_system_and_developer_messages(upstream):
    enhancer = FakeEnhancer(delay=0)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "system", "content": "answer in french"},
                {"role": "developer", "content": [{"type": "text", "text": "cite sources"}, image]},
                {"role": "user", "content": "what is rl?"}]
    with proxy(upstream, enhancer, enhance_scope="system") as base:
        oai = client(base)
        raw = oai.chat.completions.with_raw_response.create(model="m", messages=messages)
        assert raw.headers["x-rlprompt-enhance"] == "on"
        assert [m["content"] for m in upstream.state.seen[-1]["messages"]] == [
            "ANSWER IN FRENCH!", [{"type": "text", "text": "CITE SOURCES!"}, image], "what is rl?"]
        assert enhancer.calls == [["answer in french", "cite sources"]]  # one enhancer call for both
        raw = oai.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert raw.parse().choices[0].message.content == "echo: hi"  # nothing to rewrite: forwarded unchanged
        assert raw.headers["x-rlprompt-enhance"] == "off" and "x-rlprompt-enhanced-prompt" not in raw.headers
        oai.chat.completions.create(model="m", messages=messages, extra_headers={"x-rlprompt-enhance": "off"})
        assert upstream.state.seen[-1]["messages"] == messages
        done = oai.completions.create(model="m", prompt="raw", extra_headers={"x-rlprompt-enhance": "on"})
        assert done.choices[0].text == "echo: raw"  # a completion has no system message
        assert len(enhancer.calls) == 1


def test_completions_rewrite_their_prompt_only_when_they_opt_in(upstream):
    enhancer = FakeEnhancer(delay=0)
    on = {"x-rlprompt-enhance": "on"}
    with proxy(upstream, enhancer) as base:
        oai = client(base)
        raw = oai.completions.with_raw_response.create(model="m", prompt="draft", extra_headers=on)
        assert raw.parse().choices[0].text == "echo: DRAFT!" and raw.headers["x-rlprompt-enhanced-prompt"] == '"DRAFT!"'
        done = oai.completions.create(model="m", prompt=["one", " ", "blank"], extra_body={"rlprompt_enhance": True})
        # a blank prompt is left alone; an empty rewrite falls back to the original
        assert [c.text for c in done.choices] == ["echo: ONE!", "echo:  ", "echo: blank"]
        r = httpx.post(f"{base}/v1/completions", json={"model": "m", "prompt": [1, 2, 3]}, headers={**AUTH, **on})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_prompt"
        r = httpx.post(f"{base}/v1/completions", json={"model": "m", "prompt": [1, 2, 3]}, headers=AUTH)
        assert r.status_code == 200  # token ids pass through when nothing is rewritten
        assert httpx.post(f"{base}/v1/completions", json=[1], headers=AUTH).status_code == 422
        r = httpx.post(f"{base}/v1/completions", json={"model": "leak", "prompt": "x"}, headers=AUTH)
        assert r.status_code == 400 and UP_KEY not in r.text  # upstream errors relayed, key redacted


def test_models_and_completions_share_the_proxy_errors_and_deadline():
    with running(create_app(FakeEnhancer(delay=0), api_key=KEY)) as base:  # no upstream
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions")):
            r = httpx.request(method, f"{base}{path}", json={"prompt": "x"}, headers=AUTH)
            assert r.status_code == 501 and "--upstream" in r.json()["error"]["message"], path
            assert httpx.request(method, f"{base}{path}", json={"prompt": "x"}).status_code == 401, path
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with running(create_app(FakeEnhancer(delay=0), upstream=dead)) as base:
        with pytest.raises(openai.InternalServerError) as err:
            client(base).models.list()
        assert err.value.status_code == 502 and str(dead) not in str(err.value.body)
    keyed = fake_upstream(key=UP_KEY)
    with running(keyed) as up, running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1")) as base:
        r = httpx.get(f"{base}/v1/models")  # the operator set no upstream key
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth"
    slow = fake_upstream(delay=3.0)
    with running(slow) as up, running(create_app(FakeEnhancer(delay=0), upstream=f"{up}/v1",
                                                 upstream_timeout=0.5)) as base:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions")):
            r = httpx.request(method, f"{base}{path}", json={"prompt": "x"}, timeout=30)
            assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout", path


def test_a_completion_stream_that_breaks_ends_with_an_error_event(dying_upstream):
    with running(create_app(FakeEnhancer(delay=0), upstream=dying_upstream)) as base:
        r = httpx.post(f"{base}/v1/completions", json={"prompt": "x", "stream": True}, timeout=30)
        assert r.status_code == 200 and '"upstream_stream_broken"' in r.text.strip().splitlines()[-1]
        assert httpx.get(f"{base}/health").json()["errors"] == 1


def test_enhance_scope_is_validated_and_reaches_the_server(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="enhance_scope must be one of all, opt-in, system, got 'sometimes'"):
        ServeConfig(enhance_scope="sometimes")
    from rlprompt import serve as serve_module
    from rlprompt.cli import main

    seen = []
    monkeypatch.setattr(serve_module, "serve", lambda enhancer_dir, config, **kw: seen.append(config))
    assert main(["serve", "--enhancer", str(tmp_path), "--enhance-scope", "opt-in"]) == 0
    assert seen[0].enhance_scope == "opt-in"
    with pytest.raises(SystemExit):
        main(["serve", "--enhancer", str(tmp_path), "--enhance-scope", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
