"""Device plumbing (issue: runs on a GPU): the resolver, explicit CPU, clear errors without CUDA, and a meta-device
check that HFTarget's scoring loop creates every tensor it feeds the model on the model's device."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from rlprompt.devices import DeviceError, check_device, resolve_device
from rlprompt.models import load_model
from rlprompt.targets.hf import HFTarget

NO_CUDA = not torch.cuda.is_available()


def test_device_resolver_accepts_the_documented_settings_and_names_bad_ones():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", "mps"):
        with pytest.raises(DeviceError, match=f"device={bad!r} is not one of cpu, cuda, cuda:N, auto"):
            check_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_clear_error():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=f"device={spec!r} but this machine has no CUDA device"):
            resolve_device(spec)
    with pytest.raises(DeviceError, match="no CUDA device"):
        HFTarget("tiny-random", dtype="float32", device="cuda")


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.subprocess
def test_device_cuda_in_the_eval_cli_without_cuda_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "rlprompt.cli", "eval", "--task", "sentiment", "--target",
                           "smollm2-135m-instruct", "--device", "cuda", "--prompt", "It was", "--limit", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("rlprompt eval: error:") and "no CUDA device" in err[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_device_config_field_is_checked_in_every_method_config():
    from rlprompt.policies.rlprompt import RLPromptConfig
    from rlprompt.policies.prewrite import PRewriteConfig

    for cls in (RLPromptConfig, PRewriteConfig):
        assert cls(device="cpu").device == "cpu"
        with pytest.raises(DeviceError, match="device='gpu0'"):
            cls(device="gpu0")


@pytest.mark.model
def test_device_cpu_explicit_scores_like_the_default():
    model, tokenizer = load_model("tiny-random", dtype="float32", device="cpu")
    a = HFTarget.from_loaded(model, tokenizer)
    b = HFTarget("tiny-random", dtype="float32", device="cpu")
    assert a.device == b.device == torch.device("cpu") and a.batch_size == 32
    args = ("{sentence} {prompt}", ["It was", "Overall"], ["good film", "bad"], [" terrible", " great"])
    assert np.allclose(a.classify(*args), b.classify(*args))


class MetaModel(torch.nn.Module):
    """A stand-in causal LM on the meta device: its forward pass refuses any input off the meta device (as a CUDA
    model would refuse CPU tensors) and returns meta hidden states of the right shape."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        self.forward_calls = 0

    @property
    def base_model(self) -> "MetaModel":
        return self

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head

    def forward(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False):
        for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask), ("position_ids", position_ids)):
            assert tensor.device.type == "meta", f"{name} reached the model on {tensor.device}"
        self.forward_calls += 1
        return types.SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, self.config.hidden_size,
                                                                   device="meta"))


@pytest.mark.parametrize("template", ["{sentence} {prompt}", "Q: {prompt}\n{sentence}\nA:"])
@pytest.mark.parametrize("kv_reuse", [True, False])
@pytest.mark.model
def test_device_meta_scoring_creates_no_tensor_off_the_model_device(template, kv_reuse):
    """Every tensor HFTarget's scoring loop feeds the model sits on the model's device, and the scores stay there
    until the call is done: ``classify_on_device`` returns a meta tensor of the right shape."""
    tiny, tokenizer = load_model("tiny-random", dtype="float32")
    model = MetaModel(tiny.config)
    assert HFTarget.from_loaded(model, tokenizer).batch_size == 512  # off the CPU: larger batches
    target = HFTarget.from_loaded(model, tokenizer, batch_size=3, kv_reuse=kv_reuse)
    assert target.device == torch.device("meta")
    out = target.classify_on_device(template, ["It was", "x", "All in all"], ["a b c", "d", "e f", ""],
                                    [" terrible", " great"])
    assert out.device.type == "meta" and out.shape == (3, 4, 2) and model.forward_calls >= 2
