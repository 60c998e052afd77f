"""The one run loop (rlprompt.loop): cadence, best-prompt selection, budget, resume and the Trainer adapter, driven by
a toy stepped method over the scripted fake target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import FakeTarget
from rlprompt.errors import ConfigError, DataError
from rlprompt.loop import LOOP_STATE_FILE, MethodState, RunLoop
from rlprompt.runs import SUMMARY_KEYS

TEMPLATE, VERBALIZERS = "{prompt} {sentence}", ["no", "yes"]


@dataclass
class ToyConfig:
    """The fields the loop reads from a method's config."""

    method = "toy"
    seed: int = 0
    steps: int = 6
    eval_every: int = 2
    checkpoint_every: int = 3
    keep_checkpoints: int = 2
    max_target_queries: int | None = None
    inputs_per_step: int = 4

    def build_target(self, target):
        return target


def fake_target() -> FakeTarget:
    # the gold verbalizer's probability grows with the prompt's number: prompt "p3" beats "p1"
    return FakeTarget(lambda prompt, text, k, n: np.log([0.5, 0.1 + 0.1 * int(prompt[1:])]))


class Toy:
    """A stepped method: step t scores prompt "p<t % 5>" on ``inputs_per_step`` inputs; a weight counts the steps."""

    def __init__(self, cfg: ToyConfig, target: FakeTarget, fail_at: int | None = None) -> None:
        self.cfg, self.target, self.fail_at = cfg, target, fail_at
        self.weight = torch.zeros(1)
        self.t = 0

    def step(self):
        if self.t == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.t += 1
        self.weight += 1
        logp = self.target.classify(TEMPLATE, [f"p{self.t % 5}"], ["x"] * self.cfg.inputs_per_step, VERBALIZERS)
        return {"charts/reward": float(logp[0, :, 1].mean())}

    def step_cost(self):
        return self.cfg.inputs_per_step + 2  # the step and an evaluation of two candidates on one dev input

    def candidates(self):
        return {"greedy": [f"p{self.t % 5}"], "sampled": ["p0"]}

    def evaluate(self, prompt):
        logp = self.target.classify(TEMPLATE, [prompt], ["x"], VERBALIZERS)
        return float(np.exp(logp[0, 0, 1]))

    def stop_reason(self):
        return None

    def state_dict(self):
        return MethodState({"weight": self.weight.clone()}, {"t": self.t})

    def load_state_dict(self, state):
        self.weight = state.tensors["weight"].clone()
        self.t = state.state["t"]

    def details(self):
        return {"t": self.t}


def run_toy(cfg, path, *, resume=False, target=None, fail_at=None):
    target = target or fake_target()
    loop = RunLoop(cfg, path, resume=resume, target=target, progress=False)
    method = Toy(cfg, loop.target, fail_at)
    loop.run(method)
    return loop, method, loop.finish(details=method.details())


def test_loop_logs_every_step_evaluates_on_its_cadence_and_keeps_the_best_dev_prompt(tmp_path):
    loop, method, summary = run_toy(ToyConfig(), tmp_path / "run")
    assert list(summary) == list(SUMMARY_KEYS)
    rows = loop.run_dir.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "eval/best_accuracy" in r] == [2, 4, 6]
    # prompts p1..p4, p0 were greedy at steps 1..6; p4 (0.5) is the best seen at an evaluation (steps 2, 4, 6: p2, p4, p1)
    assert summary["best_prompt"] == "p4" and summary["dev_accuracy"] == pytest.approx(0.5)
    assert (tmp_path / "run" / "prompt.txt").read_text() == "p4"
    assert summary["steps"] == 6 and summary["stop_reason"] == "steps" and summary["details"] == {"t": 6}
    # 6 steps of 4 inputs, 3 evaluations of two distinct prompts on one input
    assert summary["target_queries"] == 6 * 4 + 3 * 2 == rows[-1]["target_queries"]
    assert all(r["perf/wall_seconds"] >= 0 for r in rows)
    assert [p.name for p in loop.run_dir.checkpoint_dirs()] == ["step_3", "step_6"]


def test_budget_stops_before_a_step_it_cannot_pay_for_and_evaluates_the_last_step(tmp_path):
    # each step spends 4 and is bounded by 6 (with an evaluation): after step 4 (16 spent) a fifth could pass 20, so
    # step 4 is the last and is evaluated (two prompts on one input: 18)
    loop, _, summary = run_toy(ToyConfig(max_target_queries=20, eval_every=10), tmp_path / "run")
    assert summary["stop_reason"] == "max_target_queries" and summary["steps"] == 4
    assert summary["target_queries"] == 18
    last = loop.run_dir.read_metrics()[-1]
    assert last["step"] == 4 and "eval/best_accuracy" in last
    assert [p.name for p in loop.run_dir.checkpoint_dirs()] == ["step_3", "step_4"]


def test_budget_checked_again_after_an_evaluation_stops_before_a_step_it_cannot_pay_for(tmp_path):
    # after step 2 (8 spent) a third step is affordable (8 + 6 <= 15), but step 2's evaluation spends 2 more: 10 + 6
    # passes 15, so step 2 is the last (a third step and its final evaluation would need 16)
    loop, _, summary = run_toy(ToyConfig(max_target_queries=15, eval_every=2), tmp_path / "run")
    assert summary["stop_reason"] == "max_target_queries" and summary["steps"] == 2
    assert summary["target_queries"] == 10
    assert [p.name for p in loop.run_dir.checkpoint_dirs()] == ["step_2"]  # the last step is checkpointed


def test_a_killed_run_resumes_from_its_checkpoint_without_repeating_metrics(tmp_path):
    cfg, path = ToyConfig(), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_toy(cfg, path, fail_at=4)  # dies in step 5, after the checkpoint at step 3 and the metrics of step 4
    loop, method, summary = run_toy(cfg, path, resume=True)
    assert [r["step"] for r in loop.run_dir.read_metrics()] == [1, 2, 3, 4, 5, 6]
    assert method.weight.item() == 6 and summary["details"] == {"t": 6}
    straight = run_toy(cfg, tmp_path / "straight")[2]
    # the queries of the lost step 4 are not counted again: the resumed count starts from the checkpoint's
    assert summary["target_queries"] == straight["target_queries"]
    assert summary["best_prompt"] == straight["best_prompt"]


def test_resume_refuses_a_changed_config_and_a_run_without_checkpoint(tmp_path):
    cfg, path = ToyConfig(), tmp_path / "run"
    run_toy(cfg, path)
    with pytest.raises(ConfigError, match="inputs_per_step"):
        RunLoop(ToyConfig(inputs_per_step=5), path, resume=True, target=fake_target(), progress=False)
    broken = tmp_path / "broken"
    loop = RunLoop(cfg, broken, target=fake_target(), progress=False)
    loop.log(1, {"charts/reward": 0.0})
    with pytest.raises(DataError, match="no intact checkpoint"):
        RunLoop(cfg, broken, resume=True, target=fake_target(), progress=False)
    old = tmp_path / "old"  # a checkpoint from before the loop: the method's state at the top level
    RunLoop(cfg, old, target=fake_target(), progress=False).run_dir.save_checkpoint(2, {}, {"greedy_prompt": "p1"})
    with pytest.raises(DataError, match="written before rlprompt's run loop"):
        RunLoop(cfg, old, resume=True, target=fake_target(), progress=False)


def test_affordable_steps_reserves_the_final_selection(tmp_path):
    loop = RunLoop(ToyConfig(steps=50, max_target_queries=100), tmp_path / "run", target=fake_target(),
                   progress=False)
    assert loop.affordable_steps(step_cost=8, reserve=30) == 8  # (100 - 30) // 8
    assert loop.affordable_steps(step_cost=0, reserve=100) == 50  # steps that query no target (DPO's) cost nothing
    assert RunLoop(ToyConfig(steps=5), tmp_path / "free", target=fake_target(), progress=False
                   ).affordable_steps(step_cost=8, reserve=30) == 5
    with pytest.raises(ConfigError, match="max_target_queries=100"):
        loop.affordable_steps(step_cost=8, reserve=101)


def test_trainer_callback_logs_steps_and_saves_the_loop_state_into_each_checkpoint(tmp_path):
    target = fake_target()
    loop = RunLoop(ToyConfig(max_target_queries=1000), tmp_path / "run", target=target, checkpoints="trainer",
                   progress=False)
    callback = loop.trainer_callback(extra=lambda: {"charts/minibatch_accuracy": 0.5})
    args = SimpleNamespace(output_dir=str(loop.run_dir.path / "checkpoints"))
    state, control = SimpleNamespace(global_step=1, is_world_process_zero=True, max_steps=2), SimpleNamespace()
    callback.on_step_begin(args, state, control)
    target.classify(TEMPLATE, ["p1"], ["x"] * 7, VERBALIZERS)
    callback.on_step_end(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 0.25, "kl": 0.1, "reward": 2.0, "flag": True})
    callback.on_log(args, state, control, logs={"train_runtime": 3.0})  # the end-of-run summary is not a step
    (tmp_path / "run" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    callback.on_save(args, state, control)
    rows = loop.run_dir.read_metrics()
    assert len(rows) == 1 and rows[0]["step"] == 1 and rows[0]["target_queries"] == 7
    assert rows[0]["losses/loss"] == 0.25 and rows[0]["losses/kl"] == 0.1 and rows[0]["charts/reward"] == 2.0
    assert rows[0]["charts/minibatch_accuracy"] == 0.5 and "charts/flag" not in rows[0]
    assert len(callback.step_seconds) == 1 and rows[0]["perf/seconds_per_step"] >= 0
    saved = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-1" / LOOP_STATE_FILE).read_text())
    assert saved["target_queries"] == 7
