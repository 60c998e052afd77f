"""RLPrompt: a token-by-token prompt policy trained with PPO against a frozen target.

Deng et al. 2022, "RLPrompt: Optimizing Discrete Text Prompts with Reinforcement Learning" (EMNLP).
The policy is a FROZEN causal LM that reads the prompt tokens chosen so far (after a fixed start
token and optional context) plus a small trainable MLP on its last hidden state, added residually
and read out through the frozen LM head over the allowed tokens. It writes ``prompt_length`` tokens
in ``rlprompt/PromptTokens-v0``; all prompts that finish in one step are scored in one batched target
call and z-scored per input (RLPrompt's input-specific z-score). stable-baselines3's ``PPO`` trains
the MLP and a value head; the frozen LM is neither optimised nor saved.

Layout of this module: :class:`RLPromptConfig` (the typed config), :class:`RLPromptPolicy` (the SB3
policy), :class:`RolloutCollector` (the one SB3 callback: it collects a rollout's episodes), :class:`RLPromptMethod`
(one PPO update per step of the run loop, :mod:`rlprompt.loop`) and :func:`train_rlprompt`; what it shares with
MultiPrompter (config base, frozen-LM features, the actor readout, the task, dev selection and checkpoint state) is in
:mod:`rlprompt.policies.token_ppo`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from rlprompt.config import check_positive
from rlprompt.devices import resolve_device
from rlprompt.envs import make_prompt_tokens_vec_env
from rlprompt.errors import ConfigError
from rlprompt.loop import MethodState
from rlprompt.policies.token_ppo import (POLICY_HEADS, TOP_K_SOURCES, PrefixFeatures, TokenPPOConfig, TokenPPOMethod,
                                         actor_mlp, build_task, context_ids, frozen_policy_lm, head_logits, mlp,
                                         train_token_ppo)
from rlprompt.runs import RunDir
from rlprompt.targets import Target
from rlprompt.tasks import ClassificationTask


@dataclass
class RLPromptConfig(TokenPPOConfig):
    """Everything an RLPrompt run reads (Deng et al. 2022); YAML files may only set these fields."""

    method: ClassVar[str] = "rlprompt"

    prompt_length: int = 5
    """Number of prompt tokens the policy writes per episode."""
    n_envs: int = 16
    """Prompts sampled in parallel: one batch of candidates scored together per step."""
    episodes_per_update: int = 1
    """Episodes each env runs per PPO update (n_steps = episodes_per_update * prompt_length)."""
    ppo_minibatch_size: int | None = None
    """Transitions per PPO minibatch; None uses the whole rollout (n_envs * n_steps)."""
    target_kl: float | None = None
    """Stop an update's epochs early once the approximate KL to the rollout policy passes 1.5x this (None: never)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "prompt_length", "n_envs", "episodes_per_update")
        if self.n_envs < 2 and self.stabilizer in ("input_zscore", "batch_zscore"):
            raise ValueError(f"stabilizer={self.stabilizer!r} z-scores across prompts: needs n_envs >= 2, got {self.n_envs}")
        rollout = self.n_envs * self.episodes_per_update * self.prompt_length
        if self.ppo_minibatch_size is not None and (self.ppo_minibatch_size < 2 or rollout % self.ppo_minibatch_size):
            raise ValueError(f"ppo_minibatch_size={self.ppo_minibatch_size} must be >= 2 and divide the rollout size "
                             f"n_envs * episodes_per_update * prompt_length = {rollout}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or null, got {self.target_kl}")

    @property
    def n_steps(self) -> int:
        """Env steps per env per update."""
        return self.episodes_per_update * self.prompt_length


# -- policy ---------------------------------------------------------------------------------------
class RLPromptPolicy(ActorCriticPolicy):
    """RLPrompt's policy network (Deng et al. 2022, section 2.2) as an SB3 actor-critic policy.

    ``logits = W[action_token_ids] @ (h + MLP(h))`` where ``h`` is the frozen LM's last hidden state
    after ``context_ids`` plus the prompt tokens chosen so far and ``W`` its frozen output embedding;
    the MLP's output layer starts near zero, so the untrained policy is the LM's own next-token
    distribution over the allowed tokens. With ``top_k`` all but the LM's top-k allowed tokens are
    masked. ``head="adaptor"`` with ``top_k_from="policy"`` is the paper's setting instead: ``W @ MLP(h)``,
    near uniform at the start, restricted to the top-k of its own logits (:func:`head_logits`).
    The value head is an MLP on ``h``. The frozen LM is held outside the module tree:
    ``parameters()``, ``state_dict()`` and the optimizer hold only the trainable heads.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Discrete, lr_schedule, *, lm: nn.Module,
                 action_token_ids: Sequence[int], context_ids: Sequence[int], mlp_hidden: int = 2048,
                 value_hidden: int = 256, top_k: int | None = None, cache_size: int = 50_000, head: str = "residual",
                 top_k_from: str = "frozen", **kwargs: Any) -> None:
        if head not in POLICY_HEADS or top_k_from not in TOP_K_SOURCES:
            raise ValueError(f"head={head!r} / top_k_from={top_k_from!r} must be in {POLICY_HEADS} / {TOP_K_SOURCES}")
        object.__setattr__(self, "lm", lm)  # not a submodule: never optimised, never saved
        self.head, self.top_k_from = head, top_k_from
        self.action_token_ids = torch.as_tensor(np.asarray(action_token_ids), dtype=torch.long)
        self.features = PrefixFeatures(lm, context_ids, cache_size)
        self.mlp_hidden, self.value_hidden, self.top_k = mlp_hidden, value_hidden, top_k
        self.hidden_size = int(lm.config.hidden_size)
        if int(self.action_token_ids.max()) >= lm.get_output_embeddings().weight.shape[0]:
            raise ConfigError("action token ids exceed the policy LM's vocabulary: policy and target tokenizers differ")
        if action_space.n != len(self.action_token_ids):
            raise ValueError(f"action space has {action_space.n} actions but {len(self.action_token_ids)} token ids")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        h = self.hidden_size
        self.mlp = actor_mlp(h, self.mlp_hidden, self.head)
        self.value_head = mlp(h, self.value_hidden, 1)
        head = self.lm.get_output_embeddings().weight.detach()[self.action_token_ids].float().clone()
        self.register_buffer("head_weight", head, persistent=False)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    # -- frozen features --------------------------------------------------------------------------------
    def frozen_hidden(self, obs: torch.Tensor) -> torch.Tensor:
        """The frozen LM's last hidden state ``(B, hidden)`` for each observation (:class:`PrefixFeatures`)."""
        return self.features(obs).to(self.head_weight.device)

    def _logits_and_values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.frozen_hidden(obs)
        logits = head_logits(h, self.mlp(h), self.head_weight, head=self.head, top_k=self.top_k,
                             top_k_from=self.top_k_from)
        return logits, self.value_head(h)

    # -- SB3 policy interface -----------------------------------------------------------------------------
    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, values = self._logits_and_values(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, values = self._logits_and_values(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> Distribution:
        return self.action_dist.proba_distribution(action_logits=self._logits_and_values(obs)[0])

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.frozen_hidden(obs))

    # -- helpers ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, n: int = 1, deterministic: bool = True) -> np.ndarray:
        """Write ``n`` prompts token by token (argmax when ``deterministic``): token ids ``(n, prompt_length)``."""
        length = self.observation_space.shape[0] - 1
        obs = torch.zeros((n, length + 1), dtype=torch.long)
        for t in range(length):
            actions = self.get_distribution(obs).get_actions(deterministic=deterministic)
            obs[:, t] = self.action_token_ids[actions.cpu()]
            obs[:, -1] = t + 1
        return obs[:, :-1].numpy()



# -- training -------------------------------------------------------------------------------------
class RolloutCollector(BaseCallback):
    """The one adapter of SB3's ``PPO.learn`` to the run loop: it only collects the rollout's finished episodes
    (:attr:`episodes`: prompt, reward and the scorer's info) and, after the update, SB3's ``train/*`` figures
    (:attr:`train`); what to do with them is :class:`RLPromptMethod`'s."""

    def __init__(self) -> None:
        super().__init__(verbose=0)
        self.episodes: list[tuple[str, float, dict[str, Any]]] = []
        self.train: dict[str, float] = {}

    def _on_rollout_start(self) -> None:
        self.episodes = []

    def _on_step(self) -> bool:
        for info, done, reward in zip(self.locals["infos"], self.locals["dones"], self.locals["rewards"]):
            if done and "prompt" in info:
                self.episodes.append((info["prompt"], float(reward), info))
        return True

    def _on_training_end(self) -> None:
        self.train = {k: float(v) for k, v in self.logger.name_to_value.items() if k.startswith("train/")}


class RLPromptMethod(TokenPPOMethod):
    """RLPrompt (Deng et al. 2022) as a stepped method of the run loop (:class:`rlprompt.loop.Method`): each step is
    one SB3 PPO update, i.e. one ``learn()`` call over one rollout of ``n_envs * n_steps`` env steps. Metrics:
    ``charts/*`` of the rollout's prompts, ``losses/*`` from SB3's ``train/*`` figures; the checkpoint adds SB3's
    ``num_timesteps`` to :class:`~rlprompt.policies.token_ppo.TokenPPOMethod`'s state."""

    def __init__(self, cfg: RLPromptConfig, target: Target, task: ClassificationTask | None = None) -> None:
        self.model = make_ppo(cfg, target, task)
        env = self.model.env
        super().__init__(cfg, env.scorer, env.envs[0].tokenizer, self.model.policy, self.model.policy.optimizer,
                         rollout_queries=cfg.n_envs * cfg.episodes_per_update * cfg.input_batch_size)
        self.collector = RolloutCollector()

    def step(self) -> dict[str, float]:
        """One PPO update: a rollout of ``n_envs * n_steps`` env steps and ``n_epochs`` of optimisation."""
        cfg = self.cfg
        self.model.learn(total_timesteps=cfg.n_envs * cfg.n_steps, callback=self.collector, reset_num_timesteps=False,
                         log_interval=None)
        prompts, rewards, infos = zip(*self.collector.episodes)
        metrics = self.record(prompts, rewards, infos)
        for key, value in self.collector.train.items():
            if key not in ("train/n_updates", "train/clip_range", "train/learning_rate"):
                metrics["losses/" + key[len("train/"):]] = value
        return metrics

    def state_dict(self) -> MethodState:
        """:class:`~rlprompt.policies.token_ppo.TokenPPOMethod`'s state plus SB3's ``num_timesteps``."""
        saved = super().state_dict()
        saved.state["num_timesteps"] = self.model.num_timesteps
        return saved

    def load_state_dict(self, state: MethodState) -> None:
        """Restore what :meth:`state_dict` saved."""
        super().load_state_dict(state)
        self.model.num_timesteps = int(state.state["num_timesteps"])


def make_ppo(cfg: RLPromptConfig, target: Target | None = None, task: ClassificationTask | None = None) -> PPO:
    """SB3 ``PPO`` with :class:`RLPromptPolicy` over ``make_prompt_tokens_vec_env`` (one shared scorer, batched
    scoring), its env (``model.env``) already reset. The caller seeds the global generators first (the run loop does;
    the policy's initial weights come from torch's). ``task``: the config's task, when the caller loaded it already."""
    task = task or build_task(cfg)
    target = cfg.build_target(target)
    env = make_prompt_tokens_vec_env(
        cfg.n_envs, seed=cfg.seed, task=task, target=target, prompt_length=cfg.prompt_length, vocab=cfg.vocab,
        reward=cfg.reward, stabilizer=cfg.stabilizer, batch_size=cfg.input_batch_size, split="train",
        correct_coef=cfg.correct_coef, incorrect_coef=cfg.incorrect_coef,
    )
    first = env.envs[0]
    device = resolve_device(cfg.device)
    lm = frozen_policy_lm(cfg, target, device)
    model = PPO(
        RLPromptPolicy, env, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
        batch_size=cfg.ppo_minibatch_size or cfg.n_envs * cfg.n_steps, n_epochs=cfg.n_epochs, gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm, target_kl=cfg.target_kl, device=device, verbose=0,
        policy_kwargs={"lm": lm, "action_token_ids": first.action_token_ids,
                       "context_ids": context_ids(first.tokenizer, cfg.policy_context, cfg.policy_start),
                       "mlp_hidden": cfg.mlp_hidden, "value_hidden": cfg.value_hidden, "top_k": cfg.top_k,
                       "cache_size": cfg.hidden_cache_size, "head": cfg.policy_head, "top_k_from": cfg.top_k_from},
    )
    # metrics go to the run directory; SB3's default logger makes an empty temp directory per learn() call
    model.set_logger(Logger(folder=None, output_formats=[]))
    # Reset now: the first reset seeds the envs and the shared scorer's minibatch sampler with cfg.seed (seeds are
    # used once), so a checkpoint's sampler state restored after this survives. SB3's first learn() resets the env
    # again (it has no observation yet), which only restarts the empty episodes.
    env.reset()
    return model


def train_rlprompt(cfg: RLPromptConfig, run_dir: str | Path | RunDir, resume: bool = False, *,
                   target: Target | None = None, progress: bool = True) -> dict[str, Any]:
    """Train an RLPrompt policy with PPO (Deng et al. 2022) through the run loop (:class:`rlprompt.loop.RunLoop`)
    and return the run's summary (:class:`~rlprompt.runs.RunResult`; ``details``: the last greedy prompt).

    ``run_dir`` receives config.yaml, metrics.jsonl, TensorBoard events, prompt.txt and checkpoints
    (:class:`~rlprompt.runs.RunDir`). ``resume=True`` continues from the latest valid checkpoint:
    trainable tensors, optimizer, rng states, the reward sampler, counters and the best prompt.
    ``target`` overrides ``cfg.target`` (tests pass a scripted fake target); ``progress`` shows a progress bar.
    """
    return train_token_ppo(RLPromptMethod, cfg, run_dir, resume, target, progress)


__all__ = ["RLPromptConfig", "RLPromptMethod", "RLPromptPolicy", "RolloutCollector", "build_task", "make_ppo",
           "train_rlprompt"]
