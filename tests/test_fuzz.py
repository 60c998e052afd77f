"""Fuzzed configs, overrides and task files get a project error (rlprompt.errors, a ValueError) naming the bad
value, never a deep traceback."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlprompt.training
from rlprompt import cli
from rlprompt.config import load_config
from rlprompt.errors import RLPromptError
from rlprompt.tasks import load_task
from rlprompt.training import METHODS, method_entry

CONFIG_CLASSES = [method_entry(method)[0] for method in METHODS]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(-5, 5), max_size=3))
# FUZZ_EXAMPLES=2000 fuzzes harder than CI's default.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cls=st.sampled_from(CONFIG_CLASSES), data=st.data())
def test_config_values_are_accepted_or_rejected_with_a_named_error(cls, data):
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    key = data.draw(st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=10)))
    value = data.draw(scalars)
    try:
        load_config({key: value}, cls)
    except RLPromptError as err:
        assert isinstance(err, ValueError)
        message = str(err)
        assert any(name in message for name in (key, repr(key)[1:-1], repr(value), str(value))), message


@FUZZ
@given(cls=st.sampled_from(CONFIG_CLASSES), text=st.text(max_size=40))
def test_override_strings_never_crash_the_parser(cls, text):
    try:
        load_config({}, cls, [text])
    except RLPromptError as err:  # the message names the override as written, or its key
        key = text.partition("=")[0].strip()
        assert repr(text) in str(err) or (key and repr(key)[1:-1] in str(err)), (text, str(err))


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "split", "other"]), scalars, max_size=4), max_size=5))
def test_task_files_load_or_fail_with_a_project_error(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        task = load_task(str(path))
    except RLPromptError as err:
        assert str(path) in str(err), str(err)  # the message says which file is wrong
    else:
        assert all(0 <= label < len(task.label_names) for split in task.splits.values() for label in split.labels)


@pytest.mark.parametrize("text, named", [("{", "c.yaml"), ("a: [1", "c.yaml"), ("- 1\n- 2", "c.yaml"), ("42", "c.yaml"),
                                         ("method: [rlprompt]", "method=\\['rlprompt'\\]")])
def test_malformed_yaml_is_a_value_error(tmp_path, text, named):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=named) as info:
        load_config(path, CONFIG_CLASSES[0])
    assert not isinstance(info.value, yaml.YAMLError)


class Reached(Exception):
    """Raised by the stubbed back ends: the arguments got through validation to real work."""


def _reached(*args, **kwargs):
    raise Reached


FLAGS = {
    "eval": ["--task", "--task-seed", "--seed", "--split", "--prompt", "--template", "--verbalizers", "--target", "--dtype", "--limit",
             "--limit-seed", "--calibrate", "--json"],
    "train": ["--run-dir", "--resume", "--max-target-queries"],
    "config": [],
    "report": ["--out"],
    "prefs": [],
    "enhance": ["--enhancer", "--num-samples", "--temperature", "--seed", "--dtype", "--json"],
    "serve": ["--enhancer", "--host", "--port", "--upstream", "--api-key-env", "--dtype", "--batch-window-ms",
              "--max-body-bytes", "--max-prompt-chars"],
}
values = st.one_of(st.text(max_size=12), st.integers(-10, 10**6).map(str), st.sampled_from(
    ["sentiment", "tiny-random", "-1", "0", "nan", "", "key=value", "steps=-3", "seed=x", "=", "--"]))


@FUZZ
@given(data=st.data())
def test_cli_arguments_get_a_clear_error_or_reach_the_back_end(tmp_path, monkeypatch, capsys, data):
    """Random argument lists for every subcommand: argparse's usage error, a one-line `error:` (exit 2 or 1),
    or the stubbed back end; never a traceback from inside a library."""
    import rlprompt.tasks

    config = tmp_path / "tiny.yaml"
    config.write_text("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\ntarget: tiny-random\n")
    entries = {method: (method_entry(method)[0], _reached) for method in METHODS}
    monkeypatch.setattr(rlprompt.training, "method_entry", entries.__getitem__)
    monkeypatch.setattr(rlprompt.tasks, "_load_hf", _reached)
    monkeypatch.setattr("rlprompt.targets.make_target", _reached)
    monkeypatch.setattr("rlprompt.enhancer.enhance_main", _reached)
    monkeypatch.setattr("rlprompt.serve.serve_main", _reached)
    monkeypatch.setattr("rlprompt.report.write_report", _reached)
    monkeypatch.setattr("rlprompt.policies.dpo.build_preferences", _reached)
    command = data.draw(st.sampled_from(sorted(FLAGS)))
    positional = data.draw(st.lists(st.one_of(values, st.just(str(config))), max_size=2))
    options = data.draw(st.lists(st.tuples(st.sampled_from(FLAGS[command] or ["--x"]), values), max_size=3))
    argv = [command, *positional, *(token for pair in options for token in pair)]
    capsys.readouterr()  # the fixture outlives hypothesis examples: start each one empty
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, 2), argv
    except Reached:
        pass
    else:
        err = capsys.readouterr().err
        assert code in (0, 1, 2), argv
        if code:
            assert err.startswith(f"rlprompt {command}:") and len(err.strip().splitlines()) == 1, (argv, err)
