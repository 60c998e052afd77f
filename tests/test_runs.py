"""Run directories (rlprompt.runs) and typed config loading (rlprompt.config)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rlprompt.config import config_method, dump_config, load_config, parse_overrides
from rlprompt.errors import ConfigError
from rlprompt.runs import (SUMMARY_KEYS, QueryBudget, RunClock, RunDir, RunResult, config_hash, rng_state,
                           seed_everything, set_rng_state)


@dataclass
class _Cfg:
    """A small config for the loader tests."""

    name: str = "x"
    """A name."""
    rate: float = 0.1
    """A float."""
    count: int = 2
    """An int."""
    flag: bool = False
    """A bool."""
    ids: list[int] | None = None
    """Optional ints."""


# -- config ---------------------------------------------------------------------------------------
def test_load_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\nrate: 1\nids: [3, 4]\n")
    cfg = load_config(path, _Cfg, ["count=5", "flag=true", "rate=2e-3"])
    assert cfg == _Cfg(name="run", rate=2e-3, count=5, flag=True, ids=[3, 4])
    assert isinstance(load_config(path, _Cfg).rate, float)  # int 1 accepted for a float field
    assert dump_config(cfg) == {"name": "run", "rate": 2e-3, "count": 5, "flag": True, "ids": [3, 4]}


def test_unknown_config_key_names_key_and_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['learning_rat'\].*valid keys: \['count', 'flag'"):
        load_config({"learning_rat": 0.1}, _Cfg)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config({}, _Cfg, ["nope=1"])


def test_wrong_type_names_field_and_value():
    with pytest.raises(ValueError, match=r"'count'.*expects int, got 'many'"):
        load_config({"count": "many"}, _Cfg)
    with pytest.raises(ValueError, match=r"'flag'.*got 1"):
        load_config({"flag": 1}, _Cfg)
    with pytest.raises(ValueError, match=r"'ids'"):
        load_config({"ids": ["a"]}, _Cfg)


def test_overrides_parse_yaml_scalars_and_reject_garbage():
    assert parse_overrides(["a=1", "b=null", "c=[1, 2]", "d=hello", "e=0.5"]) == {
        "a": 1, "b": None, "c": [1, 2], "d": "hello", "e": 0.5}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["novalue"])


def test_method_key_dispatch():
    from rlprompt.policies.rlprompt import RLPromptConfig

    assert config_method({"method": "rlprompt", "task": "x"}) == "rlprompt"
    assert config_method({}) == "rlprompt"
    cfg = load_config({"method": "rlprompt", "prompt_length": 3}, RLPromptConfig)
    assert cfg.prompt_length == 3 and dump_config(cfg)["method"] == "rlprompt"
    with pytest.raises(ValueError, match="method='dpo'"):
        load_config({"method": "dpo"}, RLPromptConfig)


# -- run directory --------------------------------------------------------------------------------
def _save(run: RunDir, step: int, value: float):
    return run.save_checkpoint(step, {"w": torch.full((3,), value)}, {"best": value}, keep=None)


def test_run_dir_files_and_metrics(tmp_path):
    with RunDir(tmp_path / "run") as run:
        run.write_config({"a": 1})
        run.log(1, {"charts/reward": 0.5}, target_queries=10)
        run.log(2, {"charts/reward": 0.7, "eval/accuracy": 0.6}, target_queries=20)
        run.write_prompt("It was")
        with pytest.raises(ValueError, match="namespaces"):
            run.log(3, {"reward": 1.0}, target_queries=30)
    assert run.read_config() == {"a": 1}
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    assert run.read_metrics()[1] == {"step": 2, "target_queries": 20, "charts/reward": 0.7, "eval/accuracy": 0.6}
    assert (run.path / "prompt.txt").read_text() == "It was"
    assert list(run.path.glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="already holds a run"):
        RunDir(tmp_path / "run")


def test_run_result_writes_the_common_summary(tmp_path):
    """Issue 14: every method's summary.json has the same top-level keys, in order, and a config hash that
    follows config.yaml (its key order aside)."""
    run = RunDir(tmp_path / "run", tensorboard=False)
    run.write_config({"method": "prewrite", "steps": 3, "seed": 0})
    result = RunResult(method="prewrite", best_prompt="Classify it.", dev_accuracy=np.float64(0.75), target_queries=12,
                       steps=3, stop_reason="max_target_queries", wall_seconds=1.5, details={"pairs": np.int64(4)})
    summary = result.write(run)
    assert tuple(summary) == SUMMARY_KEYS and json.loads((run.path / "summary.json").read_text()) == summary
    assert summary["run_dir"] == str(run.path) and summary["test_accuracy"] is None
    assert summary["details"] == {"pairs": 4} and summary["dev_accuracy"] == 0.75
    assert summary["config_hash"] == config_hash({"seed": 0, "steps": 3, "method": "prewrite"}) != config_hash(
        {"method": "prewrite", "steps": 4, "seed": 0})
    assert len(summary["config_hash"]) == 12
    with pytest.raises(ConfigError, match="'out_of_time'"):
        RunResult(method="x", best_prompt=None, dev_accuracy=None, target_queries=0, steps=0,
                  stop_reason="out_of_time", wall_seconds=0.0)


class _CountingTarget:
    """Stands in for a Target: what QueryBudget reads and sets."""

    def __init__(self, sequences: int = 0) -> None:
        self.stats = type("Stats", (), {"sequences": sequences})()
        self.max_sequences: int | None = None


def test_query_budget_counts_this_runs_sequences_and_guards_the_target():
    target = _CountingTarget(sequences=1000)  # a shared target: 1000 sequences were other runs'
    budget = QueryBudget(target, limit=100, before=30)  # 30 spent before a resume
    target.stats.sequences += 50
    assert budget.spent() == 80 and budget.affords(20) and not budget.affords(21)
    with budget:
        assert target.max_sequences == 1050 + 20  # the target refuses what would pass the budget
    assert target.max_sequences is None
    target.max_sequences = 1060  # a tighter limit of the target's own is kept
    with budget:
        assert target.max_sequences == 1060
    assert target.max_sequences == 1060
    unlimited = QueryBudget(target, limit=None)
    with unlimited:
        assert unlimited.affords(10**9) and target.max_sequences == 1060


def test_query_budget_under_several_processes_counts_their_sum_and_shares_the_cap(monkeypatch):
    """``accelerate launch --num_processes 2``: sync() all-reduces the processes' sequences (the other one spent 7
    here), shared() caps this process at half of what is left, and affords() sees the run's total."""
    import torch.distributed as dist

    target = _CountingTarget(sequences=1000)
    budget = QueryBudget(target, limit=100, before=30)
    target.stats.sequences += 10
    assert budget.processes() == 1 and budget.sync() == 40  # one process: nothing to sum
    reduced = []

    def all_reduce(tensor):
        reduced.append(int(tensor.item()))
        tensor += 7

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    assert budget.processes() == 2 and budget.spent() == 40  # not synced yet
    assert budget.sync() == 47 and reduced == [10] and budget.others == 7
    assert budget.affords(53) and not budget.affords(54)
    with budget.shared():
        assert target.max_sequences == 1010 + (100 - 47) // 2  # each process gets half of what is left
        target.stats.sequences += 20
    assert reduced == [10, 10, 30] and budget.spent() == 30 + 30 + 7 and target.max_sequences is None
    with budget:  # the main process alone, after training: the whole rest of the run's budget
        assert target.max_sequences == 1030 + 100 - 67


def test_run_clock_goes_on_from_the_last_logged_wall_seconds(tmp_path):
    run = RunDir(tmp_path / "run", tensorboard=False)
    assert RunClock(run)() < 1.0
    run.log(1, {"perf/wall_seconds": 40.0}, target_queries=1)
    run.log(2, {"charts/reward": 1.0}, target_queries=2)
    assert 40.0 <= RunClock(run)() < 41.0


def test_paths_cannot_escape_the_run_dir(tmp_path):
    run = RunDir(tmp_path / "run")
    for bad in ("../outside.txt", "/etc/passwd", "sub/../../x"):
        with pytest.raises(ValueError, match="escapes"):
            run.write_text(bad, "x")
    assert run.write_text("sub/ok.txt", "y").read_text() == "y"


def test_checkpoint_round_trip_with_optimizer(tmp_path):
    run = RunDir(tmp_path / "run")
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    layer(torch.ones(1, 3)).sum().backward()
    opt.step()
    run.save_checkpoint(7, dict(layer.named_parameters()), {"note": "x"}, opt.state_dict())
    ckpt = run.load_checkpoint()
    assert ckpt.step == 7 and ckpt.state["note"] == "x"
    assert torch.equal(ckpt.tensors["weight"], layer.weight)
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    fresh.load_state_dict(ckpt.optimizer)
    assert fresh.param_groups[0]["lr"] == 1e-3
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(ckpt.path.glob("*.pt")) and not list(ckpt.path.glob("*.pkl"))


def test_corrupt_or_partial_checkpoint_falls_back_to_previous(tmp_path):
    run = RunDir(tmp_path / "run")
    _save(run, 1, 1.0)
    second = _save(run, 2, 2.0)
    assert run.latest_checkpoint() == second
    data = bytearray((second / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (second / "model.safetensors").write_bytes(bytes(data))
    assert run.latest_checkpoint().name == "step_1"
    assert run.load_checkpoint().tensors["w"][0] == 1.0
    partial = run.path / "checkpoints" / "step_3"  # a crash before the manifest was written
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert run.latest_checkpoint().name == "step_1"
    with pytest.raises(ValueError, match="corrupt"):
        run.load_checkpoint(second)


def test_keep_only_newest_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in range(1, 6):
        run.save_checkpoint(step, {"w": torch.zeros(1)}, {}, keep=2)
    assert [p.name for p in run.checkpoint_dirs()] == ["step_4", "step_5"]
    assert not [p for p in (run.path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_truncate_metrics_on_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in range(1, 6):
        run.log(step, {"charts/reward": step}, target_queries=step)
    run.close()
    resumed = RunDir(tmp_path / "run", resume=True)
    resumed.truncate_to(3)
    resumed.log(4, {"charts/reward": 40}, target_queries=4)
    resumed.close()
    assert [r["step"] for r in resumed.read_metrics()] == [1, 2, 3, 4]
    assert resumed.read_metrics()[-1]["charts/reward"] == 40


def test_rng_state_is_json_and_restores():
    seed_everything(3)
    state = json.loads(json.dumps(rng_state()))
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_trainer_checkpoints_resume_only_from_a_sealed_intact_one(tmp_path):
    from rlprompt.runs import resume_trainer_checkpoint, seal_trainer_checkpoint

    root = tmp_path / "checkpoints"
    assert resume_trainer_checkpoint(root) is None
    for step in (2, 4, 6):
        folder = root / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(bytes([step]) * 64)
        (folder / "trainer_state.json").write_text("{}")
    seal_trainer_checkpoint(root / "checkpoint-2")
    seal_trainer_checkpoint(root / "checkpoint-4")
    (root / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"torn")  # corrupt after sealing
    # checkpoint-6 was never sealed: the process died while the Trainer was saving it
    assert resume_trainer_checkpoint(root) == root / "checkpoint-2"
    assert sorted(p.name for p in root.iterdir()) == [".broken-checkpoint-4", ".broken-checkpoint-6", "checkpoint-2"]
    assert json.loads((root / "checkpoint-2" / "manifest.json").read_text())["step"] == 2


# -- a hand-edited state.json with a matching checksum, and a full disk (issue 17) ---------------------
def _edit_state(checkpoint, edit) -> None:
    """Rewrite ``state.json`` with ``edit(state)`` and reseal the manifest, as a careful hand-edit would."""
    import hashlib

    state_path = checkpoint / "state.json"
    text = edit(json.loads(state_path.read_text()))
    state_path.write_text(text if isinstance(text, str) else json.dumps(text))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["state.json"] = hashlib.sha256(state_path.read_bytes()).hexdigest()
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


def _with(**changes):
    return lambda state: {**state, **changes}


def _nested(part, **changes):
    """An edit of the ``loop`` or ``method`` part of the state, as rlprompt.loop.RunLoop writes them."""
    return lambda state: {**state, part: {**state[part], **changes}}


def _rng_with(part, value):
    return lambda state: {**state, "rng": {**state["rng"], part: value}}


@pytest.mark.parametrize("edit,message", [
    (lambda s: "{", r"state\.json: invalid JSON"),
    (lambda s: [1, 2], r"state\.json must hold a JSON object, got list"),
    (_with(step="seven"), r"state\.json: 'step' must be a non-negative integer, got seven"),
    (_with(step=9), r"state\.json says step 9, but its manifest says step 7"),
    (_with(target_queries=-5), r"'target_queries' must be a non-negative integer, got -5"),
    (_with(best_accuracy="high"), r"'best_accuracy' must be a number or null, got high"),
    (_nested("loop", target_queries=-5), r"loop\.'target_queries' must be a non-negative integer, got -5"),
    (_nested("method", pool={"p": "x"}), r"method\.'pool' must be an object of prompt: number"),
    (_nested("method", rng="garbage"), r"method\.'rng' is not a valid random state"),
    (_nested("method", search_rng={"state": {}}), r"method\.'search_rng' is not a valid random state"),
    (_with(pool=[1, 2]), r"'pool' must be an object of prompt: number"),
    (_with(best_prompt=3), r"'best_prompt' must be a string or null"),
    (_with(optimizer={"param_groups": "lots"}), r"'optimizer' must be an object with 'param_groups'"),
    (_rng_with("python", [3, [1, 2], None]), r"'rng' is not a valid random state"),
    (_rng_with("numpy", ["MT19937", [-1] * 624, 624, 0, 0.0]), r"'rng' is not a valid random state"),
    (_rng_with("torch", [300] * 5056), r"'rng' is not a valid random state"),
    (lambda s: {k: v for k, v in s.items() if k != "rng"} | {"rng": "garbage"}, r"'rng' is not a valid random state"),
    (_with(scorer_rng={"bit_generator": "os", "state": {}}), r"'scorer_rng' is not a valid random state"),
    (_with(scorer_rng={"bit_generator": "PCG64", "state": {"state": "x"}}), r"'scorer_rng' is not a valid"),
])
def test_hand_edited_state_with_matching_checksum_is_a_clear_error(tmp_path, edit, message):
    run = RunDir(tmp_path / "run")
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"rng": rng_state(), "scorer_rng": np.random.default_rng(0).bit_generator.state, "target_queries": 10,
             "best_accuracy": 0.5, "best_prompt": "p", "pool": {"p": 0.5},
             "loop": {"best_prompt": "p", "best_accuracy": 0.5, "target_queries": 10},
             "method": {"rng": rng_state(), "pool": {"p": 0.5}}}
    checkpoint = run.save_checkpoint(7, dict(layer.named_parameters()), state, opt.state_dict())
    assert run.load_checkpoint().state["pool"] == {"p": 0.5}  # the untouched checkpoint passes every check
    _edit_state(checkpoint, edit)
    assert run.latest_checkpoint() == checkpoint  # the checksum matches: only the content check can tell
    with pytest.raises(ValueError, match=message) as caught:
        run.load_checkpoint()
    assert "state.json" in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_state_entry_names_the_file(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_checkpoint(3, {"w": torch.zeros(1)}, {"best": 1.0, "method": {"pool": {}}})
    state = run.load_checkpoint().state
    for part in (state, state["method"]):  # the method's part, nested, names the file too
        with pytest.raises(KeyError) as caught:
            part["rng"]
        assert str(caught.value) == f"{run.path / 'checkpoints' / 'step_3' / 'state.json'} has no 'rng': it was " \
                                    "edited, or written by another version of rlprompt"
    assert state.get("rng") is None and state["best"] == 1.0


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_checkpointing_stops_with_one_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import rlprompt.runs as runs
    from rlprompt.runs import RunWriteError

    run = RunDir(tmp_path / "run")
    _save(run, 1, 1.0)
    monkeypatch.setattr(runs, "save_file", _no_space)
    with pytest.raises(RunWriteError, match=r"cannot write .*step_2: No space left on device; the run stopped, "
                                            r"the newest complete checkpoint is step_1: .*--resume"):
        _save(run, 2, 2.0)
    monkeypatch.setattr(runs, "save_file", lambda *a, **k: (_ for _ in ()).throw(
        SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")))
    with pytest.raises(RunWriteError, match=r"step_2: Error while serializing: IoError.*code: 28"):
        _save(run, 2, 2.0)
    assert [p.name for p in (run.path / "checkpoints").iterdir()] == ["step_1"]  # no partial folder left
    assert run.load_checkpoint().tensors["w"][0] == 1.0


def test_full_disk_while_logging_or_writing_files_is_one_error(tmp_path, monkeypatch):
    import rlprompt.runs as runs
    from rlprompt.runs import RunWriteError

    run = RunDir(tmp_path / "run", tensorboard=False)
    run.log(1, {"charts/reward": 1.0}, target_queries=1)
    monkeypatch.setattr(runs, "open", _no_space, raising=False)
    with pytest.raises(RunWriteError, match=r"metrics\.jsonl: No space left on device.*no complete checkpoint yet"):
        run.log(2, {"charts/reward": 2.0}, target_queries=2)
    monkeypatch.setattr(runs, "write_atomic", _no_space)
    with pytest.raises(RunWriteError, match=r"prompt\.txt: No space left on device"):
        run.write_prompt("p")
    monkeypatch.undo()
    assert [r["step"] for r in run.read_metrics()] == [1]


def test_a_torn_metrics_line_does_not_swallow_the_next_record(tmp_path):
    run = RunDir(tmp_path / "run", tensorboard=False)
    run.log(1, {"charts/reward": 1.0}, target_queries=1)
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "target_que')  # the disk filled up in the middle of record 2
    resumed = RunDir(tmp_path / "run", resume=True, tensorboard=False)
    resumed.log(2, {"charts/reward": 2.0}, target_queries=2)
    resumed.log(3, {"charts/reward": 3.0}, target_queries=3)
    assert [r["step"] for r in resumed.read_metrics()] == [1, 2, 3]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_write_atomic_gives_files_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    import os
    import stat

    from rlprompt.runs import write_atomic

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a" / "file.txt", "one")
        write_atomic(tmp_path / "a" / "file.txt", "two")  # a replaced file gets the same mode
        RunDir(tmp_path / "run", tensorboard=False).write_prompt("p")
    finally:
        os.umask(old)
    for path in (tmp_path / "a" / "file.txt", tmp_path / "run" / "prompt.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert (tmp_path / "a" / "file.txt").read_text() == "two"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["file.txt"]  # no temporary file left


def test_current_umask_reads_the_umask_without_changing_it():
    import os

    from rlprompt.runs import current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and current_umask() == 0o027
    finally:
        os.umask(old)
