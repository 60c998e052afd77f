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
