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


@pytest.mark.model
def test_round_trip_gives_identical_enhancements(enhancer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = ["Classify the review.", "Say yes or no.", "x"]
    before = enhancer.enhance_with_reasons(prompts)
    path = enhancer.save_pretrained(tmp_path / "enh")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "enhancer.json", "meta_prompt.txt",
        "tokenizer.json", "tokenizer_config.json"]
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))  # no pickle
    loaded = PromptEnhancer.from_pretrained(path)
    assert loaded.meta_prompt == META and loaded.info == {"task": "unit"} and loaded.max_new_tokens == 6
    assert loaded.enhance_with_reasons(prompts) == before and all(r.raw for r in before)  # the model's own text
    assert loaded.enhance(prompts) == [r.text for r in before]
    assert loaded.enhance(prompts[0]) == before[0].text  # a str in, a str out; batching does not change results
    assert loaded.sample(prompts[:1], k=3, seed=7) == enhancer.sample(prompts[:1], k=3, seed=7)
    adapter_keys = json.loads((path / "adapter_config.json").read_text())
    assert adapter_keys["r"] == 4


@pytest.mark.model
def test_save_is_atomic_and_replaces(enhancer, tmp_path):
    target = tmp_path / "enh"
    enhancer.save_pretrained(target)
    enhancer.meta_prompt = "Improve: {instruction}"
    enhancer.save_pretrained(target)
    assert (target / "meta_prompt.txt").read_text() == "Improve: {instruction}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enh"]  # no temporary directories left behind


@pytest.mark.model
def test_validation_and_sampling(enhancer, tmp_path):
    with pytest.raises(ValueError, match="instruction"):
        PromptEnhancer(enhancer.model, enhancer.tokenizer, base_model="tiny-random", meta_prompt="no slot")
    samples = enhancer.enhance("abc", num_samples=3, seed=1)
    assert isinstance(samples, list) and len(samples) == 3
    with pytest.raises(FileNotFoundError, match="enhancer.json"):
        PromptEnhancer.from_pretrained(tmp_path)


@pytest.mark.model
def test_enhance_main_prints_rewrites(enhancer, tmp_path, capsys):
    enhancer.save_pretrained(tmp_path / "enh")
    expected = enhancer.enhance(["hello there"])
    assert enhance_main(tmp_path / "enh", ["hello there"], as_json=True) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == [{"prompt": "hello there", "enhanced": expected[0], "fallback": "truncated"}]
    assert "no stored evaluation" in out.err  # a tiny random model never ends a rewrite within 6 tokens


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
@pytest.mark.model
def test_damaged_enhancer_file_is_a_clear_error_naming_it(enhancer, tmp_path, capsys, name, damage, message):
    from rlprompt.cli import main

    path = _damaged_copy(enhancer, tmp_path, name, damage)
    with pytest.raises(ValueError, match=message):
        PromptEnhancer.from_pretrained(path)
    assert main(["enhance", "--enhancer", str(path), "hello"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and name in err


@pytest.mark.model
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


@pytest.mark.model
def test_stdin_prompts_lose_their_carriage_returns(enhancer, tmp_path, capsys, monkeypatch):
    from rlprompt.enhancer import read_prompts

    assert read_prompts(_Stdin(b"first prompt\r\n\r\nsecond\r\nthird")) == ["first prompt", "second", "third"]
    enhancer.save_pretrained(tmp_path / "enh")
    monkeypatch.setattr("sys.stdin", _Stdin("caf\u00e9 review\r\n".encode()))
    assert enhance_main(tmp_path / "enh", ["-"], as_json=True) == 0
    assert [r["prompt"] for r in json.loads(capsys.readouterr().out)] == ["caf\u00e9 review"]


@pytest.mark.model
def test_non_utf8_stdin_and_arguments_are_one_line_errors(enhancer, tmp_path, capsys, monkeypatch):
    from rlprompt.cli import main

    enhancer.save_pretrained(tmp_path / "enh")
    monkeypatch.setattr("sys.stdin", _Stdin(b"good line\ncaf\xe9\n"))
    assert main(["enhance", "--enhancer", str(tmp_path / "enh")]) == 2
    err = capsys.readouterr().err
    assert "stdin is not UTF-8 text: byte 0xe9 at offset 13" in err and len(err.strip().splitlines()) == 1
    assert main(["enhance", "--enhancer", str(tmp_path / "enh"), "ok", "caf\udce9"]) == 2  # how Python passes bad argv
    assert "prompt 2 is not valid UTF-8 text" in capsys.readouterr().err


# -- never worse than none: one fallback rule, an identity enhancer, the stored evaluation (issue 18) -------
class ScriptedLM(torch.nn.Module):
    """Stands in for a causal LM: each generated row is the next scripted completion's tokens, cut at
    ``max_new_tokens`` and ended with the end-of-sequence token when it fits, as a real model ends one."""

    def __init__(self, tokenizer, completions: list[str]) -> None:
        from types import SimpleNamespace

        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.tokenizer, self.completions = tokenizer, list(completions)

    def generate(self, input_ids, attention_mask, max_new_tokens, num_return_sequences, pad_token_id, **kwargs):
        rows = []
        for _ in range(input_ids.shape[0] * num_return_sequences):
            ids = self.tokenizer(self.completions.pop(0), add_special_tokens=False).input_ids[:max_new_tokens]
            rows.append(ids + [self.tokenizer.eos_token_id] * (len(ids) < max_new_tokens))
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids.repeat_interleave(num_return_sequences, 0), new], 1)


def _scripted(completions, max_new_tokens=12, **kw) -> PromptEnhancer:
    from rlprompt.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    return PromptEnhancer(ScriptedLM(tokenizer, completions), tokenizer, base_model="tiny-random", meta_prompt=META,
                          max_new_tokens=max_new_tokens, **kw)


def test_fallback_rule_thresholds():
    from rlprompt.enhancer import MAX_GROWTH, MAX_REWRITE_WORDS, fallback_reason

    assert fallback_reason("Classify it.", "Decide whether the review is positive.", True) is None
    assert fallback_reason("Classify it.", "  \n", True) == "empty"
    assert fallback_reason("Classify it.", "Decide whether the review", False) == "truncated"
    words = " ".join(["word"] * MAX_REWRITE_WORDS)
    assert fallback_reason("Classify it.", words, True) is None
    assert fallback_reason("Classify it.", words + " more", True) == "too_long"
    long_input = " ".join(["w"] * 30)  # a long input may grow MAX_GROWTH times
    assert fallback_reason(long_input, " ".join(["x"] * (MAX_GROWTH * 30)), True) is None
    assert fallback_reason(long_input, " ".join(["x"] * (MAX_GROWTH * 30 + 1)), True) == "too_long"


@pytest.mark.model
def test_enhance_keeps_the_original_for_empty_truncated_or_far_too_long_rewrites():
    from rlprompt.enhancer import Rewrite

    prompts = ["Classify the review.", "What is the capital of France?", "Say yes or no.", "Summarize it.", "Tag it."]
    completions = ['New instruction: "Decide if the review is positive or negative."',
                   "Answer the question about the capital of France in one full sentence, then explain in detail why the city "
                   "became the capital, naming",
                   "   ",
                   "Instruction: Summarize the article in two sentences.\n\nThen I would add more text that goes on",
                   " ".join(["very"] * 70)]
    enhancer = _scripted(completions, max_new_tokens=20)
    out = enhancer.enhance_with_reasons(prompts)
    assert [r.fallback for r in out] == [None, "truncated", "empty", None, "truncated"]
    assert out[0] == Rewrite("Decide if the review is positive or negative.", None, completions[0])
    assert out[1].text == prompts[1] and out[1].raw.startswith("Answer the question")  # the cut question is kept
    assert out[3].text == "Summarize the article in two sentences."  # its first paragraph ended before the cut
    too_long = _scripted([" ".join(["very"] * 70)], max_new_tokens=100).enhance_with_reasons(prompts[4])
    assert too_long.fallback == "too_long" and too_long.text == prompts[4]
    assert _scripted(completions, max_new_tokens=20).enhance(prompts) == [r.text for r in out]


@pytest.mark.model
def test_enhance_main_prints_the_original_for_a_cut_rewrite(tmp_path, capsys, monkeypatch):
    """The stdin question that came back cut at 32 tokens and lost (issue 18): the original goes through."""
    enhancer = _scripted(["Answer this question about the weather in great detail, listing every"], max_new_tokens=8)
    monkeypatch.setattr(PromptEnhancer, "from_pretrained", classmethod(lambda cls, *a, **k: enhancer))
    monkeypatch.setattr("sys.stdin", _Stdin(b"Will it rain tomorrow in Paris?\n"))
    assert enhance_main(tmp_path, ["-"]) == 0
    out = capsys.readouterr()
    assert out.out == "Will it rain tomorrow in Paris?\n"
    assert "kept the original for 1 of 1 rewrites (truncated: 1)" in out.err


def _evaluation(original: float, rewrite: float) -> dict:
    from rlprompt.enhancer import rewriter_evaluation

    return rewriter_evaluation(["Classify the review."], [original], {
        "prewrite_i": (["Say if the review is positive."], [rewrite]), "prewrite_s": (["Rate it."], [0.95])},
        deployed="prewrite_i", metric="dev_accuracy", examples=32)


def test_rewriter_evaluation_keeps_the_original_unless_the_deployed_rewrite_beats_it():
    from rlprompt.enhancer import describe_evaluation

    assert _evaluation(0.875, 0.75)["identity"] and _evaluation(0.875, 0.875)["identity"]  # a tie keeps the original
    assert not _evaluation(0.75, 0.875)["identity"]  # prewrite_s's 0.95 alone does not decide: it is not deployed
    evaluation = _evaluation(0.875, 0.75)
    assert evaluation["original"] == {"texts": ["Classify the review."], "scores": [0.875], "score": 0.875}
    line = describe_evaluation(evaluation)
    assert line == ("dev_accuracy on 32 examples: original 0.875, prewrite_i 0.750, prewrite_s 0.950; the rewrite "
                    "(prewrite_i) does not beat the original: the enhancer keeps the original (identity)")
    assert describe_evaluation(_evaluation(0.75, 0.875)).endswith("beats the original: the enhancer rewrites")
    with pytest.raises(ValueError, match="one text and score per original"):
        from rlprompt.enhancer import rewriter_evaluation

        rewriter_evaluation(["a", "b"], [0.1, 0.2], {"greedy": (["x"], [0.3])}, deployed="greedy", metric="m",
                            examples=1)


@pytest.mark.model
def test_identity_enhancer_loads_no_model_and_returns_prompts_unchanged(enhancer, tmp_path, capsys, monkeypatch):
    import rlprompt.models
    from rlprompt.cli import main

    enhancer.evaluation = _evaluation(0.875, 0.75)
    path = enhancer.save_pretrained(tmp_path / "enh")
    assert json.loads((path / "enhancer.json").read_text())["evaluation"]["identity"] is True

    def refuse(*args, **kwargs):
        raise AssertionError("an identity enhancer must not load a model")

    monkeypatch.setattr(rlprompt.models, "load_model", refuse)
    loaded = PromptEnhancer.from_pretrained(path)
    assert loaded.identity and loaded.model is None and "identity=True" in repr(loaded)
    assert loaded.enhance("Translate sentence 1 to French.") == "Translate sentence 1 to French."
    assert loaded.enhance(["a", "b"], num_samples=2) == [["a", "a"], ["b", "b"]]
    assert loaded.enhance_with_reasons("a").fallback == "identity"
    assert loaded.count_tokens("hi") > 1 and loaded.max_input_tokens is None  # what a service asks of it
    assert main(["enhance", "--enhancer", str(path), "Summarize the article."]) == 0
    out = capsys.readouterr()
    assert out.out == "Summarize the article.\n"
    assert out.err.strip().splitlines() == [
        "rlprompt enhance: dev_accuracy on 32 examples: original 0.875, prewrite_i 0.750, prewrite_s 0.950; the "
        "rewrite (prewrite_i) does not beat the original: the enhancer keeps the original (identity)"]


@pytest.mark.model
def test_a_winning_rewriter_is_loaded_and_rewrites(enhancer, tmp_path, capsys):
    enhancer.evaluation = _evaluation(0.75, 0.875)
    loaded = PromptEnhancer.from_pretrained(enhancer.save_pretrained(tmp_path / "enh"))
    assert not loaded.identity and loaded.model is not None and loaded.evaluation == enhancer.evaluation
    assert loaded.enhance_with_reasons("x").raw  # the model ran


# -- portable artifacts (issue 18) -----------------------------------------------------------------------
@pytest.mark.model
def test_saved_files_get_ordinary_modes(enhancer, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = enhancer.save_pretrained(tmp_path / "enh")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {p.name: 0o644 for p in path.iterdir()}


@pytest.fixture
def local_base(tmp_path):
    """The tiny random model saved as a local checkpoint directory, and an enhancer trained on it."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model("tiny-random")
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base, tokenizer = load_model(str(base_dir))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return base_dir, PromptEnhancer(peft_model, tokenizer, base_model=str(base_dir), meta_prompt=META, max_new_tokens=6)


@pytest.mark.model
def test_base_model_is_recorded_as_given_with_a_checksum_checked_on_load(local_base, tmp_path):
    from rlprompt.enhancer import base_model_checksum

    base_dir, enhancer = local_base
    path = enhancer.save_pretrained(tmp_path / "enh")
    config = json.loads((path / "enhancer.json").read_text())
    assert config["base_model"] == str(base_dir) and config["base_model_sha256"] == base_model_checksum(str(base_dir))
    assert len(config["base_model_sha256"]) == 64
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    assert PromptEnhancer.from_pretrained(path).enhance_with_reasons("x").raw == enhancer.enhance_with_reasons("x").raw
    settings = json.loads((base_dir / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({**settings, "rms_norm_eps": 1e-3}))
    with pytest.raises(ValueError, match=r"is not the one the enhancer .* was trained on: its sha256 is"):
        PromptEnhancer.from_pretrained(path)


def test_the_bundled_models_cache_path_is_recorded_by_its_name(tmp_path, monkeypatch):
    from rlprompt.enhancer import portable_base_model
    from rlprompt.models import BUNDLED

    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path / "cache"))
    assert portable_base_model(str(tmp_path / "cache" / "models" / BUNDLED)) == BUNDLED
    assert portable_base_model("org/model") == "org/model" and portable_base_model("tiny-random") == "tiny-random"
    assert portable_base_model(str(tmp_path / "mine")) == str(tmp_path / "mine")


@pytest.mark.model
def test_an_enhancer_saved_before_format_2_loads_with_a_warning(enhancer, tmp_path):
    path = enhancer.save_pretrained(tmp_path / "enh")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (path / name).unlink()
    config = json.loads((path / "enhancer.json").read_text())
    old = {k: config[k] for k in ("base_model", "dtype", "max_new_tokens", "info")}
    (path / "enhancer.json").write_text(json.dumps({"format_version": 1, **old}))
    with pytest.warns(UserWarning, match=r"saved by an older rlprompt \(enhancer format 1.*Save it again"):
        loaded = PromptEnhancer.from_pretrained(path)
    assert loaded.evaluation is None and not loaded.identity
    assert loaded.enhance_with_reasons(["a", "b"]) == enhancer.enhance_with_reasons(["a", "b"])


@pytest.mark.model
def test_readme_snippet_loads_an_enhancer_with_plain_transformers_and_peft(local_base, tmp_path, capsys):
    """The README's plain transformers + peft snippet, run as written on a tiny enhancer, gives the model text
    the enhancer itself generates; on an identity enhancer it keeps the instruction."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    deploy = readme.split("## Deploy a learned rewriter", 1)[1].split("\n## ", 1)[0]
    code = next(block for block in re.findall(r"```python\n(.*?)```", deploy, re.S) if "PeftModel" in block)
    base_dir, enhancer = local_base
    for evaluation, expected in ((None, enhancer.enhance_with_reasons("Classify the review.").raw),
                                 (_evaluation(0.875, 0.75), "Classify the review.")):
        enhancer.evaluation = evaluation
        path = enhancer.save_pretrained(tmp_path / "enh")
        run = code.replace('Path("runs/prewrite/enhancer")', f"Path({str(path)!r})")
        run, replaced = re.subn(r"^base_dir = .*$", f"base_dir = {str(base_dir)!r}", run, flags=re.M)
        assert replaced == 1 and str(path) in run
        namespace: dict = {}
        exec(compile(run, "README.md", "exec"), namespace)
        assert namespace["rewrite"] == expected and expected
        assert capsys.readouterr().out == expected + "\n"


@pytest.mark.model
def test_loading_asks_no_hub_about_a_hub_id_base(local_base, tmp_path, monkeypatch):
    """adapter_config.json names the bundled model's hub original; loading offline must not look it up."""
    import peft.utils.other

    base_dir, enhancer = local_base
    path = enhancer.save_pretrained(tmp_path / "enh")
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**adapter_config,
                                                          "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    looked_up = []
    monkeypatch.setattr(peft.utils.other, "file_exists", lambda *a, **k: looked_up.append(a) or True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert PromptEnhancer.from_pretrained(path).enhance_with_reasons("x").raw and not looked_up
