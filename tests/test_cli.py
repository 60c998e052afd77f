"""The CLI's wiring: every shipped config loads into its method's typed config, and bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlprompt.cli import main
from rlprompt.config import config_method, load_config
from rlprompt.devices import DeviceError
from rlprompt.errors import ConfigError, DataError, MissingFileError
from rlprompt.training import METHODS, method_entry

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_into_its_method_config(path):
    import os

    from rlprompt.config import dump_config
    from rlprompt.tasks import BUILTIN_TASKS

    method = config_method(path)
    config_cls, _ = method_entry(method)
    cfg = load_config(path, config_cls)
    assert type(cfg) is config_cls
    loaded = dump_config(cfg)  # every key of the file arrives with the file's value, none is dropped or renamed
    for key, value in yaml.safe_load(path.read_text()).items():
        if key in config_cls.path_fields and value not in BUILTIN_TASKS:  # relative to the file's folder
            value = os.path.normpath(path.resolve().parent / value)
        assert loaded[key] == value, f"{key}: the file says {value!r}, the config holds {loaded[key]!r}"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_train_rejects_an_unknown_key_for_every_method(method, tmp_path, capsys):
    config = next(p for p in CONFIGS if config_method(p) == method)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written for a config that does not load


def test_unknown_method_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("method: reinforce\n")
    assert main(["train", str(config)]) == 2
    assert "unknown method 'reinforce'" in capsys.readouterr().err


def test_enhance_needs_an_existing_enhancer(tmp_path, capsys):
    assert main(["enhance", "--enhancer", str(tmp_path / "missing"), "hello"]) == 2
    assert "missing" in capsys.readouterr().err


def test_non_utf8_config_file_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes("method: rlprompt\nprompt: caf\u00e9\n".encode("latin-1"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml is not UTF-8 text: byte 0xe9 at offset 28" in err and "Traceback" not in err


@pytest.mark.model
def test_resume_from_a_hand_edited_state_is_one_line(tmp_path, capsys):
    import hashlib
    import json

    config = tmp_path / "tiny.yaml"
    config.write_text("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\n"
                      "prompt_length: 2\nn_envs: 2\nmlp_hidden: 8\nvalue_hidden: 8\ninput_batch_size: 2\n"
                      "vocab: [300, 301, 302, 303]\neval_every: 5\ncheckpoint_every: 1\ntarget: tiny-random\n"
                      "target_dtype: float32\nsteps: 1\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run)]) == 0
    checkpoint = run / "checkpoints" / "step_1"
    state = json.loads((checkpoint / "state.json").read_text())
    rng = state["method"]["rng"]
    rng["torch"] = rng["torch"][:10]  # a careful hand-edit: the manifest is resealed
    (checkpoint / "state.json").write_text(json.dumps(state))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["state.json"] = hashlib.sha256((checkpoint / "state.json").read_bytes()).hexdigest()
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlprompt train: error: checkpoint state ")
    assert "step_1/state.json: method.'rng' is not a valid" in err
    assert len(err.splitlines()) == 1


def test_an_os_error_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import rlprompt.report

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report" / "runs.md"))

    monkeypatch.setattr(rlprompt.report, "write_report", no_space)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"rlprompt report: OSError: [Errno 28] No space left on device: '{tmp_path / 'report' / 'runs.md'}'"


# -- what a new user meets (issue 18) ----------------------------------------------------------------
TINY = ("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\nprompt_length: 2\n"
        "n_envs: 2\nmlp_hidden: 8\nvalue_hidden: 8\ninput_batch_size: 2\nvocab: [300, 301, 302, 303]\neval_every: 1\n"
        "checkpoint_every: 1\ntarget: tiny-random\ntarget_dtype: float32\nsteps: 1\n")


def _summary(capsys) -> dict:
    import json

    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_help_imports_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = ("import sys, rlprompt.cli\n"
            "for argv in (['--help'], ['train', '--help'], ['config', '--help']):\n"
            "    try:\n        rlprompt.cli.main(argv)\n    except SystemExit as exit:\n        assert exit.code == 0\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_train_help_lists_the_methods_and_how_to_see_their_keys(capsys):
    from rlprompt.training import METHODS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(f"  {method} " in out for method in METHODS)
    assert "rlprompt config METHOD" in out and "--resume --run-dir DIR" in out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_config_command_prints_a_config_that_trains_as_is(method, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", method]) == 0
    path = tmp_path / "c.yaml"
    path.write_text(capsys.readouterr().out)
    config_cls, _ = method_entry(method)
    assert config_method(path) == method and type(load_config(path, config_cls)) is config_cls
    from rlprompt.config import config_from_dict, dump_config

    # it prints the defaults (its relative paths resolve against the file's folder, here the current one)
    defaults = config_from_dict(dump_config(config_cls()), config_cls)
    assert dump_config(load_config(path, config_cls)) == dump_config(defaults)


@pytest.mark.model
def test_resume_reads_the_run_and_only_length_budget_and_cadence_may_change(tmp_path, capsys):
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY)
    assert main(["train", str(config), "--run-dir", str(run), "seed=3", "mlp_hidden=16"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--run-dir", str(run), "steps=2"]) == 0  # no config, no repeated overrides
    assert _summary(capsys)["steps"] == 2
    assert main(["train", "--resume", "--run-dir", str(run), "steps=3", "seed=4", "n_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "['seed', 'n_epochs']" in err and "seed: 3 -> 4" in err and "'steps'" in err and "Traceback" not in err
    # a run directory written before `steps` (its config.yaml says total_updates) resumes, both ways
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["total_updates"] = saved.pop("steps")
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.warns(FutureWarning, match="'total_updates' is deprecated"):
        assert main(["train", "--resume", "--run-dir", str(run), "total_updates=3"]) == 0
    assert _summary(capsys)["steps"] == 3
    assert "total_updates" not in (run / "config.yaml").read_text()  # rewritten with today's names
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "seed=3", "mlp_hidden=16", "steps=4"]) == 0
    assert _summary(capsys)["steps"] == 4


@pytest.mark.model
def test_max_target_queries_stops_a_run(tmp_path, capsys):
    config = tmp_path / "p.yaml"
    config.write_text(TINY.replace("steps: 1", "steps: 50"))
    assert main(["train", str(config), "--run-dir", str(tmp_path / "ok"), "--max-target-queries", "30"]) == 0
    summary = _summary(capsys)
    assert summary["stop_reason"] == "max_target_queries" and summary["target_queries"] <= 30


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_max_target_queries_flag_reaches_every_method(method, tmp_path, monkeypatch, capsys):
    """Issue 14: every method takes the budget (PRewrite and DPO refused it before); how each one honours it is
    tested with the method (test_prewrite, test_dpo, test_rlprompt, ...)."""
    import importlib

    _, train_fn = method_entry(method)
    seen = []

    def fake_train(cfg, run_dir, resume=False):
        seen.append(cfg.max_target_queries)
        return {"steps": 0}

    monkeypatch.setattr(importlib.import_module(train_fn.__module__), train_fn.__name__, fake_train)
    config = tmp_path / "c.yaml"
    config.write_text(f"method: {method}\ntask: sentiment\n")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--max-target-queries", "77"]) == 0
    assert seen == [77]


def test_a_failed_start_leaves_no_run_directory(tmp_path, capsys):
    (tmp_path / "test_only.csv").write_text("text,label\ngood,1\nbad,0\n")
    config = tmp_path / "c.yaml"
    config.write_text(TINY.replace("task: sentiment", "task: test_only.csv"))  # RLPrompt needs train and dev
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "lacks the split(s) ['train', 'dev']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    config.write_text(TINY.replace("task: sentiment", "task: ../data/sst-2\ntask_seed: 16-42"))
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "task path '../data/sst-2' does not exist (resolved relative to the config file" in err
    assert "only applies" not in err and not (tmp_path / "run").exists()


@pytest.mark.model
def test_a_csv_with_its_own_column_names_trains_from_a_config(tmp_path, capsys, monkeypatch):
    rows = [("a fine film", "great"), ("dull and long", "terrible")] * 3
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.csv").write_text(
        "utterance,category,split\n" + "".join(f"{u},{c},{s}\n" for s in ("train", "dev") for u, c in rows))
    config = tmp_path / "data" / "c.yaml"
    config.write_text(TINY.replace("task: sentiment", "task: reviews.csv\ntask_columns: {text: utterance, label: "
                                   "category}\nverbalizers: [' great', ' terrible']"))
    monkeypatch.chdir(tmp_path)  # the task path is relative to the config file, not to here
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert _summary(capsys)["steps"] == 1
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"] == str(tmp_path / "data" / "reviews.csv")
    assert saved["task_columns"] == {"text": "utterance", "label": "category"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_python_train_dispatches_on_the_method(method, tmp_path, monkeypatch):
    import importlib

    import rlprompt

    config_cls, train_fn = method_entry(method)
    calls = []

    def fake_train(cfg, run_dir, resume=False):
        calls.append((cfg, Path(run_dir), resume))
        return {"steps": cfg.steps}

    monkeypatch.setattr(importlib.import_module(train_fn.__module__), train_fn.__name__, fake_train)
    assert rlprompt.train({"method": method}, tmp_path / "run", steps=2) == {"steps": 2}
    cfg, run_dir, resume = calls[0]
    assert type(cfg) is config_cls and run_dir == tmp_path / "run" and not resume
    assert rlprompt.train(cfg, tmp_path / "run2", seed=5) == {"steps": 2} and calls[1][0].seed == 5


@pytest.mark.model
def test_eval_limit_is_a_stratified_sample_and_json_shows_gold_per_class(tmp_path, capsys):
    import json

    rows = [f"bad movie {i},0,dev\n" for i in range(20)] + [f"good movie {i},1,dev\n" for i in range(20)]
    (tmp_path / "sorted.csv").write_text("text,label,split\n" + "".join(rows))  # sorted by label
    argv = ["eval", "--task", str(tmp_path / "sorted.csv"), "--split", "validation", "--limit", "6", "--target",
            "tiny-random", "--dtype", "float32", "--verbalizers", " terrible", " great", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels_per_class"] == [3, 3] and sum(out["predictions_per_class"]) == out["n"] == 6


@pytest.mark.model
def test_eval_target_cache_answers_a_repeated_eval_without_querying_the_target(tmp_path, capsys):
    import json

    argv = ["eval", "--target", "tiny-random", "--dtype", "float32", "--limit", "6", "--json",
            "--target-cache", str(tmp_path / "cache.sqlite")]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0  # a new process would build a new target: this builds a new one too
    second = json.loads(capsys.readouterr().out)
    assert first["target_sequences"] == 6 and second["target_sequences"] == second["target_calls"] == 0
    assert second["accuracy"] == first["accuracy"] and second["predictions_per_class"] == first["predictions_per_class"]


def test_report_table_keeps_a_multiline_prompt_on_one_row(tmp_path):
    from rlprompt.report import load_run, markdown_table

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "target_queries": 4}\n')
    (tmp_path / "prompt.txt").write_text("Classify:\n| a | b |\nAnswer")
    table = markdown_table([load_run(tmp_path)]).splitlines()
    assert len(table) == 3 and table[2].endswith("| `Classify:\\n\\| a \\| b \\|\\nAnswer` |")


def test_setup_cfg_lists_every_package_folder():
    """setuptools warns about (and may one day drop) an importable folder missing from `packages`: rlprompt/data."""
    import configparser

    root = Path(__file__).resolve().parents[1]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    packages = set(setup["options"]["packages"].split())
    folders = {f"rlprompt.{p.name}" for p in (root / "rlprompt").iterdir()
               if p.is_dir() and not p.name.startswith((".", "_")) and any(p.iterdir())}
    assert folders <= packages and "rlprompt.data" in setup["options.package_data"]



def test_library_code_never_changes_the_process_environment():
    """Only an entry point's main() may set environment variables; library modules read them at most."""
    import ast

    class EnvironWrites(ast.NodeVisitor):
        def __init__(self) -> None:
            self.lines: list[int] = []

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            if node.name != "main":  # an entry point may
                self.generic_visit(node)

        def visit_Subscript(self, node: ast.Subscript) -> None:  # os.environ[k] = v, del os.environ[k]
            if isinstance(node.ctx, (ast.Store, ast.Del)) and ast.unparse(node.value).endswith("environ"):
                self.lines.append(node.lineno)
            self.generic_visit(node)

        def visit_Attribute(self, node: ast.Attribute) -> None:  # os.environ |= {...}
            if isinstance(node.ctx, (ast.Store, ast.Del)) and node.attr == "environ":
                self.lines.append(node.lineno)
            self.generic_visit(node)

        def visit_Call(self, node: ast.Call) -> None:
            if ast.unparse(node.func).endswith(("environ.setdefault", "environ.update", "environ.pop", "environ.popitem",
                                                "environ.clear", "putenv", "unsetenv")):
                self.lines.append(node.lineno)
            self.generic_visit(node)

    probe = EnvironWrites()
    probe.visit(ast.parse("import os\ndef f():\n    os.environ['A'] = '1'\n    os.environ.setdefault('B', '2')\n"
                          "    os.environ |= {}\ndef main():\n    os.environ['C'] = '3'\n"))
    assert probe.lines == [3, 4, 5]
    root = Path(__file__).resolve().parents[1]
    writes = []
    for folder in ("rlprompt", "policies", "envs", "rewards"):
        for path in sorted((root / folder).rglob("*.py")):
            found = EnvironWrites()
            found.visit(ast.parse(path.read_text(encoding="utf-8")))
            writes += [f"{path.relative_to(root)}:{line}" for line in found.lines]
    assert writes == []

# -- errors: a project error is one line, anything else a bug with its traceback (issue 14) ------------------
def _failing_report(monkeypatch, error: BaseException) -> None:
    import rlprompt.report

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(rlprompt.report, "write_report", fail)


@pytest.mark.parametrize("error", [ConfigError("limit=0 must be >= 1"), DataError("runs.md: no such column"),
                                   MissingFileError("run 'x' does not exist"), DeviceError("device='cuda:7'")])
def test_a_project_error_is_one_line_and_exit_2(error, tmp_path, capsys, monkeypatch):
    _failing_report(monkeypatch, error)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"rlprompt report: error: {error}\n"


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: device-side assert triggered"), KeyError("rng"),
                                   ValueError("too many values to unpack")])
def test_an_unexpected_error_from_inside_a_command_keeps_its_traceback(error, tmp_path, capsys, monkeypatch):
    _failing_report(monkeypatch, error)
    with pytest.raises(type(error)) as info:
        main(["report", str(tmp_path)])
    assert info.value is error and capsys.readouterr().err == ""  # not swallowed into a one-line message


def test_an_unexpected_error_prints_its_traceback_from_the_console_script(tmp_path):
    import subprocess
    import sys

    code = ("import sys, rlprompt.cli, rlprompt.report\n"
            "def bug(*args, **kwargs):\n    return {}['missing']\n"
            "rlprompt.report.write_report = bug\n"
            f"sys.exit(rlprompt.cli.main(['report', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and out.stderr.rstrip().endswith("KeyError: 'missing'")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_project_error(where, tmp_path, capsys, monkeypatch):
    _failing_report(monkeypatch, DataError("runs.md: no such column"))
    argv = ["report", str(tmp_path)]
    assert main(["--debug", *argv] if where == "before" else [*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "in fail" in err
    assert err.endswith("rlprompt report: error: runs.md: no such column\n")


def test_train_takes_debug_among_its_overrides(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(TINY)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "steps=0", "--debug"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" in err and last.startswith("rlprompt train: error: these RLPromptConfig fields must be")


def test_a_failing_target_is_one_line_naming_its_type_and_exit_1(tmp_path, capsys, monkeypatch):
    from rlprompt.targets.base import TargetError

    _failing_report(monkeypatch, TargetError("POST http://x/v1/completions failed with HTTP 503"))
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "rlprompt report: TargetError: POST http://x/v1/completions failed with HTTP 503\n"


def test_every_error_rlprompt_defines_is_a_project_error():
    import rlprompt.models
    import rlprompt.runs
    from rlprompt.errors import RLPromptError
    from rlprompt.targets.base import BudgetExceeded, TargetError

    for cls in (ConfigError, DataError, MissingFileError, DeviceError, rlprompt.models.ModelNotFoundError,
                TargetError, BudgetExceeded, rlprompt.runs.RunWriteError):
        assert issubclass(cls, RLPromptError), cls
    # the built-in bases callers caught before the project had its own type
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(DeviceError, ValueError)
    assert issubclass(TargetError, RuntimeError) and issubclass(rlprompt.runs.RunWriteError, RuntimeError)


def test_eval_task_seed_and_its_deprecated_old_name(capsys):
    argv = ["eval", "--task", "sentiment", "--target", "tiny-random"]
    assert main([*argv, "--task-seed", "16-42"]) == 2
    expected = "seed='16-42' only applies to RLPrompt 16-shot directories, and 'sentiment' is not one"
    assert expected in capsys.readouterr().err
    with pytest.warns(FutureWarning, match="`rlprompt eval --seed` is deprecated: use --task-seed"):
        assert main([*argv, "--seed", "16-42"]) == 2
    assert expected in capsys.readouterr().err  # read as --task-seed
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--seed " not in capsys.readouterr().out  # the old name is read, not offered
