"""HFTarget: input KV reuse equals the naive path, verbalizer checks, budgets, generation, likelihood."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from rlprompt.targets import BudgetExceeded
from tests.conftest import SST2

pytestmark = pytest.mark.model  # every test here builds the tiny random Llama or its tokenizer

INPUTS = ["a gentle, funny film .", "dull", "the plot never comes together and the actors look bored .", "wow"]
PROMPTS = ["It was", "All in all, it was really", "", "?!"]
VERBALIZERS = [" terrible", " great"]


def _fresh(target):
    target.stats.calls = target.stats.sequences = target.stats.tokens = 0
    return target


@pytest.mark.parametrize("template", ["{sentence} {prompt}", "{sentence}{prompt}", "Review: {sentence}\n{prompt} Sentiment:", "{prompt}\n{sentence} It was",
                                      "<|im_start|>user\n{prompt}\n\nInput: {sentence}<|im_end|>\nAnswer:"])
def test_kv_reuse_matches_naive_path(tiny_target, template):
    tiny_target.kv_reuse = True
    reused = tiny_target.classify(template, PROMPTS, INPUTS, VERBALIZERS)
    tiny_target.kv_reuse = False
    naive = tiny_target.classify(template, PROMPTS, INPUTS, VERBALIZERS)
    tiny_target.kv_reuse = True
    assert reused.shape == (len(PROMPTS), len(INPUTS), 2)
    np.testing.assert_allclose(reused, naive, atol=1e-4)
    assert (reused < 0).all()


def test_kv_reuse_matches_one_unpadded_sequence(tiny_target):
    """Left padding, cache reuse and grouping must give the numbers of one sequence fed alone."""
    scores = tiny_target.classify("{sentence} {prompt}", PROMPTS, INPUTS, VERBALIZERS)
    ids = tiny_target.encode(INPUTS[2]) + tiny_target.encode(" " + PROMPTS[1])
    with torch.no_grad():
        logits = tiny_target.model(torch.tensor([ids])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[tiny_target.verbalizer_ids(VERBALIZERS)].numpy()
    np.testing.assert_allclose(scores[1, 2], expected, atol=1e-4)


def test_kv_reuse_computes_each_input_once(tiny_target):
    target = _fresh(tiny_target)
    target.classify("{sentence} {prompt}", PROMPTS, INPUTS, VERBALIZERS)
    input_tokens = sum(len(target.encode(text)) for text in INPUTS)
    suffix_tokens = sum(len(target.encode(" " + p)) for p in PROMPTS)
    assert target.stats.tokens == input_tokens + len(INPUTS) * suffix_tokens
    assert target.stats.sequences == len(PROMPTS) * len(INPUTS)


@pytest.mark.parametrize("template, prompts, inputs", [("{prompt}{sentence}", [""], INPUTS), ("{sentence}{prompt}", PROMPTS, [""])])
def test_kv_reuse_with_only_empty_prefixes(tiny_target, template, prompts, inputs):
    """Nothing to cache (every shared first segment is empty): the cached path still matches the naive one."""
    tiny_target.kv_reuse = True
    reused = tiny_target.classify(template, prompts, inputs, VERBALIZERS)
    tiny_target.kv_reuse = False
    naive = tiny_target.classify(template, prompts, inputs, VERBALIZERS)
    tiny_target.kv_reuse = True
    np.testing.assert_allclose(reused, naive, atol=1e-4)


def test_prompt_first_template_computes_each_prompt_once(tiny_target):
    target = _fresh(tiny_target)
    template = "Task: {prompt}\n\nInput: {sentence}\nAnswer:"
    scores = target.classify(template, PROMPTS, INPUTS, VERBALIZERS)
    prompt_tokens = sum(len(target.encode("Task: " + p)) for p in PROMPTS)
    tail = len(target.encode("\nAnswer:"))
    input_tokens = sum(len(target.encode("\n\nInput: " + text)) + tail for text in INPUTS)
    assert target.stats.tokens == prompt_tokens + len(PROMPTS) * input_tokens
    ids = target.encode("Task: " + PROMPTS[1]) + target.encode("\n\nInput: " + INPUTS[0]) + target.encode("\nAnswer:")
    with torch.no_grad():
        logits = target.model(torch.tensor([ids])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[target.verbalizer_ids(VERBALIZERS)].numpy()
    np.testing.assert_allclose(scores[1, 0], expected, atol=1e-4)


def test_verbalizer_must_be_one_token(tiny_target):
    with pytest.raises(ValueError, match=r"' goodd' is not a single token: it tokenizes to \['Ġgood', 'd'\]"):
        tiny_target.classify("{sentence} {prompt}", ["x"], ["y"], [" bad", " goodd"])


def test_template_needs_prompt_and_sentence(tiny_target):
    with pytest.raises(ValueError, match=r"must contain \{prompt\}"):
        tiny_target.classify("{sentence} It was", ["x"], ["y"], VERBALIZERS)


def test_budget_is_checked_before_querying(tiny_target):
    target = _fresh(tiny_target)
    target.max_sequences = 10
    try:
        target.classify("{sentence} {prompt}", PROMPTS[:2], INPUTS, VERBALIZERS)
        with pytest.raises(BudgetExceeded, match="budget of 10 sequences"):
            target.classify("{sentence} {prompt}", PROMPTS[:2], INPUTS, VERBALIZERS)
        assert target.stats.sequences == 8
    finally:
        target.max_sequences = None


def test_generation_is_seeded_and_greedy_is_deterministic(tiny_target):
    a = tiny_target.generate(["Hello there"], max_new_tokens=5, temperature=1.0, num_samples=3, seed=7)
    b = tiny_target.generate(["Hello there"], max_new_tokens=5, temperature=1.0, num_samples=3, seed=7)
    assert a == b and len(a) == 3
    greedy = tiny_target.generate(["Hello there", "Hi"], max_new_tokens=4)
    assert greedy == tiny_target.generate(["Hello there", "Hi"], max_new_tokens=4) and len(greedy) == 2
    with pytest.raises(ValueError, match="num_samples=2"):
        tiny_target.generate(["x"], num_samples=2)


def test_loglikelihood_sums_continuation_tokens(tiny_target):
    ctx, cont = "The capital of France is", " Paris, of course"
    got = tiny_target.loglikelihood([ctx, "x"], [cont, " y"])[0]
    ids = tiny_target.encode(ctx) + tiny_target.encode(cont)
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny_target.model(torch.tensor([ids])).logits[0], -1)
    n = len(tiny_target.encode(cont))
    expected = sum(float(logprobs[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_bundled_target_kv_reuse_on_sst2(bundled_target):
    """The real SmolLM2 target: KV reuse agrees with the naive path on SST-2 dev sentences (fp32)."""
    rows = list(csv.reader(open(SST2 / "16-42" / "dev.tsv"), delimiter="\t"))[1:]
    texts = [r[0] for r in rows[::4]]
    prompts = ["It was", "My verdict: it was", "Overall the movie was"]
    bundled_target.kv_reuse = False
    naive = bundled_target.classify("{sentence} {prompt}", prompts, texts, VERBALIZERS)
    bundled_target.kv_reuse = True
    reused = bundled_target.classify("{sentence} {prompt}", prompts, texts, VERBALIZERS)
    np.testing.assert_allclose(reused, naive, atol=1e-3)
    assert (reused.argmax(-1) == naive.argmax(-1)).all()
