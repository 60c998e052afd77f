"""MultiPrompter (Kim et al. 2023): turn order, segments, centralized critic, PPO updates, determinism, resume.

Tiny random Llama policy LM and the scripted fake target of ``test_rlprompt`` (log p(gold) grows with the
share of vowels in the prompt text).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlprompt.config import dump_config, load_config
from rlprompt.envs.multiprompter import MultiPrompterEnv
from rlprompt.policies.multiprompter import (MultiPrompterConfig, gae, make_multiprompter, observation, ppo_update,
                                             rollout, train_multiprompter)
from rlprompt.runs import RunDir
from tests.test_rlprompt import VOCAB, FakeTarget


def tiny_config(**overrides) -> MultiPrompterConfig:
    base = dict(policy_model="tiny-random", policy_dtype="float32", n_agents=3, segment_length=2, vocab=VOCAB,
                n_episodes=4, mlp_hidden=16, value_hidden=8, total_updates=4, eval_every=2, checkpoint_every=2,
                input_batch_size=4, eval_top_k=2, learning_rate=1e-2, keep_checkpoints=5)
    base.update(overrides)
    return MultiPrompterConfig(**base)


# -- turns and segments ---------------------------------------------------------------------------
def test_rollout_follows_the_env_turn_order_and_each_agent_writes_only_its_segment():
    cfg = tiny_config()
    env, policy, _ = make_multiprompter(cfg, FakeTarget())
    batch = rollout(policy, 5)
    obs = batch["obs"]  # (n, L, L + 2)
    assert obs.shape == (5, 6, 8)
    # the PettingZoo env gives the turn to prompter_{t // S}; our batched rollout observes the same agent
    env.reset(seed=0)
    for t in range(cfg.prompt_length):
        assert env.agent_selection == f"prompter_{t // cfg.segment_length}"
        expected = env.observe(env.agent_selection)
        assert obs[0, t, -2].item() == t and obs[0, t, -1].item() == expected[-1]
        before = env._tokens.copy()
        env.step(int(batch["actions"][0, t]))
        changed = np.flatnonzero(env._tokens != before)
        assert changed.tolist() == [t]  # only the slot of the acting agent's segment
        assert t // cfg.segment_length == int(obs[0, t, -1]) - 1
    assert env.terminations["prompter_0"] and np.array_equal(env._tokens, batch["tokens"][0])
    # each step only fills the next slot: earlier slots never change, later ones are still empty
    for t in range(cfg.prompt_length):
        assert torch.equal(obs[:, t, :t], torch.as_tensor(batch["tokens"][:, :t]))
        assert (obs[:, t, t:cfg.prompt_length] == 0).all()
    assert set(batch["tokens"].ravel()) <= set(VOCAB)


def test_centralized_critic_sees_the_joint_prompt_and_the_agent_index():
    cfg = tiny_config()
    _, policy, _ = make_multiprompter(cfg, FakeTarget())
    tokens = torch.tensor([[VOCAB[1], VOCAB[2], VOCAB[3], 0, 0, 0], [VOCAB[4], VOCAB[5], VOCAB[6], 0, 0, 0]])
    obs = observation(tokens, 3, cfg.segment_length)  # t = 3: agent 1's second token
    assert obs[:, -2:].tolist() == [[3, 2], [3, 2]]
    x = policy.critic_input(obs)
    hidden = policy.lm.config.hidden_size
    assert x.shape == (2, hidden + cfg.n_agents + 1)
    assert torch.equal(x[:, :hidden], policy.frozen_hidden(obs))  # the whole prompt so far
    assert x[:, hidden:hidden + 3].tolist() == [[0, 1, 0], [0, 1, 0]]  # one-hot agent index
    assert torch.allclose(x[:, -1], torch.full((2,), 3 / 6))
    assert not torch.equal(x[0, :hidden], x[1, :hidden])  # different joint prompts, different features
    other = obs.clone()
    other[:, -1] = 3  # same prompt, another agent index: the critic's input (and value) change
    assert policy.critic_input(other)[:, hidden:hidden + 3].tolist() == [[0, 0, 1], [0, 0, 1]]
    assert not torch.allclose(policy.value(obs), policy.value(other))
    # the untrained actor is the frozen LM's distribution over the action tokens
    h = policy.frozen_hidden(obs)
    assert torch.allclose(policy.logits(obs).softmax(-1), (h @ policy.head_weight.T).softmax(-1), atol=1e-3)
    policy.top_k = 3  # fluent restriction: only the frozen LM's top-3 action tokens keep probability
    probs = policy.logits(obs).softmax(-1)
    assert int((probs > 1e-6).sum(-1).max()) == 3
    assert torch.equal((probs > 1e-6), torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, (h @ policy.head_weight.T).topk(3, dim=-1).indices, True))


def test_gae_with_a_terminal_reward_matches_hand_computation():
    values = torch.tensor([[0.5, 1.0, 2.0]])
    adv, ret = gae(torch.tensor([3.0]), values, gamma=1.0, lam=0.5)
    # deltas: 0.5, 1.0, 1.0 -> A2 = 1, A1 = 1 + 0.5 * 1 = 1.5, A0 = 0.5 + 0.5 * 1.5 = 1.25
    assert torch.allclose(adv, torch.tensor([[1.25, 1.5, 1.0]]))
    assert torch.allclose(ret, adv + values)


# -- PPO ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared_head", [False, True])
def test_updates_change_every_agents_params_and_never_the_frozen_lm(shared_head):
    cfg = tiny_config(shared_head=shared_head)
    env, policy, optimizer = make_multiprompter(cfg, FakeTarget())
    names = {k for k, _ in policy.named_parameters()}
    if shared_head:
        assert {"actor.0.weight", "agent_embedding.weight"} <= names
    else:
        assert {f"actors.{k}.2.weight" for k in range(3)} <= names and not any(n.startswith("actor.") for n in names)
    assert set(policy.state_dict()) == names  # the frozen LM is not saved
    assert not {id(p) for g in optimizer.param_groups for p in g["params"]} & {id(p) for p in policy.lm.parameters()}
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    lm_before = {k: v.detach().clone() for k, v in policy.lm.named_parameters()}
    calls = env.scorer.target.stats.calls
    for _ in range(3):
        batch = rollout(policy, cfg.n_episodes)
        prompts = [f"p{i}" + "a" * int(batch["tokens"][i, 0] % 5) for i in range(cfg.n_episodes)]
        rewards, _ = env.scorer.score(prompts)
        stats = ppo_update(policy, optimizer, batch, torch.as_tensor(rewards, dtype=torch.float32), cfg)
    assert env.scorer.target.stats.calls == calls + 3  # one batched target call per update
    assert {f"losses/policy_loss_agent{k}" for k in range(3)} <= set(stats)
    for name, value in policy.named_parameters():
        assert not torch.equal(value, before[name]), f"trainable parameter {name} did not change"
    for name, value in policy.lm.named_parameters():
        assert torch.equal(value, lm_before[name]), f"frozen LM parameter {name} changed"


# -- training, determinism and resume -------------------------------------------------------------
def test_same_seed_same_run(tmp_path):
    runs = [train_multiprompter(tiny_config(seed=s, total_updates=2), tmp_path / f"r{i}", target=FakeTarget())
            for i, s in enumerate((5, 5, 6))]
    params = [RunDir(tmp_path / f"r{i}", resume=True).load_checkpoint().tensors for i in range(3)]
    metrics = [[{k: v for k, v in r.items() if k != "perf/wall_seconds"}
                for r in RunDir(tmp_path / f"r{i}", resume=True).read_metrics()] for i in range(3)]
    assert metrics[0] == metrics[1] and runs[0]["best_prompt"] == runs[1]["best_prompt"]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])
    assert not all(torch.equal(params[0][k], params[2][k]) for k in params[0])


def test_train_writes_the_run_and_resume_continues(tmp_path):
    full = train_multiprompter(tiny_config(), tmp_path / "full", target=FakeTarget())
    assert full["steps"] == 4 and full["stop_reason"] == "total_updates"
    run = RunDir(tmp_path / "full", resume=True)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert run.read_config() == dump_config(tiny_config())
    assert (run.path / "prompt.txt").read_text() == full["best_prompt"]
    assert {"charts/reward", "charts/raw_reward", "losses/value_loss", "losses/policy_loss_agent2",
            "eval/greedy_accuracy", "eval/best_accuracy"} <= set(records[1])
    assert records[1]["target_queries"] > records[0]["target_queries"] > 0

    half = train_multiprompter(tiny_config(total_updates=2), tmp_path / "half", target=FakeTarget())
    assert half["steps"] == 2
    resumed = train_multiprompter(tiny_config(), tmp_path / "half", resume=True, target=FakeTarget())
    assert resumed["steps"] == 4
    # the same training queries; the resumed process may re-evaluate dev prompts the full run had cached
    assert resumed["target_queries"] >= full["target_queries"]
    assert [r["step"] for r in RunDir(tmp_path / "half", resume=True).read_metrics()] == [1, 2, 3, 4]
    a, b = (RunDir(tmp_path / d, resume=True).load_checkpoint().tensors for d in ("full", "half"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    with pytest.raises(ValueError, match="already holds a run"):
        train_multiprompter(tiny_config(), tmp_path / "full", target=FakeTarget())
    with pytest.raises(ValueError, match="n_agents"):
        train_multiprompter(tiny_config(n_agents=2), tmp_path / "full", resume=True, target=FakeTarget())


def test_target_query_budget_stops_training(tmp_path):
    summary = train_multiprompter(tiny_config(total_updates=50, max_target_queries=150), tmp_path / "run",
                                  target=FakeTarget())
    assert summary["stop_reason"] == "max_target_queries" and 0 < summary["steps"] < 50
    assert summary["target_queries"] <= 150


def test_config_validation_names_bad_values():
    with pytest.raises(ValueError, match="n_agents.*0"):
        MultiPrompterConfig(n_agents=0)
    with pytest.raises(ValueError, match="gae_lambda.*1.5"):
        MultiPrompterConfig(gae_lambda=1.5)
    with pytest.raises(ValueError, match="n_episodes >= 2, got 1"):
        MultiPrompterConfig(n_episodes=1)
    with pytest.raises(ValueError, match=r"unknown config key"):
        load_config({"agents": 3}, MultiPrompterConfig)
    from dataclasses import fields

    from rlprompt.config import field_docs

    assert {f.name for f in fields(MultiPrompterConfig)} == set(field_docs(MultiPrompterConfig))


def test_env_is_a_valid_pettingzoo_env():
    from pettingzoo.test import api_test

    env = MultiPrompterEnv("sentiment", FakeTarget(), num_agents=2, segment_length=2, vocab=VOCAB, batch_size=4)
    api_test(env, num_cycles=3)
