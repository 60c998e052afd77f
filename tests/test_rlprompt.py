"""RLPrompt (Deng et al. 2022): the SB3 policy, PPO training, checkpoints/resume and the CLI.

Everything runs on a tiny random Llama policy and a scripted fake target whose label log-probs depend
on the prompt text (the more vowels, the more it favours the gold label), so some prompts are better.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from rlprompt.config import dump_config, load_config
from rlprompt.policies.rlprompt import RLPromptConfig, RLPromptPolicy, make_ppo, train_rlprompt
from rlprompt.runs import RunDir, seed_everything
from tests.conftest import FakeTarget, vowel_target

VOCAB = list(range(300, 364))


def tiny_config(**overrides) -> RLPromptConfig:
    base = dict(policy_model="tiny-random", policy_dtype="float32", n_envs=4, prompt_length=2, vocab=VOCAB,
                mlp_hidden=16, value_hidden=8, steps=4, eval_every=2, checkpoint_every=2, input_batch_size=4,
                eval_top_k=2, learning_rate=1e-2, keep_checkpoints=5)
    base.update(overrides)
    return RLPromptConfig(**base)


class _Prompts:
    """Collects the finished prompts of a learn() call."""

    def __init__(self):
        from stable_baselines3.common.callbacks import BaseCallback

        outer = self
        self.prompts: list[str] = []

        class CB(BaseCallback):
            def _on_step(self) -> bool:
                outer.prompts += [i["prompt"] for i in self.locals["infos"] if "prompt" in i]
                return True

        self.callback = CB()


# -- policy ---------------------------------------------------------------------------------------
@pytest.mark.model
def test_ppo_updates_every_trainable_parameter_and_never_the_frozen_lm():
    model = make_ppo(tiny_config(), vowel_target())
    policy: RLPromptPolicy = model.policy
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    lm_before = {k: v.detach().clone() for k, v in policy.lm.named_parameters()}
    assert set(before) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "value_head.0.weight",
                           "value_head.0.bias", "value_head.2.weight", "value_head.2.bias"}
    assert set(policy.state_dict()) == set(before)  # the frozen LM is not part of the saved state
    optimised = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in policy.lm.parameters()}
    for _ in range(3):
        model.learn(total_timesteps=model.n_steps * model.n_envs, reset_num_timesteps=False)
    for name, value in policy.named_parameters():
        assert not torch.equal(value, before[name]), f"trainable parameter {name} did not change"
    for name, value in policy.lm.named_parameters():
        assert torch.equal(value, lm_before[name]), f"frozen LM parameter {name} changed"


@pytest.mark.model
def test_the_frozen_policy_lm_is_the_targets_model_also_behind_a_response_cache(tiny_target, tmp_path):
    from rlprompt.policies.token_ppo import frozen_policy_lm
    from rlprompt.targets import CachedTarget

    cpu = torch.device("cpu")
    same = RLPromptConfig(policy_model="tiny-random", policy_dtype="float32")
    assert frozen_policy_lm(same, tiny_target, cpu) is tiny_target.model
    assert frozen_policy_lm(same, CachedTarget(tiny_target, tmp_path / "c.sqlite"), cpu) is tiny_target.model
    other = RLPromptConfig(policy_model="tiny-random", policy_dtype="bfloat16")
    assert frozen_policy_lm(other, tiny_target, cpu) is not tiny_target.model


@pytest.mark.model
def test_untrained_policy_is_the_frozen_lm_and_top_k_masks():
    model = make_ppo(tiny_config(top_k=3), vowel_target())
    policy: RLPromptPolicy = model.policy
    obs = torch.tensor([[0, 0, 0], [VOCAB[5], 0, 1]])
    h = policy.frozen_hidden(obs)
    frozen = torch.log_softmax(h @ policy.head_weight.T, -1)
    probs = policy.get_distribution(obs).distribution.probs
    assert int((probs > 1e-6).sum(-1).max()) == 3  # fluent top-k: three tokens left
    top = frozen.topk(3, dim=-1).indices
    assert torch.allclose(probs.gather(-1, top).sum(-1), torch.ones(2), atol=1e-5)
    # the hidden state is cached per prefix: same object content for a repeated prefix
    assert torch.equal(policy.frozen_hidden(obs[1:]), h[1:])
    tokens = policy.decode(3, deterministic=True)
    assert tokens.shape == (3, 2) and (tokens == tokens[0]).all() and set(tokens.ravel()) <= set(VOCAB)


@pytest.mark.model
def test_paper_setting_starts_near_uniform_over_its_own_top_k_after_a_neutral_start_token():
    """RLPrompt's original setting (adaptor head, top-k of its own logits, GPT-2's <|endoftext|> start): the
    untrained policy spreads its mass evenly over its own top-k tokens (the residual head starts as the frozen LM's
    own distribution: the test above), and it reads <|endoftext|> (id 0) instead of <|im_start|> (id 1)."""
    cfg = tiny_config(policy_head="adaptor", top_k=8, top_k_from="policy", policy_start="<|endoftext|>")
    paper = make_ppo(cfg, vowel_target()).policy
    residual = make_ppo(tiny_config(top_k=8), vowel_target()).policy
    assert paper.features.context_ids == [0] and residual.features.context_ids == [1]
    obs = torch.tensor([[0, 0, 0], [VOCAB[5], 0, 1]])
    probs = paper.get_distribution(obs).distribution.probs
    assert int((probs > 1e-6).sum(-1).max()) == 8
    kept = probs[probs > 1e-6]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 8), atol=1e-4)  # near uniform over its own top-8
    h = paper.frozen_hidden(obs)
    own = paper.mlp(h) @ paper.head_weight.T
    assert torch.equal((probs > 1e-6), torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, own.topk(8).indices, True))


@pytest.mark.model
def test_policy_start_must_be_one_token():
    with pytest.raises(ValueError, match="policy_head='paper'"):
        tiny_config(policy_head="paper")
    with pytest.raises(ValueError, match="exactly one"):
        make_ppo(tiny_config(policy_start="hello world"), vowel_target())


@pytest.mark.model
def test_same_seed_same_sampled_prompts():
    runs = []
    for seed in (5, 5, 6):
        seed_everything(seed)  # what the run loop does before it builds the method
        model = make_ppo(tiny_config(seed=seed), vowel_target())
        collect = _Prompts()
        model.learn(total_timesteps=2 * model.n_steps * model.n_envs, callback=collect.callback, reset_num_timesteps=False)
        runs.append(collect.prompts)
    assert len(runs[0]) == 8
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# -- training, checkpoints and resume --------------------------------------------------------------
def _params(run_dir):
    return RunDir(run_dir, resume=True).load_checkpoint().tensors


@pytest.mark.model
def test_train_writes_run_and_resume_matches_an_uninterrupted_run(tmp_path):
    target = vowel_target()
    full = train_rlprompt(tiny_config(), tmp_path / "full", target=target, progress=False)
    assert full["steps"] == 4 and full["stop_reason"] == "steps"
    run = RunDir(tmp_path / "full", resume=True)
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4]
    assert run.read_config() == dump_config(tiny_config())
    assert (run.path / "prompt.txt").read_text() == full["best_prompt"]
    assert [p.name for p in run.checkpoint_dirs()] == ["step_2", "step_4"]
    record = run.read_metrics()[1]
    assert {"charts/reward", "charts/raw_reward", "charts/train_accuracy", "losses/value_loss",
            "eval/greedy_accuracy", "eval/best_accuracy"} <= set(record)
    assert record["target_queries"] > run.read_metrics()[0]["target_queries"]

    half = train_rlprompt(tiny_config(steps=2), tmp_path / "half", target=vowel_target(), progress=False)
    assert half["steps"] == 2
    half_ckpt = RunDir(tmp_path / "half", resume=True).load_checkpoint()
    model = make_ppo(tiny_config(), vowel_target())
    model.policy.load_state_dict(half_ckpt.tensors)
    assert all(torch.equal(v, half_ckpt.tensors[k]) for k, v in model.policy.named_parameters())
    resumed = train_rlprompt(tiny_config(), tmp_path / "half", resume=True, target=vowel_target(), progress=False)
    assert resumed["steps"] == 4
    assert resumed["target_queries"] == full["target_queries"]
    assert [r["step"] for r in RunDir(tmp_path / "half", resume=True).read_metrics()] == [1, 2, 3, 4]
    a, b = _params(tmp_path / "full"), _params(tmp_path / "half")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    with pytest.raises(ValueError, match="already holds a run"):
        train_rlprompt(tiny_config(), tmp_path / "full", target=target, progress=False)


def text_vowel_target() -> FakeTarget:
    """:func:`vowel_target` whose first verbalizer also loses with the input's length, so the train minibatch the
    scorer draws shows in the rewards (a resumed run must restore the sampler to match a straight one)."""
    inner = vowel_target().scores

    def scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
        out = np.array(inner(prompt, text, k, position))
        out[0] -= 0.3 * (len(text) % 5)
        return out

    return FakeTarget(scores, name="text-vowel")


def kill_then_resume(train, cls, cfg, tmp_path, monkeypatch, *, die_in_step: int):
    """Run ``train`` straight, and again killed inside step ``die_in_step`` (its method's ``step`` raises
    KeyboardInterrupt there) then resumed, each on :func:`text_vowel_target`; return the two run directories' metrics
    without ``perf/`` and the two summaries."""
    vowel_target = text_vowel_target
    straight = train(cfg, tmp_path / "straight", target=vowel_target(), progress=False)
    step, calls = cls.step, []

    def dying(self):
        calls.append(1)
        if len(calls) == die_in_step:
            raise KeyboardInterrupt("killed")
        return step(self)

    monkeypatch.setattr(cls, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", target=vowel_target(), progress=False)
    monkeypatch.undo()
    killed = RunDir(tmp_path / "killed", resume=True)
    assert len(killed.read_metrics()) == die_in_step - 1 and killed.latest_checkpoint() is not None
    resumed = train(cfg, tmp_path / "killed", resume=True, target=vowel_target(), progress=False)
    rows = [[{k: v for k, v in r.items() if not k.startswith("perf/")} for r in RunDir(tmp_path / d, resume=True)
             .read_metrics()] for d in ("straight", "killed")]
    return rows, straight, resumed


@pytest.mark.model
def test_a_run_killed_mid_step_resumes_to_the_same_result_as_a_straight_run(tmp_path, monkeypatch):
    # checkpoints at steps 2 and 4; killed in step 4, after step 3 was logged: the resumed process drops step 3's
    # metrics, restarts from step 2 and must end where the straight run ends
    cfg = tiny_config(steps=5, checkpoint_every=2, eval_every=3)
    from rlprompt.policies.rlprompt import RLPromptMethod

    rows, straight, resumed = kill_then_resume(train_rlprompt, RLPromptMethod, cfg, tmp_path, monkeypatch,
                                               die_in_step=4)
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4, 5]
    assert rows[1] == rows[0]  # every charts/, losses/, eval/ value and target_queries, step by step
    assert {k: resumed[k] for k in ("best_prompt", "dev_accuracy", "target_queries", "steps", "details")} == \
        {k: straight[k] for k in ("best_prompt", "dev_accuracy", "target_queries", "steps", "details")}
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = RunDir(tmp_path / "killed", resume=True).load_checkpoint().state["method"]
    assert saved["num_timesteps"] == 5 * 4 * 2
    # the dev scores cached so far travel with the checkpoint (a resumed run does not pay for them again)
    assert saved["evaluations"] and {split for _, split, _ in saved["evaluations"]} == {"dev"}


@pytest.mark.model
def test_training_leaves_no_sb3_temp_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    train_rlprompt(tiny_config(steps=1), tmp_path / "run", target=vowel_target(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.model
def test_resume_skips_a_corrupt_checkpoint_and_truncates_metrics(tmp_path):
    train_rlprompt(tiny_config(steps=3), tmp_path / "run", target=vowel_target(), progress=False)
    newest = RunDir(tmp_path / "run", resume=True).checkpoint_dirs()[-1]
    assert newest.name == "step_3"
    (newest / "state.json").write_text("{}")  # corrupt: checksum mismatch
    summary = train_rlprompt(tiny_config(steps=3), tmp_path / "run", resume=True, target=vowel_target(),
                             progress=False)
    assert summary["steps"] == 3
    assert [r["step"] for r in RunDir(tmp_path / "run", resume=True).read_metrics()] == [1, 2, 3]


@pytest.mark.model
def test_target_query_budget_stops_training(tmp_path):
    summary = train_rlprompt(tiny_config(steps=50, max_target_queries=120), tmp_path / "run",
                             target=vowel_target(), progress=False)
    assert summary["stop_reason"] == "max_target_queries"
    assert 0 < summary["steps"] < 50
    assert summary["target_queries"] <= 120
    assert RunDir(tmp_path / "run", resume=True).latest_checkpoint() is not None


def test_config_validation_names_bad_values():
    with pytest.raises(ValueError, match="prompt_length.*0"):
        RLPromptConfig(prompt_length=0)
    with pytest.raises(ValueError, match="ppo_minibatch_size=7"):
        RLPromptConfig(ppo_minibatch_size=7)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lr'\].*learning_rate"):
        load_config({"lr": 1e-3}, RLPromptConfig)


def test_every_config_field_is_documented():
    from dataclasses import fields

    from rlprompt.config import field_docs

    docs = field_docs(RLPromptConfig)
    assert {f.name for f in fields(RLPromptConfig)} == set(docs)


# -- CLI --------------------------------------------------------------------------------------------
def _tiny_cli_config(tmp_path, *, steps: int, eval_every: int):
    """A YAML config for `rlprompt train` on the tiny random policy and target, checkpointing every 2 updates."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "method: rlprompt\ntask: sentiment\ntarget: tiny-random\ntarget_dtype: float32\npolicy_model: tiny-random\n"
        "policy_dtype: float32\nprompt_length: 2\nn_envs: 4\nmlp_hidden: 16\nvalue_hidden: 8\ninput_batch_size: 4\n"
        f"vocab: {VOCAB}\nsteps: {steps}\neval_every: {eval_every}\ncheckpoint_every: 2\n"
    )
    return config


@pytest.mark.model
@pytest.mark.subprocess
def test_cli_train_and_report_smoke(tmp_path):
    config = _tiny_cli_config(tmp_path, steps=50, eval_every=2)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlprompt.cli", "train", str(config), "--run-dir", str(run_dir), "steps=3"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3
    for name in ("config.yaml", "metrics.jsonl", "prompt.txt", "checkpoints/step_3/model.safetensors"):
        assert (run_dir / name).is_file(), name
    bad = subprocess.run([sys.executable, "-m", "rlprompt.cli", "train", str(config), "--run-dir", str(tmp_path / "b"),
                          "learning_rat=1"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "learning_rat" in bad.stderr
    report = subprocess.run([sys.executable, "-m", "rlprompt.cli", "report", str(run_dir), "--out", str(tmp_path / "rep")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert report.returncode == 0, report.stderr
    assert all((tmp_path / "rep" / name).is_file() for name in ("report.md", "report.json", "run.png"))


@pytest.mark.model
@pytest.mark.subprocess
def test_kill_9_then_resume_loses_at_most_one_checkpoint_interval(tmp_path):
    """`kill -9` of `rlprompt train` mid-run, then `--resume`: the run finishes with every update logged once."""
    config = _tiny_cli_config(tmp_path, steps=400, eval_every=5)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlprompt.cli", "train", str(config), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints").is_dir() or len(list((run_dir / "checkpoints").glob("step_*"))) < 2:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no second checkpoint within 240 s"
            time.sleep(0.05)
        time.sleep(0.3)  # land somewhere inside the next checkpoint interval
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    latest = max(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    # at most one checkpoint interval (2) past the newest checkpoint: a kill while step n's checkpoint is being written
    # leaves step n logged and step n - 2 the newest intact checkpoint
    assert max(logged) - latest <= 2
    target = max(logged) + 3
    out = subprocess.run(cmd + ["--resume", f"steps={target}"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert steps == list(range(1, target + 1))  # nothing lost before the checkpoint, nothing logged twice
    assert json.loads(out.stdout.strip().splitlines()[-1])["steps"] == target
