"""Score a prompt on a classification task with a target, optionally with a calibration baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from rlprompt.targets.base import Target

CALIBRATIONS = ("none", "contextual", "mean")
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
"""Content-free inputs of contextual calibration (Zhao et al., 2021, "Calibrate Before Use")."""


def normalize(logprobs: np.ndarray) -> np.ndarray:
    """Renormalize log-probabilities over the last axis (the verbalizers) so they sum to one."""
    shifted = logprobs - logprobs.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def contextual_calibration(logprobs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): divide the label distribution by the one the target
    gives to content-free inputs. ``content_free`` holds log-probs of shape ``(M, K)``, averaged in
    probability space."""
    p_cf = np.exp(normalize(content_free)).mean(axis=0)
    return normalize(normalize(logprobs) - np.log(p_cf))


def mean_calibration(logprobs: np.ndarray) -> np.ndarray:
    """Remove each label's mean log-probability over the evaluated inputs (a transductive prior
    correction; for two labels it is a threshold at the mean log-odds)."""
    normed = normalize(logprobs)
    return normalize(normed - normed.mean(axis=0, keepdims=True))


@dataclass
class EvalResult:
    """Accuracy of one prompt on one split, with the target's query accounting. ``unparsed`` counts the
    texts whose answer a label-parsing target (``OpenAITarget(scoring="labels")``) could not map to a
    verbalizer: they score uniformly (argmax breaks the tie toward the first class); it is 0 for a target
    scored by log-probabilities."""

    accuracy: float
    n: int
    target_calls: int
    target_sequences: int
    unparsed: int
    calibrate: str
    prompt: str
    template: str
    verbalizers: list[str]
    predictions_per_class: list[int]
    predictions: list[int] = field(repr=False)

    def as_dict(self, with_predictions: bool = False) -> dict:
        out = asdict(self)
        if not with_predictions:
            del out["predictions"]
        return out


def evaluate(
    target: Target,
    *,
    template: str,
    prompt: str,
    verbalizers: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[int],
    calibrate: str = "none",
    chunk_size: int = 64,
    progress: bool = False,
) -> EvalResult:
    """Accuracy of ``prompt`` in ``template`` on ``(texts, labels)`` with argmax over ``verbalizers``."""
    if calibrate not in CALIBRATIONS:
        raise ValueError(f"calibrate={calibrate!r} is not one of {CALIBRATIONS}")
    if not texts:
        raise ValueError("no examples to evaluate (empty split?)")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    bad = [label for label in labels if not 0 <= int(label) < len(verbalizers)]
    if bad:
        raise ValueError(f"label {bad[0]!r} is outside the label set 0..{len(verbalizers) - 1} of verbalizers {list(verbalizers)!r}")
    calls, sequences, unparsed_before = target.stats.calls, target.stats.sequences, target.stats.unparsed
    pieces = []
    chunks = range(0, len(texts), chunk_size)
    for start in tqdm(chunks, desc="eval", unit="chunk", disable=not progress or len(chunks) < 2):
        pieces.append(target.classify(template, [prompt], texts[start : start + chunk_size], verbalizers)[0])
    logprobs = np.concatenate(pieces)
    unparsed = target.stats.unparsed - unparsed_before  # the texts' own, not calibration's content-free inputs
    if calibrate == "contextual":
        logprobs = contextual_calibration(logprobs, target.classify(template, [prompt], CONTENT_FREE_INPUTS, verbalizers)[0])
    elif calibrate == "mean":
        logprobs = mean_calibration(logprobs)
    predictions = logprobs.argmax(axis=-1)
    gold = np.asarray(labels, dtype=int)
    return EvalResult(
        accuracy=float((predictions == gold).mean()),
        n=len(texts),
        target_calls=target.stats.calls - calls,
        target_sequences=target.stats.sequences - sequences,
        unparsed=unparsed,
        calibrate=calibrate,
        prompt=prompt,
        template=template,
        verbalizers=list(verbalizers),
        predictions_per_class=np.bincount(predictions, minlength=len(verbalizers)).tolist(),
        predictions=predictions.tolist(),
    )
