"""The reward contract shared by every reward and stabilizer: trl's reward-function signature.

A reward is any callable ``f(prompts, completions, **columns) -> list[float | None]`` (trl's
``GRPOTrainer`` contract, so the same function serves a Gymnasium env, an SB3 run and a trl trainer).
``completions`` are strings or chat conversations (lists of ``{"role", "content"}`` messages); extra
dataset columns arrive as keyword lists aligned with ``completions``. ``None`` means "not scorable
here" and is passed through; NaN is never a valid reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Completion = str | Sequence[dict[str, Any]] | dict[str, Any]
RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Completion) -> str:
    """The text of one completion: the string itself, or the content of a chat's last message.

    Content given as a list of parts (``[{"type": "text", "text": ...}]``) is joined.
    """
    if isinstance(completion, str):
        return completion
    message = completion if isinstance(completion, dict) else (completion[-1] if len(completion) else None)
    if not isinstance(message, dict) or "content" not in message:
        raise TypeError(f"a completion must be a string or a list of chat messages with 'content', got {completion!r}")
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise TypeError(f"unusable message content {content!r}")


def completion_texts(completions: Sequence[Completion]) -> list[str]:
    """:func:`completion_text` of each completion."""
    return [completion_text(c) for c in completions]


def reward_name(reward: Callable[..., Any]) -> str:
    """The name trl logs a reward under (``__name__``, else the class name)."""
    return getattr(reward, "__name__", None) or type(reward).__name__


def checked(name: str, completions: Sequence[Completion], values: Sequence[float | None]) -> list[float | None]:
    """Return ``values`` as plain floats (``None`` kept), one per completion.

    Raises ``ValueError`` naming the reward and the completion when a value is NaN or the count is wrong:
    a NaN reward is a bug upstream, never something to average away silently.
    """
    values = list(values)
    if len(values) != len(completions):
        raise ValueError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
    out: list[float | None] = []
    for value, completion in zip(values, completions):
        if value is None:
            out.append(None)
            continue
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"reward {name!r} returned NaN for completion {completion_text(completion)!r}")
        out.append(value)
    return out
