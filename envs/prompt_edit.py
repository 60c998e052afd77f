"""Phrase-level instruction editing (GrIPS, Prasad et al. 2023, "GrIPS: Gradient-free, Edit-based
Instruction Search"), as a sequential decision problem in the style of PromptAgent (Wang et al. 2024).

The instruction is split into phrases at punctuation (GrIPS uses a constituency parser; punctuation
keeps this dependency-free). One fixed-size ``Discrete`` action space (``max_phrases`` = M, bank size B):

====================  ==========================================================
``[0, M)``            delete phrase i (needs i < n and n > 1)
next ``M(M-1)/2``     swap phrases i < j (needs j < n)
next ``M``            paraphrase phrase i with the target LM (``target.generate``)
next ``B``            append bank phrase k (needs n < M and k not already present)
last                  stop
====================  ==========================================================

``action_masks()`` gives the legal ones (for sb3-contrib's ``MaskablePPO``); a masked action is a no-op
that uses one edit (``info["masked"]``), and ``action_space.sample()`` without a mask draws a legal action.
Observation: the MiniLM embedding of the current instruction followed by the fraction of the edit budget
left, a float32 ``Box(-1, 1)``. Reward: the change of the dev accuracy (:meth:`PromptScorer.evaluate`, cached), so an
episode's return is the dev accuracy gained. An episode ends at ``stop`` or when the budget is spent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlprompt.envs.scoring import PromptScorer
from rlprompt.models import BUNDLED
from rlprompt.targets.base import Target
from rlprompt.tasks import ClassificationTask

PHRASE_BANK: tuple[str, ...] = ("In summary,", "Overall,", "To sum up,", "Honestly,", "In a word,", "it was")
PARAPHRASE_REQUEST = "Rewrite the following phrase in different words. Reply with the new phrase only.\nPhrase: {phrase}"


def split_phrases(text: str, max_phrases: int) -> list[str]:
    """Split ``text`` after punctuation (``,.;:!?``) into at most ``max_phrases`` phrases (extra ones are
    merged into the last)."""
    phrases = [p.strip() for p in re.findall(r"[^,.;:!?]+[,.;:!?]*|[,.;:!?]+", text) if p.strip()]
    if len(phrases) > max_phrases:
        phrases = phrases[: max_phrases - 1] + [" ".join(phrases[max_phrases - 1:])]
    return phrases


def join_phrases(phrases: Sequence[str]) -> str:
    """The instruction text of ``phrases``."""
    return " ".join(phrases)


class MaskedDiscrete(spaces.Discrete):
    """A ``Discrete`` space whose ``sample()`` without a mask draws among the actions legal *now*
    (``mask_fn()``), so generic checkers that step with random actions only try legal edits.
    The mask function is dropped when the space is pickled or copied."""

    def __init__(self, n: int, mask_fn: Callable[[], np.ndarray] | None = None) -> None:
        super().__init__(n)
        self.mask_fn = mask_fn

    def sample(self, mask: np.ndarray | None = None, probability: np.ndarray | None = None) -> np.int64:
        if mask is None and probability is None and self.mask_fn is not None:
            mask = self.mask_fn().astype(np.int8)
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "mask_fn": None}


class PromptEditEnv(gym.Env):
    """Edit an instruction phrase by phrase to raise a frozen target's dev accuracy (GrIPS, Prasad et al. 2023).

    ``instructions``: start instructions drawn at reset with ``self.np_random`` (default: the task's
    prompt); ``phrase_bank``: phrases the add action appends; ``budget``: edits per episode;
    ``eval_split``: the split whose accuracy change is the reward; ``embedder``: ``texts -> (N, D)`` unit
    vectors (default: the bundled MiniLM); ``template``: overrides the task's template (holds
    ``{prompt}`` and ``{sentence}``); ``reviser``: ``instruction -> revised instruction or None``, offered
    as one more action, ``revise`` (PromptAgent's error-driven revision: ``reviser=agent.revise``, see
    :class:`rlprompt.policies.promptagent.PromptAgent`; cached per instruction, None leaves the
    instruction as it is). Other arguments as :class:`PromptTokensEnv`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str | ClassificationTask = "sentiment",
        target: str | Target = BUNDLED,
        instructions: Sequence[str] | None = None,
        phrase_bank: Sequence[str] = PHRASE_BANK,
        max_phrases: int = 6,
        budget: int = 4,
        eval_split: str = "dev",
        *,
        template: str | None = None,
        embedder: Callable[[list[str]], np.ndarray] | None = None,
        paraphrase_tokens: int = 16,
        reviser: Callable[[str], str | None] | None = None,
    ) -> None:
        if max_phrases < 2:
            raise ValueError(f"max_phrases must be >= 2, got {max_phrases}")
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.scorer = PromptScorer(target, task, template=template, batch_size=None, split=eval_split)
        self.eval_split = eval_split
        self.instructions = list(instructions) if instructions is not None else [self.scorer.task.prompt]
        self.phrase_bank = [p.strip() for p in phrase_bank]
        if not self.instructions or any(not split_phrases(i, max_phrases) for i in self.instructions):
            raise ValueError(f"every start instruction needs at least one phrase, got {self.instructions!r}")
        if any(not p for p in self.phrase_bank):
            raise ValueError(f"phrase_bank holds an empty phrase: {list(phrase_bank)!r}")
        self.max_phrases, self.budget, self.paraphrase_tokens = int(max_phrases), int(budget), int(paraphrase_tokens)
        m = self.max_phrases
        self.edits: list[tuple] = (
            [("delete", i) for i in range(m)]
            + [("swap", i, j) for i, j in combinations(range(m), 2)]
            + [("paraphrase", i) for i in range(m)]
            + [("add", k) for k in range(len(self.phrase_bank))]
            + ([("revise",)] if reviser is not None else [])
            + [("stop",)]
        )
        self.reviser = reviser
        self._revisions: dict[str, str] = {}
        if embedder is None:
            from rlprompt.rewards.semantic import minilm_embed

            embedder = minilm_embed
        self.embedder = embedder
        self._embeddings: dict[str, np.ndarray] = {}
        self._paraphrases: dict[str, str] = {}
        dim = self._embed(self.instructions[0]).shape[0]
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(dim + 1,), dtype=np.float32)
        self.action_space = MaskedDiscrete(len(self.edits), self.action_masks)
        self.phrases: list[str] = split_phrases(self.instructions[0], m)
        self.remaining = 0

    # -- helpers --------------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """The current instruction text."""
        return join_phrases(self.phrases)

    def _embed(self, text: str) -> np.ndarray:
        if text not in self._embeddings:
            vector = np.asarray(self.embedder([text]), dtype=np.float32).reshape(-1)
            if not np.isfinite(vector).all():
                raise ValueError(f"embedder returned non-finite values for {text!r}")
            self._embeddings[text] = np.clip(vector, -1.0, 1.0)
        return self._embeddings[text]

    def _obs(self) -> np.ndarray:
        return np.append(self._embed(self.instruction), np.float32(self.remaining / self.budget)).astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the legal actions now (sb3-contrib ``MaskablePPO`` reads it)."""
        n = len(self.phrases)
        mask = np.zeros(len(self.edits), dtype=bool)
        for a, edit in enumerate(self.edits):
            kind = edit[0]
            if kind == "delete":
                mask[a] = edit[1] < n and n > 1
            elif kind == "swap":
                mask[a] = edit[2] < n
            elif kind == "paraphrase":
                mask[a] = edit[1] < n
            elif kind == "add":
                mask[a] = n < self.max_phrases and self.phrase_bank[edit[1]] not in self.phrases
            else:
                mask[a] = True
        return mask

    def paraphrase(self, phrase: str) -> str:
        """A greedy paraphrase of ``phrase`` by the target LM (first line, printable ASCII, cached); the
        phrase itself when the model answers nothing usable."""
        if phrase not in self._paraphrases:
            request = PARAPHRASE_REQUEST.format(phrase=phrase)
            out = self.scorer.target.generate([request], max_new_tokens=self.paraphrase_tokens, chat=True)[0]
            line = next((s for s in out.splitlines() if s.strip()), "")
            line = "".join(c for c in line if 32 <= ord(c) < 127).strip().strip("\"'` ")
            line = re.sub(r"^(phrase|paraphrase|new phrase)\s*:\s*", "", line, flags=re.IGNORECASE).strip()
            self._paraphrases[phrase] = line or phrase
        return self._paraphrases[phrase]

    def revise(self, instruction: str) -> str:
        """The reviser's revision of ``instruction`` (cached); the instruction itself when it has none."""
        if instruction not in self._revisions:
            revised = self.reviser(instruction)
            self._revisions[instruction] = revised if revised and split_phrases(revised, self.max_phrases) else instruction
        return self._revisions[instruction]

    def score(self, instruction: str | None = None) -> float:
        """Accuracy of ``instruction`` (default: the current one) on the eval split."""
        return self.scorer.evaluate(self.instruction if instruction is None else instruction, self.eval_split)

    def describe(self, action: int) -> str:
        """A readable name of ``action``, e.g. ``"swap 0 2"``."""
        return " ".join(str(x) for x in self.edits[int(action)])

    # -- Gymnasium API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = options or {}
        start = options.get("instruction") or self.instructions[int(self.np_random.integers(len(self.instructions)))]
        self.phrases = split_phrases(str(start), self.max_phrases)
        if not self.phrases:
            raise ValueError(f"start instruction {start!r} has no phrase")
        self.remaining = self.budget
        return self._obs(), {"instruction": self.instruction, "score": self.score()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.remaining <= 0:
            raise RuntimeError("the episode is over: call reset() before step()")
        if np.ndim(action) != 0 or not 0 <= int(action) < len(self.edits) or int(action) != action:
            raise ValueError(f"action {action!r} is outside Discrete({len(self.edits)})")
        action = int(action)
        # A masked-out action (an edit that does not apply to this instruction) is a no-op that still uses
        # one edit of the budget: masks guide MaskablePPO, but any action of Discrete(n) is valid here, as
        # Gymnasium's contract wants (its checker samples an action in one state and steps it in another).
        legal = bool(self.action_masks()[action])
        before = self.score()
        edit = self.edits[action]
        if not legal:
            self.remaining -= 1
        elif edit[0] == "stop":
            self.remaining = 0
        else:
            if edit[0] == "delete":
                del self.phrases[edit[1]]
            elif edit[0] == "swap":
                i, j = edit[1], edit[2]
                self.phrases[i], self.phrases[j] = self.phrases[j], self.phrases[i]
            elif edit[0] == "paraphrase":
                self.phrases[edit[1]] = self.paraphrase(self.phrases[edit[1]])
            elif edit[0] == "revise":
                self.phrases = split_phrases(self.revise(self.instruction), self.max_phrases)
            else:
                self.phrases.append(self.phrase_bank[edit[1]])
            self.remaining -= 1
        after = self.score()
        info = {"instruction": self.instruction, "edit": self.describe(action), "score": after, "masked": not legal}
        return self._obs(), float(after - before), self.remaining <= 0, False, info


__all__ = ["PHRASE_BANK", "MaskedDiscrete", "PromptEditEnv", "join_phrases", "split_phrases"]
