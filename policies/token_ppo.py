"""Shared parts of the token-level PPO methods, RLPrompt (Deng et al. 2022) and MultiPrompter (Kim et al. 2023).

Both write a discrete prompt token by token with a FROZEN causal LM plus small trainable heads read out through the
frozen LM head: :class:`TokenPPOConfig` holds the fields they share (task, target, frozen policy LM, heads, PPO,
reward, run); :class:`PrefixFeatures` caches the frozen LM's hidden state per prompt prefix; :func:`head_logits` is
the actor's readout, in the residual form (the policy starts as the frozen LM) or the paper's adaptor form (it starts
near uniform); :func:`build_task` loads and checks the task both train on; :class:`TokenPPOMethod` is what both methods share
behind the run loop (:mod:`rlprompt.loop`): dev selection, cost bound and checkpoint state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlprompt.config import RunConfig, check_dtypes, check_positive
from rlprompt.envs.prompt_tokens import decode_prompt
from rlprompt.envs.scoring import PromptScorer
from rlprompt.errors import ConfigError
from rlprompt.loop import MethodState, RunLoop
from rlprompt.models import load_model
from rlprompt.rewards import check_stabilizer
from rlprompt.runs import RunDir, rng_state, set_rng_state
from rlprompt.targets import CachedTarget, Target
from rlprompt.tasks import ClassificationTask

MASKED_LOGIT = -1e9  # logit of masked tokens (finite, so entropies stay finite)
POLICY_HEADS = ("residual", "adaptor")
TOP_K_SOURCES = ("frozen", "policy")


# -- config ---------------------------------------------------------------------------------------
@dataclass
class TokenPPOConfig(RunConfig):
    """Fields shared by the token-level PPO methods (RLPrompt and MultiPrompter): the task (train and dev
    splits), target, frozen policy LM, heads, PPO, reward and run settings. Subclasses add their own fields."""

    policy_model: str = "smollm2-135m-instruct"
    """Frozen causal LM under the trainable heads (rlprompt.models.load_model name); shares the target when equal."""
    policy_dtype: str = "bfloat16"
    """dtype of the frozen policy LM (its hidden states are cast to float32 for the heads)."""
    policy_context: str = ""
    """Text fed after the start token, before the prompt tokens chosen so far."""
    policy_start: str | None = None
    """Start token the frozen policy LM reads first; None: its tokenizer's BOS (SmolLM2's chat token <|im_start|>).
    RLPrompt's paper setting reads GPT-2's neutral "<|endoftext|>"."""
    policy_head: str = "residual"
    """residual: logits = W (h + MLP(h)), MLP output near zero, so the policy starts as the frozen LM; adaptor:
    RLPrompt's paper setting, logits = W MLP(h) with every MLP layer near zero, so the policy starts near uniform."""
    top_k_from: str = "frozen"
    """Which logits pick the top_k allowed tokens: frozen (the frozen LM's: a fluency restriction) or policy (the
    policy's own logits: RLPrompt's paper setting, which samples from the top-256 of its own distribution)."""
    vocab: list[int] | None = None
    """Allowed action token ids; None allows every non-special token."""
    top_k: int | None = None
    """Fluent restriction: only the frozen LM's top-k allowed tokens may be chosen (None: no restriction)."""
    mlp_hidden: int = 2048
    """Width of each trainable actor MLP (hidden -> mlp_hidden -> hidden)."""
    value_hidden: int = 256
    """Width of the value head's (critic's) hidden layer."""
    steps: int = 200
    """PPO updates (rollout + optimisation) of the whole run (formerly total_updates)."""
    learning_rate: float = 1e-4
    """Adam learning rate of the actor MLPs and the value head."""
    n_epochs: int = 4
    """PPO epochs over each rollout."""
    gamma: float = 1.0
    """Discount (the only reward comes at the last token)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    reward: str = "gap"
    """Per-input reward: gap (RLPrompt's probability-gap reward), accuracy or logprob."""
    correct_coef: float = 200.0
    """Gap reward slope where the prediction is correct."""
    incorrect_coef: float = 180.0
    """Gap reward slope where the prediction is wrong."""
    stabilizer: str = "input_zscore"
    """Reward stabilizer: input_zscore (RLPrompt), batch_zscore, running or none."""
    input_batch_size: int = 16
    """Task inputs (train split) each batch of candidate prompts is scored on."""
    eval_every: int = 10
    """Evaluate the greedy and best sampled prompts on dev every this many updates."""
    eval_top_k: int = 3
    """How many of the best sampled prompts (by train reward since the last evaluation) to evaluate on dev."""
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    hidden_cache_size: int = 50_000
    """Prompt prefixes whose frozen hidden state is cached."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_dtypes(self, "policy_dtype")
        check_positive(self, "mlp_hidden", "value_hidden", "n_epochs", "input_batch_size", "eval_every", "eval_top_k",
                       "hidden_cache_size")
        for name in ("learning_rate", "clip_range", "correct_coef", "incorrect_coef"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.ent_coef < 0 or self.vf_coef < 0 or self.max_grad_norm <= 0:
            raise ValueError(f"need ent_coef >= 0, vf_coef >= 0, max_grad_norm > 0; got {self.ent_coef}, "
                             f"{self.vf_coef}, {self.max_grad_norm}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")
        if self.policy_head not in POLICY_HEADS:
            raise ValueError(f"policy_head={self.policy_head!r} is not one of {POLICY_HEADS}")
        if self.top_k_from not in TOP_K_SOURCES:
            raise ValueError(f"top_k_from={self.top_k_from!r} is not one of {TOP_K_SOURCES}")
        check_stabilizer(self.stabilizer)
        if self.policy_start == "":
            raise ValueError("policy_start must be a token's text (e.g. '<|endoftext|>') or null for the BOS token")


# -- frozen LM features ---------------------------------------------------------------------------
def frozen_policy_lm(cfg: TokenPPOConfig, target: Target, device: torch.device) -> nn.Module:
    """The frozen policy LM: the target's own model when the target (behind a response cache or not) is
    ``policy_model`` in ``policy_dtype``, so one copy serves both; else ``policy_model`` loaded on ``device``."""
    inner = target.inner if isinstance(target, CachedTarget) else target
    if getattr(inner, "name", None) == f"hf:{cfg.policy_model}:{cfg.policy_dtype}":
        return inner.model
    return load_model(cfg.policy_model, dtype=cfg.policy_dtype, device=device)[0]


def context_ids(tokenizer: Any, context: str, start: str | None = None) -> list[int]:
    """The start token (``start``'s id, or the tokenizer's BOS/EOS when None) plus ``context``'s tokens:
    what the frozen LM reads before the prompt."""
    if start is None:
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    else:
        ids = tokenizer(start, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ConfigError(f"policy_start={start!r} is {len(ids)} tokens for this tokenizer; it must be exactly one")
        first = ids[0]
    return [int(first)] + (list(tokenizer(context, add_special_tokens=False).input_ids) if context else [])


def mlp(width_in: int, hidden: int, width_out: int, *, init: str = "default") -> nn.Sequential:
    """Linear-ReLU-Linear. ``init="near_zero"`` starts the output layer near zero, so a head added to the frozen
    LM's hidden state starts as the LM's own next-token distribution; ``init="rlprompt"`` is the original code's
    adaptor init (every layer Xavier-uniform with gain 1e-4, biases -1e-4), whose output is near zero too."""
    net = nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(), nn.Linear(hidden, width_out))
    if init == "near_zero":
        nn.init.normal_(net[2].weight, std=1e-4)
        nn.init.zeros_(net[2].bias)
    elif init == "rlprompt":
        for layer in (net[0], net[2]):
            nn.init.xavier_uniform_(layer.weight, gain=1e-4)
            nn.init.constant_(layer.bias, -1e-4)
    elif init != "default":
        raise ValueError(f"init={init!r} is not one of default, near_zero, rlprompt")
    return net


def actor_mlp(hidden_size: int, mlp_hidden: int, head: str) -> nn.Sequential:
    """The trainable actor MLP of a token policy for ``head`` (:data:`POLICY_HEADS`)."""
    return mlp(hidden_size, mlp_hidden, hidden_size, init="near_zero" if head == "residual" else "rlprompt")


def head_logits(h: torch.Tensor, delta: torch.Tensor, head_weight: torch.Tensor, *, head: str,
                top_k: int | None, top_k_from: str) -> torch.Tensor:
    """Action logits of a token policy (RLPrompt, Deng et al. 2022, section 2.2): ``W (h + delta)`` for the
    residual head, ``W delta`` for the paper's adaptor head, where ``delta`` is the actor MLP's output on the
    frozen hidden state ``h`` and ``W`` the frozen LM head's rows of the action tokens. With ``top_k`` all but the
    top-k tokens of the frozen LM's logits (``top_k_from="frozen"``) or of these logits (``"policy"``) are masked."""
    logits = (h + delta if head == "residual" else delta) @ head_weight.T
    if top_k is not None and top_k < logits.shape[-1]:
        ranking = h @ head_weight.T if top_k_from == "frozen" else logits.detach()
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, ranking.topk(top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, MASKED_LOGIT)
    return logits


class PrefixFeatures:
    """The frozen LM's last hidden state ``(B, hidden)`` (float32, on the LM's device) after ``context_ids`` plus each
    observation's prompt prefix, kept in an LRU cache of ``cache_size`` prefixes.

    Observations are ``(B, L + 1)``: L prompt slots then the number ``t`` of tokens chosen so far. One
    forward over ``context + all prompt slots`` serves every prefix of a row (causal attention: later
    slots cannot change earlier positions), so each miss also fills the cache for its shorter prefixes.
    """

    def __init__(self, lm: nn.Module, context_ids: Sequence[int], cache_size: int = 50_000) -> None:
        self.lm, self.context_ids, self.cache_size = lm, list(context_ids), int(cache_size)
        if not self.context_ids:
            raise ValueError("context_ids must hold at least one token (the start token)")
        self.cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.round().long().cpu() if obs.is_floating_point() else obs.long().cpu()
        tokens, t = obs[:, :-1], obs[:, -1].clamp(0, obs.shape[1] - 1)
        keys = [tuple(tokens[i, : t[i]].tolist()) for i in range(len(obs))]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            n_ctx, width = len(self.context_ids), tokens.shape[1]  # every slot: the same shapes whatever the batch
            ids = torch.zeros((len(missing), n_ctx + width), dtype=torch.long)
            ids[:, :n_ctx] = torch.tensor(self.context_ids)
            for row, key in enumerate(missing):
                ids[row, n_ctx: n_ctx + len(key)] = torch.tensor(key, dtype=torch.long)
            device = self.lm.get_output_embeddings().weight.device
            hidden = self.lm.base_model(input_ids=ids.to(device)).last_hidden_state.float()
            for row, key in enumerate(missing):
                for n in range(len(key) + 1):
                    self.cache[key[:n]] = hidden[row, n_ctx - 1 + n]
                    self.cache.move_to_end(key[:n])
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return torch.stack([self.cache[k] for k in keys])


def build_task(cfg: TokenPPOConfig) -> ClassificationTask:
    """The config's classification task with its template/verbalizer overrides; it must have train and dev splits."""
    return cfg.classification_task(("train", "dev"))


# -- the method behind the run loop ------------------------------------------------------------------
class TokenPPOMethod:
    """What RLPrompt and MultiPrompter share behind the run loop (:class:`rlprompt.loop.Method`); a subclass adds
    :meth:`step` (one rollout and its PPO update).

    Both select on dev as RLPrompt does (Deng et al. 2022): every evaluation scores the greedy prompt and the
    ``eval_top_k`` sampled prompts with the best raw train reward since the last evaluation (the pool, filled by
    :meth:`record`). A checkpoint holds the trainable tensors of ``policy`` (its ``state_dict``: the frozen LM is not
    part of it), ``optimizer``'s state, the global rng states, the scorer's minibatch sampler and stabilizer, the pool
    and the last greedy prompt. ``rollout_queries`` is the target sequences one rollout scores.
    """

    def __init__(self, cfg: TokenPPOConfig, scorer: PromptScorer, tokenizer: Any, policy: nn.Module,
                 optimizer: torch.optim.Optimizer, rollout_queries: int) -> None:
        self.cfg, self.scorer, self.tokenizer, self.policy, self.optimizer = cfg, scorer, tokenizer, policy, optimizer
        self.rollout_queries = int(rollout_queries)
        self.pool: dict[str, float] = {}  # sampled prompt -> its best raw train reward since the last evaluation
        self.greedy_prompt: str | None = None  # the greedy prompt of the last evaluation

    def record(self, prompts: Sequence[str], rewards: Sequence[float],
               infos: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Keep each finished prompt's best raw reward in the pool; return the rollout's ``charts/`` metrics."""
        for prompt, info in zip(prompts, infos):
            self.pool[prompt] = max(self.pool.get(prompt, -np.inf), info["raw_reward"])
        raw = [info["raw_reward"] for info in infos]
        return {"charts/reward": float(np.mean(rewards)), "charts/raw_reward": float(np.mean(raw)),
                "charts/raw_reward_max": float(np.max(raw)),
                "charts/train_accuracy": float(np.mean([info["accuracy"] for info in infos])),
                "charts/unique_prompts": len(set(prompts)) / len(prompts)}

    def step_cost(self) -> int:
        """One rollout plus a dev evaluation of ``1 + eval_top_k`` prompts (any step may turn out to be the last)."""
        return self.rollout_queries + (1 + self.cfg.eval_top_k) * len(self.scorer.task.split("dev"))

    def candidates(self) -> dict[str, list[str]]:
        """The greedy prompt and the pool's ``eval_top_k`` best sampled prompts (the pool is emptied)."""
        self.greedy_prompt = decode_prompt(self.tokenizer, self.policy.decode(1, deterministic=True)[0])
        sampled = sorted(self.pool, key=lambda p: -self.pool[p])[: self.cfg.eval_top_k]
        self.pool = {}
        return {"greedy": [self.greedy_prompt], "sampled": sampled}

    def evaluate(self, prompt: str) -> float:
        """The prompt's accuracy on the dev split (the scorer caches it per prompt)."""
        return self.scorer.evaluate(prompt, split="dev")

    def stop_reason(self) -> str | None:
        """Never: the loop's step count and budget end the run."""
        return None

    def state_dict(self) -> MethodState:
        """The trainable tensors, the optimizer and the JSON state described in the class docstring."""
        stabilizer = getattr(self.scorer.reward, "state_dict", None)
        state = {"rng": rng_state(), "scorer_rng": self.scorer.base_reward.rng.bit_generator.state,
                 "stabilizer": stabilizer() if callable(stabilizer) else None, "pool": dict(self.pool),
                 "greedy_prompt": self.greedy_prompt, "evaluations": self.scorer.evaluations()}
        return MethodState({k: v.detach().clone() for k, v in self.policy.state_dict().items()}, state,
                           self.optimizer.state_dict())

    def load_state_dict(self, state: MethodState) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.policy.load_state_dict(state.tensors, strict=True)
        self.optimizer.load_state_dict(state.optimizer)
        saved = state.state
        set_rng_state(saved["rng"])
        self.scorer.base_reward.rng.bit_generator.state = saved["scorer_rng"]
        if saved["stabilizer"] is not None:
            self.scorer.reward.load_state_dict(saved["stabilizer"])
        self.pool, self.greedy_prompt = dict(saved["pool"]), saved["greedy_prompt"]
        self.scorer.load_evaluations(saved.get("evaluations", []))  # absent in checkpoints made before it was kept

    def details(self) -> dict[str, Any]:
        """The summary's ``details``: the greedy prompt of the last evaluation."""
        return {"greedy_prompt": self.greedy_prompt}


def train_token_ppo(method: type[TokenPPOMethod], cfg: TokenPPOConfig, run_dir: str | Path | RunDir, resume: bool,
                    target: Target | None, progress: bool) -> dict[str, Any]:
    """Run a token-PPO ``method`` class (RLPrompt's or MultiPrompter's, built as ``method(cfg, target, task)``)
    through the run loop and return the run's summary. The task is loaded first, so a task that cannot serve fails
    before a run directory or a model exists."""
    task = build_task(cfg)
    loop = RunLoop(cfg, run_dir, resume=resume, target=target, progress=progress)
    with loop.run_dir:  # closed on an error too (finish closes it otherwise)
        runner = method(cfg, loop.target, task)
        loop.run(runner)
        return loop.finish(details=runner.details())


__all__ = ["MASKED_LOGIT", "POLICY_HEADS", "TOP_K_SOURCES", "PrefixFeatures", "TokenPPOConfig", "TokenPPOMethod",
           "actor_mlp", "build_task", "context_ids", "head_logits", "mlp", "train_token_ppo"]
