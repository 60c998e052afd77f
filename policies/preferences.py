"""Preference pairs for DPO and Sem-DPO rewriters: the data half of :mod:`rlprompt.policies.dpo`.

:func:`build_preferences` samples several rewrites of each original instruction from a rewriter LM (a chat
meta-prompt, PRewrite's by default, Kong et al. 2024), scores every rewrite with the task reward of the frozen
target on one shared minibatch (Deng et al. 2022) as PRewrite's GRPO reward does, one step of
``rlprompt/PromptRewrite-v0`` per original (:class:`~rlprompt.policies.prewrite.RewriteReward`), and keeps
(chosen, rejected) pairs whose reward differs by at least ``margin`` (:func:`preference_pairs`); it writes them as
JSONL in trl's conversational preference format, which :func:`load_preferences` reads back.
:func:`pair_weights` gives Sem-DPO's weight of each pair (Mohamed et al. 2025), computed once before training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from rlprompt.enhancer import clean_rewrite
from rlprompt.errors import ConfigError, DataError
from rlprompt.rewards.semantic import Embedder, semantic_weights
from rlprompt.runs import write_atomic
from rlprompt.targets import Target, make_target
from rlprompt.tasks import ClassificationTask

from rlprompt.policies.prewrite import RewriteReward
from rlprompt.policies.rewriter import rewriter_task

if TYPE_CHECKING:
    from rlprompt.policies.dpo import DPOMethodConfig

DEFAULT_ORIGINALS: dict[str, list[str]] = {
    "sentiment": [
        "Classify the sentiment of the movie review as negative or positive.",
        "Is this review positive or negative?",
        "Decide whether the reviewer liked the movie.",
        "Tell me if the sentiment of this text is negative or positive.",
        "Read the review and say whether it is positive or negative.",
        "Label the review's sentiment.",
        "What is the sentiment of this movie review?",
        "Determine if the opinion expressed is favorable or unfavorable.",
        "Judge the overall tone of the review: negative or positive.",
        "Answer with the sentiment of the review.",
        "Was the writer happy or unhappy with the film?",
        "Give the polarity of the review.",
    ],
    "topic": [
        "Classify the news article into World, Sports, Business, or Tech.",
        "What is this article about?",
        "Pick the topic of the news story: World, Sports, Business or Tech.",
        "Assign the article to one news category.",
        "Which section of a newspaper does this article belong to?",
        "Name the topic of the text.",
        "Decide whether the article covers world news, sports, business or technology.",
        "Label the news article with its subject.",
        "Tell me the category of this news report.",
        "Read the article and give its topic.",
        "Sort this story into World, Sports, Business, or Tech.",
        "What kind of news is this?",
    ],
}
"""Plain instructions to rewrite for the built-in tasks (a config's ``originals`` replaces them)."""
DEFAULT_ORIGINALS["sst-2"] = DEFAULT_ORIGINALS["sentiment"]
DEFAULT_ORIGINALS["agnews"] = DEFAULT_ORIGINALS["topic"]


def build_task(cfg: DPOMethodConfig, target: Target | None = None) -> ClassificationTask:
    """The config's classification task with its rewriter template and verbalizers (:func:`rewriter_task`; by
    default the chat template in the chat format of ``target``, :func:`rlprompt.policies.rewriter.template_tokenizer`);
    it needs a train split."""
    return rewriter_task(cfg, ("train",), target=target)


def originals_for(cfg: DPOMethodConfig) -> list[str]:
    """``cfg.originals`` or the default instructions of the task."""
    if cfg.originals is not None:
        return list(cfg.originals)
    if cfg.task not in DEFAULT_ORIGINALS:
        raise ConfigError(f"no default originals for task {cfg.task!r}: set originals in the config")
    return list(DEFAULT_ORIGINALS[cfg.task])


def meta_messages(cfg: DPOMethodConfig, original: str) -> list[dict[str, str]]:
    """The rewriter's conversational prompt for ``original`` (one user message), as DPOTrainer expects."""
    return [{"role": "user", "content": cfg.meta_prompt.replace("{instruction}", original)}]


def preference_pairs(candidates: Sequence[str], rewards: Sequence[float], margin: float,
                     limit: int) -> list[tuple[int, int]]:
    """Index pairs (chosen, rejected) with ``rewards[c] - rewards[r] >= margin`` and ``> 0``, largest gaps
    first, at most ``limit`` of them; duplicated texts count once."""
    first = {text: i for i, text in reversed(list(enumerate(candidates)))}
    unique = sorted(set(first.values()))
    pairs = [(c, r) for c in unique for r in unique
             if rewards[c] - rewards[r] > 0 and rewards[c] - rewards[r] >= margin]
    pairs.sort(key=lambda p: (-(rewards[p[0]] - rewards[p[1]]), p))
    return pairs[:limit]


def build_preferences(cfg: DPOMethodConfig, *, target: Target | None = None, rewriter: Target | None = None,
                      task: ClassificationTask | None = None, output: str | Path | None = None) -> Path:
    """Sample, score and pair rewrites; write ``cfg.preferences`` (or ``output``) as JSONL and return its path.

    Each line holds ``prompt`` (the meta-prompt as a chat message list), ``chosen``/``rejected`` (one
    assistant message each), ``original``, ``chosen_reward`` and ``rejected_reward``. ``target``,
    ``rewriter`` (any :class:`Target`; it generates with ``chat=True``) and ``task`` override the config's.
    """
    target = cfg.build_target(target)
    task = task or build_task(cfg, target)
    rewriter = rewriter or make_target(cfg.rewriter_model, dtype="float32", device=cfg.device)
    reward = RewriteReward(target, task, kind=cfg.reward, stabilizer="none", batch_size=cfg.input_batch_size,
                           seed=cfg.seed, tokenizer=getattr(rewriter, "tokenizer", None))
    rows = []
    originals = originals_for(cfg)
    for n, original in enumerate(tqdm(originals, desc="preference pairs", unit="original", dynamic_ncols=True)):
        samples = rewriter.generate([meta_messages(cfg, original)[0]["content"]], chat=True,
                                    temperature=cfg.sample_temperature, num_samples=cfg.samples_per_original,
                                    max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + n)
        candidates = [c for c in dict.fromkeys(clean_rewrite(s) for s in samples) if c]
        if len(candidates) < 2:
            continue
        scores, _ = reward.score(candidates, instruction=original)
        for c, r in preference_pairs(candidates, scores, cfg.margin, cfg.max_pairs_per_original):
            rows.append({"prompt": meta_messages(cfg, original),
                         "chosen": [{"role": "assistant", "content": candidates[c]}],
                         "rejected": [{"role": "assistant", "content": candidates[r]}],
                         "original": original, "chosen_reward": float(scores[c]), "rejected_reward": float(scores[r])})
    path = Path(output or cfg.preferences)
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def load_preferences(path: str | Path):
    """The pairs of a preferences JSONL as a ``datasets.Dataset`` (a :class:`~rlprompt.errors.DataError` if it
    holds none)."""
    from datasets import load_dataset

    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        raise DataError(f"{str(path)!r} holds no preference pairs: build them first (rlprompt prefs CONFIG), "
                        "or lower margin / raise samples_per_original")
    return load_dataset("json", data_files=str(path), split="train")


def pair_weights(dataset: Any, alpha: float, embedder: Embedder | None = None) -> np.ndarray:
    """Sem-DPO weights of the dataset's pairs: original vs chosen text (Mohamed et al. 2025)."""
    chosen = [row[-1]["content"] if isinstance(row, list) else str(row) for row in dataset["chosen"]]
    return semantic_weights(list(dataset["original"]), chosen, alpha, embedder)


__all__ = ["DEFAULT_ORIGINALS", "build_preferences", "build_task", "load_preferences", "meta_messages",
           "originals_for", "pair_weights", "preference_pairs"]
