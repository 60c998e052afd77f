"""DPO and Sem-DPO for an instruction rewriter: preference pairs scored by a frozen target, then trl's DPOTrainer.

1. :func:`rlprompt.policies.preferences.build_preferences` samples rewrites of each original instruction,
   scores them with the frozen target's task reward and writes (chosen, rejected) pairs as JSONL (built first
   when ``preferences`` is missing).
2. :func:`train_dpo` trains a LoRA adapter of the rewriter on those pairs with DPO (Rafailov et al. 2023,
   trl's ``DPOTrainer`` unchanged) or Sem-DPO (Mohamed et al. 2025): every pair carries a weight
   ``W = exp(-alpha * (1 - cos(e(original), e(chosen))))`` computed once before training
   (:func:`rlprompt.rewards.semantic.semantic_weights`) and the batch loss is ``mean(W * loss)``, the paper's
   weighted DPO objective ``E[W * loss]``. A pair far from its original therefore moves the adapter less in
   absolute terms, at any batch size (a per-batch ``sum(W * loss) / sum(W)`` would cancel that down-weighting,
   entirely for a batch of one). ``normalize_weights`` (default on) divides every W by the mean W of the
   training pairs, one constant, so Sem-DPO's loss and gradients have DPO's scale on average and the same
   learning rate and gradient clipping mean the same for both arms; the relative weights are unchanged.
3. The trained rewriter is saved as ``<run>/enhancer/`` (a :class:`~rlprompt.enhancer.PromptEnhancer`) with
   the dev accuracy of the originals beside their greedy rewrites (:func:`evaluate_rewriter`); it is the
   identity unless the rewrites beat the originals, so a deployed rewriter is never worse than none.

trl 1.16's ``DPOTrainer`` has no per-pair weight input (trl issue 5613). :class:`SemDPOTrainer` adds it by
overriding exactly three methods, nothing else:

- ``__init__``: installs :class:`WeightedPreferenceCollator` (trl's ``DataCollatorForPreference`` whose
  ``torch_call`` also stacks ``weight`` into the batch) unless a collator is passed, and refuses trl loss
  settings it does not implement (anything but ``loss_type=["sigmoid"]``, reverse KL, no ``ld_alpha``/WPO);
- ``_set_signature_columns_if_needed``: adds ``weight`` to the kept columns (``remove_unused_columns``
  would drop it before the collator sees it);
- ``_compute_loss``: trl computes the per-pair loss inline there and returns only its mean, so there is no
  smaller method to hook. The override makes the same fused-LM-head forward, takes the reference log-probs
  from trl's ``compute_ref_log_probs`` (adapter disabled under PEFT) or the precomputed columns, computes
  the sigmoid DPO loss per pair and returns ``mean(W * loss)``; it logs trl's reward/logp metrics plus
  ``semdpo/weight``. A test checks that with every weight 1 it equals trl's own ``_compute_loss`` on the same
  batch, and that with other weights it is the mean of W times trl's single-pair losses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from rlprompt.config import check_positive
from rlprompt.devices import resolve_device
from rlprompt.enhancer import PromptEnhancer, describe_evaluation, rewriter_evaluation
from rlprompt.errors import ConfigError, DataError
from rlprompt.rewards import ClassificationReward
from rlprompt.rewards.semantic import Embedder, cosine_similarity
from rlprompt.loop import RunLoop
from rlprompt.runs import QueryBudget, train_or_finish, trainer_checkpoint_sealer
from rlprompt.targets import Target
from rlprompt.tasks import ClassificationTask

from rlprompt.policies.preferences import build_preferences, build_task, load_preferences, originals_for, pair_weights
from rlprompt.models import peft_deprecations_silenced
from rlprompt.policies.rewriter import RewriterConfig, load_rewriter, lora_config


# -- config ---------------------------------------------------------------------------------------
@dataclass
class DPOMethodConfig(RewriterConfig):
    """A DPO run on rewriter preference pairs (Rafailov et al. 2023; the reward uses the task's train split);
    YAML files may only set these fields.

    Named to avoid trl's ``DPOConfig``, which :func:`train_dpo` builds from it."""

    method: ClassVar[str] = "dpo"
    path_fields: ClassVar[dict[str, bool]] = {**RewriterConfig.path_fields, "preferences": False}
    """Fields that may hold a path, each with whether it must exist (the preferences file may be built first)."""

    originals: list[str] | None = None
    """Instructions to rewrite when building pairs; None uses DEFAULT_ORIGINALS[task]."""
    eval_originals: list[str] | None = None
    """Held-out instructions rewritten (greedy) after training to measure reward and drift; None skips it."""
    preferences: str = "runs/preferences.jsonl"
    """JSONL file of preference pairs, relative to the config file: written by build_preferences, read by train_dpo
    (built first if missing)."""
    samples_per_original: int = 6
    """Rewrites sampled per original instruction when building pairs."""
    sample_temperature: float = 1.0
    """Sampling temperature of the rewriter when building pairs."""
    max_new_tokens: int = 40
    """Maximum tokens of one rewrite."""
    margin: float = 0.0
    """Keep a pair only when reward(chosen) - reward(rejected) >= margin (and strictly > 0)."""
    max_pairs_per_original: int = 4
    """Pairs kept per original, the largest reward gaps first."""
    alpha: float = 1.0
    """Sem-DPO: W = exp(-alpha * (1 - cos)); unused by plain DPO."""
    normalize_weights: bool = True
    """Sem-DPO: divide every W by the training pairs' mean W (one constant), so the loss has DPO's scale on average.

    The objective mean(W * loss) only changes by a positive constant, so its minimiser and AdamW's steps are the
    paper's (Adam is invariant to a constant loss scale); what differs is gradient clipping (max_grad_norm 1.0),
    which then engages at the same scale as in DPO. On by default so that DPO vs Sem-DPO at one learning rate
    compares which pairs are weighted, not an overall smaller loss; off gives the paper's unscaled W."""
    beta: float = 0.1
    """DPO temperature on the log-ratio difference."""
    learning_rate: float = 5e-5
    """AdamW learning rate of the LoRA parameters."""
    steps: int = 20
    """Optimisation steps."""
    batch_size: int = 8
    """Pairs per step. Sem-DPO's weights act at any size (the loss is mean(W * loss)); smaller only adds noise."""
    max_length: int = 256
    """Maximum tokens of prompt + completion (trl truncates past it)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "samples_per_original", "max_new_tokens", "max_pairs_per_original", "steps", "batch_size",
                       "max_length")
        if self.samples_per_original < 2:
            raise ValueError(f"samples_per_original must be >= 2 to form pairs, got {self.samples_per_original}")
        if not isinstance(self.normalize_weights, bool):
            raise ValueError(f"normalize_weights must be true or false, got {self.normalize_weights!r}")
        if self.margin < 0 or self.alpha < 0:
            raise ValueError(f"margin and alpha must be >= 0, got margin={self.margin}, alpha={self.alpha}")
        if self.beta <= 0 or self.learning_rate <= 0 or self.sample_temperature <= 0:
            raise ValueError(f"beta, learning_rate and sample_temperature must be > 0, got {self.beta}, "
                             f"{self.learning_rate}, {self.sample_temperature}")
        if self.originals is not None and len(self.originals) < 1:
            raise ValueError("originals must hold at least one instruction (or be null for the task's defaults)")


@dataclass
class SemDPOConfig(DPOMethodConfig):
    """A Sem-DPO run (Mohamed et al. 2025): DPO with each pair weighted by its chosen rewrite's similarity
    to the original, ``exp(-alpha * (1 - cos))``; the same fields as :class:`DPOMethodConfig`."""

    method: ClassVar[str] = "sem-dpo"


def method_config(method: str) -> type[DPOMethodConfig]:
    """The config class of ``method`` (``dpo`` or ``sem-dpo``)."""
    classes = {"dpo": DPOMethodConfig, "sem-dpo": SemDPOConfig}
    if method not in classes:
        raise ConfigError(f"method must be one of {sorted(classes)}, got {method!r}")
    return classes[method]


# -- the weighted trainer -------------------------------------------------------------------------
@functools.cache
def _collator_class():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    @dataclass
    class WeightedPreferenceCollator(DataCollatorForPreference):
        """trl's preference collator that also stacks each example's ``weight`` into ``batch["weight"]``."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            batch["weight"] = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float32)
            return batch

    return WeightedPreferenceCollator


@functools.cache
def _trainer_class():
    from trl import DPOTrainer

    class SemDPOTrainer(DPOTrainer):
        """trl's DPOTrainer with a per-pair weight column (Sem-DPO, Mohamed et al. 2025): loss = mean(W l).

        Supports trl's standard DPO loss only (``loss_type=["sigmoid"]``, reverse KL, no ``ld_alpha``, no WPO
        weighting); other settings raise at construction instead of being silently ignored.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            args_obj = kwargs.get("args")
            if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
                tok = kwargs["processing_class"]
                kwargs["data_collator"] = _collator_class()(
                    pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                    max_length=args_obj.max_length if args_obj else None,
                    truncation_mode=args_obj.truncation_mode if args_obj else "keep_start")
            super().__init__(*args, **kwargs)
            if list(self.loss_types) != ["sigmoid"] or self.f_divergence_type != "reverse_kl" or \
                    self.ld_alpha is not None or self.use_weighting:
                raise ValueError(f"SemDPOTrainer supports loss_type=['sigmoid'], f_divergence_type='reverse_kl', "
                                 f"ld_alpha=None, use_weighting=False; got {self.loss_types}, "
                                 f"{self.f_divergence_type!r}, {self.ld_alpha}, {self.use_weighting}")

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "weight" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "weight"]

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            weight = inputs["weight"].float()
            inputs = {k: v for k, v in inputs.items() if k != "weight"}
            model_kwargs = {k: v for k, v in inputs.items()
                            if k not in {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}}
            model_kwargs["use_cache"] = False
            completion_mask = inputs["completion_mask"]
            seq_len = completion_mask.size(1) - 1
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
            logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
            chosen_logps, rejected_logps = logps.chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_chosen, ref_rejected = self.compute_ref_log_probs(
                    self.model if self.ref_model is None else self.ref_model, inputs)
            chosen_logratios = chosen_logps - ref_chosen
            rejected_logratios = rejected_logps - ref_rejected
            per_pair = -F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios))
            weight = weight.to(per_pair.device, per_pair.dtype)
            loss = (weight * per_pair).mean()

            chosen_rewards = self.beta * chosen_logratios.detach()
            rejected_rewards = self.beta * rejected_logratios.detach()
            gather = self.accelerator.gather
            metrics = self._metrics[mode]
            metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
            metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
            metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
            metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
            metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
            metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
            metrics["semdpo/weight"].append(gather(weight).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SemDPOTrainer


def __getattr__(name: str) -> Any:
    """``SemDPOTrainer`` and ``WeightedPreferenceCollator`` are built on first access (importing trl is slow)."""
    if name == "SemDPOTrainer":
        return _trainer_class()
    if name == "WeightedPreferenceCollator":
        return _collator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- training -------------------------------------------------------------------------------------
def _trl_config(cfg: DPOMethodConfig, output_dir: Path):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1,
        learning_rate=cfg.learning_rate, beta=cfg.beta, max_steps=cfg.steps, max_length=cfg.max_length,
        logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every, save_total_limit=cfg.keep_checkpoints,
        use_cpu=resolve_device(cfg.device).type == "cpu", bf16=False, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, activation_checkpointing=False,
    )


def rewriter_enhancer(model: Any, tokenizer: Any, cfg: DPOMethodConfig, **settings: Any) -> PromptEnhancer:
    """The rewriter ``model`` (peft or plain) as a :class:`~rlprompt.enhancer.PromptEnhancer` with the config's
    meta-prompt and ``max_new_tokens``: what a run deploys, and what its evaluation rewrites with."""
    return PromptEnhancer(model, tokenizer, base_model=cfg.rewriter_model, meta_prompt=cfg.meta_prompt,
                          max_new_tokens=cfg.max_new_tokens, batch_size=8, **settings)


def train_dpo(cfg: DPOMethodConfig, run_dir: str | Path, resume: bool = False, *,
              rewriter: tuple[Any, Any] | None = None, embedder: Embedder | None = None, target: Target | None = None,
              task: ClassificationTask | None = None) -> dict[str, Any]:
    """Train the rewriter's LoRA adapter with DPO or Sem-DPO (by ``type(cfg).method``) and return the run's summary
    (:class:`~rlprompt.runs.RunResult`). The run is a :class:`~rlprompt.loop.RunLoop` driving trl's Trainer through
    its callback adapter; the pairs are scored as PRewrite's reward is (:func:`build_preferences`).

    ``run_dir`` receives config.yaml, metrics.jsonl, ``pair_weights.json`` (Sem-DPO's raw W; the loss weighs a
    pair by ``W * weight_scale``, the summary's ``weight_scale`` being 1 / mean W under ``normalize_weights``),
    trl checkpoints under ``checkpoints/checkpoint-<step>/`` (adapter safetensors, optimizer, trainer state),
    ``prompt.txt`` and summary.json; ``resume=True`` continues from the latest one. When ``cfg.eval_originals`` is
    set, the trained rewriter rewrites them greedily and the summary's ``details`` hold :func:`evaluate_rewriter`'s
    figures (means, and one per held-out original). ``enhancer/`` is the trained rewriter as a PromptEnhancer,
    storing the dev accuracy of ``eval_originals`` (else ``originals``) beside their greedy rewrites': the identity
    unless the rewrites beat them on average (one line on stderr says which; ``enhancer_identity`` in the details).
    The summary's ``best_prompt`` (also ``prompt.txt``) is the best of those instructions on dev as the enhancer
    deploys them. ``rewriter`` (model, tokenizer), ``embedder``, ``target`` and ``task`` override the config's (tests).

    The run's target queries are those of the preference pairs, when this run builds them
    (``preference_stats.json``), and of the final evaluation. Training steps query no target, so
    ``max_target_queries`` bounds the pairs: they are built for as many originals as the budget pays for after
    the final evaluation (``stop_reason`` max_target_queries when that leaves some out); a budget too small for
    the evaluation and one original is an error before anything runs.

    Under ``accelerate launch --num_processes N`` the pairs must exist first (``rlprompt prefs CONFIG``, one process:
    N processes would each build and write them; a missing file is a :class:`~rlprompt.errors.ConfigError`), every
    process trains, and the final evaluation, the enhancer and the summary are the main process's only (the others
    return ``{}`` after training), so the run's ``target_queries`` are counted once.
    """
    from trl import DPOTrainer

    semantic = type(cfg).method == "sem-dpo"
    loop = RunLoop(cfg, run_dir, resume=resume, target=target, checkpoints="trainer", desc=f"{type(cfg).method} steps")
    run, target = loop.run_dir, loop.target  # built once: it scores the preference pairs and the trained rewriter
    task = task or build_task(cfg, target)
    stats_file = run.file("preference_stats.json")
    built = json.loads(stats_file.read_text(encoding="utf-8")) if resume and stats_file.is_file() else {}
    if built:  # the pairs' queries, spent before the first checkpoint
        loop.budget.before = built["target_queries"]
    originals = list(cfg.eval_originals or originals_for(cfg))
    final_cost = 2 * len(originals) * len(task.split("dev" if "dev" in task.splits else "train"))
    if not Path(cfg.preferences).is_file():
        from rlprompt.targets.hf import HFTarget

        if loop.budget.processes() > 1:
            raise ConfigError(f"preferences {cfg.preferences!r} do not exist: build them first with one process "
                              f"(rlprompt prefs CONFIG), then launch the {loop.budget.processes()}-process training")
        built = _build_within_budget(cfg, loop.budget, final_cost, task=task, target=target,
                                     rewriter=HFTarget.from_loaded(*rewriter) if rewriter is not None else None)
        run.write_json("preference_stats.json", built)
    last = loop.affordable_steps(0, final_cost)  # training steps query no target
    dataset = load_preferences(cfg.preferences)
    weights, scale = None, 1.0
    if semantic:
        stored = run.path / "pair_weights.json"
        weights = (np.asarray(json.loads(stored.read_text(encoding="utf-8"))) if resume and stored.is_file()
                   else pair_weights(dataset, cfg.alpha, embedder))
        if len(weights) != len(dataset):
            raise DataError(f"pair_weights.json holds {len(weights)} weights for {len(dataset)} pairs")
        run.write_json("pair_weights.json", weights.tolist())
        scale = 1.0 / float(np.mean(weights)) if cfg.normalize_weights else 1.0
        dataset = dataset.add_column("weight", (weights * scale).tolist())
    model, tokenizer = load_rewriter(cfg, rewriter)
    trainer_cls = _trainer_class() if semantic else DPOTrainer
    with peft_deprecations_silenced():
        trainer = trainer_cls(model=model, args=_trl_config(cfg, run.path / "checkpoints"), train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora_config(cfg),
                              callbacks=[loop.trainer_callback(), trainer_checkpoint_sealer()])
    start = time.perf_counter()
    with loop.budget.shared():  # every process trains (its steps query no target)
        train_or_finish(trainer, loop.checkpoint, last)
    train_seconds = time.perf_counter() - start
    if not trainer.accelerator.is_main_process:
        return {}
    # never worse than none: the originals are scored beside their greedy rewrites on dev, and the saved
    # enhancer is the identity unless the rewrites beat them
    model = trainer.accelerator.unwrap_model(trainer.model)
    with loop.budget:
        figures = evaluate_rewriter(model, tokenizer, cfg, originals, target=target, task=task, embedder=embedder)
    details: dict[str, Any] = {"pairs": len(dataset), "train_seconds": train_seconds,
                               "mean_weight": float(np.mean(weights)) if weights is not None else 1.0,
                               "weight_scale": scale, "skipped_originals": built.get("skipped_originals", 0)}
    if cfg.eval_originals:
        details.update(figures)
        loop.log(trainer.state.global_step, {"eval/reward": figures["eval_reward"],
                                             "eval/similarity": figures["eval_similarity"]})
    evaluation = rewriter_evaluation(originals, figures["eval_original_accuracies"],
                                     {"greedy": (figures["eval_rewrites"], figures["eval_accuracies"])},
                                     deployed="greedy", metric=f"{figures['eval_split']}_accuracy",
                                     examples=figures["eval_examples"])
    enhancer = rewriter_enhancer(model, tokenizer, cfg, evaluation=evaluation, info={
        "method": type(cfg).method, "task": task.name, "template": task.template,
        "verbalizers": list(task.verbalizers)})
    enhancer.save_pretrained(run.path / "enhancer")
    print(f"{type(cfg).method}: {describe_evaluation(evaluation)}", file=sys.stderr, flush=True)
    details["enhancer_identity"] = enhancer.identity
    # the instructions as the enhancer deploys them: the originals when it is the identity, else their rewrites
    deployed, accuracies = ((originals, figures["eval_original_accuracies"]) if enhancer.identity
                            else (figures["eval_rewrites"], figures["eval_accuracies"]))
    best = int(np.argmax(accuracies))
    return loop.finish(best_prompt=deployed[best],
                       dev_accuracy=accuracies[best] if figures["eval_split"] == "dev" else None, details=details,
                       steps=trainer.state.global_step,
                       stop_reason="max_target_queries" if built.get("skipped_originals") else "steps")


def _build_within_budget(cfg: DPOMethodConfig, budget: QueryBudget, reserve: int, *, task: ClassificationTask,
                         target: Target, rewriter: Target | None) -> dict[str, int]:
    """:func:`build_preferences` for the first originals whose scoring ``budget`` pays for after ``reserve`` target
    sequences (the final evaluation), each original costing at most ``samples_per_original`` rewrites times the
    minibatch; returns how many originals were used and skipped, and the run's target queries after building."""
    originals = originals_for(cfg)
    per_original = cfg.samples_per_original * min(cfg.input_batch_size, len(task.split("train")))
    used = len(originals)
    if budget.limit is not None:
        used = min(used, (budget.limit - budget.spent() - reserve) // per_original)
    if used < 1:
        raise ConfigError(f"max_target_queries={budget.limit} cannot pay for one original's preference pairs "
                          f"({per_original} sequences) and the final evaluation ({reserve}): raise it")
    if used < len(originals):
        print(f"{type(cfg).method}: max_target_queries={budget.limit} pays for the pairs of {used} of "
              f"{len(originals)} originals", file=sys.stderr, flush=True)
    with budget:
        build_preferences(cfg if used == len(originals) else dataclasses.replace(cfg, originals=originals[:used]),
                          target=target, task=task, rewriter=rewriter)
    return {"originals": used, "skipped_originals": len(originals) - used, "target_queries": budget.spent()}


def evaluate_rewriter(model: Any, tokenizer: Any, cfg: DPOMethodConfig, originals: Sequence[str], *,
                      target: Target | None = None, task: ClassificationTask | None = None,
                      embedder: Embedder | None = None) -> dict[str, Any]:
    """Greedy rewrites of ``originals`` as a PromptEnhancer deploys them (cleaned; the original itself where
    :func:`rlprompt.enhancer.fallback_reason` rejects the rewrite), scored beside the originals on the whole
    dev split (else train) for task reward and accuracy, and their cosine similarity to their original
    (semantic drift).

    Returns ``eval_reward`` and ``eval_similarity`` (means over the originals); one entry per original, in
    order (what a paired comparison needs): ``eval_rewards``, ``eval_similarities``, ``eval_rewrites``,
    ``eval_fallbacks`` (why the original was kept, or None), ``eval_accuracies``, ``eval_original_rewards``,
    ``eval_original_accuracies``; and ``eval_split``, ``eval_examples`` (the inputs scored)."""
    target = cfg.build_target(target)
    task = task or build_task(cfg, target)
    results = rewriter_enhancer(model, tokenizer, cfg).enhance_with_reasons(list(originals))
    rewrites = [r.text for r in results]
    split = "dev" if "dev" in task.splits else "train"
    scorer = ClassificationReward.from_task(target, task, split, batch_size=None, kind=cfg.reward, seed=cfg.seed)
    rewards, scores = scorer.rewards_with_scores(list(originals) + rewrites)
    n = len(originals)
    sims = cosine_similarity(list(originals), rewrites, embedder)
    return {"eval_reward": float(np.mean(rewards[n:])), "eval_similarity": float(np.mean(sims)),
            "eval_rewards": rewards[n:].tolist(), "eval_similarities": [float(x) for x in sims],
            "eval_rewrites": rewrites, "eval_fallbacks": [r.fallback for r in results],
            "eval_accuracies": scores.accuracy[n:].tolist(), "eval_original_rewards": rewards[:n].tolist(),
            "eval_original_accuracies": scores.accuracy[:n].tolist(), "eval_split": split,
            "eval_examples": len(scores.indices)}


def load_method_config(path: str | Path, overrides: Sequence[str] = ()) -> DPOMethodConfig:
    """Load a ``method: dpo`` or ``method: sem-dpo`` YAML config (plus ``key=value`` overrides)."""
    from rlprompt.config import config_method, load_config

    return load_config(path, method_config(config_method(path, default="dpo")), overrides)


__all__ = ["DPOMethodConfig", "SemDPOConfig", "SemDPOTrainer", "WeightedPreferenceCollator", "evaluate_rewriter",
           "load_method_config", "method_config", "rewriter_enhancer", "train_dpo"]
