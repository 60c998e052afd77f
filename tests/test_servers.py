"""OpenAITarget against REAL OpenAI-compatible servers on loopback, serving the bundled SmolLM2:
llama.cpp's server (log-probability scoring, compared with HFTarget) and ``transformers serve``
(generation, and label parsing, opt-in with ``?scoring=labels``: it returns no logprobs).

Needs ``pip install "llama-cpp-python[server]"`` and ``pip install "transformers[serving]"``; each
group skips only when its server package is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rlprompt.models import bundled_gguf_path, bundled_model_dir, load_tokenizer
from rlprompt.evaluation import evaluate
from rlprompt.targets import OpenAITarget, TargetError, make_target
from tests.conftest import SST2

pytestmark = pytest.mark.slow

DEV = SST2 / "16-42" / "dev.tsv"
TEMPLATE = "{sentence} {prompt}"
VERBALIZERS = [" terrible", " great"]


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(command: list[str], base: str, ready_path: str, log: Path, timeout: float = 240.0):
    """Start ``command``, wait until ``base + ready_path`` answers 200 (bounded), yield ``base``, always kill it."""
    ready_url = base + ready_path
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{command[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{command[:3]} not ready after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _sentences(n: int = 16) -> tuple[list[str], list[int]]:
    """``n`` dev sentences, half of each label (the file is sorted by label)."""
    with open(DEV) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows = [r for r in rows if r["label"] == "0"][: n // 2] + [r for r in rows if r["label"] == "1"][: n - n // 2]
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


@pytest.fixture(scope="module")
def hf_target():
    from rlprompt.targets.hf import HFTarget

    return HFTarget("smollm2-135m-instruct", dtype="float32", batch_size=16)


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory):
    missing = _missing("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings", "uvicorn", "fastapi")
    if missing:
        pytest.skip(f'llama.cpp server not installed (missing {missing}): pip install "llama-cpp-python[server]"')
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False"]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    yield from _serve(command, f"http://127.0.0.1:{port}", "/v1/models", log)


@pytest.fixture(scope="module")
def transformers_url(tmp_path_factory):
    missing = _missing("fastapi", "uvicorn", "openai", "rich")
    if missing:
        pytest.skip(f'transformers serve not installed (missing {missing}): pip install "transformers[serving]"')
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(bundled_model_dir()),
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("tserve") / "server.log"
    yield from _serve(command, f"http://127.0.0.1:{port}", "/health", log)


# -- llama.cpp ---------------------------------------------------------------------------------------
def test_llama_cpp_scores_agree_with_hf_target(llama_url, hf_target):
    sentences, _ = _sentences()
    with OpenAITarget(f"{llama_url}/v1", str(bundled_gguf_path()), concurrency=2) as target:
        remote = target.classify(TEMPLATE, ["It was"], sentences, VERBALIZERS)[0]
        assert target.stats.sequences == 16 and target.stats.calls >= 16 and target.stats.tokens > 0
        forced = target.stats.calls - 16  # verbalizers outside the top 20, read with logit_bias
    local = hf_target.classify(TEMPLATE, ["It was"], sentences, VERBALIZERS)[0]
    agree = float(np.mean(remote.argmax(-1) == local.argmax(-1)))
    gap_r, gap_l = remote[:, 1] - remote[:, 0], local[:, 1] - local[:, 0]
    print(f"\nllama.cpp vs HFTarget: {agree * 16:.0f}/16 labels agree; max |logprob diff| "
          f"{np.abs(remote - local).max():.3f}; gap correlation {np.corrcoef(gap_r, gap_l)[0, 1]:.3f}; "
          f"{forced}/32 scores read by forcing with logit_bias")
    assert agree >= 0.9
    assert np.abs(remote - local).max() < 0.5  # Q4_1 weights both sides; llama.cpp rounds activations
    # verbalizers inside the top 20 are read straight from the first reply
    with OpenAITarget(f"{llama_url}/v1", str(bundled_gguf_path()), concurrency=2) as target:
        remote = target.classify(TEMPLATE, ["It was"], sentences, [" a", " the"])[0]
        assert target.stats.calls == 16
    local = hf_target.classify(TEMPLATE, ["It was"], sentences, [" a", " the"])[0]
    print(f"top-20 path (' a'/' the'): max |logprob diff| {np.abs(remote - local).max():.3f}")
    assert np.abs(remote - local).max() < 0.5


def test_llama_cpp_logit_bias_forces_the_token_but_reports_raw_logprobs(llama_url, hf_target):
    text = "The movie was great. It was"
    verbalizers = [" submarine", " spreadsheet"]  # far outside the top 20
    tokenizer = load_tokenizer()
    ids = [tokenizer(v, add_special_tokens=False).input_ids for v in verbalizers]
    assert all(len(i) == 1 for i in ids), ids
    url = f"{llama_url}/v1/completions"
    body = {"prompt": text, "max_tokens": 1, "logprobs": 20, "temperature": 0}
    plain = httpx.post(url, json=body, timeout=60).json()["choices"][0]["logprobs"]
    forced = httpx.post(url, json={**body, "logit_bias": {str(ids[0][0]): 100.0}}, timeout=60).json()
    forced = forced["choices"][0]["logprobs"]
    top, top_f = plain["top_logprobs"][0], forced["top_logprobs"][0]
    assert not set(verbalizers) & set(top) and forced["tokens"] == [verbalizers[0]]
    print(f"\nlogit_bias +100 on {verbalizers[0]!r}: chosen with logprob {forced['token_logprobs'][0]:.3f}; "
          f"max change of the other top-20 values {max(abs(top[t] - top_f[t]) for t in top):.2e}")
    assert all(top_f[t] == top[t] for t in top)  # raw values: the bias changes the choice, not the numbers
    assert forced["token_logprobs"][0] < min(top.values())
    with OpenAITarget(f"{llama_url}/v1", str(bundled_gguf_path())) as target:
        recovered = target.classify("{sentence}{prompt}", [" It was"], ["The movie was great."], verbalizers)[0, 0]
        assert target.stats.calls == 3  # one plain request, one forcing request per missing verbalizer
        with pytest.raises(TargetError, match="not among the top"):
            no_tokenizer = OpenAITarget(f"{llama_url}/v1", "m", tokenizer=None)
            no_tokenizer.classify("{sentence}{prompt}", [" It was"], ["The movie was great."], verbalizers)
    local = hf_target.classify("{sentence}{prompt}", [" It was"], ["The movie was great."], verbalizers)[0, 0]
    print(f"recovered {recovered.round(3)} vs HFTarget {local.round(3)}")
    np.testing.assert_allclose(recovered, local, atol=0.5)


def test_llama_cpp_chat_scoring(llama_url):
    sentences, _ = _sentences(4)
    template = "Is this movie review positive or negative?\n\n{sentence}{prompt}"
    with OpenAITarget(f"{llama_url}/v1", str(bundled_gguf_path()), mode="chat") as target:
        scores = target.classify(template, [""], sentences, ["Positive", "Negative"])[0]
    print(f"\nllama.cpp chat scores (Positive, Negative): {scores.round(2).tolist()}")
    assert np.isfinite(scores).all() and (scores < 0).all() and np.exp(scores).sum(-1).max() <= 1.0 + 1e-6


def test_llama_cpp_generation(llama_url):
    with OpenAITarget(f"{llama_url}/v1", str(bundled_gguf_path())) as target:
        greedy = target.generate(["The capital of France is"], max_new_tokens=8)
        assert greedy == target.generate(["The capital of France is"], max_new_tokens=8) and greedy[0].strip()
        chat = target.generate(["Say hello."], max_new_tokens=8, chat=True)
        samples = target.generate(["Once upon a time"], max_new_tokens=8, temperature=1.0, num_samples=3, seed=0)
    print(f"\nllama.cpp greedy {greedy!r}, chat {chat!r}, samples {samples!r}")
    assert len(samples) == 3 and chat[0].strip()


# -- transformers serve ------------------------------------------------------------------------------
def test_transformers_serve_generation(transformers_url):
    model = str(bundled_model_dir())
    with OpenAITarget(f"{transformers_url}/v1", model, tokenizer=None) as target:
        greedy = target.generate(["The capital of France is"], max_new_tokens=8)
        chat = target.generate(["Say hello."], max_new_tokens=8, chat=True)
    print(f"\ntransformers serve greedy {greedy!r}, chat {chat!r}")
    assert greedy[0].strip() and chat[0].strip()


def test_transformers_serve_needs_the_label_parsing_opt_in(transformers_url):
    """Without logprobs the endpoint is an error naming ``?scoring=labels``; with it, answers are parsed into
    labels and the evaluation reports how many named no verbalizer."""
    sentences, labels = _sentences(8)
    template = "Is this movie review positive or negative? Answer with one word.\n\nReview: {sentence}{prompt}"
    verbalizers = [" negative", " positive"]
    spec = f"openai:{transformers_url}/v1:{bundled_model_dir()}?mode=chat&concurrency=2"
    with make_target(spec, tokenizer=None) as target:
        with pytest.raises(TargetError, match=r"returned no logprobs.*\?scoring=labels"):
            target.classify(template, [""], sentences[:2], verbalizers)
    with make_target(spec + "&scoring=labels", tokenizer=None) as target:
        scores = target.classify(template, [""], sentences, verbalizers)[0]
        uniform = int(np.isclose(scores, np.log(0.5)).all(-1).sum())  # what an unparsable answer scores
        assert target.stats.unparsed == uniform
        result = evaluate(target, template=template, prompt="", verbalizers=verbalizers, texts=sentences, labels=labels)
    assert np.isfinite(scores).all() and np.allclose(np.exp(scores).sum(-1), 1.0)
    assert result.unparsed == uniform  # the same greedy answers again
    print(f"\ntransformers serve label parsing: {8 - result.unparsed}/8 answers parsed, "
          f"accuracy {result.accuracy:.2f}, predictions per class {result.predictions_per_class}")
    assert result.unparsed <= 2
