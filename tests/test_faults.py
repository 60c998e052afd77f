"""Training runs against a fault-injecting OpenAI-compatible endpoint on loopback (real HTTP): transient
faults are retried and counted, never turned into NaN or default rewards; an outage stops the run with a
clear error and `--resume` finishes it once the endpoint is back, with no update lost or logged twice."""

from __future__ import annotations

import pytest

from rlprompt.policies.rlprompt import RLPromptConfig, train_rlprompt
from rlprompt.runs import RunDir
from rlprompt.targets import TargetError, make_target
from rlprompt.targets.faulty import FAULTS, FaultyEndpoint

pytest.importorskip("uvicorn")
TOKENS = [" terrible", " great"]  # the built-in sentiment task's verbalizers


def tiny_config(endpoint: FaultyEndpoint, **overrides) -> RLPromptConfig:
    fields = dict(task="sentiment", target=f"openai:{endpoint.url}:fake?timeout=2&max_retries=10&backoff=0.01",
                  policy_model="tiny-random", policy_dtype="float32", prompt_length=2, n_envs=4, mlp_hidden=16,
                  value_hidden=8, input_batch_size=4, vocab=list(range(300, 364)), steps=8, eval_every=4,
                  checkpoint_every=2)
    return RLPromptConfig(**{**fields, **overrides})


def rewards(run: RunDir) -> list[float]:
    return [r[k] for r in run.read_metrics() for k in ("charts/raw_reward", "charts/reward")]


@pytest.fixture(scope="module")
def clean_rewards(tmp_path_factory) -> list[float]:
    """The rewards of the same run against the endpoint without faults: what a run through faults must log."""
    path = tmp_path_factory.mktemp("clean") / "run"
    with FaultyEndpoint(TOKENS) as endpoint:
        cfg = tiny_config(endpoint)
        train_rlprompt(cfg, path, target=make_target(cfg.target), progress=False)
    return rewards(RunDir(path, resume=True))


def test_faulty_endpoint_rejects_bad_settings():
    with pytest.raises(ValueError, match="fault_rate"):
        FaultyEndpoint(TOKENS, fault_rate=1.5)
    with pytest.raises(ValueError, match="'teapot'"):
        FaultyEndpoint(TOKENS, faults=["500", "teapot"])


@pytest.mark.model
def test_run_survives_every_kind_of_transient_fault(tmp_path, clean_rewards):
    with FaultyEndpoint(TOKENS, fault_rate=0.3, slow_seconds=2.5, seed=1) as endpoint:
        cfg = tiny_config(endpoint)
        target = make_target(cfg.target)
        summary = train_rlprompt(cfg, tmp_path / "run", target=target, progress=False)
        injected = dict(endpoint.injected)
    assert summary["steps"] == cfg.steps
    assert set(injected) == set(FAULTS), injected  # every kind was hit at least once
    # every fault was retried, none swallowed (a reply that is merely slow under CI load may add a retry)
    assert target.retries >= sum(injected.values())
    values = rewards(RunDir(tmp_path / "run", resume=True))
    assert values == pytest.approx(clean_rewards, rel=1e-9)  # every update logged, and no fault changed a reward


@pytest.mark.model
def test_outage_stops_cleanly_and_resume_finishes_the_run(tmp_path, clean_rewards):
    # Each update sends 16 scoring requests (4 prompts x 4 inputs): the outage starts during update 5 or so.
    with FaultyEndpoint(TOKENS, outage_after=75) as endpoint:
        cfg = tiny_config(endpoint, target=f"openai:{endpoint.url}:fake?timeout=2&max_retries=2&backoff=0.01")
        with pytest.raises(TargetError, match=r"3 attempts: HTTP 503.*service unavailable"):
            train_rlprompt(cfg, tmp_path / "run", target=make_target(cfg.target), progress=False)
        run = RunDir(tmp_path / "run", resume=True)
        logged = [r["step"] for r in run.read_metrics()]
        assert logged == list(range(1, len(logged) + 1)) and 2 <= len(logged) < cfg.steps
        assert rewards(run) == pytest.approx(clean_rewards[: 2 * len(logged)], rel=1e-9)  # what was logged is right
        assert run.latest_checkpoint() is not None
        endpoint.outage(False)
        summary = train_rlprompt(cfg, tmp_path / "run", resume=True, target=make_target(cfg.target), progress=False)
    assert summary["steps"] == cfg.steps
    steps = [r["step"] for r in RunDir(tmp_path / "run", resume=True).read_metrics()]
    assert steps == list(range(1, cfg.steps + 1))
