"""OpenAITarget against a scripted fake OpenAI-compatible server (httpx.MockTransport, and a real
uvicorn server on loopback for timeouts): parsing, retries, errors, fallbacks, concurrency, budget."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from rlprompt.serve import running_in_background
from rlprompt.targets import BudgetExceeded, OpenAITarget, TargetError, make_target
from rlprompt.targets.openai import EPS, match_verbalizers, parse_label

URL = "http://fake.test/v1"
TEMPLATE = "{sentence} {prompt}"
VERBALIZERS = [" terrible", " great"]
# A 30-token vocabulary; " awful" is far below the top 20 unless biased.
VOCAB = [" great", " terrible", " awful"] + [f" w{i}" for i in range(27)]


class FakeTokenizer:
    """Maps each fake vocabulary entry to its index (only single tokens are asked for)."""

    def __call__(self, text, add_special_tokens=False):
        class Encoded:
            input_ids = [VOCAB.index(text)] if text in VOCAB else [0, 0]

        return Encoded()


def logits_for(text: str) -> np.ndarray:
    logits = -0.1 * np.arange(len(VOCAB), dtype=np.float64)
    logits[0], logits[1], logits[2] = (1.0, -1.0, -25.0) if "good" in text else (-1.0, 1.0, -25.0)
    return logits


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def true_logprobs(text: str) -> dict[str, float]:
    return dict(zip(VOCAB, log_softmax(logits_for(text))))


class FakeServer:
    """A scripted OpenAI-compatible endpoint; ``script`` holds canned responses served first."""

    def __init__(self, *, report="raw", logprobs=True, honour_n=True, answer=" great movie", delay=0.0):
        self.report, self.logprobs, self.honour_n, self.answer, self.delay = report, logprobs, honour_n, answer, delay
        self.requests: list[httpx.Request] = []
        self.script: list[httpx.Response] = []
        self.active = self.max_active = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.script:
                return self.script.pop(0)
            return httpx.Response(200, json=self.reply(request.url.path, json.loads(request.content)))
        finally:
            self.active -= 1

    def top(self, text: str, bias: dict) -> tuple[dict[str, float], str]:
        """Top-20 entries and the greedy token, as llama.cpp ("raw": values and top-k ignore the bias, the
        chosen token is added), a post-bias server, or one that ignores ``logit_bias`` altogether."""
        logits = logits_for(text)
        raw = log_softmax(logits)
        shift = np.array([float(bias.get(str(i), 0.0)) for i in range(len(VOCAB))])
        biased = log_softmax(logits + (0 if self.report == "ignore" else shift))
        values = biased if self.report == "post-bias" else raw
        top = {VOCAB[i]: float(values[i]) for i in np.argsort(-values)[:20]}
        chosen = VOCAB[int(np.argmax(biased))]
        top.setdefault(chosen, float(values[VOCAB.index(chosen)]))
        return top, chosen

    def reply(self, path: str, body: dict) -> dict:
        chat = path.endswith("/chat/completions")
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        prompt_tokens = len(text.split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
        n = body.get("n", 1) if self.honour_n else 1
        seed = body.get("seed")
        if body["max_tokens"] == 1 and body.get("logprobs") and self.logprobs:
            top, token = self.top(text, body.get("logit_bias", {}))
            if chat:
                entries = [{"token": t, "logprob": v} for t, v in top.items()]
                content = [{"token": token, "logprob": top[token], "top_logprobs": entries}]
                message = {"role": "assistant", "content": token}
                choice = {"index": 0, "message": message, "logprobs": {"content": content}}
            else:
                logprobs = {"tokens": [token], "token_logprobs": [top[token]], "top_logprobs": [top]}
                choice = {"index": 0, "text": token, "logprobs": logprobs}
            return {"choices": [choice], "usage": usage}
        answers = [self.answer if seed is None else f"{self.answer} seed={seed + i}" for i in range(n)]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": a}} for i, a in enumerate(answers)]
        else:
            choices = [{"index": i, "text": a, "logprobs": None} for i, a in enumerate(answers)]
        return {"choices": choices, "usage": usage}


def make(server: FakeServer, **kw) -> OpenAITarget:
    kw.setdefault("tokenizer", FakeTokenizer())
    kw.setdefault("backoff", 0.01)
    return OpenAITarget(URL, "fake-model", transport=server.transport(), **kw)


def expected_scores(prompts, inputs, verbalizers=VERBALIZERS) -> np.ndarray:
    return np.array([[[true_logprobs(f"{x} {p}")[v] for v in verbalizers] for x in inputs] for p in prompts])


# -- scoring ---------------------------------------------------------------------------------------
def test_high_concurrency_spreads_requests_over_small_connection_pools():
    """httpcore scans every pooled connection per queued request, so 40 concurrent requests go round-robin over
    three clients of at most POOL_SIZE (16) connections in turn."""
    from rlprompt.targets.openai import POOL_SIZE

    server = FakeServer()
    target = make(server, concurrency=40)
    inputs = [f"film {i}" for i in range(30)]
    scores = target.classify(TEMPLATE, ["It was"], inputs, VERBALIZERS)
    np.testing.assert_allclose(scores, expected_scores(["It was"], inputs), atol=1e-9)
    assert len(target._clients) == -(-40 // POOL_SIZE) == 3 and next(target._turn) == 30  # 30 requests, round-robin
    target.close()


@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_classify_reads_top_logprobs(mode):
    server = FakeServer()
    target = make(server, mode=mode)
    inputs, prompts = ["a good film", "a dull film", "so good"], ["It was", "Overall"]
    scores = target.classify(TEMPLATE, prompts, inputs, VERBALIZERS)
    np.testing.assert_allclose(scores, expected_scores(prompts, inputs), atol=1e-9)
    assert target.stats.calls == 6 and target.stats.sequences == 6 and target.stats.tokens > 0
    body = json.loads(server.requests[0].content)
    assert body["max_tokens"] == 1 and body["model"] == "fake-model" and "logit_bias" not in body
    if mode == "chat":
        assert server.requests[0].url.path == "/v1/chat/completions"
        assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["messages"][0]["role"] == "user"
    else:
        assert server.requests[0].url.path == "/v1/completions" and body["logprobs"] == 20
        sent = {json.loads(r.content)["prompt"] for r in server.requests}
        assert sent == {f"{x} {p}" for x in inputs for p in prompts}


@pytest.mark.parametrize("report", ["raw", "post-bias"])
def test_missing_verbalizer_is_forced_with_logit_bias_and_unbiased(report):
    server = FakeServer(report=report)
    target = make(server)
    verbalizers = [" awful", " great"]
    inputs = ["a good film", "a dull film"]
    scores = target.classify(TEMPLATE, ["It was"], inputs, verbalizers)
    np.testing.assert_allclose(scores, expected_scores(["It was"], inputs, verbalizers), atol=1e-6)
    biased = [json.loads(r.content) for r in server.requests if "logit_bias" in json.loads(r.content)]
    assert [b["logit_bias"] for b in biased] == [{"2": 100.0}] * 2
    assert target.stats.sequences == 2 and target.stats.calls == 4


def test_missing_verbalizer_raises_or_is_bounded_when_asked():
    with pytest.raises(TargetError, match="awful"):
        make(FakeServer(), tokenizer=None).classify(TEMPLATE, ["It was"], ["fine"], [" awful", " great"])
    with pytest.raises(TargetError, match="did not force ' awful'.*ignores logit_bias"):
        make(FakeServer(report="ignore")).classify(TEMPLATE, ["It was"], ["fine"], [" awful", " great"])
    target = make(FakeServer(), tokenizer=None, missing="bound")
    scores = target.classify(TEMPLATE, ["It was"], ["fine"], [" awful", " great"])
    floor = min(FakeServer().top("fine It was", {})[0].values())
    assert scores[0, 0, 0] == pytest.approx(floor) and target.bounded == 1
    assert scores[0, 0, 0] > true_logprobs("fine It was")[" awful"]  # an upper bound, not the value


def test_truncated_body_is_retried_then_reported():
    server = FakeServer()
    server.script = [httpx.Response(200, text='{"choices": [{"text": " gre')]
    target = make(server)
    np.testing.assert_allclose(target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS),
                               expected_scores(["It was"], ["good"]), atol=1e-9)
    assert target.retries == 1
    server.script = [httpx.Response(200, text="<html>oops</html>")] * 3
    with pytest.raises(TargetError, match="3 attempts.*non-JSON body"):
        make(server, max_retries=2).classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)


def test_logprobs_missing_mid_run_is_a_fault_not_a_switch_to_label_parsing():
    """An endpoint that has returned logprobs and then drops them once is retried; dropping them for good
    is an error. Neither switches scoring to hard labels behind the run's back."""
    server = FakeServer()
    target = make(server, max_retries=2)
    first = target.classify(TEMPLATE, ["It was"], ["good", "bad"], VERBALIZERS)
    bare = httpx.Response(200, json={"choices": [{"index": 0, "text": " great", "logprobs": None}]})
    server.script = [bare]
    np.testing.assert_allclose(target.classify(TEMPLATE, ["It was"], ["good", "bad"], VERBALIZERS), first, atol=1e-9)
    assert target.retries == 1 and target.scoring == "logprobs"
    server.logprobs = False
    with pytest.raises(TargetError, match="3 attempts.*without logprobs"):
        target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)
    assert target.scoring == "logprobs" and target.stats.unparsed == 0


def test_match_verbalizers_handles_space_markers():
    assert match_verbalizers({"Ġgreat": -1.0, "▁bad": -2.0}, [" great", " bad"]) == [-1.0, -2.0]
    assert match_verbalizers({"great": -1.0}, [" great", " bad"]) == [-1.0, None]
    assert match_verbalizers({" great": -1.0, "great": -3.0}, [" great"]) == [-1.0]


# -- endpoints without logprobs: an error unless label parsing is asked for ------------------------
def test_an_endpoint_without_logprobs_is_an_error_that_names_the_opt_in():
    """Issue 18: ``transformers serve`` returns no logprobs; scoring it by label parsing behind the user's back
    gave an accuracy of hard labels after one warning. It is an error, after one request per text, and the
    error names the target-spec option, not a Python argument."""
    server = FakeServer(logprobs=False)
    target = make(server, max_retries=3)
    with pytest.raises(TargetError, match=r"returned no logprobs for fake-model.*"
                                          r"openai:http://fake.test/v1:fake-model\?scoring=labels"):
        target.classify(TEMPLATE, ["It was"], ["x", "y"], VERBALIZERS)
    assert len(server.requests) == 2 and target.retries == 0  # not retried: nothing here is transient
    assert target.scoring == "logprobs" and not target.name.endswith(":labels")


def test_label_parsing_is_opt_in_and_counts_unparsed_answers():
    server = FakeServer(logprobs=False, answer=" Great, really")
    target = make(server, scoring="labels")
    scores = target.classify(TEMPLATE, ["It was"], ["x", "y"], VERBALIZERS)
    body = json.loads(server.requests[0].content)
    assert body["max_tokens"] == 8 and "logprobs" not in body  # one greedy answer per text, no logprob request
    np.testing.assert_allclose(np.exp(scores).sum(-1), 1.0, atol=1e-9)
    assert scores[0, 0, 1] == pytest.approx(math.log1p(-EPS)) and scores[0, 0, 0] == pytest.approx(math.log(EPS))
    assert target.name.endswith(":labels") and target.stats.unparsed == 0
    server.answer = "no idea"
    scores = target.classify(TEMPLATE, ["It was"], ["x"], VERBALIZERS)
    np.testing.assert_allclose(scores, math.log(0.5))
    assert target.stats.unparsed == 1
    with pytest.raises(ValueError, match="scoring must be one of.*'parse'"):
        make(server, scoring="parse")


def test_parse_label():
    assert parse_label(" Great movie", [" terrible", " great"]) == 1
    assert parse_label("it was terrible, not great", [" terrible", " great"]) == 0
    assert parse_label("I think it is great", [" terrible", " great"]) == 1
    assert parse_label("meh", [" terrible", " great"]) is None


# -- transport errors and retries ------------------------------------------------------------------
def test_429_with_retry_after_then_success():
    server = FakeServer()
    server.script = [httpx.Response(429, headers={"Retry-After": "0.3"}, text="slow down")]
    target = make(server)
    start = time.perf_counter()
    target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)
    assert time.perf_counter() - start >= 0.3
    assert target.retries == 1 and len(server.requests) == 2 and target.stats.calls == 1


def test_5xx_exhausting_retries_names_url_status_and_body():
    server = FakeServer()
    server.script = [httpx.Response(500, text="engine exploded") for _ in range(10)]
    target = make(server, max_retries=2)
    with pytest.raises(TargetError, match=r"fake\.test/v1/completions.*3 attempts.*500.*engine exploded"):
        target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)
    assert len(server.requests) == 3 and target.stats.calls == 0


def test_client_error_is_not_retried():
    server = FakeServer()
    server.script = [httpx.Response(400, text="unknown model")]
    with pytest.raises(TargetError, match="400.*unknown model"):
        make(server).classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, json={"object": "text_completion"}), r"missing field \['choices'\]"),
        (httpx.Response(200, json={"choices": []}), r"missing field \['choices'\]\[0\]"),
    ],
)
def test_malformed_replies(response, message):
    server = FakeServer()
    server.script = [response]
    with pytest.raises(TargetError, match=message):
        make(server).classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)


def test_unreachable_endpoint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = OpenAITarget(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01, tokenizer=FakeTokenizer())
    with pytest.raises(TargetError, match=r"2 attempts.*cannot reach.*is a server running"):
        target.generate(["hi"])


@pytest.fixture(scope="module")
def slow_server():
    """A real FastAPI server on loopback whose completions answer after 2 s."""
    pytest.importorskip("uvicorn")
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.post("/v1/completions")
    async def completions():
        await asyncio.sleep(2.0)
        return {"choices": [{"text": "late"}]}

    with running_in_background(app, log_level="error") as base:
        yield f"{base}/v1"


def test_timeout_is_retried_then_reported(slow_server):
    target = OpenAITarget(slow_server, "m", timeout=0.2, max_retries=1, backoff=0.01, tokenizer=FakeTokenizer())
    with pytest.raises(TargetError, match=r"2 attempts.*timed out after 0.2 s"):
        target.generate(["hi"])
    assert target.retries == 1


# -- concurrency, auth, budget, threads ------------------------------------------------------------
def test_concurrency_bound_is_respected():
    server = FakeServer(delay=0.05)
    target = make(server, concurrency=3)
    target.classify(TEMPLATE, ["a", "b", "c", "d"], ["good", "bad", "ok"], VERBALIZERS)
    assert len(server.requests) == 12 and server.max_active == 3


def test_api_key_header(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    server = FakeServer()
    make(server, api_key_env="MY_KEY").generate(["hi"])
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    monkeypatch.delenv("MY_KEY")
    make(server, api_key_env="MY_KEY").generate(["hi"])
    assert "authorization" not in server.requests[1].headers


def test_budget_is_checked_before_sending():
    server = FakeServer()
    target = make(server, max_sequences=5)
    target.classify(TEMPLATE, ["It was"], ["a", "b", "c"], VERBALIZERS)
    with pytest.raises(BudgetExceeded):
        target.classify(TEMPLATE, ["It was"], ["a", "b", "c"], VERBALIZERS)
    assert len(server.requests) == 3 and target.stats.sequences == 3


def test_works_inside_a_running_event_loop_and_other_threads():
    target = make(FakeServer())

    async def inside_loop():
        return target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)

    a = asyncio.run(inside_loop())
    results = []
    def work():
        results.append(target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(np.array_equal(a, r) for r in results)
    clone = pickle.loads(pickle.dumps(OpenAITarget(URL, "m", tokenizer=None)))
    assert clone.name == f"openai:{URL}:m:completions"


# -- generation and likelihood ---------------------------------------------------------------------
def test_generate_completions_chat_and_samples():
    server = FakeServer(answer="hello")
    target = make(server)
    assert target.generate(["a", "b"]) == ["hello", "hello"]
    assert target.generate(["a"], chat=True) == ["hello"] and server.requests[-1].url.path == "/v1/chat/completions"
    out = target.generate(["a", "b"], temperature=0.7, top_p=0.9, num_samples=3, seed=5)
    assert out == [f"hello seed={s}" for s in (5, 6, 7)] * 2
    body = json.loads(server.requests[-1].content)
    assert body["n"] == 3 and body["top_p"] == 0.9 and body["temperature"] == 0.7
    assert target.stats.sequences == 9


def test_generate_when_server_ignores_n():
    server = FakeServer(answer="hi", honour_n=False)
    target = make(server)
    assert target.generate(["a"], temperature=1.0, num_samples=3, seed=1) == ["hi seed=1", "hi seed=2", "hi seed=3"]
    assert target.stats.sequences == 3


def test_loglikelihood_needs_opt_in_and_sums_continuation_tokens():
    server = FakeServer()
    with pytest.raises(TargetError, match="echo_loglikelihood=True"):
        make(server).loglikelihood(["The cat"], [" sat"])
    echoed = {
        "tokens": ["The", " cat", " sat", " down", "."],
        "token_logprobs": [None, -2.0, -1.5, -0.5, -0.1],
        "text_offset": [0, 3, 7, 11, 16],
    }
    server.script = [httpx.Response(200, json={"choices": [{"text": "The cat sat down.", "logprobs": echoed}]})]
    assert make(server, echo_loglikelihood=True).loglikelihood(["The cat"], [" sat down"]) == pytest.approx([-2.0])


def test_make_target_parses_from_the_right():
    target = make_target("openai:http://127.0.0.1:8000/v1:org/model-7b", tokenizer=None, concurrency=2)
    assert isinstance(target, OpenAITarget)
    assert (target.base_url, target.model, target.concurrency) == ("http://127.0.0.1:8000/v1", "org/model-7b", 2)
    with pytest.raises(ValueError, match="openai:<base_url>:<model>"):
        make_target("openai:model-only")


def test_make_target_reads_options_after_the_spec_and_ignores_dtype():
    target = make_target("openai:http://127.0.0.1:8000/v1:m?timeout=2.5&max_retries=1&mode=chat&scoring=labels",
                         dtype="bfloat16", tokenizer=None)
    settings = (target.model, target.timeout, target.max_retries, target.mode, target.scoring)
    assert settings == ("m", 2.5, 1, "chat", "labels")
    assert make_target("openai:http://127.0.0.1:8000/v1:m", tokenizer=None).scoring == "logprobs"
    with pytest.raises(ValueError, match="scoring must be one of"):
        make_target("openai:http://h/v1:m?scoring=parse")
    with pytest.raises(ValueError, match="'retries=3'.*max_retries"):
        make_target("openai:http://h/v1:m?retries=3")
    with pytest.raises(ValueError, match="timeout='soon'"):
        make_target("openai:http://h/v1:m?timeout=soon")


# -- deadlines, Retry-After and backoff caps, key redaction (issue 17) ------------------------------
def _bounded(call, seconds: float):
    """Run ``call`` in a daemon thread; (finished, its exception or result, elapsed seconds). A hang shows as
    ``finished=False`` after ``seconds`` instead of stalling the test suite."""
    out: dict = {}

    def work():
        try:
            out["value"] = call()
        except Exception as err:  # noqa: BLE001 - handed back to the test to assert on
            out["value"] = err

    start = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out.get("value"), time.perf_counter() - start


def test_deadline_total_per_request_against_a_dripping_reply():
    """httpx's timeout bounds each read: a reply dripping one byte per second never trips it. The target's
    ``timeout`` is a deadline for the whole attempt (real HTTP on loopback)."""
    pytest.importorskip("uvicorn")
    from rlprompt.targets.faulty import FaultyEndpoint

    with FaultyEndpoint(VERBALIZERS, fault_rate=1.0, faults=["drip"], drip_seconds=1.0) as endpoint:
        target = make_target(f"openai:{endpoint.url}:fake?timeout=2&max_retries=1&backoff=0.01", tokenizer=None)
        finished, error, elapsed = _bounded(lambda: target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS), 20)
        assert finished, "the dripping reply held the request past its deadline"
        assert isinstance(error, TargetError) and "2 attempts: timed out after 2.0 s" in str(error)
        assert 4 <= elapsed < 8 and endpoint.injected["drip"] == 2
        endpoint.fault_rate = 0.0  # the same client still works once the endpoint behaves
        scores = target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS)
        np.testing.assert_allclose(scores[0, 0], [endpoint.logprobs("good It was")[v] for v in VERBALIZERS], atol=1e-9)


def test_deadline_drips_among_good_replies_are_retried():
    pytest.importorskip("uvicorn")
    from rlprompt.targets.faulty import FaultyEndpoint

    with FaultyEndpoint(VERBALIZERS, fault_rate=0.3, faults=["drip"], drip_seconds=1.0, seed=3) as endpoint:
        target = make_target(f"openai:{endpoint.url}:fake?timeout=1&max_retries=8&backoff=0.01", tokenizer=None)
        inputs = [f"film {i}" for i in range(8)]
        start = time.perf_counter()
        scores = target.classify(TEMPLATE, ["It was"], inputs, VERBALIZERS)
        assert time.perf_counter() - start < 20  # each drip costs one deadline, not the whole slow reply
        expected = [[endpoint.logprobs(f"{x} It was")[v] for v in VERBALIZERS] for x in inputs]
    np.testing.assert_allclose(scores[0], expected, atol=1e-9)
    assert endpoint.injected["drip"] >= 1 and target.retries >= endpoint.injected["drip"]


def test_retry_after_parsing_ignores_unusable_values_and_caps_the_rest():
    from email.utils import formatdate

    from rlprompt.targets.openai import _retry_after

    def parse(value):
        return _retry_after(httpx.Response(429, headers={"Retry-After": value}), 60.0)

    assert parse("2.5") == 2.5 and parse("0") == 0.0
    assert parse("3600") == 60.0 and parse(formatdate(time.time() + 3600, usegmt=True)) == 60.0
    assert parse(formatdate(time.time() - 3600, usegmt=True)) == 0.0  # a date in the past: retry now
    for garbage in ("1e400", "inf", "-inf", "nan", "-5", "soon", "", "Mon, 99 Foo 99999 99:99:99 GMT"):
        assert parse(garbage) is None, garbage
    assert _retry_after(httpx.Response(429), 60.0) is None


@pytest.mark.parametrize("header", ["3600", "1e400", "-5", "soon"])
def test_retry_after_capped_on_real_http(header):
    """A 429 asking for an hour (or forever, or nonsense) makes the client wait at most ``max_wait``."""
    pytest.importorskip("uvicorn")
    from rlprompt.targets.faulty import FaultyEndpoint

    with FaultyEndpoint(VERBALIZERS, fault_rate=1.0, faults=["429"], retry_after=header) as endpoint:
        target = make_target(f"openai:{endpoint.url}:fake?timeout=2&max_retries=2&backoff=0.01&max_wait=0.3",
                             tokenizer=None)
        finished, error, elapsed = _bounded(lambda: target.classify(TEMPLATE, ["It was"], ["good"], VERBALIZERS), 10)
        assert finished, f"Retry-After: {header} stalled the client"
        assert isinstance(error, TargetError) and "3 attempts: HTTP 429" in str(error)
        assert elapsed < 5 and endpoint.requests == 3 and target.retries == 2
        if header == "3600":
            assert elapsed >= 0.6  # the capped wait was honoured, twice


def test_retry_after_absent_exponential_backoff_is_capped():
    """Without Retry-After the backoff doubles per attempt, up to ``max_wait`` (and 2**attempt never overflows)."""
    server = FakeServer()
    server.script = [httpx.Response(500, text="busy") for _ in range(1101)]
    target = make(server, backoff=100.0, max_wait=0.0, max_retries=1100)
    finished, error, elapsed = _bounded(lambda: target.generate(["hi"]), 30)
    assert finished and isinstance(error, TargetError) and "1101 attempts: HTTP 500" in str(error)
    assert len(server.requests) == 1101
    server.script = [httpx.Response(500, text="busy")] * 4
    target = make(server, backoff=100.0, max_wait=0.2, max_retries=3)
    finished, error, elapsed = _bounded(lambda: target.generate(["hi"]), 10)
    assert finished and 0.6 <= elapsed < 3 and "4 attempts" in str(error)


def test_retry_after_and_deadline_settings_are_validated():
    target = make_target("openai:http://h/v1:m?max_wait=5&timeout=3", tokenizer=None)
    assert (target.max_wait, target.timeout) == (5.0, 3.0)
    assert OpenAITarget(URL, "m", tokenizer=None).max_wait == 60.0
    for bad in ("max_wait=-1", "max_wait=inf", "timeout=nan", "backoff=inf"):
        with pytest.raises(ValueError, match="bad settings"):
            make_target(f"openai:http://h/v1:m?{bad}", tokenizer=None)


@pytest.fixture(scope="module")
def key_echoing_server():
    """A loopback server that echoes the client's Authorization header in every error body, as some do."""
    pytest.importorskip("uvicorn")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request):
        echoed = f"Incorrect API key provided: {request.headers.get('authorization', '')[len('Bearer '):]}"
        status = int(request.path_params["status"])
        if status == 200:  # a 200 whose body lacks choices but names the key
            return JSONResponse({"error": echoed, "padding": "x" * 400})
        return JSONResponse({"error": {"message": echoed}}, status_code=status)

    app = Starlette(routes=[Route("/v1/{status}/completions", completions, methods=["POST"])])
    with running_in_background(app, log_level="error") as base:
        yield f"{base}/v1"


@pytest.mark.parametrize("status", [401, 500, 200])
def test_api_key_is_redacted_from_error_messages(key_echoing_server, status, monkeypatch):
    key = "sk-SECRET-0123456789abcdef"
    monkeypatch.setenv("ECHO_KEY", key)
    target = OpenAITarget(f"{key_echoing_server}/{status}", "m", api_key_env="ECHO_KEY", max_retries=1,
                          backoff=0.01, tokenizer=None)
    with pytest.raises(TargetError) as caught:
        target.generate(["hi"])
    message = str(caught.value)
    assert key not in message and key[:12] not in message and "***" in message
    assert "Incorrect API key" in message  # the rest of the server's explanation is kept
