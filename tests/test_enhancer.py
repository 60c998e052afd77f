"""PromptEnhancer: save/load round trip (offline, safetensors only), batched greedy enhance, sampling, CLI glue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlprompt.enhancer import PromptEnhancer, enhance_main
from rlprompt.models import load_model

META = "Rewrite this instruction: {instruction}"


@pytest.fixture
def enhancer():
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model("tiny-random")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-trivial adapter: B starts at zero
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return PromptEnhancer(peft_model, tokenizer, base_model="tiny-random", meta_prompt=META, max_new_tokens=6,
                          info={"task": "unit"})


def test_round_trip_gives_identical_enhancements(enhancer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = ["Classify the review.", "Say yes or no.", "x"]
    before = enhancer.enhance(prompts)
    path = enhancer.save_pretrained(tmp_path / "enh")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "enhancer.json", "meta_prompt.txt"]
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))  # no pickle
    loaded = PromptEnhancer.from_pretrained(path)
    assert loaded.meta_prompt == META and loaded.info == {"task": "unit"} and loaded.max_new_tokens == 6
    assert loaded.enhance(prompts) == before
    assert loaded.enhance(prompts[0]) == before[0]  # a str in, a str out; batching does not change results
    assert loaded.sample(prompts[:1], k=3, seed=7) == enhancer.sample(prompts[:1], k=3, seed=7)
    adapter_keys = json.loads((path / "adapter_config.json").read_text())
    assert adapter_keys["r"] == 4


def test_save_is_atomic_and_replaces(enhancer, tmp_path):
    target = tmp_path / "enh"
    enhancer.save_pretrained(target)
    enhancer.meta_prompt = "Improve: {instruction}"
    enhancer.save_pretrained(target)
    assert (target / "meta_prompt.txt").read_text() == "Improve: {instruction}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enh"]  # no temporary directories left behind


def test_validation_and_sampling(enhancer, tmp_path):
    with pytest.raises(ValueError, match="instruction"):
        PromptEnhancer(enhancer.model, enhancer.tokenizer, base_model="tiny-random", meta_prompt="no slot")
    samples = enhancer.enhance("abc", num_samples=3, seed=1)
    assert isinstance(samples, list) and len(samples) == 3
    with pytest.raises(FileNotFoundError, match="enhancer.json"):
        PromptEnhancer.from_pretrained(tmp_path)


def test_enhance_main_prints_rewrites(enhancer, tmp_path, capsys):
    enhancer.save_pretrained(tmp_path / "enh")
    expected = enhancer.enhance(["hello there"])
    assert enhance_main(tmp_path / "enh", ["hello there"], as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == [{"prompt": "hello there", "enhanced": expected[0]}]


def test_import_rlprompt_is_light():
    import subprocess
    import sys

    code = "import sys, rlprompt; assert 'torch' not in sys.modules; print(rlprompt.PromptEnhancer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PromptEnhancer"


# -- a damaged enhancer directory and awkward stdin are one clear line each (issue 17) ------------------
def _damaged_copy(enhancer, tmp_path, name: str, damage) -> Path:
    path = enhancer.save_pretrained(tmp_path / "enh")
    damage(path / name)
    return path


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name,damage,message", [
    ("adapter_model.safetensors", _truncate, r"adapter_model\.safetensors is not a readable safetensors file"),
    ("adapter_model.safetensors", lambda p: p.write_bytes(b"\xff" * 3),
     r"adapter_model\.safetensors is not a readable"),
    ("adapter_config.json", _truncate, r"adapter_config\.json: invalid JSON"),
    ("enhancer.json", _truncate, r"enhancer\.json: invalid JSON"),
    ("enhancer.json", lambda p: p.write_text('{"format_version": 1, "base_model": "tiny-random", "dtype": "float32"}'),
     r"enhancer\.json: 'max_new_tokens' must be a positive integer, got None"),
    ("enhancer.json", lambda p: p.write_text("[1]"), r"enhancer\.json must hold a JSON object, got list"),
    ("meta_prompt.txt", lambda p: p.write_bytes(b"Rewrite \xff{instruction}"),
     r"meta_prompt\.txt is not UTF-8 text: byte 0xff at offset 8"),
])
def test_damaged_enhancer_file_is_a_clear_error_naming_it(enhancer, tmp_path, capsys, name, damage, message):
    from rlprompt.cli import main

    path = _damaged_copy(enhancer, tmp_path, name, damage)
    with pytest.raises(ValueError, match=message):
        PromptEnhancer.from_pretrained(path)
    assert main(["enhance", "--enhancer", str(path), "hello"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and name in err


def test_adapter_with_foreign_tensors_is_rejected(enhancer, tmp_path):
    from safetensors.torch import save_file

    path = _damaged_copy(enhancer, tmp_path, "adapter_model.safetensors",
                         lambda p: save_file({"foo": torch.zeros(2)}, str(p)))
    with pytest.raises(ValueError, match=r"does not hold the adapter's tensors: missing .*lora.*unexpected \['foo'\]"):
        PromptEnhancer.from_pretrained(path)


class _Stdin:
    """A text stream over raw bytes, like ``sys.stdin`` (its ``buffer`` is the byte stream)."""

    def __init__(self, data: bytes) -> None:
        import io

        self.buffer = io.BytesIO(data)


def test_stdin_prompts_lose_their_carriage_returns(enhancer, tmp_path, capsys, monkeypatch):
    from rlprompt.enhancer import read_prompts

    assert read_prompts(_Stdin(b"first prompt\r\n\r\nsecond\r\nthird")) == ["first prompt", "second", "third"]
    enhancer.save_pretrained(tmp_path / "enh")
    monkeypatch.setattr("sys.stdin", _Stdin("caf\u00e9 review\r\n".encode()))
    assert enhance_main(tmp_path / "enh", ["-"], as_json=True) == 0
    assert [r["prompt"] for r in json.loads(capsys.readouterr().out)] == ["caf\u00e9 review"]


def test_non_utf8_stdin_and_arguments_are_one_line_errors(enhancer, tmp_path, capsys, monkeypatch):
    from rlprompt.cli import main

    enhancer.save_pretrained(tmp_path / "enh")
    monkeypatch.setattr("sys.stdin", _Stdin(b"good line\ncaf\xe9\n"))
    assert main(["enhance", "--enhancer", str(tmp_path / "enh")]) == 2
    err = capsys.readouterr().err
    assert "stdin is not UTF-8 text: byte 0xe9 at offset 13" in err and len(err.strip().splitlines()) == 1
    assert main(["enhance", "--enhancer", str(tmp_path / "enh"), "ok", "caf\udce9"]) == 2  # how Python passes bad argv
    assert "prompt 2 is not valid UTF-8 text" in capsys.readouterr().err
