"""Prompt environments: checkers with zero warnings, determinism, one batched target call, bad inputs."""

from __future__ import annotations

import json
import warnings
import zlib

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.logger import Logger

from rlprompt.envs import (
    ENV_IDS,
    MultiPrompterEnv,
    PromptEditEnv,
    PromptRewriteEnv,
    PromptScorer,
    PromptTokensEnv,
    make_prompt_tokens_vec_env,
)
from rlprompt.envs.prompt_edit import split_phrases
from rlprompt.envs.prompt_tokens import decode_prompt
from rlprompt.models import load_tokenizer
from rlprompt.targets.base import TargetError
from rlprompt.tasks import ClassificationTask, Split
from tests.conftest import FakeTarget

pytestmark = pytest.mark.model  # every test here builds the tiny random Llama or its tokenizer

VOCAB = list(range(300, 340))


def hashed_scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
    """Log-probabilities that are a fixed function of (prompt, input), summing to log 0.5."""
    rng = np.random.default_rng(zlib.crc32(f"{prompt}|{text}".encode()))
    return np.log(rng.dirichlet(np.ones(k)) * 0.5)


def fake_target(tokenizer, nan: bool = False) -> FakeTarget:
    """Scripted target with :func:`hashed_scores` (all NaN with ``nan``) that repeats texts as paraphrases."""
    return FakeTarget((lambda prompt, text, k, position: np.full(k, np.nan)) if nan else hashed_scores,
                      generate=lambda text, i, seed: f"said again {zlib.crc32(text.encode()) % 7}",
                      loglikelihood=lambda context, continuation: -1.0, tokenizer=tokenizer)


def fake_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for MiniLM: unit vectors from a hash of the text."""
    vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


TASK = ClassificationTask(
    name="toy", label_names=("negative", "positive"), verbalizers=(" terrible", " great"),
    template="{sentence} {prompt}", prompt="All in all, the movie was",
    splits={s: Split(tuple(f"{s} review {i}" for i in range(8)), tuple(i % 2 for i in range(8)))
            for s in ("train", "dev", "test")},
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture
def fake(tokenizer):
    return fake_target(tokenizer)


def env_kwargs(env_id: str, target) -> dict:
    if env_id.endswith("PromptTokens-v0"):
        return dict(task=TASK, target=target, prompt_length=3, vocab=VOCAB, batch_size=4)
    if env_id.endswith("PromptRewrite-v0"):
        return dict(task=TASK, target=target, instructions=["It was", "Overall, it was"], batch_size=4, max_length=32)
    return dict(task=TASK, target=target, embedder=fake_embed, max_phrases=4, budget=3)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_envs_pass_both_checkers_without_warnings(env_id, fake):
    env = gymnasium.make(env_id, **env_kwargs(env_id, fake)).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
        if not env_id.endswith("PromptRewrite-v0"):  # SB3 does not take Text actions
            sb3_check_env(env)
    assert [str(w.message) for w in caught] == []


def test_multiprompter_passes_pettingzoo_api_test(fake):
    from pettingzoo.test import api_test

    env = MultiPrompterEnv(task=TASK, target=fake, n_agents=3, segment_length=2, vocab=VOCAB, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api_test(env, num_cycles=20)
    assert [str(w.message) for w in caught] == []
    env.reset(seed=1)
    for agent in env.agent_iter():
        obs, reward, terminated, truncated, info = env.last()
        assert obs[-1] == env.possible_agents.index(agent) + 1
        env.step(None if terminated else 0)
        if terminated:
            assert info["prompt"] == decode_prompt(env.tokenizer, [VOCAB[0]] * 6) and reward != 0


def test_prompt_tokens_contract(fake, tokenizer):
    env = PromptTokensEnv(task=TASK, target=fake, prompt_length=3, vocab=VOCAB, batch_size=4)
    assert env.observation_space.shape == (4,) and env.observation_space.dtype == np.int64
    assert env.observation_space.high[0] == len(tokenizer) - 1 and env.action_space.n == len(VOCAB)
    np.testing.assert_array_equal(env.action_token_ids, VOCAB)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0, 0, 0])
    for t, action in enumerate([5, 6, 7]):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs[-1] == t + 1 and obs[t] == VOCAB[action] and not truncated
    assert terminated and info["prompt"] == decode_prompt(tokenizer, [305, 306, 307])
    assert set(info) >= {"prompt", "accuracy", "raw_reward"} and reward == info["raw_reward"]
    assert fake.classify_calls[-1][0] == [info["prompt"]]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_decode_strips_one_leading_space(tokenizer):
    ids = tokenizer(" great movie", add_special_tokens=False).input_ids
    assert decode_prompt(tokenizer, ids) == "great movie"
    assert "{sentence} {prompt}".replace("{prompt}", decode_prompt(tokenizer, ids)).endswith("} great movie")


def test_full_vocabulary_excludes_special_tokens(fake, tokenizer):
    env = PromptTokensEnv(task=TASK, target=fake, prompt_length=2, batch_size=4)
    assert len(env.action_token_ids) == len(tokenizer) - len(set(tokenizer.all_special_ids))
    assert not set(tokenizer.all_special_ids) & set(env.action_token_ids.tolist())


def test_same_seed_same_rollout(fake, tokenizer):
    def rollout(seed):
        vec = make_prompt_tokens_vec_env(3, seed=seed, task=TASK, target=fake_target(tokenizer), prompt_length=2,
                                         vocab=VOCAB, batch_size=4, stabilizer="input_zscore")
        vec.action_space.seed(seed)
        obs, out = vec.reset(), []
        for _ in range(6):
            obs, rewards, dones, infos = vec.step(np.array([vec.action_space.sample() for _ in range(3)]))
            out.append((obs.tolist(), rewards.tolist(), [i.get("prompt") for i in infos]))
        return out

    assert rollout(3) == rollout(3)
    assert rollout(3) != rollout(4)


def test_vec_env_scores_finishing_envs_in_one_call(fake):
    vec = make_prompt_tokens_vec_env(4, seed=0, task=TASK, target=fake, prompt_length=3, vocab=VOCAB, batch_size=4)
    vec.reset()
    for step in range(6):
        before = len(fake.classify_calls)
        obs, rewards, dones, infos = vec.step(np.array([step, 1, 2, 3]))
        finishing = (step + 1) % 3 == 0
        assert len(fake.classify_calls) - before == (1 if finishing else 0)
        assert dones.all() == finishing and (rewards != 0).all() == finishing
        if finishing:
            assert len(fake.classify_calls[-1][0]) == len({i["prompt"] for i in infos})
            assert all("terminal_observation" in i and i["terminal_observation"][-1] == 3 for i in infos)
            assert (obs == 0).all()  # auto-reset
    unbatched = make_prompt_tokens_vec_env(4, task=TASK, target=fake, prompt_length=1, vocab=VOCAB, batch_size=4,
                                           batched=False)
    unbatched.reset()
    before = len(fake.classify_calls)
    unbatched.step(np.array([0, 1, 2, 3]))
    assert len(fake.classify_calls) - before == 4


def test_input_zscore_over_the_batch_of_candidates(fake):
    scorer = PromptScorer(fake, TASK, stabilizer="input_zscore", batch_size=4)
    rewards, infos = scorer.score(["a", "b", "c"])
    assert len(fake.classify_calls) == 1 and abs(rewards.sum()) < 1e-9
    assert all(set(i) == {"raw_reward", "accuracy"} for i in infos)


def test_evaluate_is_cached(fake):
    scorer = PromptScorer(fake, TASK, batch_size=4)
    first = scorer.evaluate("It was")
    calls = len(fake.classify_calls)
    assert scorer.evaluate("It was") == first and len(fake.classify_calls) == calls
    assert 0.0 <= scorer.evaluate("It was", split="test") <= 1.0 and len(fake.classify_calls) == calls + 1


def test_cached_evaluations_round_trip_so_a_resumed_scorer_asks_the_target_nothing_again(fake):
    scorer = PromptScorer(fake, TASK, batch_size=4)
    dev, test = scorer.evaluate("It was"), scorer.evaluate("It was", split="test")
    rows = json.loads(json.dumps(scorer.evaluations()))  # as a checkpoint's state.json holds them
    assert sorted(rows) == sorted([["It was", "dev", dev], ["It was", "test", test]])
    resumed = PromptScorer(fake, TASK, batch_size=4)
    resumed.load_evaluations(rows)
    calls = len(fake.classify_calls)
    assert resumed.evaluate("It was") == dev and resumed.evaluate("It was", split="test") == test
    assert len(fake.classify_calls) == calls


def test_scorers_built_from_specs_get_their_own_target_in_the_dtype_asked_for():
    import torch

    from rlprompt.envs.scoring import resolve_target

    full = PromptScorer("tiny-random", TASK, batch_size=4, target_dtype="float32")
    half = PromptScorer("tiny-random", TASK, batch_size=4, target_dtype="bfloat16")
    assert full.target.model.dtype == torch.float32 and half.target.model.dtype == torch.bfloat16
    again = PromptScorer("tiny-random", TASK, batch_size=4, target_dtype="float32")
    assert again.target is not full.target and again.target.model is not full.target.model  # no hidden sharing
    full.score(["x"])
    assert full.target.stats.sequences == 4 and again.target.stats.sequences == 0
    assert resolve_target("tiny-random").model.dtype == torch.bfloat16  # the configs' default dtype
    assert resolve_target(full.target) is full.target


def test_nan_target_raises(tokenizer):
    env = PromptTokensEnv(task=TASK, target=fake_target(tokenizer, nan=True), prompt_length=1, vocab=VOCAB,
                          batch_size=4)
    env.reset(seed=0)
    with pytest.raises(TargetError, match="NaN"):
        env.step(0)

    class DuckNaN:  # not a Target subclass: no validation in front of it
        tokenizer = env.tokenizer

        def classify(self, template, prompts, inputs, verbalizers):
            return np.full((len(prompts), len(inputs), len(verbalizers)), np.nan)

    with pytest.raises(ValueError, match="NaN"):
        PromptScorer(DuckNaN(), TASK, batch_size=4).score(["x"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(vocab=[10, 10**6]), "1000000"), (dict(vocab=[]), "empty"), (dict(prompt_length=0), "prompt_length"),
     (dict(vocab=[-1]), "-1"), (dict(batch_size=99), "batch_size=99")],
)
def test_prompt_tokens_bad_inputs(fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptTokensEnv(**{**dict(task=TASK, target=fake, prompt_length=2, vocab=VOCAB, batch_size=4), **kwargs})


def test_bad_actions(fake):
    env = PromptTokensEnv(task=TASK, target=fake, prompt_length=2, vocab=VOCAB, batch_size=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(len(VOCAB))
    rewrite = PromptRewriteEnv(task=TASK, target=fake, batch_size=4, max_length=8)
    rewrite.reset(seed=0)
    for bad in ("naïve", "x" * 9, 3):
        with pytest.raises(ValueError, match="printable"):
            rewrite.step(bad)
    obs, reward, terminated, _, info = rewrite.step("Be kind")
    assert terminated and info["rewritten"] == "Be kind" and info["instruction"] == TASK.prompt
    with pytest.raises(ValueError, match="unknown task"):
        PromptTokensEnv(task="sentimnt", target=fake)


def test_prompt_rewrite_scores_a_group_of_rewrites_in_one_call_on_one_minibatch(fake):
    """PRewrite's GRPO group is one step_group: one target call, one shared minibatch, the input z-score over the
    group (rewards sum to 0); step is a group of one, from the same minibatch sampler."""
    group = PromptRewriteEnv(task=TASK, target=fake, batch_size=4, stabilizer="input_zscore")
    group.reset(seed=3, options={"instruction": "It was"})
    obs, rewards, terminated, truncated, infos = group.step_group(["Good?", "Bad?", "Good?"])
    assert len(fake.classify_calls) == 1 and fake.classify_calls[0][0] == ["Good?", "Bad?"]  # repeats scored once
    assert rewards.shape == (3,) and abs(rewards.sum()) < 1e-9 and rewards[0] == rewards[2]
    assert terminated and not truncated and [i["rewritten"] for i in infos] == ["Good?", "Bad?", "Good?"]
    assert all(i["instruction"] == "It was" and set(i) >= {"raw_reward", "accuracy"} for i in infos)
    with pytest.raises(RuntimeError, match="reset"):
        group.step_group(["again"])
    single = PromptRewriteEnv(task=TASK, target=fake, batch_size=4)
    single.reset(seed=3, options={"instruction": "It was"})
    _, reward, _, _, info = single.step("Bad?")
    assert fake.classify_calls[-1][1] == fake.classify_calls[0][1]  # the same seed, the same minibatch
    assert reward == info["raw_reward"] == infos[1]["raw_reward"]


def test_prompt_rewrite_with_no_charset_takes_any_text(fake):
    env = PromptRewriteEnv(task=TASK, target=fake, batch_size=4, max_length=8, charset=None)
    assert env.action_space.contains("naïve\nand longer than eight") and not env.action_space.contains(3)
    assert env.action_space.contains(env.action_space.sample())
    env.reset(seed=0)
    assert env.step("naïve\nand longer than eight")[4]["rewritten"] == "naïve\nand longer than eight"
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not a string"):
        env.step_group(["fine", 3])


def test_prompt_rewrite_observes_token_ids(fake, tokenizer):
    env = PromptRewriteEnv(task=TASK, target=fake, batch_size=4, max_tokens=16)
    obs, info = env.reset(options={"instruction": "Is it good?"})
    ids = tokenizer("Is it good?", add_special_tokens=False).input_ids
    assert obs[-1] == len(ids) and obs[: len(ids)].tolist() == ids and not obs[len(ids):-1].any()


def test_prompt_edit_actions_masks_and_rewards(fake):
    env = PromptEditEnv(task=TASK, target=fake, embedder=fake_embed, max_phrases=4, budget=3,
                        phrase_bank=["Overall,", "it was"])
    assert split_phrases("All in all, the movie was", 4) == ["All in all,", "the movie was"]
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs[-1] == 1.0 and env.phrases == ["All in all,", "the movie was"]
    mask = env.action_masks()
    assert mask.sum() == 2 + 1 + 2 + 2 + 1  # delete x2, swap(0,1), paraphrase x2, add x2, stop
    start = env.score()
    _, r0, done, _, info = env.step(env.edits.index(("delete", 3)))  # masked out: a no-op that uses one edit
    assert info["masked"] and r0 == 0.0 and env.phrases == ["All in all,", "the movie was"] and env.remaining == 2
    env.reset(seed=0)
    _, r1, done, _, info = env.step(env.edits.index(("swap", 0, 1)))
    assert env.instruction == "the movie was All in all," and not done
    assert r1 == pytest.approx(info["score"] - start)
    _, r2, done, _, info = env.step(env.edits.index(("paraphrase", 0)))
    assert env.phrases[0].startswith("said again") and not done
    _, r3, done, _, info = env.step(env.edits.index(("add", 0)))
    assert env.phrases[-1] == "Overall," and done and obs.shape == env.observation_space.shape
    assert r1 + r2 + r3 == pytest.approx(env.score() - start)  # the return is the dev accuracy gained
    env.reset(seed=0)
    _, r, done, _, _ = env.step(len(env.edits) - 1)
    assert done and r == 0.0


def test_ppo_trains_on_batched_vec_env():
    from stable_baselines3 import PPO

    from rlprompt.targets.hf import HFTarget

    target = HFTarget("tiny-random", dtype="float32")
    vec = make_prompt_tokens_vec_env(4, seed=0, task=TASK, target=target, prompt_length=2, vocab=VOCAB,
                                     batch_size=4, stabilizer="input_zscore")
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # no SB3 temp directory
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(192)
    assert model.num_timesteps >= 192
    assert any(not (a == b).all() for a, b in zip(before, model.policy.parameters()))


def test_maskable_ppo_on_prompt_edit(fake):
    from sb3_contrib import MaskablePPO

    from stable_baselines3.common.callbacks import BaseCallback

    env = PromptEditEnv(task=TASK, target=fake, embedder=fake_embed, max_phrases=4, budget=2)
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.set_logger(Logger(folder=None, output_formats=[]))
    before = [p.clone() for p in model.policy.parameters()]
    infos: list[dict] = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            infos.extend(self.locals["infos"])
            return True

    model.learn(32, callback=Record())
    # the policy reads env.action_masks(): none of its 32 edits is one that does not apply (a masked no-op),
    # where about 4 in 10 actions of an unmasked policy are
    assert len(infos) == model.num_timesteps == 32 and not any(info["masked"] for info in infos)
    assert any(not (a == b).all() for a, b in zip(before, model.policy.parameters()))


@pytest.mark.slow
def test_default_prompt_tokens_env_on_the_real_model():
    env = gymnasium.make("rlprompt/PromptTokens-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,) and env.action_space.n > 49000
    actions = np.random.default_rng(0).integers(env.action_space.n, size=5).tolist()
    for action in actions:
        obs, reward, terminated, _, info = env.step(action)
    inner = env.unwrapped
    assert terminated and info["prompt"] == decode_prompt(inner.tokenizer, inner.action_token_ids[actions].tolist())
    assert reward == info["raw_reward"]  # no stabilizer by default: the reward is the gap reward itself
    env.reset(seed=0)  # the same seed replays the same minibatch, which the real target scores the same
    assert [env.step(action)[1] for action in actions][-1] == pytest.approx(reward, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS[1:])
def test_other_ids_make_without_arguments_on_the_real_model(env_id):
    env = gymnasium.make(env_id)
    env.reset(seed=0)
    inner = env.unwrapped
    if env_id.endswith("PromptRewrite-v0"):
        _, reward, _, _, info = env.step("Overall, the movie was")
        assert info["rewritten"] == "Overall, the movie was" and reward == info["raw_reward"]  # scored as written
        return
    start, phrase = inner.instruction, next(p for p in inner.phrase_bank if p not in inner.phrases)
    _, reward, _, _, info = env.step(inner.edits.index(("add", inner.phrase_bank.index(phrase))))
    assert info["instruction"] == f"{start} {phrase}" and not info["masked"]
    assert reward == pytest.approx(info["score"] - inner.score(start))  # the change of the dev accuracy
