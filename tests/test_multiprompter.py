"""MultiPrompter (Kim et al. 2023): turn order, segments, centralized critic, PPO updates, determinism, resume,
K = 1 through the same loop, and the K = 1, 2, 3 benchmark (seeds, parts, resume, report).

Tiny random Llama policy LM and the scripted fake target ``tests.conftest.vowel_target`` (log p(gold) grows with the
share of vowels in the prompt text).
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from rlprompt.config import dump_config, load_config
from rlprompt.envs.multiprompter import MultiPrompterEnv, observation
from rlprompt.policies.multiprompter import (MultiPrompterConfig, MultiPrompterMethod, gae, make_multiprompter,
                                             ppo_update, rollout, train_multiprompter)
from rlprompt.runs import RunDir
from tests.conftest import vowel_target
from tests.test_rlprompt import VOCAB, kill_then_resume


def tiny_config(**overrides) -> MultiPrompterConfig:
    base = dict(policy_model="tiny-random", policy_dtype="float32", n_agents=3, segment_length=2, vocab=VOCAB,
                n_episodes=4, mlp_hidden=16, value_hidden=8, steps=4, eval_every=2, checkpoint_every=2,
                input_batch_size=4, eval_top_k=2, learning_rate=1e-2, keep_checkpoints=5)
    base.update(overrides)
    return MultiPrompterConfig(**base)


# -- turns and segments ---------------------------------------------------------------------------
@pytest.mark.model
def test_rollout_follows_the_env_turn_order_and_each_agent_writes_only_its_segment():
    cfg = tiny_config()
    env, policy, _ = make_multiprompter(cfg, vowel_target())
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


@pytest.mark.model
def test_centralized_critic_sees_the_joint_prompt_every_segment_the_agent_and_the_position():
    cfg = tiny_config()  # K = 3 agents x S = 2 tokens
    _, policy, _ = make_multiprompter(cfg, vowel_target())
    tokens = np.array([[VOCAB[1], VOCAB[2], VOCAB[3], 0, 0, 0], [VOCAB[4], VOCAB[5], VOCAB[6], 0, 0, 0]])
    obs = torch.from_numpy(observation(tokens, 3, 1))  # t = 3: agent 1's second token
    assert obs[:, -2:].tolist() == [[3, 2], [3, 2]]
    x = policy.critic_input(obs)
    hidden = policy.lm.config.hidden_size
    assert x.shape == (2, hidden * 4 + cfg.n_agents + 1)
    assert torch.equal(x[:, :hidden], policy.frozen_hidden(obs))  # the whole prompt so far
    emb = policy.lm.get_input_embeddings().weight.detach().float()
    segments = x[:, hidden: 4 * hidden].reshape(2, 3, hidden)  # agent j's own tokens, apart from the others'
    assert torch.allclose(segments[0, 0], emb[[VOCAB[1], VOCAB[2]]].mean(0), atol=1e-6)
    assert torch.allclose(segments[0, 1], emb[VOCAB[3]], atol=1e-6)  # only what agent 1 has written so far
    assert torch.equal(segments[:, 2], torch.zeros(2, hidden))  # agent 2 has not written yet
    assert x[:, 4 * hidden: 4 * hidden + 3].tolist() == [[0, 1, 0], [0, 1, 0]]  # one-hot agent index
    assert torch.allclose(x[:, -1], torch.full((2,), 3 / 6))
    garbage = obs.clone()
    garbage[:, 3:6] = VOCAB[9]  # slots not written yet do not count, whatever they hold
    assert torch.equal(policy.critic_input(garbage), x)
    other = obs.clone()
    other[:, -1] = 3  # same prompt, another agent index: the critic's input (and value) change
    assert policy.critic_input(other)[:, 4 * hidden: 4 * hidden + 3].tolist() == [[0, 0, 1], [0, 0, 1]]
    assert not torch.allclose(policy.value(obs), policy.value(other))
    # the untrained actor is the frozen LM's distribution over the action tokens
    h = policy.frozen_hidden(obs)
    assert torch.allclose(policy.logits(obs).softmax(-1), (h @ policy.head_weight.T).softmax(-1), atol=1e-3)
    policy.top_k = 3  # fluent restriction: only the frozen LM's top-3 action tokens keep probability
    probs = policy.logits(obs).softmax(-1)
    assert int((probs > 1e-6).sum(-1).max()) == 3
    assert torch.equal((probs > 1e-6), torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, (h @ policy.head_weight.T).topk(3, dim=-1).indices, True))


@pytest.mark.parametrize("shared_head", [False, True])
@pytest.mark.model
def test_the_critic_reads_who_wrote_what_and_the_actors_read_only_the_prompt_so_far(shared_head):
    """CTDE: given the same frozen features h of the prompt so far, an actor's logits do not depend on the
    critic-only inputs (each agent's segment apart, the position), while the centralized value does."""
    _, policy, optimizer = make_multiprompter(tiny_config(shared_head=shared_head), vowel_target())
    a = np.array([[VOCAB[1], VOCAB[2], VOCAB[3], VOCAB[4], 0, 0]])
    b = a.copy()
    b[0, :2] = [VOCAB[7], VOCAB[8]]  # agent 0 wrote something else; agent 2 acts at t = 4
    obs_a, obs_b = (torch.from_numpy(observation(x, 4, 2)) for x in (a, b))
    h = policy.frozen_hidden(obs_a)  # one actor input for both: what the LM reads is held fixed
    assert torch.equal(policy.logits(obs_a, h), policy.logits(obs_b, h))
    assert not torch.allclose(policy.value(obs_a, h), policy.value(obs_b, h))
    later = obs_a.clone()
    later[:, -2] = 5  # the same agent and features at another position
    assert torch.equal(policy.logits(later, h), policy.logits(obs_a, h))
    assert not torch.allclose(policy.value(later, h), policy.value(obs_a, h))
    # the actor loss reaches no critic parameter, the value loss no actor parameter
    policy.logits(obs_a, h).logsumexp(-1).sum().backward()
    assert all(p.grad is None for p in policy.critic.parameters())
    optimizer.zero_grad(set_to_none=True)
    policy.value(obs_a, h).sum().backward()
    critic = {id(p) for p in policy.critic.parameters()}
    assert all(p.grad is None for p in policy.parameters() if id(p) not in critic)


def test_gae_with_a_terminal_reward_matches_hand_computation():
    values = torch.tensor([[0.5, 1.0, 2.0]])
    adv, ret = gae(torch.tensor([3.0]), values, gamma=1.0, lam=0.5)
    # deltas: 0.5, 1.0, 1.0 -> A2 = 1, A1 = 1 + 0.5 * 1 = 1.5, A0 = 0.5 + 0.5 * 1.5 = 1.25
    assert torch.allclose(adv, torch.tensor([[1.25, 1.5, 1.0]]))
    assert torch.allclose(ret, adv + values)


# -- PPO ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared_head", [False, True])
@pytest.mark.model
def test_updates_change_every_agents_params_and_never_the_frozen_lm(shared_head):
    cfg = tiny_config(shared_head=shared_head)
    env, policy, optimizer = make_multiprompter(cfg, vowel_target())
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
@pytest.mark.model
def test_same_seed_same_run(tmp_path):
    runs = [train_multiprompter(tiny_config(seed=s, steps=2), tmp_path / f"r{i}", target=vowel_target())
            for i, s in enumerate((5, 5, 6))]
    params = [RunDir(tmp_path / f"r{i}", resume=True).load_checkpoint().tensors for i in range(3)]
    metrics = [[{k: v for k, v in r.items() if k != "perf/wall_seconds"}
                for r in RunDir(tmp_path / f"r{i}", resume=True).read_metrics()] for i in range(3)]
    assert metrics[0] == metrics[1] and runs[0]["best_prompt"] == runs[1]["best_prompt"]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])
    assert not all(torch.equal(params[0][k], params[2][k]) for k in params[0])


@pytest.mark.model
def test_train_writes_the_run_and_resume_continues(tmp_path):
    full = train_multiprompter(tiny_config(), tmp_path / "full", target=vowel_target())
    assert full["steps"] == 4 and full["stop_reason"] == "steps"
    run = RunDir(tmp_path / "full", resume=True)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert run.read_config() == dump_config(tiny_config())
    assert (run.path / "prompt.txt").read_text() == full["best_prompt"]
    assert {"charts/reward", "charts/raw_reward", "losses/value_loss", "losses/policy_loss_agent2",
            "eval/greedy_accuracy", "eval/best_accuracy"} <= set(records[1])
    assert records[1]["target_queries"] > records[0]["target_queries"] > 0

    half = train_multiprompter(tiny_config(steps=2), tmp_path / "half", target=vowel_target())
    assert half["steps"] == 2
    resumed = train_multiprompter(tiny_config(), tmp_path / "half", resume=True, target=vowel_target())
    assert resumed["steps"] == 4
    # the same training queries; the resumed process may re-evaluate dev prompts the full run had cached
    assert resumed["target_queries"] >= full["target_queries"]
    assert [r["step"] for r in RunDir(tmp_path / "half", resume=True).read_metrics()] == [1, 2, 3, 4]
    a, b = (RunDir(tmp_path / d, resume=True).load_checkpoint().tensors for d in ("full", "half"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    with pytest.raises(ValueError, match="already holds a run"):
        train_multiprompter(tiny_config(), tmp_path / "full", target=vowel_target())
    with pytest.raises(ValueError, match="n_agents"):
        train_multiprompter(tiny_config(n_agents=2), tmp_path / "full", resume=True, target=vowel_target())


@pytest.mark.model
def test_a_run_killed_mid_step_resumes_to_the_same_result_as_a_straight_run(tmp_path, monkeypatch):
    # checkpoints at steps 2 and 4; killed in step 4, after step 3 was logged: the resumed process drops step 3's
    # metrics, restarts from step 2 and must end where the straight run ends
    rows, straight, resumed = kill_then_resume(train_multiprompter, MultiPrompterMethod,
                                               tiny_config(steps=5, checkpoint_every=2, eval_every=3), tmp_path,
                                               monkeypatch, die_in_step=4)
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4, 5]
    assert rows[1] == rows[0]  # every charts/, losses/, eval/ value and target_queries, step by step
    assert {k: resumed[k] for k in ("best_prompt", "dev_accuracy", "target_queries", "steps", "details")} == \
        {k: straight[k] for k in ("best_prompt", "dev_accuracy", "target_queries", "steps", "details")}
    a, b = (RunDir(tmp_path / d, resume=True).load_checkpoint().tensors for d in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.model
def test_target_query_budget_stops_training(tmp_path):
    summary = train_multiprompter(tiny_config(steps=50, max_target_queries=150), tmp_path / "run",
                                  target=vowel_target())
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


@pytest.mark.model
def test_env_is_a_valid_pettingzoo_env():
    from pettingzoo.test import api_test

    env = MultiPrompterEnv("sentiment", vowel_target(), n_agents=2, segment_length=2, vocab=VOCAB, batch_size=4)
    api_test(env, num_cycles=3)


@pytest.mark.model
def test_env_calls_k_n_agents_as_the_config_does_and_reads_the_old_name_with_a_warning():
    with pytest.warns(FutureWarning, match=r"num_agents=\) is deprecated: pass n_agents="):
        old = MultiPrompterEnv("sentiment", vowel_target(), num_agents=3, segment_length=2, vocab=VOCAB, batch_size=4)
    new = MultiPrompterEnv("sentiment", vowel_target(), n_agents=3, segment_length=2, vocab=VOCAB, batch_size=4)
    assert old.possible_agents == new.possible_agents == ["prompter_0", "prompter_1", "prompter_2"]
    assert old.prompt_length == new.prompt_length == 6


# -- K = 1 through the same loop ------------------------------------------------------------------
@pytest.mark.model
def test_one_agent_trains_through_the_same_loop(tmp_path):
    cfg = tiny_config(n_agents=1, segment_length=6)
    summary = train_multiprompter(cfg, tmp_path / "k1", target=vowel_target())
    assert summary["steps"] == 4 and summary["best_prompt"]
    last = RunDir(tmp_path / "k1", resume=True).read_metrics()[-1]
    assert "losses/policy_loss_agent0" in last and not any("agent1" in k for k in last)
    _, policy, _ = make_multiprompter(cfg, vowel_target())
    batch = rollout(policy, 3)
    assert (batch["obs"][..., -1] == 1).all() and batch["tokens"].shape == (3, 6)
    hidden = policy.lm.config.hidden_size
    assert policy.critic_input(batch["obs"][:, 2]).shape == (3, 2 * hidden + 2)


# -- the benchmark: K = 1, 2, 3 through one loop ----------------------------------------------------
@pytest.fixture
def bench_setup(tmp_path):
    """An RLPrompt-style 16-shot directory (two data seeds) made of the built-in sentiment task, which the fake
    target knows, and a tiny benchmark config over it."""
    from rlprompt.tasks import load_task

    import experiments.multiprompter_bench as bench

    task = load_task("sentiment")
    data = tmp_path / "sst-2"

    def write(path, split):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{t}\t{y}" for t, y in zip(split.texts, split.labels)]
        path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")

    for seed in ("16-100", "16-13"):
        write(data / seed / "train.tsv", task.split("train"))
        write(data / seed / "dev.tsv", task.split("dev"))
    write(data / "test.tsv", task.split("test"))
    config = tmp_path / "bench.yaml"
    config.write_text(dump_yaml({**dict(method="multiprompter", task=str(data), template="{sentence} {prompt}",
                                        verbalizers=[" terrible", " great"]),
                                 **{k: v for k, v in dump_config(tiny_config()).items() if k not in (
                                     "method", "task", "template", "verbalizers", "n_agents", "segment_length")},
                                 "eval_every": 1, "eval_top_k": 1}), encoding="utf-8")

    def run(*argv, **kwargs):
        return bench.main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out" / "mp.json"), *argv], target=vowel_target(), **kwargs)

    return bench, run, tmp_path


def dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.model
def test_bench_policy_seed_differs_per_data_seed_across_separate_calls(bench_setup):
    bench, run, tmp = bench_setup
    for seed in ("16-100", "16-13"):  # one data seed per call, as when seeds run in parallel processes
        assert run("--task-seeds", seed, "--arms", "k2", "--updates", "1", "--test-limit", "8") == 0
    seeds = {s: RunDir(tmp / "runs" / "k2" / s, resume=True).read_config()["seed"] for s in ("16-100", "16-13")}
    assert seeds == {"16-100": 0, "16-13": 1}
    base = MultiPrompterConfig()
    assert {bench.arm_config(base, arm, "16-13", 6, 2).seed for arm in bench.ARMS} == {1}  # paired arms
    with pytest.raises(ValueError, match="16-7"):
        bench.policy_seed("16-7")


@pytest.mark.model
def test_bench_runs_every_arm_through_one_loop_writes_parts_resumes_and_reports(bench_setup, monkeypatch):
    import json

    bench, run, tmp = bench_setup
    assert run("--task-seeds", "16-100", "--updates", "1", "--test-limit", "20") == 0
    out = tmp / "out" / "mp.json"
    result = json.loads(out.read_text())
    assert list(result["arms"]) == ["k1", "k2", "k3"] and len(result["test_labels"]) == 20
    for arm, k in bench.ARMS.items():
        (r,) = result["arms"][arm]["runs"]
        config = RunDir(r["run_dir"], resume=True).read_config()
        assert config["method"] == "multiprompter" and config["n_agents"] == k and config["segment_length"] == 6 // k
        metrics = RunDir(r["run_dir"], resume=True).read_metrics()
        assert f"losses/policy_loss_agent{k - 1}" in metrics[-1]  # the custom MultiPrompter loop, K=1 included
        assert len(r["test_predictions"]) == 20 and set(r["test_predictions"]) <= {"0", "1"}
        assert r["test_accuracy"] == pytest.approx(
            float(np.mean([p == y for p, y in zip(r["test_predictions"], result["test_labels"])])))
        assert r["policy_seed"] == 0 and r["command"].startswith("python experiments/multiprompter_bench.py")
    queries = [result["arms"][a]["runs"][0]["target_queries"] for a in bench.ARMS]
    assert max(queries) - min(queries) <= 2 * 32  # equal training budgets; dev prompts scored once may differ
    assert {"k1", "k2", "k3", "k2-k1", "k3-k1"} <= set(result["intervals"])
    text = out.with_suffix(".md").read_text()
    assert text == bench.markdown(result) and "(fewer updates; compare them with care): none." in text
    number = r"[+-]?\d\.\d{3}"
    assert re.search(rf"\| k3 \| 1 \| {number} \| {number} \| {number} \| {number} \[{number}, {number}\] "
                     rf"\((better|worse|inside the noise)\) \|", text)  # K=3 minus K=1, paired bootstrap interval
    assert out.with_suffix(".png").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished part was trained again")

    monkeypatch.setattr(bench, "train_multiprompter", no_training)
    assert run("--task-seeds", "16-100", "--updates", "1", "--test-limit", "20") == 0  # finished parts are skipped
    monkeypatch.undo()
    first = RunDir(tmp / "runs" / "k1" / "16-100", resume=True).read_metrics()
    assert run("--task-seeds", "16-100", "--arms", "k1", "--updates", "2", "--test-limit", "20") == 0
    resumed = RunDir(tmp / "runs" / "k1" / "16-100", resume=True).read_metrics()
    assert [m["step"] for m in resumed] == [1, 2] and resumed[0] == first[0]  # continued from the checkpoint
    assert json.loads(out.read_text())["arms"]["k1"]["runs"][0]["updates"] == 2
    assert "compare them with care): k2/16-100 (1), k3/16-100 (1)." in out.with_suffix(".md").read_text()
    killed = tmp / "runs" / "k3" / "16-100"  # killed before its first checkpoint: it starts again
    for checkpoint in RunDir(killed, resume=True).checkpoint_dirs():
        shutil.rmtree(checkpoint)
    (tmp / "runs" / "parts" / "k3-16-100.json").unlink()
    assert run("--task-seeds", "16-100", "--arms", "k3", "--updates", "1", "--test-limit", "20") == 0
    assert [m["step"] for m in RunDir(killed, resume=True).read_metrics()] == [1]
    out.unlink()
    out.with_suffix(".md").unlink()
    assert run("--report-only") == 0
    again = json.loads(out.read_text())
    assert again["arms"]["k1"]["runs"][0]["updates"] == 2
    assert out.with_suffix(".md").read_text() == bench.markdown(again)
    with pytest.raises(ValueError, match="other test examples"):
        run("--task-seeds", "16-100", "--arms", "k1", "--updates", "2", "--test-limit", "10")
