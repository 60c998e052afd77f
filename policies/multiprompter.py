"""MultiPrompter: K cooperative prompter agents trained with multi-agent PPO against a frozen target.

Kim et al. 2023, "MultiPrompter: Cooperative Prompt Optimization with Multi-Agent Reinforcement Learning".
Agent ``k`` writes tokens ``[k*S, (k+1)*S)`` of one prompt, in the turn order and with the observations of
:class:`~rlprompt.envs.MultiPrompterEnv` (its :func:`~rlprompt.envs.multiprompter.acting_agent` and
:func:`~rlprompt.envs.multiprompter.observation`); all agents share the team reward the target gives the
finished prompt. ``n_agents=1`` is single-agent RLPrompt-style PPO through this same loop (the benchmark's K=1 arm).

Centralized training, decentralized execution (CTDE), precisely:

* each ACTOR is decentralized and RLPrompt-style (Deng et al. 2022). Actor ``k`` reads only ``h_t``, the frozen
  LM's last hidden state of the prompt so far: the text it continues, as the LM reads it. It is told nothing
  else: not the position ``t`` (beyond what ``h_t`` carries), not who wrote which token, not the critic's
  features. Its own parameters make it agent ``k``: its own MLP (``shared_head=True``: one MLP fed ``h_t + e_k``
  with a learned agent embedding ``e_k``), added residually and read out through the frozen LM head over the
  action tokens (:func:`~rlprompt.policies.rlprompt.head_logits`). Writing a prompt (``decode``) uses the actors alone;
* one CENTRALIZED critic reads the joint state: ``h_t``; every agent's segment SEPARATELY (for agent ``j``,
  the mean frozen input embedding of the tokens ``j`` has written so far, zeros before its turn: who wrote what);
  which agent acts (one-hot ``k``); and the position ``t / L``. Its value gives every agent its advantages (GAE)
  from the one team reward, and is used only in training;
* a compact PPO loop: ``n_episodes`` episodes roll out in lockstep, so they finish together and their
  prompts are scored in ONE :meth:`PromptScorer.score` call on one minibatch (z-scored per input); each agent's
  clipped objective is averaged over its own turns.

Layout: :class:`MultiPrompterConfig`, :class:`MultiPrompterPolicy`, the rollout and PPO math
(:func:`rollout`, :func:`gae`, :func:`ppo_update`), :class:`MultiPrompterMethod` (one rollout and update per step of
the run loop, :mod:`rlprompt.loop`) and :func:`train_multiprompter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rlprompt.config import check_positive
from rlprompt.envs.multiprompter import MultiPrompterEnv, acting_agent, observation
from rlprompt.envs.prompt_tokens import decode_prompt
from rlprompt.devices import resolve_device
from rlprompt.errors import ConfigError
from rlprompt.policies.token_ppo import (PrefixFeatures, TokenPPOConfig, TokenPPOMethod, actor_mlp, build_task,
                                        context_ids, frozen_policy_lm, head_logits, mlp, train_token_ppo)
from rlprompt.runs import RunDir
from rlprompt.targets import Target
from rlprompt.tasks import ClassificationTask


# -- config ---------------------------------------------------------------------------------------
@dataclass
class MultiPrompterConfig(TokenPPOConfig):
    """Everything a MultiPrompter run reads (Kim et al. 2023); YAML files may only set these fields."""

    method: ClassVar[str] = "multiprompter"

    n_agents: int = 2
    """K, the number of prompter agents."""
    segment_length: int = 3
    """Tokens each agent writes; the prompt has n_agents * segment_length tokens."""
    shared_head: bool = False
    """True: one actor MLP for all agents plus a learned agent embedding; False: one MLP per agent."""
    n_episodes: int = 16
    """Episodes per update; they finish together and are scored in one batched target call."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "n_agents", "segment_length", "n_episodes")
        if self.n_episodes < 2 and self.stabilizer in ("input_zscore", "batch_zscore"):
            raise ValueError(f"stabilizer={self.stabilizer!r} z-scores across prompts: needs n_episodes >= 2, "
                             f"got {self.n_episodes}")

    @property
    def prompt_length(self) -> int:
        """Total prompt tokens, n_agents * segment_length."""
        return self.n_agents * self.segment_length


# -- policy ---------------------------------------------------------------------------------------
class MultiPrompterPolicy(nn.Module):
    """K decentralized RLPrompt-style actors and one centralized critic (MultiPrompter, Kim et al. 2023, section 3).

    Observations are :class:`~rlprompt.envs.MultiPrompterEnv`'s: ``(B, L + 2)`` int64 = the whole
    prompt's token ids so far, the position ``t``, the agent number ``k + 1``. Actor ``k``:
    ``logits = W[action ids] @ (h + MLP_k(h))`` (shared head: ``MLP(h + e_k)``), ``h`` the frozen LM's
    hidden state of the prompt so far; ``top_k`` masks all but the frozen LM's top-k action tokens.
    Critic: ``MLP([h, segment_1, ..., segment_K, onehot(k), t / L]) -> V`` (:meth:`critic_input`). The frozen LM
    is not a submodule: ``parameters()`` and ``state_dict()`` hold only the trainable heads.
    """

    def __init__(self, lm: nn.Module, action_token_ids: np.ndarray, context_ids: list[int], n_agents: int,
                 prompt_length: int, *, shared_head: bool = False, mlp_hidden: int = 2048, value_hidden: int = 256,
                 top_k: int | None = None, cache_size: int = 50_000, head: str = "residual",
                 top_k_from: str = "frozen") -> None:
        super().__init__()
        if prompt_length % n_agents:
            raise ValueError(f"prompt_length={prompt_length} must be a multiple of n_agents={n_agents}")
        self.head, self.top_k_from = head, top_k_from
        object.__setattr__(self, "lm", lm)  # not a submodule: never optimised, never saved
        self.action_token_ids = torch.as_tensor(np.asarray(action_token_ids), dtype=torch.long)
        if int(self.action_token_ids.max()) >= lm.get_output_embeddings().weight.shape[0]:
            raise ConfigError("action token ids exceed the policy LM's vocabulary: policy and target tokenizers differ")
        self.features = PrefixFeatures(lm, context_ids, cache_size)
        self.n_agents, self.prompt_length, self.shared_head, self.top_k = n_agents, prompt_length, shared_head, top_k
        self.segment_length = prompt_length // n_agents
        h = int(lm.config.hidden_size)
        if shared_head:
            self.actor = actor_mlp(h, mlp_hidden, head)
            self.agent_embedding = nn.Embedding(n_agents, h)
            nn.init.normal_(self.agent_embedding.weight, std=0.02)
        else:
            self.actors = nn.ModuleList(actor_mlp(h, mlp_hidden, head) for _ in range(n_agents))
        self.critic = mlp(h * (1 + n_agents) + n_agents + 1, value_hidden, 1)
        head = lm.get_output_embeddings().weight.detach()[self.action_token_ids].float().clone()
        self.register_buffer("head_weight", head, persistent=False)

    def frozen_hidden(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` frozen LM features of the prompt so far (RLPrompt's :class:`PrefixFeatures`)."""
        return self.features(obs[:, :-1]).to(self.head_weight.device)  # drop the agent column: tokens + t

    def agent_of(self, obs: torch.Tensor) -> torch.Tensor:
        """The acting agent's 0-based index of each observation."""
        return obs[:, -1].long() - 1

    @torch.no_grad()
    def segments(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, K, hidden)``: for each agent ``j``, the mean frozen input embedding of the tokens it has written
        (slots ``< t`` of its segment), zeros before its turn. What every agent wrote, kept apart for the critic."""
        tokens, t = obs[:, : self.prompt_length].long(), obs[:, -2].long()
        written = (torch.arange(self.prompt_length) < t[:, None]).float()  # slots >= t are empty whatever they hold
        embed = self.lm.get_input_embeddings()
        emb = embed(tokens.to(embed.weight.device)).float().to(self.head_weight.device) * written[..., None]
        per_agent = emb.unflatten(1, (self.n_agents, self.segment_length)).sum(2)
        count = written.unflatten(1, (self.n_agents, self.segment_length)).sum(2).clamp(min=1)
        return per_agent / count[..., None]

    def critic_input(self, obs: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """The centralized critic's input ``(B, hidden * (K + 1) + K + 1)``: the joint prompt's features ``h``,
        every agent's segment (:meth:`segments`), the acting agent one-hot and ``t / L``."""
        h = self.frozen_hidden(obs) if h is None else h
        onehot = nn.functional.one_hot(self.agent_of(obs), self.n_agents).float()
        return torch.cat([h, self.segments(obs).flatten(1), onehot, obs[:, -2:-1].float() / self.prompt_length],
                         dim=-1)

    def logits(self, obs: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Action logits ``(B, A)`` of each observation's own agent (decentralized actors: they read ``h`` only)."""
        h = self.frozen_hidden(obs) if h is None else h
        agent = self.agent_of(obs)
        if self.shared_head:
            delta = self.actor(h + self.agent_embedding(agent))
        else:
            delta = torch.zeros_like(h)
            for k in agent.unique().tolist():
                rows = agent == k
                delta[rows] = self.actors[k](h[rows])
        return head_logits(h, delta, self.head_weight, head=self.head, top_k=self.top_k, top_k_from=self.top_k_from)

    def value(self, obs: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Centralized value ``(B,)``."""
        return self.critic(self.critic_input(obs, h)).squeeze(-1)

    @torch.no_grad()
    def decode(self, n: int = 1, deterministic: bool = True) -> np.ndarray:
        """Write ``n`` prompts in turn order (argmax when ``deterministic``): token ids ``(n, L)``."""
        return rollout(self, n, deterministic=deterministic)["tokens"]


# -- rollout and PPO ------------------------------------------------------------------------------
@torch.no_grad()
def rollout(policy: MultiPrompterPolicy, n: int, deterministic: bool = False) -> dict[str, Any]:
    """``n`` episodes in lockstep, in MultiPrompterEnv's turn order and with its observations (agent ``t // S``
    writes token ``t``).

    Returns ``obs (n, L, L + 2)``, ``actions``, ``log_probs``, ``values`` ``(n, L)`` and ``tokens (n, L)`` (numpy).
    """
    tokens = np.zeros((n, policy.prompt_length), dtype=np.int64)
    obs, actions, log_probs, values = [], [], [], []
    for t in range(policy.prompt_length):
        o = torch.from_numpy(observation(tokens, t, acting_agent(t, policy.segment_length)))
        h = policy.frozen_hidden(o)
        dist = torch.distributions.Categorical(logits=policy.logits(o, h))
        a = dist.probs.argmax(-1) if deterministic else dist.sample()
        obs.append(o), actions.append(a), log_probs.append(dist.log_prob(a)), values.append(policy.value(o, h))
        tokens[:, t] = policy.action_token_ids[a].numpy()
    return {"obs": torch.stack(obs, 1), "actions": torch.stack(actions, 1), "log_probs": torch.stack(log_probs, 1),
            "values": torch.stack(values, 1), "tokens": tokens}


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns ``(n, L)`` for episodes whose only reward ``rewards (n,)`` comes at the end."""
    n, length = values.shape
    adv = torch.zeros_like(values)
    last = torch.zeros(n)
    for t in reversed(range(length)):
        final = t == length - 1
        delta = (rewards if final else 0.0) + (0.0 if final else gamma * values[:, t + 1]) - values[:, t]
        last = delta + gamma * lam * (0.0 if final else last)
        adv[:, t] = last
    return adv, adv + values


def ppo_update(policy: MultiPrompterPolicy, optimizer: torch.optim.Optimizer, batch: dict[str, Any],
               rewards: torch.Tensor, cfg: MultiPrompterConfig) -> dict[str, float]:
    """PPO epochs on one rollout: each agent's clipped loss on its own turns, advantages from the critic."""
    obs = batch["obs"].flatten(0, 1)
    actions, old_logp = batch["actions"].flatten(), batch["log_probs"].flatten()
    adv, returns = gae(rewards, batch["values"], cfg.gamma, cfg.gae_lambda)
    adv, returns = adv.flatten(), returns.flatten()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.numel() > 1 else adv
    h = policy.frozen_hidden(obs)  # frozen: computed once for all epochs
    agent = policy.agent_of(obs)
    stats: dict[str, float] = {}
    for _ in range(cfg.n_epochs):
        dist = torch.distributions.Categorical(logits=policy.logits(obs, h))
        logp, entropy = dist.log_prob(actions), dist.entropy()
        ratio = torch.exp(logp - old_logp)
        surrogate = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * adv)
        policy_loss = torch.zeros(())
        for k in range(cfg.n_agents):  # one PPO objective per agent, each averaged over its own turns
            mine = agent == k
            loss_k = surrogate[mine].mean() - cfg.ent_coef * entropy[mine].mean()
            policy_loss = policy_loss + loss_k
            stats[f"losses/policy_loss_agent{k}"] = loss_k.item()
        value_loss = nn.functional.mse_loss(policy.value(obs, h), returns)
        optimizer.zero_grad()
        (policy_loss + cfg.vf_coef * value_loss).backward()
        nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            stats.update({"losses/value_loss": value_loss.item(), "losses/entropy": entropy.mean().item(),
                          "losses/approx_kl": (old_logp - logp).mean().item(),
                          "losses/clip_fraction": ((ratio - 1).abs() > cfg.clip_range).float().mean().item()})
    return stats


# -- training -------------------------------------------------------------------------------------
def make_multiprompter(cfg: MultiPrompterConfig, target: Target | None = None, task: ClassificationTask | None = None
                       ) -> tuple[MultiPrompterEnv, MultiPrompterPolicy, torch.optim.Optimizer]:
    """Build the env (scorer, tokenizer, action ids; reset, which seeds the scorer's minibatch sampler), policy and
    optimizer. The caller seeds the global generators first (the run loop does; the heads' initial weights and the
    rollouts draw from torch's). ``task``: the config's task, when the caller loaded it already."""
    task = task or build_task(cfg)
    target = cfg.build_target(target)
    env = MultiPrompterEnv(task, target, n_agents=cfg.n_agents, segment_length=cfg.segment_length, vocab=cfg.vocab,
                           reward=cfg.reward, stabilizer=cfg.stabilizer, batch_size=cfg.input_batch_size,
                           correct_coef=cfg.correct_coef, incorrect_coef=cfg.incorrect_coef)
    env.reset(seed=cfg.seed)
    device = resolve_device(cfg.device)
    lm = frozen_policy_lm(cfg, target, device)
    policy = MultiPrompterPolicy(lm, env.action_token_ids,
                                 context_ids(env.tokenizer, cfg.policy_context, cfg.policy_start),
                                 cfg.n_agents, cfg.prompt_length, shared_head=cfg.shared_head,
                                 mlp_hidden=cfg.mlp_hidden, value_hidden=cfg.value_hidden, top_k=cfg.top_k,
                                 cache_size=cfg.hidden_cache_size, head=cfg.policy_head, top_k_from=cfg.top_k_from)
    policy.to(device)
    return env, policy, torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)


class MultiPrompterMethod(TokenPPOMethod):
    """MultiPrompter (Kim et al. 2023) as a stepped method of the run loop (:class:`rlprompt.loop.Method`): each step
    rolls out ``n_episodes`` joint prompts, scores them in ONE batched :meth:`PromptScorer.score` call and runs
    :func:`ppo_update` on every agent with the centralized critic's advantages."""

    def __init__(self, cfg: MultiPrompterConfig, target: Target, task: ClassificationTask | None = None) -> None:
        env, policy, optimizer = make_multiprompter(cfg, target, task)
        super().__init__(cfg, env.scorer, env.tokenizer, policy, optimizer,
                         rollout_queries=cfg.n_episodes * cfg.input_batch_size)

    def step(self) -> dict[str, float]:
        """One rollout of ``n_episodes`` prompts and its PPO update."""
        batch = rollout(self.policy, self.cfg.n_episodes)
        prompts = [decode_prompt(self.tokenizer, row) for row in batch["tokens"]]
        rewards, infos = self.scorer.score(prompts)
        metrics = ppo_update(self.policy, self.optimizer, batch, torch.as_tensor(rewards, dtype=torch.float32),
                             self.cfg)
        metrics.update(self.record(prompts, rewards, infos))
        return metrics


def train_multiprompter(cfg: MultiPrompterConfig, run_dir: str | Path | RunDir, resume: bool = False, *,
                        target: Target | None = None, progress: bool = True) -> dict[str, Any]:
    """Train MultiPrompter (Kim et al. 2023) through the run loop (:class:`rlprompt.loop.RunLoop`) and return the
    run's summary (:class:`~rlprompt.runs.RunResult`; ``details``: the last greedy joint prompt).

    ``run_dir`` receives config.yaml, metrics.jsonl (``charts/*``, ``losses/*``, ``eval/*``, ``perf/*``),
    TensorBoard events, prompt.txt (best prompt on dev) and checkpoints. ``resume=True`` continues from the
    latest valid checkpoint. ``target`` overrides ``cfg.target`` (tests pass a scripted fake target);
    ``progress`` shows a progress bar.
    """
    return train_token_ppo(MultiPrompterMethod, cfg, run_dir, resume, target, progress)


__all__ = ["MultiPrompterConfig", "MultiPrompterMethod", "MultiPrompterPolicy", "gae", "make_multiprompter",
           "ppo_update", "rollout", "train_multiprompter"]
