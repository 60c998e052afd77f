"""PRewrite: a LoRA-tuned LM that rewrites an instruction, trained with GRPO against a frozen target.

Kong et al. 2024, "PRewrite: Prompt Rewriting with Reinforcement Learning" (ACL). A rewriter LM reads a
meta-prompt holding the initial instruction and writes a new instruction; the frozen target classifies
task inputs with the new instruction filled into a chat template, and its task metric (RLPrompt's
probability-gap reward or accuracy, Deng et al. 2022) on a minibatch of train inputs shared by all
completions of a step is the reward. The paper trains with PPO; here trl's ``GRPOTrainer`` (Shao et al.
2024) plays that role, with a KL penalty (``beta``) to the initial rewriter (the LoRA adapter disabled).
Inference: PRewrite-I keeps the greedy rewrite, PRewrite-S samples ``K`` rewrites and keeps the best on dev;
the initial instruction is scored beside them, so a run never deploys a rewrite that does worse on dev.

Layout: :class:`PRewriteConfig` (its rewriter fields, meta-prompt and chat template are shared with DPO in
:mod:`rlprompt.policies.rewriter`), :class:`RewriteReward` (the GRPO reward: one step of
``rlprompt/PromptRewrite-v0`` per group of rewrites), :class:`PRewriteGRPOTrainer` (generation in eval mode with a
KV cache), the inference functions and :func:`train_prewrite` (on :class:`~rlprompt.loop.RunLoop`).
Run under accelerate with ``accelerate launch --num_processes 1 --cpu -m rlprompt.policies.prewrite CONFIG --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rlprompt.config import check_positive
from rlprompt.devices import resolve_device
from rlprompt.enhancer import clean_rewrite, describe_evaluation, rewriter_evaluation
from rlprompt.loop import RunLoop
from rlprompt.rewards import check_stabilizer
from rlprompt.rewards.protocol import checked, completion_texts
from rlprompt.runs import train_or_finish, trainer_checkpoint_sealer, write_atomic
from rlprompt.targets import Target
from rlprompt.tasks import ClassificationTask

from rlprompt.models import peft_deprecations_silenced
from rlprompt.policies.rewriter import ANSWER_PREFIX, RewriterConfig, load_rewriter, lora_config, rewriter_task

REWARD_STATE_FILE = "prewrite_state.json"
"""The reward's minibatch sampler state inside each trl checkpoint (:meth:`RewriteReward.state_dict`)."""

INITIAL_INSTRUCTIONS = {
    "sentiment": "Classify the sentiment of the movie review as negative or positive.",
    "sst-2": "Classify the sentiment of the movie review as negative or positive.",
    "topic": "Classify the news article into World, Sports, Business, or Tech.",
    "agnews": "Classify the news article into World, Sports, Business, or Tech.",
    "yesno": "Answer the question with yes or no.",
}


# -- config ---------------------------------------------------------------------------------------
@dataclass
class PRewriteConfig(RewriterConfig):
    """Everything a PRewrite run reads (Kong et al. 2024; the task needs train and dev splits); YAML files may
    only set these fields."""

    method: ClassVar[str] = "prewrite"

    initial_instruction: str | None = None
    """The instruction to rewrite; None picks a built-in one for the task (INITIAL_INSTRUCTIONS)."""
    answer_prefix: str = ANSWER_PREFIX
    """Text the assistant turn starts with before the verbalizer is scored (used when template is None)."""
    stabilizer: str = "input_zscore"
    """Stabilizer over the completions of a step: input_zscore (RLPrompt), batch_zscore or none (one without
    state: a checkpoint does not hold a stabilizer's statistics)."""
    num_generations: int = 8
    """Rewrites sampled per step (the GRPO group)."""
    max_completion_length: int = 40
    """Maximum tokens of one rewrite."""
    temperature: float = 1.0
    """Sampling temperature of the rewriter during training."""
    learning_rate: float = 1e-4
    """AdamW learning rate of the LoRA parameters."""
    beta: float = 0.04
    """KL coefficient to the initial rewriter (adapter disabled); 0 turns the reference model off."""
    steps: int = 50
    """GRPO optimisation steps (one group of num_generations rewrites each)."""
    num_samples: int = 8
    """K of PRewrite-S: rewrites sampled after training, the best on dev is kept."""
    sample_temperature: float = 1.0
    """Sampling temperature of PRewrite-S."""
    dev_limit: int | None = None
    """Score PRewrite-I/S candidates on N dev examples balanced over labels (None: the whole split)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_generations", "max_completion_length", "steps", "num_samples")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares rewrites in a group), got {self.num_generations}")
        check_stabilizer(self.stabilizer, stateless=True)
        if self.beta < 0 or self.learning_rate <= 0:
            raise ValueError(f"need beta >= 0 and learning_rate > 0; got {self.beta}, {self.learning_rate}")
        if self.temperature <= 0 or self.sample_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {self.temperature} and {self.sample_temperature}")
        if self.dev_limit is not None and self.dev_limit < 1:
            raise ValueError(f"dev_limit must be >= 1 or None, got {self.dev_limit}")


# -- task, template, reward -----------------------------------------------------------------------
def build_task(cfg: PRewriteConfig, target: Target | None = None) -> ClassificationTask:
    """The config's task with its PRewrite template and verbalizers (:func:`rewriter_task`: without
    ``cfg.template``, the chat template in the chat format of ``target``, default: of the config's target model)
    and the initial instruction as its prompt; it needs train and dev splits."""
    task = rewriter_task(cfg, ("train", "dev"), target=target, answer_prefix=cfg.answer_prefix)
    return replace(task, prompt=initial_instruction(cfg, task))


def initial_instruction(cfg: PRewriteConfig, task: ClassificationTask) -> str:
    """``cfg.initial_instruction`` or the built-in one for the task (a generic one naming the labels)."""
    if cfg.initial_instruction:
        return cfg.initial_instruction
    return INITIAL_INSTRUCTIONS.get(task.name, f"Classify the input as one of: {', '.join(task.label_names)}.")


class RewriteReward:
    """trl reward ``f(prompts, completions, **columns)`` of PRewrite (Kong et al. 2024): the group of rewrites
    (each cleaned with :func:`clean_rewrite`) is one :meth:`~rlprompt.envs.PromptRewriteEnv.step_group` of
    ``rlprompt/PromptRewrite-v0``: each rewrite is filled into the task template as the instruction and scored by the
    frozen target on one minibatch of train inputs shared by the whole group, then stabilized. Under trl it reports
    the group's minibatch figures (``minibatch_accuracy_mean``/``_max``, ``raw_reward_mean``/``_std``,
    ``rewrite_words``) through the ``log_metric`` trl passes; :meth:`score` is the same step for rewrites already
    cleaned (DPO's preference pairs). ``tokenizer`` gives the env its observation (the instruction's token ids; the
    rewriter's own tokenizer), else the target's.

    ``history`` keeps ``(step, rewrite, accuracy on the minibatch)`` of every scored rewrite.
    """

    __name__ = "prewrite"

    def __init__(self, target: Target, task: ClassificationTask, *, kind: str = "gap", stabilizer: str = "input_zscore",
                 batch_size: int = 16, seed: int = 0, tokenizer: Any = None) -> None:
        from rlprompt.envs import PromptRewriteEnv

        self.env = PromptRewriteEnv(task, target, reward=kind, stabilizer=stabilizer, seed=seed, charset=None,
                                    batch_size=min(batch_size, len(task.split("train"))), tokenizer=tokenizer)
        self.batch_size = self.env.scorer.base_reward.batch_size
        self.history: list[tuple[int, str, float]] = []
        self.calls = 0

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        rewrites = [clean_rewrite(t) for t in completion_texts(completions)]
        values, infos = self.score(rewrites, step=getattr(columns.get("trainer_state"), "global_step", None))
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            accuracy, raw = [i["accuracy"] for i in infos], [i["raw_reward"] for i in infos]
            for key, value in {"minibatch_accuracy_mean": np.mean(accuracy), "minibatch_accuracy_max": np.max(accuracy),
                               "raw_reward_mean": np.mean(raw), "raw_reward_std": np.std(raw),
                               "rewrite_words": np.mean([len(r.split()) for r in rewrites])}.items():
                log_metric(key, float(value))
        return values

    def score(self, rewrites: Sequence[str], *, instruction: str | None = None,
              step: int | None = None) -> tuple[list[float | None], list[dict[str, Any]]]:
        """The rewards of ``rewrites`` of ``instruction`` (default: the task's own) as one env step, and the step's
        info per rewrite (``raw_reward``, ``accuracy``); recorded in :attr:`history` under ``step`` (default: the
        number of calls so far)."""
        self.env.reset(options={"instruction": self.env.instructions[0] if instruction is None else instruction})
        _, rewards, _, _, infos = self.env.step_group(list(rewrites))
        values = checked(self.__name__, rewrites, rewards.tolist())
        step = self.calls if step is None else step
        self.history.extend((int(step), r, info["accuracy"]) for r, info in zip(rewrites, infos))
        self.calls += 1
        return values, infos

    def state_dict(self) -> dict[str, Any]:
        """The minibatch sampler state and call count (JSON), for resuming."""
        return {"rng": self.env.scorer.base_reward.rng.bit_generator.state, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.scorer.base_reward.rng.bit_generator.state = state["rng"]
        self.calls = int(state["calls"])


# -- trainer --------------------------------------------------------------------------------------
def _grpo_trainer_class():
    from trl import GRPOTrainer

    class PRewriteGRPOTrainer(GRPOTrainer):
        """trl's GRPOTrainer that samples rewrites in eval mode (no dropout) with a KV cache."""

        def _generate_single_turn(self, *args: Any, **kwargs: Any):
            model = self.model_wrapped
            was_training = model.training
            model.eval()
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                model.train(was_training)

    return PRewriteGRPOTrainer


def _reward_state_saver(reward: RewriteReward) -> Any:
    """A TrainerCallback that saves the reward sampler's state next to each trl checkpoint (for resume)."""
    from transformers import TrainerCallback

    class RewardStateSaver(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and state.is_world_process_zero:
                write_atomic(folder / REWARD_STATE_FILE, json.dumps(reward.state_dict()))

    return RewardStateSaver()


# -- inference: PRewrite-I and PRewrite-S ---------------------------------------------------------
def balanced_subset(labels: Sequence[int], limit: int | None) -> list[int]:
    """Indices of ``limit`` examples taken round-robin over the labels in file order (RLPrompt's dev files
    are sorted by label, so the first N would hold one class only); all indices when ``limit`` is None."""
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(i)
    queues, keep = [list(reversed(v)) for _, v in sorted(by_label.items())], []
    while len(keep) < limit:
        for queue in queues:
            if queue and len(keep) < limit:
                keep.append(queue.pop())
    return sorted(keep)


def dev_scorer(target: Target, task: ClassificationTask, limit: int | None = None) -> Callable[[list[str]], list[float]]:
    """Accuracy of each instruction on the dev split (``limit`` examples balanced over labels, see
    :func:`balanced_subset`) in the task template."""
    dev = task.split("dev")
    keep = balanced_subset(dev.labels, limit)
    texts, labels = [dev.texts[i] for i in keep], np.asarray([dev.labels[i] for i in keep])

    def score(instructions: list[str]) -> list[float]:
        unique = list(dict.fromkeys(instructions))
        logprobs = target.classify(task.template, unique, texts, task.verbalizers)
        accuracy = dict(zip(unique, (logprobs.argmax(-1) == labels[None, :]).mean(axis=1).tolist()))
        return [accuracy[i] for i in instructions]

    return score


def prewrite_i(enhancer: Any, instruction: str) -> str:
    """PRewrite-I (Kong et al. 2024): the rewriter's greedy rewrite of ``instruction``, as the enhancer deploys
    it (cleaned; ``instruction`` itself where :func:`rlprompt.enhancer.fallback_reason` rejects the rewrite)."""
    return enhancer.enhance(instruction)


def prewrite_s(enhancer: Any, instruction: str, score: Callable[[list[str]], list[float]], *, k: int = 8,
               temperature: float = 1.0, seed: int = 0) -> tuple[str, dict[str, float]]:
    """PRewrite-S (Kong et al. 2024): sample ``k`` rewrites, keep the one ``score`` (dev accuracy) rates best.

    Returns the best rewrite and the score of every distinct candidate (ties keep the first sampled)."""
    samples = enhancer.sample([instruction], k=k, temperature=temperature, seed=seed)[0]
    candidates = list(dict.fromkeys(clean_rewrite(s) for s in samples))
    scores = dict(zip(candidates, score(candidates)))
    best = max(candidates, key=lambda c: scores[c])
    return best, scores


# -- training -------------------------------------------------------------------------------------
def train_prewrite(cfg: PRewriteConfig, run_dir: str | Path, resume: bool = False, *, target: Target | None = None,
                   rewriter: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Train a PRewrite rewriter with GRPO (Kong et al. 2024) and return the run's summary
    (:class:`~rlprompt.runs.RunResult`; ``details``: PRewrite-I and PRewrite-S with their dev accuracies, the
    initial instruction's, the template, whether the enhancer is the identity, training seconds).

    The run is a :class:`~rlprompt.loop.RunLoop` driving trl's Trainer through its callback adapter; the GRPO reward
    of each step is a step of ``rlprompt/PromptRewrite-v0`` (:class:`RewriteReward`). ``run_dir`` receives
    config.yaml, metrics.jsonl (RunDir), ``checkpoints/checkpoint-<step>/`` (trl's checkpoints: adapter
    safetensors, optimizer, trainer state, the reward sampler's state, the loop's state), ``prompt.txt`` (the
    best of the initial instruction, PRewrite-I and PRewrite-S on dev; the initial one wins ties),
    ``rewrites.json`` and ``enhancer/`` (a PromptEnhancer storing those dev scores: the identity unless
    PRewrite-I, the rewrite it produces, beats the initial instruction; one line on stderr says which).
    ``resume=True`` continues from the latest trl checkpoint. ``target`` and ``rewriter`` (model, tokenizer)
    override the config's models (tests pass a scripted fake target and a tiny random rewriter). The target
    queries logged and summarized are this run's own (not those a shared target served before), counted on
    across resumes. With ``max_target_queries`` training stops before a step that could pass it, each step costing
    at most ``num_generations * input_batch_size`` sequences, and keeps room for the final dev selection (a budget
    too small for that selection alone is an error before anything runs); the run then ends with ``stop_reason``
    max_target_queries, its last step checkpointed.

    Under ``accelerate launch --num_processes N`` each process scores its own ``num_generations`` rewrites a step
    with its own target, so a step costs N times as many sequences; the logged and summarized ``target_queries`` are
    the sum over the processes, and the final selection runs on the main process only (the others return ``{}``
    after training).
    """
    from datasets import Dataset
    from rlprompt.enhancer import PromptEnhancer

    loop = RunLoop(cfg, run_dir, resume=resume, target=target, checkpoints="trainer", desc="prewrite steps")
    model, tokenizer = load_rewriter(cfg, rewriter)
    task = build_task(cfg, loop.target)
    reward = RewriteReward(loop.target, task, kind=cfg.reward, stabilizer=cfg.stabilizer,
                           batch_size=cfg.input_batch_size, seed=cfg.seed, tokenizer=tokenizer)
    if loop.checkpoint is not None and (loop.checkpoint / REWARD_STATE_FILE).is_file():
        reward.load_state_dict(json.loads((loop.checkpoint / REWARD_STATE_FILE).read_text(encoding="utf-8")))
    dev_examples = len(balanced_subset(task.split("dev").labels, cfg.dev_limit))
    # a step scores one group of rewrites, each on one minibatch; the final selection scores PRewrite-S's
    # candidates, the initial instruction and PRewrite-I on dev
    last = loop.affordable_steps(cfg.num_generations * reward.batch_size, (cfg.num_samples + 2) * dev_examples)

    messages = [{"role": "user", "content": cfg.meta_prompt.replace("{instruction}", task.prompt)}]
    dataset = Dataset.from_dict({"prompt": [messages] * (cfg.steps * cfg.num_generations)})
    on_cpu = resolve_device(cfg.device).type == "cpu"  # trl: use_cpu and fp32, else accelerate's device and bf16
    args = _grpo_config(cfg, loop.run_dir.path / "checkpoints", on_cpu)
    logger = loop.trainer_callback()  # the reward's minibatch figures reach it through trl's log_metric
    with peft_deprecations_silenced():
        trainer = _grpo_trainer_class()(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                                        processing_class=tokenizer, peft_config=lora_config(cfg),
                                        callbacks=[logger, _reward_state_saver(reward), trainer_checkpoint_sealer()])
    start = time.perf_counter()
    with loop.budget.shared():  # every process trains and queries its own target: counts summed, caps shared
        train_or_finish(trainer, loop.checkpoint, last)
    train_seconds = time.perf_counter() - start
    if not trainer.accelerator.is_main_process:
        return {}

    # -- inference with the trained rewriter: PRewrite-I and PRewrite-S, selected on dev
    peft_model = trainer.accelerator.unwrap_model(trainer.model).eval()
    enhancer = PromptEnhancer(peft_model, tokenizer, base_model=cfg.rewriter_model, meta_prompt=cfg.meta_prompt,
                              max_new_tokens=cfg.max_completion_length,
                              info={"task": task.name, "initial_instruction": task.prompt, "template": task.template,
                                    "verbalizers": list(task.verbalizers)})
    score = dev_scorer(loop.target, task, cfg.dev_limit)
    rewrite_i = prewrite_i(enhancer, task.prompt)
    with loop.budget:
        rewrite_s, sampled = prewrite_s(enhancer, task.prompt, score, k=cfg.num_samples,
                                        temperature=cfg.sample_temperature, seed=cfg.seed)
        initial_acc, acc_i = score([task.prompt, rewrite_i])
    # never worse than none: the original competes, and wins ties; the enhancer is the identity unless its
    # own (greedy, PRewrite-I) rewrite beats the original on dev
    scored = {task.prompt: initial_acc, rewrite_i: acc_i, rewrite_s: sampled[rewrite_s]}
    best = max(scored, key=scored.__getitem__)
    enhancer.evaluation = rewriter_evaluation(
        [task.prompt], [initial_acc], {"prewrite_i": ([rewrite_i], [acc_i]),
                                       "prewrite_s": ([rewrite_s], [sampled[rewrite_s]])},
        deployed="prewrite_i", metric="dev_accuracy", examples=dev_examples)
    print(f"prewrite: {describe_evaluation(enhancer.evaluation)}", file=sys.stderr, flush=True)
    enhancer.save_pretrained(loop.run_dir.path / "enhancer")
    seconds = logger.step_seconds
    loop.log(trainer.state.global_step, {"eval/initial_accuracy": initial_acc, "eval/prewrite_i_accuracy": acc_i,
                                         "eval/prewrite_s_accuracy": sampled[rewrite_s]})
    loop.run_dir.write_json("rewrites.json", {"prewrite_s_candidates": sampled, "history": reward.history})
    return loop.finish(
        best_prompt=best, dev_accuracy=scored[best], steps=trainer.state.global_step,
        stop_reason="max_target_queries" if trainer.state.global_step < cfg.steps else "steps",
        details={"train_seconds": train_seconds, "seconds_per_step": float(np.mean(seconds)) if seconds else None,
                 "initial_instruction": task.prompt, "initial_dev_accuracy": initial_acc, "prewrite_i": rewrite_i,
                 "prewrite_i_dev_accuracy": acc_i, "prewrite_s": rewrite_s,
                 "prewrite_s_dev_accuracy": sampled[rewrite_s], "enhancer_identity": enhancer.identity,
                 "template": task.template, "verbalizers": list(task.verbalizers)})


def _grpo_config(cfg: PRewriteConfig, output_dir: Path, on_cpu: bool):
    """trl's GRPOConfig for one prompt per step: ``num_generations`` rewrites of the same meta-prompt."""
    from trl import GRPOConfig

    bf16 = not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.num_generations, gradient_accumulation_steps=1,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, learning_rate=cfg.learning_rate, beta=cfg.beta, max_steps=cfg.steps,
        logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every, save_total_limit=cfg.keep_checkpoints,
        use_cpu=on_cpu, bf16=bf16, seed=cfg.seed, data_seed=cfg.seed, report_to="none", disable_tqdm=True,
        shuffle_dataset=False, generation_kwargs={"use_cache": True}, dataloader_num_workers=0,
        activation_checkpointing=False,  # trl turns it on by default; a small rewriter needs no memory savings
    )


# -- command line (the accelerate entry point) ----------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m rlprompt.policies.prewrite CONFIG --run-dir DIR [--resume] [key=value ...]``; works under
    ``accelerate launch --num_processes N -m rlprompt.policies.prewrite ...`` (N GPUs; on CPUs ``--multi_gpu`` starts
    N gloo processes, while ``--cpu`` starts one whatever N says)."""
    from rlprompt.config import load_config

    parser = argparse.ArgumentParser(prog="python -m rlprompt.policies.prewrite", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config (method: prewrite)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--run-dir", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the latest trl checkpoint in --run-dir")
    args = parser.parse_args(argv)
    summary = train_prewrite(load_config(args.config, PRewriteConfig, args.overrides), args.run_dir, resume=args.resume)
    if summary:
        print(json.dumps(summary))
    return 0


__all__ = ["INITIAL_INSTRUCTIONS", "PRewriteConfig", "RewriteReward", "balanced_subset", "build_task", "clean_rewrite",
           "dev_scorer", "main", "prewrite_i", "prewrite_s", "train_prewrite"]

if __name__ == "__main__":
    sys.exit(main())
