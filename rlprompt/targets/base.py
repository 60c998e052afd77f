"""The one interface every reward and method uses to query a frozen target model."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rlprompt.errors import ConfigError, RLPromptError

SENTENCE = "{sentence}"
PROMPT = "{prompt}"


class TargetError(RLPromptError, RuntimeError):
    """A target backend failed or answered something unusable (never turned into a default score)."""

    exit_code = 1


class BudgetExceeded(TargetError):
    """Raised before a query that would take the target past its query budget."""


@dataclass
class QueryStats:
    """Query accounting that trainers read to enforce budgets.

    ``calls`` counts batched requests to the backend, ``sequences`` the (prompt, input) pairs scored
    or texts generated, ``tokens`` the tokens the backend processed, ``cache_hits`` the sequences
    answered from a response cache without reaching the backend, ``unparsed`` the label-parsing answers
    that named no verbalizer (only an endpoint scored by label parsing has any).
    """

    calls: int = 0
    sequences: int = 0
    tokens: int = 0
    cache_hits: int = 0
    unparsed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_template(template: str) -> None:
    """Raise :class:`~rlprompt.errors.ConfigError` unless ``template`` holds exactly one ``{prompt}`` and one
    ``{sentence}``."""
    for field in (PROMPT, SENTENCE):
        if template.count(field) != 1:
            raise ConfigError(f"template {template!r} must contain {field} exactly once")


def fill(template: str, prompt: str, sentence: str) -> str:
    """Fill a template by plain replacement (braces inside texts are left alone)."""
    head, tail = template.split(SENTENCE)
    return head.replace(PROMPT, prompt) + sentence + tail.replace(PROMPT, prompt)


class Target(abc.ABC):
    """A frozen model queried for classification scores, generations and likelihoods.

    Subclasses implement the three ``_`` methods and add what they send to the backend to
    :attr:`stats` (``calls``, ``sequences``, ``tokens``); the public methods validate arguments and
    check the query budget (``max_sequences``, in sequences) before anything is sent.
    """

    name: str = "target"

    def __init__(self, max_sequences: int | None = None) -> None:
        self.stats = QueryStats()
        self.max_sequences = max_sequences

    # -- budget -------------------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Raise :class:`BudgetExceeded` if sending ``n`` more sequences would pass the budget."""
        if self.max_sequences is not None and self.stats.sequences + n > self.max_sequences:
            raise BudgetExceeded(
                f"target query budget of {self.max_sequences} sequences would be exceeded "
                f"({self.stats.sequences} used, {n} requested)"
            )

    # -- public API ---------------------------------------------------------------------------------
    def classify(
        self, template: str, prompts: Sequence[str], inputs: Sequence[str], verbalizers: Sequence[str]
    ) -> np.ndarray:
        """Log-probabilities of each verbalizer as the next token after the filled template.

        Returns an array of shape ``(len(prompts), len(inputs), len(verbalizers))`` holding
        ``log p(verbalizer_k | fill(template, prompt_p, input_n))`` over the full vocabulary.
        """
        check_template(template)
        if not prompts or not inputs:
            raise ValueError(f"classify needs at least one prompt and one input (got {len(prompts)} and {len(inputs)})")
        if len(verbalizers) < 2:
            raise ValueError(f"classify needs at least two verbalizers, got {list(verbalizers)!r}")
        self.reserve(len(prompts) * len(inputs))
        scores = np.asarray(self._classify(template, list(prompts), list(inputs), list(verbalizers)), dtype=np.float64)
        expected = (len(prompts), len(inputs), len(verbalizers))
        if scores.shape != expected:
            raise TargetError(f"{self.name} returned scores of shape {scores.shape}, expected {expected}")
        if np.isnan(scores).any() or (scores > 1e-3).any():
            raise TargetError(f"{self.name} returned NaN or positive log-probabilities for template {template!r}")
        return scores

    def generate(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        num_samples: int = 1,
        seed: int | None = None,
        chat: bool = False,
    ) -> list[str]:
        """Continue each text (greedy when ``temperature == 0``), ``num_samples`` each, samples of one
        text contiguous. With ``chat=True`` each text is sent as one user message of a chat."""
        if not texts:
            raise ValueError("generate needs at least one text")
        if max_new_tokens < 1 or num_samples < 1 or temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"bad generation settings: max_new_tokens={max_new_tokens}, num_samples={num_samples}, "
                f"temperature={temperature}, top_p={top_p}"
            )
        if temperature == 0 and num_samples > 1:
            raise ValueError(f"greedy decoding (temperature=0) cannot give num_samples={num_samples} different samples")
        self.reserve(len(texts) * num_samples)
        out = self._generate(list(texts), max_new_tokens, temperature, top_p, num_samples, seed, chat)
        if len(out) != len(texts) * num_samples:
            raise TargetError(f"{self.name} returned {len(out)} generations, expected {len(texts) * num_samples}")
        return out

    def loglikelihood(self, contexts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """Sum of token log-probabilities of each continuation given its context, shape ``(N,)``."""
        if len(contexts) != len(continuations) or not contexts:
            raise ValueError(f"need matching non-empty contexts and continuations (got {len(contexts)} and {len(continuations)})")
        if any(not c for c in continuations):
            raise ValueError("every continuation must be non-empty")
        self.reserve(len(contexts))
        out = np.asarray(self._loglikelihood(list(contexts), list(continuations)), dtype=np.float64)
        if out.shape != (len(contexts),) or np.isnan(out).any():
            raise TargetError(f"{self.name} returned unusable log-likelihoods {out!r}")
        return out

    # -- backends -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray: ...

    @abc.abstractmethod
    def _generate(
        self, texts: list[str], max_new_tokens: int, temperature: float, top_p: float, num_samples: int, seed: int | None, chat: bool
    ) -> list[str]: ...

    @abc.abstractmethod
    def _loglikelihood(self, contexts: list[str], continuations: list[str]) -> np.ndarray: ...
