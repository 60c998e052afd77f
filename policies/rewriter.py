"""The instruction rewriter that PRewrite (Kong et al. 2024) and DPO / Sem-DPO (Rafailov et al. 2023; Mohamed et al.
2025) train: a causal LM with a LoRA adapter that reads a meta-prompt holding an instruction and writes a new one,
scored by a frozen target in its own chat format.

:class:`RewriterConfig` holds the fields both methods share (rewriter model, meta-prompt, LoRA adapter, reward,
checkpoints, seed); :func:`chat_template` renders the target's chat format (from :func:`template_tokenizer`) as a
task template;
:func:`rewriter_task` loads the task the rewrites are scored on; :func:`load_rewriter` and :func:`lora_config` give the
model and adapter. Both methods' runs are a :class:`~rlprompt.loop.RunLoop` driving a trl Trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rlprompt.config import RunConfig, TaskTargetConfig, check_positive
from rlprompt.errors import ConfigError
from rlprompt.models import BUNDLED, load_model, load_tokenizer
from rlprompt.targets import Target
from rlprompt.tasks import ClassificationTask

META_PROMPT = (
    "Rewrite the following instruction so that a language model follows it better. You may rephrase it "
    "and/or add specific requirements, such as what to pay attention to or which answer options to use. "
    "Output only the new instruction, nothing else.\n\nInstruction: {instruction}"
)
"""The project's meta-prompt (PRewrite, Kong et al. 2024, section 3): ``{instruction}`` is the one to rewrite."""

ANSWER_PREFIX = "Answer:"
REWARDS = ("gap", "accuracy")


@dataclass
class RewriterConfig(RunConfig):
    """Fields shared by the methods that train an instruction rewriter (PRewrite, DPO, Sem-DPO): the rewriter LM,
    its meta-prompt and LoRA adapter, the task reward of a rewrite, checkpoints and seed. Subclasses add their own."""

    rewriter_model: str = BUNDLED
    """Rewriter base model (rlprompt.models.load_model name or a local checkpoint directory)."""
    meta_prompt: str = META_PROMPT
    """Rewriter meta-prompt holding {instruction} once; sent as one user chat message."""
    reward: str = "gap"
    """Reward of a rewrite on its minibatch: gap (RLPrompt's probability-gap reward) or accuracy."""
    input_batch_size: int = 16
    """Train inputs all rewrites of one instruction are scored on (one shared minibatch per PRewrite step, per DPO
    original)."""
    lora_r: int = 8
    """LoRA rank of the rewriter's adapter (peft)."""
    lora_alpha: int = 16
    """LoRA scaling alpha."""
    lora_dropout: float = 0.0
    """LoRA dropout (0 keeps generation and scoring consistent)."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear modules that get LoRA adapters."""
    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "input_batch_size", "lora_r", "lora_alpha")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {list(REWARDS)}, got {self.reward!r}")
        if self.meta_prompt.count("{instruction}") != 1:
            raise ValueError(f"meta_prompt must contain {{instruction}} exactly once, got {self.meta_prompt!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module")


def chat_template(tokenizer: Any, answer_prefix: str = ANSWER_PREFIX) -> str:
    """A classification template in the chat format of ``tokenizer`` (the target's own: :func:`template_tokenizer`):
    one user message holding the instruction (``{prompt}``) and the input (``{sentence}``), then the assistant turn
    opened with ``answer_prefix``; the verbalizer is scored as the next token. A plain string, so
    ``rlprompt eval --template`` reproduces it. A tokenizer without a chat template is a
    :class:`~rlprompt.errors.ConfigError` saying to set ``template:``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template: set "
                          f"template: in the config (a string with {{prompt}} and {{sentence}})")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "\x00P\x00\n\nInput: \x00S\x00"}],
                                             add_generation_prompt=True, tokenize=False)
    return rendered.replace("\x00P\x00", "{prompt}").replace("\x00S\x00", "{sentence}") + answer_prefix


def template_tokenizer(cfg: TaskTargetConfig, target: Target | None = None) -> Any:
    """The tokenizer whose chat format the classification template is rendered in (PRewrite, DPO): the target's own
    (an ``HFTarget``'s, also behind a response cache; a remote target's when it knows its model's, as for SmolLM2),
    else the tokenizer of the config's target when that is a local model (tests' scripted targets have none). A
    remote target of a model whose tokenizer is unknown has no chat format to render: a
    :class:`~rlprompt.errors.ConfigError` says to set ``template:`` in the config."""
    own = getattr(target, "tokenizer", None)
    if own is not None:
        return own
    if not cfg.target.startswith("openai:"):
        return load_tokenizer(cfg.target)
    name = getattr(target, "name", cfg.target)
    raise ConfigError(f"target {name!r} has no tokenizer to render its chat template with: set template: in the config "
                      f"(a string with {{prompt}} and {{sentence}} in the served model's chat format)")


def rewriter_task(cfg: RewriterConfig, splits: Sequence[str], *, target: Target | None = None,
                  answer_prefix: str = ANSWER_PREFIX) -> ClassificationTask:
    """The config's classification task as ``target`` scores rewrites on it: ``cfg.template``, else the
    :func:`chat_template` in the target's own chat format (:func:`template_tokenizer`; default: the config's target
    model's); ``cfg.verbalizers``, else ``" <label name>"``. It needs ``splits``."""
    task = cfg.classification_task(splits)
    if cfg.template is None:
        task = replace(task, template=chat_template(template_tokenizer(cfg, target), answer_prefix))
    if cfg.verbalizers is None:
        task = replace(task, verbalizers=tuple(" " + name for name in task.label_names))
    return task


def load_rewriter(cfg: RewriterConfig, rewriter: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """The rewriter (model, tokenizer): ``rewriter`` when given (tests pass a tiny one), else ``cfg.rewriter_model``
    in float32; a tokenizer without a pad token pads with its end-of-sequence token."""
    model, tokenizer = rewriter if rewriter is not None else load_model(cfg.rewriter_model, dtype="float32")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(cfg: RewriterConfig) -> Any:
    """peft's ``LoraConfig`` of the rewriter's adapter (a causal LM)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")


__all__ = ["ANSWER_PREFIX", "META_PROMPT", "REWARDS", "RewriterConfig", "chat_template", "load_rewriter", "lora_config",
           "rewriter_task", "template_tokenizer"]
