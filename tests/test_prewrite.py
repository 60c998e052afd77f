"""PRewrite (Kong et al. 2024): config checks, the rewrite reward, GRPO training with a tiny random rewriter
against a scripted fake target, PRewrite-S selection, resume, the accelerate entry point, and the benchmark
(experiments/prewrite_bench.py: seeds, parts, resume, report)."""

from __future__ import annotations

import json
import re
import shutil
import zlib

import gymnasium
import numpy as np
import pytest
import torch

from rlprompt.errors import ConfigError
from rlprompt.models import load_model
from rlprompt.policies.prewrite import (
    PRewriteConfig,
    RewriteReward,
    balanced_subset,
    build_task,
    clean_rewrite,
    dev_scorer,
    prewrite_s,
    train_prewrite,
)
from rlprompt.policies.rewriter import chat_template
from rlprompt.runs import RunDir
from tests.conftest import FakeTarget, gold_share, launch_two_processes


def hash_quality(prompt: str) -> float:
    return (zlib.crc32(prompt.encode()) % 1000) / 999


def _fake_target(cfg: PRewriteConfig, quality=hash_quality) -> FakeTarget:
    """A fake target whose accuracy depends only on the instruction: ``quality(instruction)`` in [0, 1] is the gold
    verbalizer's probability share, so a scripted score decides which rewrite is best."""
    task = build_task(cfg)
    labels = {t: l for split in task.splits.values() for t, l in zip(split.texts, split.labels)}
    return FakeTarget(gold_share(labels, quality), name="scripted")


def _tiny_cfg(**kw) -> PRewriteConfig:
    base = dict(task="sentiment", rewriter_model="tiny-random", num_generations=4, max_completion_length=8,
                input_batch_size=4, steps=2, checkpoint_every=1, num_samples=3, learning_rate=5e-2, lora_r=4,
                lora_target_modules=["q_proj", "v_proj"], dev_limit=8, beta=0.04)
    base.update(kw)
    return PRewriteConfig(**base)


def test_config_validation():
    with pytest.raises(ValueError, match="num_generations"):
        PRewriteConfig(num_generations=1)
    with pytest.raises(ValueError, match="reward"):
        PRewriteConfig(reward="f1")
    with pytest.raises(ValueError, match="instruction"):
        PRewriteConfig(meta_prompt="no placeholder")
    with pytest.raises(ValueError, match="lora_r"):
        PRewriteConfig(lora_r=0)


@pytest.mark.model
def test_chat_template_and_clean_rewrite():
    from rlprompt.models import load_tokenizer

    template = chat_template(load_tokenizer("tiny-random"))
    assert template.count("{prompt}") == 1 and template.count("{sentence}") == 1
    assert template.index("{prompt}") < template.index("{sentence}") and template.endswith("Answer:")
    assert clean_rewrite('  New instruction: "Decide if the review is positive."\n\nExtra') == \
        "Decide if the review is positive."
    task = build_task(_tiny_cfg())
    assert task.verbalizers == (" negative", " positive") and task.prompt.startswith("Classify the sentiment")


class ChatFormat:
    """A tokenizer stand-in with a chat format of its own (not SmolLM2's)."""

    chat_template = "<role>content</role>"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


@pytest.mark.model
def test_the_template_is_rendered_in_the_targets_own_chat_format(tiny_target, tmp_path):
    from rlprompt.models import BUNDLED, load_tokenizer
    from rlprompt.policies.dpo import DPOMethodConfig
    from rlprompt.policies.dpo import build_task as dpo_task
    from rlprompt.targets import CachedTarget, make_target

    own = _fake_target(_tiny_cfg())
    own.tokenizer = ChatFormat()
    expected = "<user>{prompt}\n\nInput: {sentence}</user><assistant>Answer:"
    assert build_task(_tiny_cfg(), own).template == expected
    assert dpo_task(DPOMethodConfig(), own).template == expected
    # SmolLM2 (local, behind a response cache, or served with its known tokenizer) keeps the template it always had
    smollm2 = chat_template(load_tokenizer(BUNDLED))
    assert build_task(_tiny_cfg()).template == smollm2 == dpo_task(DPOMethodConfig()).template
    assert build_task(_tiny_cfg(), CachedTarget(tiny_target, tmp_path / "c.sqlite")).template == smollm2
    served = f"openai:http://127.0.0.1:9/v1:{BUNDLED}"
    assert build_task(_tiny_cfg(target=served), make_target(served)).template == smollm2
    # a remote model whose tokenizer is unknown has no chat format to render: the error names the fix
    unknown = "openai:http://127.0.0.1:9/v1:some-llama"
    for target in (None, make_target(unknown)):
        with pytest.raises(ValueError, match="has no tokenizer to render its chat template with: set template:"):
            build_task(_tiny_cfg(target=unknown), target)
    assert build_task(_tiny_cfg(target=unknown, template="{prompt} {sentence}")).template == "{prompt} {sentence}"
    with pytest.raises(ValueError, match="has no chat template: set template:"):
        chat_template(type("Plain", (), {"chat_template": None})())


def test_balanced_subset_spreads_over_label_sorted_files():
    labels = [0] * 8 + [1] * 8
    keep = balanced_subset(labels, 6)
    assert keep == [0, 1, 2, 8, 9, 10] and balanced_subset(labels, None) == list(range(16))
    assert sorted(balanced_subset([2, 2, 0, 1], 3)) == [0, 2, 3]


@pytest.mark.model
def test_reward_scores_cleaned_completions_on_one_shared_minibatch():
    cfg = _tiny_cfg()
    target = _fake_target(cfg, quality=lambda p: 1.0 if "best" in p else 0.0)
    reward = RewriteReward(target, build_task(cfg), kind="accuracy", stabilizer="none", batch_size=4)
    completions = [[{"role": "assistant", "content": "Instruction: the best one"}], [{"role": "assistant", "content": "bad"}]]
    logged: dict[str, float] = {}
    assert reward(None, completions, log_metric=logged.__setitem__) == [1.0, 0.0]
    assert [prompts for prompts, _ in target.classify_calls] == [["the best one", "bad"]]  # cleaned, scored together
    assert [h[1:] for h in reward.history] == [("the best one", 1.0), ("bad", 0.0)]
    # the minibatch figures go to trl's log_metric (logged as charts/<name>), not to an attribute
    assert logged == {"minibatch_accuracy_mean": 0.5, "minibatch_accuracy_max": 1.0, "raw_reward_mean": 0.5,
                      "raw_reward_std": 0.5, "rewrite_words": 2.0} and not hasattr(reward, "last")
    # the reward is a step of rlprompt/PromptRewrite-v0 on the rewriter's instruction
    from gymnasium.envs.registration import load_env_creator

    from rlprompt.envs import PromptRewriteEnv

    assert load_env_creator(gymnasium.spec("rlprompt/PromptRewrite-v0").entry_point) is PromptRewriteEnv
    assert isinstance(reward.env, PromptRewriteEnv)


@pytest.mark.model
def test_grpo_steps_change_lora_params_and_write_the_run(tmp_path, monkeypatch):
    import trl.trainer.grpo_trainer as grpo

    cfg = _tiny_cfg()
    calls = []
    target = _fake_target(cfg, quality=lambda prompt: calls.append(prompt) or hash_quality(prompt))
    initial: dict[str, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    original = grpo.get_peft_model

    def spy(model, config, *args, **kwargs):  # remember every trainable LoRA tensor as trl creates it
        wrapped = original(model, config, *args, **kwargs)
        initial.update({n: (p, p.detach().clone()) for n, p in wrapped.named_parameters() if p.requires_grad})
        return wrapped

    monkeypatch.setattr(grpo, "get_peft_model", spy)
    summary = train_prewrite(cfg, tmp_path / "run", target=target, rewriter=load_model("tiny-random"))
    assert summary["steps"] == 2 and summary["details"]["seconds_per_step"] > 0
    assert len(calls) >= cfg.num_generations  # the reward scored the sampled completions
    assert initial and all("lora_" in n for n in initial)
    unchanged = [n for n, (param, before) in initial.items() if torch.equal(param.detach(), before)]
    assert not unchanged, f"LoRA parameters unchanged by GRPO: {unchanged}"
    run = tmp_path / "run"
    assert (run / "prompt.txt").read_text() == summary["best_prompt"]
    assert (run / "enhancer" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("charts/minibatch_accuracy_mean" in r for r in records)
    assert any("perf/seconds_per_step" in r for r in records)


@pytest.mark.model
def test_resume_continues_from_last_checkpoint(tmp_path):
    cfg = _tiny_cfg(steps=1)
    target = _fake_target(cfg)
    target.stats.sequences = 1000  # a target shared with earlier runs (as a benchmark shares one)
    first = train_prewrite(cfg, tmp_path / "run", target=target, rewriter=load_model("tiny-random"))
    with pytest.raises(ValueError, match="already holds a run"):
        train_prewrite(cfg, tmp_path / "run", target=_fake_target(cfg), rewriter=load_model("tiny-random"))
    cfg2 = _tiny_cfg(steps=2)
    summary = train_prewrite(cfg2, tmp_path / "run", resume=True, target=target, rewriter=load_model("tiny-random"))
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and 2 in steps
    # the run's own target queries, counted on across the resume from the checkpoint's count (the first process's
    # final evaluation is work the resumed run does again, as an uninterrupted run does it once): a step scores
    # <= 4 rewrites x 4 inputs
    queries = {r["step"]: r["target_queries"] for r in records if "losses/loss" in r}
    assert 0 < queries[1] <= 16 < first["target_queries"] and queries[1] < queries[2] <= queries[1] + 16
    redone = first["target_queries"] - queries[1]  # the first process's final evaluation, done again at the end
    assert summary["target_queries"] == records[-1]["target_queries"] == target.stats.sequences - 1000 - redone
    # killed after its last checkpoint, the run resumes to the same result: no extra step, nothing logged twice
    again = train_prewrite(cfg2, tmp_path / "run", resume=True, target=target, rewriter=load_model("tiny-random"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert again["steps"] == 2 and [r["step"] for r in records if "losses/loss" in r] == [1, 2]
    assert sum(any(k.startswith("eval/") for k in r) for r in records) == 1
    assert (again["details"]["prewrite_i"], again["details"]["prewrite_s"]) == \
        (summary["details"]["prewrite_i"], summary["details"]["prewrite_s"])


class Killed(Exception):
    """Stands in for a kill: raised by the fake target in the middle of a run."""


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "charts/step_time"} for r in rows]


@pytest.mark.model
def test_a_run_killed_mid_training_resumes_to_the_straight_runs_result(tmp_path):
    """Issue 14: killed while step 2 scores its rewrites, the run resumes from checkpoint-1 (the reward's sampler
    state and the loop's target queries in it) and ends as a run that was never killed: the same metrics per
    step, target queries counted on from the checkpoint's, the same summary (timings aside)."""
    cfg = _tiny_cfg(steps=3)
    straight = train_prewrite(cfg, tmp_path / "straight", target=_fake_target(cfg), rewriter=load_model("tiny-random"))

    def quality(prompt: str) -> float:
        if len(doomed.classify_calls) >= 2:
            raise Killed
        return hash_quality(prompt)

    doomed = _fake_target(cfg, quality)
    with pytest.raises(Killed):
        train_prewrite(cfg, tmp_path / "killed", target=doomed, rewriter=load_model("tiny-random"))
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    assert json.loads((tmp_path / "killed" / "checkpoints" / "checkpoint-1" / "loop_state.json").read_text()
                      )["target_queries"] == doomed.stats.sequences  # step 1's; step 2's scoring never finished
    resumed = train_prewrite(cfg, tmp_path / "killed", resume=True, target=_fake_target(cfg),
                             rewriter=load_model("tiny-random"))
    rows = {name: RunDir(tmp_path / name, resume=True).read_metrics() for name in ("straight", "killed")}
    assert _without_timings(rows["killed"]) == _without_timings(rows["straight"])
    timings = ("train_seconds", "seconds_per_step")
    assert {k: v for k, v in resumed.items() if k not in ("wall_seconds", "details", "run_dir")} == \
        {k: v for k, v in straight.items() if k not in ("wall_seconds", "details", "run_dir")}
    assert {k: v for k, v in resumed["details"].items() if k not in timings} == \
        {k: v for k, v in straight["details"].items() if k not in timings}


@pytest.mark.model
def test_max_target_queries_stops_training_early_and_keeps_room_for_the_final_selection(tmp_path):
    """Issue 14: a step scores <= 4 rewrites x 4 inputs = 16 sequences, the final selection <= (3 samples + the
    initial instruction + PRewrite-I) x 8 dev inputs = 40: a budget of 72 pays for two of five steps."""
    cfg = _tiny_cfg(steps=5, max_target_queries=72)
    target = _fake_target(cfg)
    target.stats.sequences = 500  # a target shared with earlier runs: only this run's sequences count
    summary = train_prewrite(cfg, tmp_path / "run", target=target, rewriter=load_model("tiny-random"))
    assert summary["stop_reason"] == "max_target_queries" and summary["steps"] == 2
    assert 0 < summary["target_queries"] == target.stats.sequences - 500 <= 72
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "manifest.json").is_file()  # resumable there
    assert target.max_sequences is None  # the run's guard on the target is lifted when it ends
    # resumed with the same budget: no further step, the same stop; with none, on to the end
    again = train_prewrite(cfg, tmp_path / "run", resume=True, target=target, rewriter=load_model("tiny-random"))
    assert (again["steps"], again["stop_reason"]) == (2, "max_target_queries") and again["target_queries"] <= 72
    done = train_prewrite(_tiny_cfg(steps=3), tmp_path / "run", resume=True, target=target,
                          rewriter=load_model("tiny-random"))
    assert (done["steps"], done["stop_reason"]) == (3, "steps")
    with pytest.raises(ConfigError, match=r"max_target_queries=39 cannot pay for the final selection \(40 sequences"):
        train_prewrite(_tiny_cfg(max_target_queries=39), tmp_path / "small", target=target,
                       rewriter=load_model("tiny-random"))


class SamplingEnhancer:
    """Stands in for PromptEnhancer.sample: returns fixed candidates."""

    def __init__(self, candidates):
        self.candidates = candidates

    def sample(self, prompts, *, k, temperature, seed):
        return [self.candidates[:k] for _ in prompts]


@pytest.mark.model
def test_prewrite_s_picks_the_best_of_k_on_dev_by_scripted_scores():
    cfg = _tiny_cfg()
    scores = {"alpha": 0.2, "beta": 0.9, "gamma": 0.5}
    target = _fake_target(cfg, quality=lambda p: scores[p])
    task = build_task(cfg)
    best, table = prewrite_s(SamplingEnhancer(["alpha", "beta", "gamma", "beta"]), task.prompt,
                             dev_scorer(target, task), k=4)
    assert best == "beta" and set(table) == {"alpha", "beta", "gamma"}
    assert table["beta"] == 1.0 and table["alpha"] == 0.0  # gold share 0.86 vs 0.23: all right / all wrong


@pytest.mark.model
def test_prewrite_s_with_a_real_tiny_enhancer():
    from rlprompt.enhancer import PromptEnhancer

    cfg = _tiny_cfg()
    model, tokenizer = load_model("tiny-random")
    enhancer = PromptEnhancer(model, tokenizer, base_model="tiny-random", meta_prompt=cfg.meta_prompt, max_new_tokens=6)
    target = _fake_target(cfg)
    task = build_task(cfg)
    best, table = prewrite_s(enhancer, task.prompt, dev_scorer(target, task, limit=8), k=4, seed=1)
    assert table[best] == max(table.values())
    assert best == max(table, key=lambda c: (table[c], -list(table).index(c)))


@pytest.mark.slow
def test_device_accelerate_launch_two_cpu_processes_runs_two_steps(tmp_path):
    """The multi-process path: ``accelerate launch --multi_gpu --num_processes 2`` on the CPU (two gloo processes;
    ``--cpu --num_processes 2`` would start one) trains 2 GRPO steps; only the main process writes the run directory
    (each step logged once) and the enhancer."""
    config = tmp_path / "tiny.yaml"
    config.write_text("method: prewrite\ntask: sentiment\nrewriter_model: tiny-random\ntarget: tiny-random\n"
                      "target_dtype: float32\nnum_generations: 2\nmax_completion_length: 4\ninput_batch_size: 2\n"
                      "steps: 2\ncheckpoint_every: 2\nnum_samples: 2\ndev_limit: 4\nlora_target_modules: [q_proj]\n")
    proc = launch_two_processes("-m", "rlprompt.policies.prewrite", config, "--run-dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and (tmp_path / "run" / "enhancer" / "enhancer.json").is_file()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "losses/loss" in line]
    assert steps == [1, 2]


@pytest.mark.slow
def test_device_accelerate_launch_two_processes_count_and_cap_their_summed_target_queries(tmp_path):
    """Under ``accelerate launch --num_processes 2`` each process queries its own target: the metrics rows,
    ``loop_state.json`` and the summary hold the sum over both processes (each writes its own target's count here),
    and a step costs twice a process's share, so ``max_target_queries`` pays for 2 steps (not the 5 that one
    process's arithmetic would allow) and the run's total stays within it."""
    config = tmp_path / "tiny.yaml"
    # a step: 2 processes x 2 rewrites x 2 inputs; the final selection: (2 + 2) x 4 dev inputs; 16 + 2 * 8 + 4 = 36
    config.write_text("method: prewrite\ntask: sentiment\nrewriter_model: tiny-random\ntarget: tiny-random\n"
                      "target_dtype: float32\nnum_generations: 2\nmax_completion_length: 4\ninput_batch_size: 2\n"
                      "steps: 4\ncheckpoint_every: 1\nnum_samples: 2\ndev_limit: 4\nlora_target_modules: [q_proj]\n"
                      "max_target_queries: 36\n")
    script = tmp_path / "launch.py"
    script.write_text(
        "import json, os, sys\nfrom pathlib import Path\nfrom rlprompt.config import load_config\n"
        "from rlprompt.policies.prewrite import PRewriteConfig, train_prewrite\n"
        "cfg = load_config(sys.argv[1], PRewriteConfig)\ntarget = cfg.build_target()\n"
        "summary = train_prewrite(cfg, sys.argv[2], target=target)\n"
        "Path(sys.argv[3], f\"rank{os.environ['RANK']}.json\").write_text(json.dumps("
        "{'sequences': target.stats.sequences, 'summary': summary}))\n")
    proc = launch_two_processes(script, config, tmp_path / "run", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    summary = main["summary"]
    assert other["summary"] == {} and other["sequences"] > 0  # the other process queried in training only
    assert summary["target_queries"] == main["sequences"] + other["sequences"] <= 36
    assert summary["steps"] == 2 and summary["stop_reason"] == "max_target_queries"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "losses/loss" in r]
    assert [r["step"] for r in trained] == [1, 2]
    assert 0 < trained[0]["target_queries"] < trained[1]["target_queries"]
    assert trained[1]["target_queries"] > other["sequences"]  # the other process's queries and the main one's
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "loop_state.json").read_text())
    assert state["target_queries"] == trained[-1]["target_queries"]
    assert rows[-1]["target_queries"] == summary["target_queries"]  # the final selection's row


# -- the benchmark: initial instruction, PRewrite-I and PRewrite-S per (task, data seed) -----------
@pytest.fixture
def prewrite_bench(tmp_path):
    """An RLPrompt-style 16-shot ``sst-2`` directory made of the built-in sentiment task (which the scripted target
    knows), and a runner of experiments/prewrite_bench.py with a tiny random rewriter at a tiny budget."""
    from rlprompt.tasks import load_task

    import experiments.prewrite_bench as bench

    task = load_task("sentiment")
    data = tmp_path / "data"

    def write(path, split):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{t}\t{y}" for t, y in zip(split.texts, split.labels)]
        path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")

    for seed in ("16-100", "16-13"):
        write(data / "sst-2" / seed / "train.tsv", task.split("train"))
        write(data / "sst-2" / seed / "dev.tsv", task.split("dev"))
    write(data / "sst-2" / "test.tsv", task.split("test"))
    labels = {t: l for split in task.splits.values() for t, l in zip(split.texts, split.labels)}
    tiny = ["rewriter_model=tiny-random", "num_generations=2", "max_completion_length=4", "checkpoint_every=1",
            "num_samples=2", "lora_r=4", "lora_target_modules=[q_proj]", "learning_rate=0.05"]

    def make_target():
        return FakeTarget(gold_share(labels, hash_quality), name="scripted")

    def run(*argv):
        return bench.main(["--tasks", "sst-2", "--data", str(data), "--runs-dir", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out" / "prewrite.json"), *tiny, *argv], target=make_target())

    return bench, run, tmp_path, make_target


def test_bench_seed_config_follows_the_shared_protocol(prewrite_bench):
    bench, _, tmp, _ = prewrite_bench
    cfg = bench.seed_config("sst-2", "16-13", tmp / "data", ["steps=3"])
    assert (cfg.task_seed, cfg.seed, cfg.steps) == ("16-13", 1, 3)  # the policy seed is the data seed's position
    assert cfg.task == str(tmp / "data" / "sst-2")
    full = {name: bench.seed_config(name, "16-100", tmp / "data", []) for name in bench.TASKS}
    assert {n: (c.steps, c.num_samples, c.input_batch_size, c.dev_limit) for n, c in full.items()} == {
        "sst-2": (150, 16, 32, None), "agnews": (150, 16, 64, None)}  # the benchmark budget: whole train/dev splits
    with pytest.raises(ValueError, match="16-7"):
        bench.seed_config("sst-2", "16-7", tmp / "data", [])


@pytest.mark.model
def test_bench_writes_parts_resumes_skips_and_reports(prewrite_bench, monkeypatch):
    bench, run, tmp, make_target = prewrite_bench
    out, part = tmp / "out" / "prewrite.json", tmp / "runs" / "parts" / "sst-2-16-100.json"
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=1") == 0
    result = json.loads(out.read_text())
    entry = result["tasks"]["sst-2"]
    assert len(entry["test_labels"]) == 20 and len(entry["test_indices"]) == 20  # a seeded sample of the 136
    (seed,) = entry["seeds"]
    assert seed["data_seed"] == "16-100" and seed["policy_seed"] == 0 and seed["steps"] == 1
    assert seed["train_inputs_per_step"] == seed["train_examples"] == 32 and seed["dev_examples"] == 32
    for arm in bench.ARMS:
        predictions = seed[arm]["test_predictions"]
        assert len(predictions) == 20 and seed[arm]["test_accuracy"] == pytest.approx(
            float(np.mean([p == y for p, y in zip(predictions, entry["test_labels"])])))
        assert entry[arm]["eval_command"].endswith(f"--rescore sst-2 16-100 {arm}")
        assert entry[arm]["mean_test_accuracy_over_seeds"] == seed[arm]["test_accuracy"]
    assert seed["prewrite_s_candidates"][seed["prewrite_s"]["instruction"]] == seed["prewrite_s"]["dev_accuracy"]
    assert set(entry["intervals"]) == {*bench.ARMS, "prewrite_i-initial", "prewrite_s-initial"}
    assert result["budget"]["short"] == ["sst-2/16-100"] and result["commits"]
    assert json.loads(part.read_text())["command"].startswith("python experiments/prewrite_bench.py")
    text = out.with_suffix(".md").read_text()
    assert text == bench.markdown(result) and "| 16-100 | prewrite_s | `" in text
    assert re.search(r"\| prewrite_s \| 1 \| [01]\.\d{3} \| [01]\.\d{3} \| [+-]\d\.\d{3} \| [+-]\d\.\d{3} "
                     r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] \((better|worse|inside the noise)\) \|", text)
    assert run("--rescore", "sst-2", "16-100", "prewrite_s") == 0  # eval_command reproduces the figure

    import experiments.prewrite_candidates as candidates
    from rlprompt.tasks import load_task

    target = make_target()  # the candidates' test figures come from the bench's seeded test sample
    monkeypatch.setattr(candidates, "make_target", lambda *args, **kwargs: target)
    assert candidates.main([seed["run_dir"], "--test-limit", "20", "--out", str(tmp / "candidates")]) == 0
    test = load_task(str(tmp / "data" / "sst-2"), seed="16-100").split("test")
    assert target.classify_calls[-1][1] == [test.texts[i] for i in entry["test_indices"]]

    def no_training(*args, **kwargs):
        raise AssertionError("a complete part was trained again")

    monkeypatch.setattr(bench, "train_prewrite", no_training)
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=1") == 0  # the complete part is skipped
    part.unlink()  # killed after training, before the part was written: the finished run is scored, not retrained
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=1") == 0
    assert json.loads(part.read_text())["steps"] == 1
    monkeypatch.undo()

    run_dir = tmp / "runs" / "sst-2" / "16-100"
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=2") == 0  # more steps: resumes from checkpoint-1
    resumed = json.loads(part.read_text())
    assert resumed["steps"] == 2 and resumed["resumed_from_step"] == 1
    metrics = RunDir(run_dir, resume=True).read_metrics()
    assert [r["step"] for r in metrics if "losses/loss" in r] == [1, 2]
    per_step = [r["perf/seconds_per_step"] for r in metrics if "losses/loss" in r]  # one figure per step
    assert resumed["seconds_per_step"] == pytest.approx(np.mean(per_step))
    assert resumed["target_queries"] == metrics[-1]["target_queries"] > metrics[0]["target_queries"]  # run's own count
    shutil.rmtree(run_dir / "checkpoints")  # killed before its first checkpoint: it starts again
    (run_dir / "summary.json").unlink()
    part.unlink()
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=2") == 0
    assert json.loads(part.read_text())["resumed_from_step"] == 0
    assert [r["step"] for r in RunDir(run_dir, resume=True).read_metrics() if "losses/loss" in r] == [1, 2]

    out.unlink()
    out.with_suffix(".md").unlink()
    assert run("--report-only") == 0
    again = json.loads(out.read_text())
    assert again["tasks"]["sst-2"]["seeds"][0]["steps"] == 2
    assert out.with_suffix(".md").read_text() == bench.markdown(again)
    assert run("--task-seeds", "16-100", "--test-limit", "20", "steps=2", "--service-requests", "2", "--clients", "1",
               "2") == 0  # the service load test (off by default) serves the last run's enhancer
    service = json.loads(out.read_text())["service"]
    assert [(lv["clients"], lv["ok"]) for lv in service["levels"]] == [(1, 2), (2, 2)]
    assert "| 2 | 2 | 0 |" in out.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match="other test examples"):
        run("--task-seeds", "16-100", "--test-limit", "10", "steps=2")


@pytest.mark.parametrize("rewrite_wins", [False, True])
@pytest.mark.model
def test_the_enhancer_keeps_the_original_unless_its_rewrite_beats_it_on_dev(tmp_path, monkeypatch, capsys,
                                                                             rewrite_wins):
    """Never worse than none (issue 18): the initial instruction is scored beside PRewrite-I/S on dev; when the
    enhancer's own rewrite does not beat it, prompt.txt keeps it and the saved enhancer is the identity."""
    from rlprompt.enhancer import PromptEnhancer

    better = "Decide whether the movie review is negative or positive."

    def scripted(self, prompts, *, k, temperature, seed):  # the trained rewriter's outputs after training
        return [[(better, True)] * k for _ in prompts]

    monkeypatch.setattr(PromptEnhancer, "_generate", scripted)
    cfg = _tiny_cfg(steps=1)
    initial = build_task(cfg).prompt
    winner = better if rewrite_wins else initial
    target = _fake_target(cfg, quality=lambda p: 1.0 if p == winner else 0.0)
    summary = train_prewrite(cfg, tmp_path / "run", target=target, rewriter=load_model("tiny-random"))
    line = [l for l in capsys.readouterr().err.splitlines() if l.startswith("prewrite: ")]
    assert summary["details"]["prewrite_i"] == better and summary["details"]["enhancer_identity"] is not rewrite_wins
    assert summary["best_prompt"] == winner == (tmp_path / "run" / "prompt.txt").read_text()
    evaluation = json.loads((tmp_path / "run" / "enhancer" / "enhancer.json").read_text())["evaluation"]
    assert evaluation["original"]["texts"] == [initial] and evaluation["deployed"] == "prewrite_i"
    assert evaluation["original"]["score"] == (0.0 if rewrite_wins else 1.0)
    assert evaluation["rewrites"]["prewrite_i"] == {"texts": [better], "scores": [1.0 if rewrite_wins else 0.0],
                                                    "score": 1.0 if rewrite_wins else 0.0}
    assert evaluation["examples"] == cfg.dev_limit and evaluation["identity"] is not rewrite_wins
    assert len(line) == 1 and line[0].endswith("the enhancer rewrites" if rewrite_wins else "(identity)")
    loaded = PromptEnhancer.from_pretrained(tmp_path / "run" / "enhancer")
    assert loaded.identity is not rewrite_wins
    assert loaded.enhance("Summarize the article.") == (better if rewrite_wins else "Summarize the article.")
