"""Rewards for generation tasks: reference-based string metrics and the target's likelihood of a reference.

Exact match and token F1 follow SQuAD's answer normalisation (Rajpurkar et al. 2016). The likelihood
reward scores a completion used as the instruction of a frozen target, as in RLPrompt's generation
tasks and PRewrite's rewriter rewards (Deng et al. 2022; Kong et al. 2024).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

from rlprompt.rewards.protocol import Completion, checked, column, completion_texts
from rlprompt.targets.base import Target, check_template, fill

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

Reference = str | Sequence[str]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _references(reference: Reference) -> list[str]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"a reference must be a string or a non-empty list of strings, got {reference!r}")
    return refs


def _reference_column(name: str, references: Sequence[Reference] | None, columns: dict[str, Any], n: int) -> list[Any]:
    given = dict(columns) if references is None else {**columns, "references": references}
    return column("references", name, given, n)


def _f1(prediction: str, reference: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    references: Sequence[Reference] | None = None,
    **columns: Any,
) -> list[float | None]:
    """1.0 where the normalised completion equals a normalised reference, else 0.0 (SQuAD, Rajpurkar et al. 2016).

    Each reference may be one string or a list of acceptable strings (the best one counts).
    """
    refs = _reference_column("exact_match", references, columns, len(completions))
    texts = completion_texts(completions)
    values = [
        float(any(normalize_answer(t) == normalize_answer(r) for r in _references(ref))) for t, ref in zip(texts, refs)
    ]
    return checked("exact_match", completions, values)


def token_f1(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    references: Sequence[Reference] | None = None,
    **columns: Any,
) -> list[float | None]:
    """Bag-of-tokens F1 between the normalised completion and reference, best over references (SQuAD)."""
    refs = _reference_column("token_f1", references, columns, len(completions))
    texts = completion_texts(completions)
    values = [max(_f1(t, r) for r in _references(ref)) for t, ref in zip(texts, refs)]
    return checked("token_f1", completions, values)


class ReferenceLikelihood:
    """The target's log-likelihood of the reference output given the completion used as instruction.

    The context is ``fill(template, completion, input)`` (input from the dataset column ``input_column``,
    or ``""`` when that is ``None``) and the continuation is the reference (column ``reference_column``;
    a list of references scores the best one). ``normalize="sum"`` returns the summed log-probability,
    ``"mean"`` divides by the reference's token count (``length``, by default ``len(target.encode(ref))``),
    and ``perplexity=True`` returns the negative perplexity ``-exp(-mean)`` so that higher stays better.
    Used as the task reward of a rewritten instruction (Deng et al. 2022, RLPrompt; Kong et al. 2024, PRewrite).
    """

    def __init__(
        self,
        target: Target,
        template: str = "{prompt}\n{sentence}",
        *,
        normalize: Literal["mean", "sum"] = "mean",
        perplexity: bool = False,
        reference_column: str = "references",
        input_column: str | None = "inputs",
        length: Callable[[str], int] | None = None,
    ) -> None:
        check_template(template)
        if normalize not in ("mean", "sum"):
            raise ValueError(f"normalize must be 'mean' or 'sum', got {normalize!r}")
        if perplexity and normalize != "mean":
            raise ValueError("perplexity=True is a per-token quantity: use normalize='mean'")
        if normalize == "mean" and length is None:
            if not callable(getattr(target, "encode", None)):
                raise ValueError(
                    f"normalize='mean' needs token counts: {type(target).__name__} has no encode(); pass length="
                )

            def length(text: str) -> int:
                return len(target.encode(text))

        self.target = target
        self.template = template
        self.normalize = normalize
        self.perplexity = perplexity
        self.reference_column = reference_column
        self.input_column = input_column
        self.length = length
        self.__name__ = "neg_perplexity" if perplexity else f"likelihood_{normalize}"

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """One score per completion (trl's reward signature); reads the reference and input columns."""
        n = len(completions)
        refs = column(self.reference_column, self.__name__, columns, n)
        inputs = [""] * n if self.input_column is None else column(self.input_column, self.__name__, columns, n)
        texts = completion_texts(completions)
        owners, contexts, continuations = [], [], []
        for i, (text, source, ref) in enumerate(zip(texts, inputs, refs)):
            for r in _references(ref):
                owners.append(i)
                contexts.append(fill(self.template, text, str(source)))
                continuations.append(r)
        scores = self.target.loglikelihood(contexts, continuations)
        if self.normalize == "mean":
            counts = [self.length(r) for r in continuations]
            if min(counts) < 1:
                raise ValueError(f"reference with no tokens among {continuations!r}")
            scores = scores / counts
        best = [-math.inf] * n
        for i, s in zip(owners, scores):
            best[i] = max(best[i], float(s))
        if self.perplexity:
            best = [-math.exp(-s) for s in best]
        return checked(self.__name__, completions, best)

    def __repr__(self) -> str:
        settings = f"normalize={self.normalize!r}, perplexity={self.perplexity}"
        return f"ReferenceLikelihood(template={self.template!r}, {settings})"


__all__ = ["ReferenceLikelihood", "exact_match", "normalize_answer", "token_f1"]
