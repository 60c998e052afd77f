"""Configs a new user meets: one name for training length (old names still read), paths relative to the config
file, one resume check for every method, and a complete commented default config per method."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rlprompt.config import (RESUME_CHANGEABLE, check_resume_config, config_from_dict, default_yaml, dump_config,
                             field_docs, load_config)
from rlprompt.training import METHODS, method_entry
from rlprompt.errors import ConfigError, DataError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


# -- one name for training length -------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_calls_its_length_steps(method):
    config_cls, _ = method_entry(method)
    names = {f.name for f in dataclasses.fields(config_cls)}
    assert "steps" in names and not names & {"total_updates", "iterations"}


@pytest.mark.parametrize("method, old", [("rlprompt", "total_updates"), ("multiprompter", "total_updates"),
                                         ("promptagent", "iterations")])
def test_old_length_names_load_with_one_warning(method, old, tmp_path):
    config_cls, _ = method_entry(method)
    path = tmp_path / "old.yaml"
    path.write_text(f"method: {method}\n{old}: 7\n")
    with pytest.warns(FutureWarning, match=f"config key '{old}' is deprecated, read as 'steps'"):
        assert load_config(path, config_cls).steps == 7
    with pytest.warns(FutureWarning):
        assert load_config({"method": method}, config_cls, [f"{old}=9"]).steps == 9
    with pytest.warns(FutureWarning):  # an old file with a new override: the override wins
        assert load_config(path, config_cls, ["steps=3"]).steps == 3
    with pytest.raises(ValueError, match=f"sets both '{old}'.*'steps'"):
        load_config({"method": method, old: 1, "steps": 2}, config_cls)


def test_shipped_configs_use_the_new_names():
    from rlprompt.config import RENAMED_FIELDS

    for path in CONFIGS:
        assert not set(yaml.safe_load(path.read_text())) & set(RENAMED_FIELDS), path.name


def test_promptagent_optimizer_lm_has_a_name_no_torch_optimizer_shares(tmp_path):
    from rlprompt.policies.promptagent import PromptAgentConfig

    path = tmp_path / "old.yaml"
    path.write_text("method: promptagent\noptimizer: tiny-random\noptimizer_dtype: float32\n")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(path, PromptAgentConfig)
    assert cfg.optimizer_model == "tiny-random" and cfg.optimizer_model_dtype == "float32"
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["optimizer", "optimizer_dtype"]
    assert "optimizer" not in dump_config(cfg) and "optimizer_dtype" not in dump_config(cfg)
    with pytest.raises(ValueError, match="bad"):
        load_config({"optimizer_model_dtype": "bad"}, PromptAgentConfig)


# -- paths resolve against the config file -------------------------------------------------------------
def test_relative_task_path_resolves_against_the_config_file(tmp_path, monkeypatch):
    from rlprompt.policies.rlprompt import RLPromptConfig

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.csv").write_text("text,label,split\ngood,1,train\nbad,0,dev\n")
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "c.yaml"
    config.write_text("method: rlprompt\ntask: ../data/reviews.csv\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config, RLPromptConfig)
    assert cfg.task == str(tmp_path / "data" / "reviews.csv")
    # a key=value override is a shell argument: it resolves against the current directory
    (elsewhere / "mine.csv").write_text("text,label\nok,1\n")
    assert load_config(config, RLPromptConfig, ["task=mine.csv"]).task == str(elsewhere / "mine.csv")
    assert load_config(config, RLPromptConfig, ["task=sentiment"]).task == "sentiment"  # a name, not a path


def test_target_cache_is_a_path_next_to_the_config_file_and_fronts_the_target(tmp_path, monkeypatch):
    from rlprompt.config import TaskTargetConfig
    from rlprompt.policies.rlprompt import RLPromptConfig
    from rlprompt.targets import CachedTarget
    from rlprompt.targets.base import Target

    config = tmp_path / "configs" / "c.yaml"
    config.parent.mkdir()
    config.write_text("method: rlprompt\ntarget_cache: ../cache/target.sqlite\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config, RLPromptConfig)
    assert cfg.target_cache == str(tmp_path / "cache" / "target.sqlite")
    assert TaskTargetConfig().target_cache is None
    with pytest.raises(ValueError, match="target_cache must be a file path or null, got ' '"):
        TaskTargetConfig(target_cache=" ")

    class Fake(Target):
        name = "fake"

        def _classify(self, template, prompts, inputs, verbalizers):
            raise AssertionError("not queried")

        _generate = _loglikelihood = _classify

    fake = Fake()
    assert TaskTargetConfig().build_target(fake) is fake  # no cache: the target itself
    cached = cfg.build_target(fake)
    assert isinstance(cached, CachedTarget) and cached.inner is fake and cached.path == Path(cfg.target_cache)
    assert cfg.build_target(cached) is cached  # never behind two caches


def test_a_missing_task_path_names_the_config_file(tmp_path):
    from rlprompt.policies.rlprompt import RLPromptConfig

    config = tmp_path / "c.yaml"
    config.write_text("method: rlprompt\ntask: ../nowhere/sst-2\ntask_seed: 16-42\n")
    with pytest.raises(FileNotFoundError, match=r"task path '../nowhere/sst-2' does not exist \(resolved relative to "
                                                r"the config file .*c.yaml"):
        load_config(config, RLPromptConfig)


# -- one resume check for every method -----------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_resume_check_allows_only_length_budget_and_cadence(method):
    config_cls, _ = method_entry(method)
    saved = dump_config(config_cls())
    fields = {f.name for f in dataclasses.fields(config_cls)}
    changed = {name: (7 if name != "max_target_queries" else 1000) for name in RESUME_CHANGEABLE if name in fields}
    check_resume_config(saved, dataclasses.replace(config_cls(), **changed))
    with pytest.raises(ValueError, match=r"differs from the run's config.yaml in \['seed'\] \(seed: 0 -> 5\)"):
        check_resume_config(saved, dataclasses.replace(config_cls(), seed=5))


def test_resume_check_reads_old_names_and_relative_paths(tmp_path, monkeypatch):
    """A run directory written before the rename (total_updates, a task path relative to the current directory)
    still matches the same config loaded today."""
    from rlprompt.policies.rlprompt import RLPromptConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("text,label,split\ngood,1,train\nbad,0,dev\n")
    old = {**dump_config(RLPromptConfig(task="data.csv")), "total_updates": 30}
    del old["steps"], old["task_columns"]
    with pytest.warns(FutureWarning, match="total_updates"):
        check_resume_config(old, RLPromptConfig(task=str(tmp_path / "data.csv"), steps=60))


# -- `rlprompt config METHOD` ------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_default_yaml_is_complete_commented_and_loads_back(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config_cls, _ = method_entry(method)
    text = default_yaml(config_cls)
    lines = text.splitlines()
    for name, doc in field_docs(config_cls).items():
        row = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
        comment = []
        while lines[row - 1 - len(comment)].startswith("# "):
            comment.insert(0, lines[row - 1 - len(comment)][2:])
        assert " ".join(comment) == doc, name
    path = tmp_path / f"{method}.yaml"
    path.write_text(text)
    assert dump_config(load_config(path, config_cls)) == dump_config(config_from_dict(dump_config(config_cls()),
                                                                                      config_cls))


# -- the task every method loads through its config ------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_loads_its_classification_task_through_one_check(method, tmp_path):
    """Every method's config applies its template and verbalizers the same way, and refuses a task without the
    splits the method needs with one error naming the method and the splits."""
    config_cls, _ = method_entry(method)
    cfg = config_cls(template="Q: {sentence} {prompt}", verbalizers=[" bad", " good"])
    task = cfg.classification_task(("train",))
    assert (task.template, task.verbalizers) == ("Q: {sentence} {prompt}", (" bad", " good"))
    only_test = tmp_path / "reviews.csv"
    only_test.write_text("text,label\ngood,1\nbad,0\n")  # no split column: every row is the test split
    with pytest.raises(DataError, match=rf"lacks the split\(s\) \['train'\] that {config_cls.method} needs; it has "
                                        r"\['test'\]"):
        config_cls(task=str(only_test)).classification_task(("train",))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_names_a_count_below_one_with_its_class_and_value(method):
    config_cls, _ = method_entry(method)
    with pytest.raises(ConfigError, match=rf"these {config_cls.__name__} fields must be >= 1: \{{'steps': -2\}}"):
        config_cls(steps=-2)


def test_check_positive_names_every_field_below_one():
    from rlprompt.config import check_positive

    @dataclasses.dataclass
    class Sizes:
        a: int = 1
        b: int = 0
        c: int = -3

    check_positive(Sizes(b=1, c=1), "a", "b", "c")
    with pytest.raises(ConfigError, match=r"these Sizes fields must be >= 1: \{'b': 0, 'c': -3\}"):
        check_positive(Sizes(), "a", "b", "c")


# -- one meaning per name (issue 14) ---------------------------------------------------------------------
@pytest.mark.parametrize("method, name, ok", [("rlprompt", "running", True), ("multiprompter", "batch_zscore", True),
                                              ("rlprompt", "clip", False), ("rlprompt", "linear", False),
                                              ("prewrite", "input_zscore", True), ("prewrite", "running", False),
                                              ("rlprompt", "whiten", False)])
def test_stabilizer_names_come_from_the_one_registry(method, name, ok):
    from rlprompt.errors import ConfigError
    from rlprompt.rewards import CONFIG_STABILIZERS, STABILIZERS

    assert set(CONFIG_STABILIZERS) <= set(STABILIZERS)
    config_cls, _ = method_entry(method)
    if ok:
        assert load_config({"stabilizer": name}, config_cls).stabilizer == name
    else:  # clip needs bounds no field carries (it failed at the first step before); PRewrite keeps no running state
        with pytest.raises(ConfigError, match=f"stabilizer must be one of .*got '{name}'"):
            load_config({"stabilizer": name}, config_cls)
