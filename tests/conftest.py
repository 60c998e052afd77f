"""Shared test fixtures: the bundled and tiny targets, the scripted fake target, and the location of ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlprompt.targets.base import Target

SHARED_DATA = Path(os.environ.get("RLPROMPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SST2 = SHARED_DATA / "rlprompt-16shot" / "sst-2"

# (prompt, text, number of verbalizers, position of the text in its batch) -> the verbalizers' log-probabilities
Scores = Callable[[str, str, int, int], Sequence[float]]


class FakeTarget(Target):
    """A scripted frozen target: no model, no network, every request recorded.

    ``scores(prompt, text, k, position)`` gives the ``k`` verbalizer log-probabilities of ``text`` (the
    ``position``-th input of its request) under ``prompt``, over the whole vocabulary (so their probabilities may
    sum below 1); ``generate(text, sample, seed)`` answers sample ``sample`` of one text of a generation request;
    ``loglikelihood(context, continuation)`` scores one pair. A capability left as None fails the test that uses
    it. ``tokenizer`` and ``encode``, when given, become attributes (the envs and the mean-normalized likelihood
    reward read them). Each backend call counts in :attr:`stats` as a real target's does: one call, its sequences.
    """

    def __init__(self, scores: Scores | None = None, *, generate: Callable[[str, int, int | None], str] | None = None,
                 loglikelihood: Callable[[str, str], float] | None = None, name: str = "fake",
                 max_sequences: int | None = None, tokenizer: Any = None,
                 encode: Callable[[str], list[Any]] | None = None) -> None:
        super().__init__(max_sequences=max_sequences)
        self.name = name
        self.scores, self.answer, self.pair_score = scores, generate, loglikelihood
        if tokenizer is not None:
            self.tokenizer = tokenizer
        if encode is not None:
            self.encode = encode
        self.classify_calls: list[tuple[list[str], list[str]]] = []  # (prompts, inputs) of each classify request
        self.rows: list[tuple[str, str]] = []  # every (prompt, input) scored, in order
        self.generated: list[list[str]] = []  # the texts of each generate request
        self.generate_settings: list[dict[str, Any]] = []  # its other arguments
        self.scored: list[list[tuple[str, str]]] = []  # the (context, continuation) pairs of each loglikelihood request

    def _unscripted(self, what: str) -> AssertionError:
        return AssertionError(f"the fake target {self.name!r} is not scripted to {what}")

    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        if self.scores is None:
            raise self._unscripted("classify")
        self.classify_calls.append((list(prompts), list(inputs)))
        out = np.empty((len(prompts), len(inputs), len(verbalizers)))
        for p, prompt in enumerate(prompts):
            for n, text in enumerate(inputs):
                self.rows.append((prompt, text))
                out[p, n] = self.scores(prompt, text, len(verbalizers), n)
        self.stats.calls += 1
        self.stats.sequences += len(prompts) * len(inputs)
        return out

    def _generate(self, texts: list[str], max_new_tokens: int, temperature: float, top_p: float, num_samples: int,
                  seed: int | None, chat: bool) -> list[str]:
        if self.answer is None:
            raise self._unscripted("generate")
        self.generated.append(list(texts))
        self.generate_settings.append(dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                           num_samples=num_samples, seed=seed, chat=chat))
        self.stats.calls += 1
        self.stats.sequences += len(texts) * num_samples
        return [self.answer(text, i, seed) for text in texts for i in range(num_samples)]

    def _loglikelihood(self, contexts: list[str], continuations: list[str]) -> np.ndarray:
        if self.pair_score is None:
            raise self._unscripted("score likelihoods")
        self.scored.append(list(zip(contexts, continuations)))
        self.stats.calls += 1
        self.stats.sequences += len(contexts)
        return np.array([self.pair_score(c, x) for c, x in zip(contexts, continuations)])


def gold_share(labels_by_text: Mapping[str, int], quality: Callable[[str], float]) -> Scores:
    """Scores where the gold verbalizer gets probability ``0.05 + 0.9 * quality(prompt)`` on every input and the
    other verbalizers share the rest: a prompt's accuracy and reward follow its scripted quality."""

    def scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
        q = 0.05 + 0.9 * quality(prompt)
        probs = np.full(k, (1 - q) / (k - 1))
        probs[labels_by_text[text]] = q
        return np.log(probs)

    return scores


def vowel_target() -> FakeTarget:
    """The built-in sentiment task's fake target for the RL trainers: ``log p(gold)`` grows with the share of vowels
    in the prompt (plus 0.1 per batch position modulo 3), so some prompts are better."""
    from rlprompt.tasks import load_task

    task = load_task("sentiment")
    gold = {t: y for split in task.splits.values() for t, y in zip(split.texts, split.labels)}

    def scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
        logits = np.zeros(k)
        strength = 8.0 * sum(c in "aeiou" for c in prompt.lower()) / (len(prompt) + 1) - 1.5
        logits[gold[text]] = strength + 0.1 * (position % 3)
        return logits - np.log(np.exp(logits).sum()) - 1.0

    return FakeTarget(scores)


def launch_two_processes(*args: str | Path) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2`` of ``args`` (a script, or ``-m`` and a module, then its
    arguments) from the repository root, one torch thread each: two gloo processes, also on a machine without a GPU
    (``--cpu`` would start one whatever ``--num_processes`` says). Output captured; 900 s at most."""
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", *map(str, args)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="session")
def bundled_target():
    """The real SmolLM2-135M target in float32 (tight tolerances), loaded once per session."""
    from rlprompt.targets.hf import HFTarget

    return HFTarget("smollm2-135m-instruct", dtype="float32", batch_size=16)


@pytest.fixture(scope="session")
def tiny_target():
    """A two-layer random Llama over the SmolLM2 tokenizer."""
    from rlprompt.targets.hf import HFTarget

    return HFTarget("tiny-random", dtype="float32", batch_size=4)


MODEL_MARKERS = ("model", "slow", "heavy", "subprocess")
"""What ``make test-fast`` deselects: a test that reads the bundled model's files carries one of these."""


@pytest.fixture(autouse=True)
def model_files_need_a_marker(request, monkeypatch):
    """Keeps the fast tier hermetic: a test marked none of :data:`MODEL_MARKERS` that reaches the bundled model's
    files (the GGUF or its converted checkpoint, which the tiny random model's tokenizer comes from too) fails,
    naming the marker to add. Session fixtures that load a model before this runs are caught only when their
    first user is unmarked and they load lazily."""
    if any(request.node.get_closest_marker(name) for name in MODEL_MARKERS):
        return
    import rlprompt.models

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} reads the bundled model's files: mark it @pytest.mark.model")

    monkeypatch.setattr(rlprompt.models, "bundled_gguf_path", refuse)
    monkeypatch.setattr(rlprompt.models, "bundled_model_dir", refuse)
