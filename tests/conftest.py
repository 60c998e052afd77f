"""Shared test fixtures: the bundled and tiny targets, and the location of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("RLPROMPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SST2 = SHARED_DATA / "rlprompt-16shot" / "sst-2"


@pytest.fixture(scope="session")
def bundled_target():
    """The real SmolLM2-135M target in float32 (tight tolerances), loaded once per session."""
    from rlprompt.targets.hf import HFTarget

    return HFTarget("smollm2-135m-instruct", dtype="float32", batch_size=16)


@pytest.fixture(scope="session")
def tiny_target():
    """A two-layer random Llama over the SmolLM2 tokenizer."""
    from rlprompt.targets.hf import HFTarget

    return HFTarget("tiny-random", dtype="float32", batch_size=4)
