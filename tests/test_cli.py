"""The CLI's wiring: every shipped config loads into its method's typed config, and bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlprompt.cli import _methods, main
from rlprompt.config import config_method, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_into_its_method_config(path):
    method = config_method(path)
    config_cls, _ = _methods()[method]
    cfg = load_config(path, config_cls)
    assert type(cfg) is config_cls


@pytest.mark.parametrize("method", sorted(_methods()))
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


def test_resume_from_a_hand_edited_state_is_one_line(tmp_path, capsys):
    import hashlib
    import json

    config = tmp_path / "tiny.yaml"
    config.write_text("method: rlprompt\ntask: sentiment\npolicy_model: tiny-random\npolicy_dtype: float32\n"
                      "prompt_length: 2\nn_envs: 2\nmlp_hidden: 8\nvalue_hidden: 8\ninput_batch_size: 2\n"
                      "vocab: [300, 301, 302, 303]\neval_every: 5\ncheckpoint_every: 1\ntarget: tiny-random\n"
                      "target_dtype: float32\ntotal_updates: 1\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run)]) == 0
    checkpoint = run / "checkpoints" / "step_1"
    state = json.loads((checkpoint / "state.json").read_text())
    state["rng"]["torch"] = state["rng"]["torch"][:10]  # a careful hand-edit: the manifest is resealed
    (checkpoint / "state.json").write_text(json.dumps(state))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["state.json"] = hashlib.sha256((checkpoint / "state.json").read_bytes()).hexdigest()
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "total_updates=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlprompt train: error: checkpoint state ")
    assert "step_1/state.json: 'rng' is not a valid" in err
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
