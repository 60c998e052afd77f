"""PromptEnhancer: save/load round trip (offline, safetensors only), batched greedy enhance, sampling, CLI glue."""

from __future__ import annotations

import json

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
