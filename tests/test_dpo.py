"""DPO / Sem-DPO (Rafailov et al. 2023; Mohamed et al. 2025): config checks, preference building against a
scripted fake target and rewriter, hand-computed Sem-DPO weights, the weight column through trl's collator,
the weighted loss against trl's own loss, and a few LoRA training steps with a tiny random rewriter."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlprompt.errors import ConfigError
from rlprompt.models import load_model
from rlprompt.policies.dpo import DPOMethodConfig, SemDPOConfig, _trl_config, method_config, train_dpo
from rlprompt.policies.preferences import build_preferences, load_preferences, pair_weights, preference_pairs
from rlprompt.tasks import load_task
from tests.conftest import FakeTarget, gold_share, launch_two_processes

TEMPLATE = "{prompt}\n\nInput: {sentence}\nAnswer:"
QUALITY = {"great rewrite": 1.0, "good rewrite": 0.7, "ok rewrite": 0.5, "poor rewrite": 0.45, "bad rewrite": 0.0}


class CharTokenizer:
    """The scripted rewriter's tokenizer, with no model files: one id per character (PromptRewriteEnv, which scores
    the pairs, observes the instruction as the rewriter's token ids)."""

    def __len__(self) -> int:
        return 256

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[min(ord(c), 255) for c in text])


def scripted_rewriter() -> FakeTarget:
    """Fake rewriter: returns the QUALITY keys in a fixed order (with chat noise to clean)."""
    keys = list(QUALITY)
    return FakeTarget(generate=lambda text, i, seed: f"Instruction: {keys[i % len(keys)]}\n\nextra",
                      name="scripted-rewriter", tokenizer=CharTokenizer())


def fake_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic 2-D embedding: the angle grows with the text's length, so cosines are hand-computable."""
    return np.array([[math.cos(len(t) / 10), math.sin(len(t) / 10)] for t in texts])


def _task():
    return load_task("sentiment", template=TEMPLATE, verbalizers=(" negative", " positive"))


def _target(task):
    train = task.split("train")
    labels = {t: int(y) for split in task.splits.values() for t, y in zip(split.texts, split.labels)}
    assert len(train.texts) > 0
    # the gold verbalizer's probability is 0.05 + 0.9 * QUALITY[instruction] on every input
    return FakeTarget(gold_share(labels, lambda prompt: QUALITY.get(prompt, 0.5)), name="scripted")


def _cfg(tmp_path, cls=DPOMethodConfig, **kw):
    base = dict(template=TEMPLATE, verbalizers=[" negative", " positive"], rewriter_model="tiny-random",
                originals=["Say the sentiment.", "Is it good?"],
                preferences=str(tmp_path / "prefs.jsonl"), samples_per_original=5, input_batch_size=4,
                max_pairs_per_original=10, steps=2, batch_size=2, lora_r=2, lora_alpha=4, max_length=96,
                max_new_tokens=8, checkpoint_every=1, learning_rate=1e-2)
    base.update(kw)
    return cls(**base)


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [  # the message names the field and its bad value
    ({"alpha": -1.0}, r"alpha=-1\.0"), ({"margin": -0.1}, r"margin=-0\.1"), ({"beta": 0.0}, r"beta.* got 0\.0,"),
    ({"samples_per_original": 1}, r"samples_per_original must be >= 2.*got 1$"), ({"steps": 0}, r"'steps': 0\b"),
    ({"reward": "f1"}, r"reward must be .*got 'f1'"),
    ({"meta_prompt": "no placeholder"}, r"\{instruction\}.*'no placeholder'"),
    ({"lora_dropout": 1.0}, r"lora_dropout .*got 1\.0"), ({"originals": []}, "originals must hold at least one"),
    ({"normalize_weights": "yes"}, r"normalize_weights .*got 'yes'"),
])
def test_bad_config_values_error_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        DPOMethodConfig(**bad)


def test_method_names_pick_the_config_class():
    from rlprompt.config import dump_config, load_config

    assert method_config("dpo") is DPOMethodConfig and method_config("sem-dpo") is SemDPOConfig
    with pytest.raises(ValueError, match="method"):
        method_config("ppo")
    cfg = load_config({"method": "sem-dpo", "alpha": 2}, SemDPOConfig)
    assert dump_config(cfg)["method"] == "sem-dpo" and cfg.alpha == 2.0
    with pytest.raises(ValueError, match="method"):
        load_config({"method": "sem-dpo"}, DPOMethodConfig)


# -- preferences ----------------------------------------------------------------------------------
def test_preference_pairs_respect_the_margin():
    rewards = [3.0, 1.0, 2.5, 1.0]
    assert preference_pairs(["a", "b", "c", "d"], rewards, 1.0, 10) == [(0, 1), (0, 3), (2, 1), (2, 3)]
    assert preference_pairs(["a", "b", "c", "d"], rewards, 0.0, 2) == [(0, 1), (0, 3)]
    assert preference_pairs(["a", "a"], [1.0, 0.0], 0.0, 10) == []  # the same text never pairs with itself


@pytest.mark.parametrize("margin", [0.0, 50.0])
def test_build_preferences_with_a_scripted_target(tmp_path, margin):
    task = _task()
    cfg = _cfg(tmp_path, margin=margin)
    rewriter = scripted_rewriter()
    path = build_preferences(cfg, target=_target(task), rewriter=rewriter, task=task)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows and all(r["chosen_reward"] - r["rejected_reward"] >= max(margin, 1e-12) for r in rows)
    assert all(r["chosen"][0]["content"] in QUALITY and r["rejected"][0]["content"] in QUALITY for r in rows)
    assert {r["original"] for r in rows} == set(cfg.originals)
    assert rows[0]["prompt"][0]["role"] == "user" and cfg.originals[0] in rows[0]["prompt"][0]["content"]
    assert rewriter.generated and all(settings["chat"] for settings in rewriter.generate_settings)
    best = max(rows, key=lambda r: r["chosen_reward"] - r["rejected_reward"])
    assert (best["chosen"][0]["content"], best["rejected"][0]["content"]) == ("great rewrite", "bad rewrite")
    if margin:  # gap rewards span [-180*0.9, 200*0.9]: 50 removes close pairs such as ok vs poor
        assert not any({r["chosen"][0]["content"], r["rejected"][0]["content"]} == {"ok rewrite", "poor rewrite"}
                       for r in rows)
    ds = load_preferences(path)
    assert len(ds) == len(rows) and set(ds.column_names) >= {"prompt", "chosen", "rejected", "original"}


# -- Sem-DPO weights ------------------------------------------------------------------------------
def test_weights_match_hand_computed_values(tmp_path):
    from datasets import Dataset

    originals, chosen = ["abcde", "abcdefghij"], ["abcdefghij", "abcdefghij"]
    ds = Dataset.from_dict({"original": originals, "chosen": [[{"role": "assistant", "content": c}] for c in chosen]})
    alpha = 2.0
    expected = [math.exp(-alpha * (1 - math.cos((len(c) - len(o)) / 10))) for o, c in zip(originals, chosen)]
    np.testing.assert_allclose(pair_weights(ds, alpha, fake_embedder), expected, rtol=1e-12)
    assert pair_weights(ds, alpha, fake_embedder)[1] == pytest.approx(1.0)
    np.testing.assert_allclose(pair_weights(ds, 0.0, fake_embedder), [1.0, 1.0])


# -- the trainer ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefs")
    task = _task()
    cfg = _cfg(tmp)
    return build_preferences(cfg, target=_target(task), rewriter=scripted_rewriter(), task=task), tmp


def _semdpo_trainer(tmp_path, dataset, cfg):
    from peft import LoraConfig

    from rlprompt.policies.dpo import SemDPOTrainer

    model, tok = load_model("tiny-random")
    peft = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return SemDPOTrainer(model=model, args=_trl_config(cfg, tmp_path / "out"), train_dataset=dataset,
                         processing_class=tok, peft_config=peft)


def _batch(trainer, n):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer._prepare_inputs(trainer.data_collator(rows))


@pytest.mark.model
def test_weight_column_survives_the_collator_and_unit_weights_give_trls_loss(prefs, tmp_path):
    from trl import DPOTrainer

    path, _ = prefs
    cfg = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(path))
    ds = load_preferences(path)
    ds = ds.add_column("weight", [1.0] * len(ds))
    trainer = _semdpo_trainer(tmp_path, ds, cfg)
    assert "weight" in trainer.train_dataset.column_names  # not dropped by remove_unused_columns
    loader_batch = next(iter(trainer.get_train_dataloader()))
    assert "weight" in loader_batch and loader_batch["weight"].shape == (cfg.batch_size,)
    batch = _batch(trainer, 3)
    torch.testing.assert_close(batch["weight"], torch.ones(3))
    trainer.model.eval()
    with torch.no_grad():
        ours = trainer._compute_loss(trainer.model, batch, False)
        unweighted = {k: v for k, v in batch.items() if k != "weight"}
        trls = DPOTrainer._compute_loss(trainer, trainer.model, unweighted, False)
    torch.testing.assert_close(ours, trls, rtol=1e-5, atol=1e-6)


@pytest.mark.model
def test_weighted_loss_is_the_mean_of_weight_times_trls_per_pair_loss(prefs, tmp_path):
    """mean(W * l) (Mohamed et al. 2025), not sum(W * l) / sum(W), which would undo the down-weighting."""
    from trl import DPOTrainer

    path, _ = prefs
    cfg = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(path))
    ds = load_preferences(path)
    w = [0.2, 1.0, 0.5]
    ds = ds.select(range(3)).add_column("weight", w)
    trainer = _semdpo_trainer(tmp_path, ds, cfg)
    trainer.model.eval()
    with torch.no_grad():
        ours = trainer._compute_loss(trainer.model, _batch(trainer, 3), False)
        singles = []
        for i in range(3):
            one = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i]]))
            one.pop("weight")
            singles.append(DPOTrainer._compute_loss(trainer, trainer.model, one, False))
    expected = sum(wi * li for wi, li in zip(w, singles)) / len(w)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert not torch.isclose(ours, expected * len(w) / sum(w), rtol=1e-2)  # the per-batch normalised reduction


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.model
def test_normalize_weights_divides_by_the_dataset_mean_weight(prefs, tmp_path, normalize):
    path, _ = prefs
    n = len(load_preferences(path))
    cfg = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(path), lora_target_modules=["q_proj"], steps=1,
               batch_size=n + 4, alpha=2.0, normalize_weights=normalize)  # one batch holds every pair
    task = _task()  # the run ends with the enhancer's dev evaluation: a scripted target, not the real model
    summary = train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), embedder=fake_embedder,
                        target=_target(task), task=task)
    raw = np.array(json.loads((tmp_path / "run" / "pair_weights.json").read_text()))
    assert raw.std() > 0.01 and summary["details"]["mean_weight"] == pytest.approx(raw.mean())
    assert summary["details"]["weight_scale"] == pytest.approx(1 / raw.mean() if normalize else 1.0)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    weight = next(m["charts/semdpo_weight"] for m in logged if "charts/semdpo_weight" in m)
    assert weight == pytest.approx(1.0 if normalize else raw.mean(), rel=1e-5)


@pytest.mark.parametrize("cls", [DPOMethodConfig, SemDPOConfig])
@pytest.mark.model
def test_training_steps_change_lora_params_and_write_the_run(prefs, tmp_path, monkeypatch, cls):
    import peft

    path, _ = prefs
    held_out = ["Rate the review.", "Is the film liked?", "Tell the sentiment."]
    cfg = _cfg(tmp_path, cls=cls, preferences=str(path), alpha=1.0, lora_target_modules=["q_proj", "v_proj"],
               eval_originals=held_out)
    captured = {}
    original = peft.get_peft_model

    def spy(model, config, *args, **kwargs):
        out = original(model, config, *args, **kwargs)
        captured.update({n: p.detach().clone() for n, p in out.named_parameters() if p.requires_grad})
        captured["model"] = out
        return out

    monkeypatch.setattr(peft, "get_peft_model", spy)
    import trl.trainer.dpo_trainer as dpo_mod

    if hasattr(dpo_mod, "get_peft_model"):
        monkeypatch.setattr(dpo_mod, "get_peft_model", spy)
    task = _task()
    summary = train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), embedder=fake_embedder,
                        target=_target(task), task=task)
    assert summary["steps"] == 2 and summary["method"] == cls.method
    # one figure per held-out original, in order, and means that agree with them
    details = summary["details"]
    assert [len(details[k]) for k in ("eval_rewards", "eval_similarities", "eval_rewrites")] == [3, 3, 3]
    assert details["eval_reward"] == pytest.approx(np.mean(details["eval_rewards"]))
    expected_sims = [math.cos((len(r) - len(o)) / 10) for o, r in zip(held_out, details["eval_rewrites"])]
    np.testing.assert_allclose(details["eval_similarities"], expected_sims, rtol=1e-9)
    assert details["eval_similarity"] == pytest.approx(np.mean(expected_sims))
    model = captured.pop("model")
    after = dict(model.named_parameters())
    lora_b = [n for n in captured if "lora_B" in n]
    assert lora_b and all(not torch.equal(captured[n], after[n].detach()) for n in lora_b)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").read_text().strip()
    assert any((run / "checkpoints").glob("checkpoint-2/*.safetensors"))
    if cls is SemDPOConfig:
        weights = json.loads((run / "pair_weights.json").read_text())
        assert len(weights) == len(load_preferences(path)) and all(0 < w <= 1 for w in weights)
        assert any("semdpo_weight" in line for line in (run / "metrics.jsonl").read_text().splitlines())


@pytest.mark.model
def test_resume_continues_from_the_last_checkpoint(prefs, tmp_path):
    path, _ = prefs
    cfg = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(path), lora_target_modules=["q_proj"])
    task = _task()
    fakes = {"target": _target(task), "task": task}  # the run ends with the enhancer's dev evaluation
    train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), embedder=fake_embedder, **fakes)
    with pytest.raises(ValueError, match="already holds a run"):
        train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), embedder=fake_embedder, **fakes)
    more = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(path), lora_target_modules=["q_proj"], steps=3)
    summary = train_dpo(more, tmp_path / "run", resume=True, rewriter=load_model("tiny-random"), embedder=fake_embedder, **fakes)
    assert summary["steps"] == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 3
    # killed after its last checkpoint, the run resumes to the same result: no extra step, nothing logged twice
    again = train_dpo(more, tmp_path / "run", resume=True, rewriter=load_model("tiny-random"), embedder=fake_embedder, **fakes)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r["step"] for r in records if "losses/loss" in r]
    assert again["steps"] == 3 and trained == [1, 2, 3] and not any("charts/train_runtime" in r for r in records)


@pytest.mark.model
def test_a_run_killed_mid_training_resumes_to_the_straight_runs_result(tmp_path, monkeypatch):
    """Issue 14: a run that built its pairs, killed in training step 2, resumes from checkpoint-1 and ends as a run
    never killed: the same metrics per step (the pairs' target queries counted on from the checkpoint's
    loop_state.json), the same summary (timings aside)."""
    from transformers import Trainer

    from rlprompt.runs import RunDir
    from rlprompt.targets.hf import HFTarget

    monkeypatch.setattr(HFTarget, "from_loaded", staticmethod(lambda *loaded: scripted_rewriter()))
    task = _task()
    cfg = _cfg(tmp_path, cls=SemDPOConfig, preferences=str(tmp_path / "pairs.jsonl"), lora_target_modules=["q_proj"],
               steps=3)
    run = {"rewriter": load_model("tiny-random"), "embedder": fake_embedder, "task": task}
    straight = train_dpo(cfg, tmp_path / "straight", target=_target(task), **run)
    (tmp_path / "pairs.jsonl").unlink()  # the killed run builds its own pairs too
    step = Trainer.training_step

    def killed_in_step_2(self, *args, **kwargs):
        if self.state.global_step == 1:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", killed_in_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_dpo(cfg, tmp_path / "killed", target=_target(task), **{**run, "rewriter": load_model("tiny-random")})
    monkeypatch.setattr(Trainer, "training_step", step)
    saved = json.loads((tmp_path / "killed" / "checkpoints" / "checkpoint-1" / "loop_state.json").read_text())
    built = json.loads((tmp_path / "killed" / "preference_stats.json").read_text())
    assert saved["target_queries"] == built["target_queries"] > 0  # the pairs' (training queries no target)
    resumed = train_dpo(cfg, tmp_path / "killed", resume=True, target=_target(task),
                        **{**run, "rewriter": load_model("tiny-random")})
    rows = [[{k: v for k, v in r.items() if not k.startswith("perf/") and k != "charts/step_time"} for r in RunDir(tmp_path / name,
            resume=True).read_metrics()] for name in ("straight", "killed")]
    assert rows[0] == rows[1] and [r["step"] for r in rows[0] if "losses/loss" in r] == [1, 2, 3]
    assert {k: v for k, v in resumed.items() if k not in ("wall_seconds", "details", "run_dir")} == \
        {k: v for k, v in straight.items() if k not in ("wall_seconds", "details", "run_dir")}
    assert {k: v for k, v in resumed["details"].items() if k != "train_seconds"} == \
        {k: v for k, v in straight["details"].items() if k != "train_seconds"}


@pytest.mark.model
def test_max_target_queries_bounds_the_pairs_and_counts_every_target_query(tmp_path, monkeypatch):
    """Issue 14: training steps query no target, so the budget bounds the preference pairs (each original costs at
    most 5 rewrites x 4 inputs = 20 sequences) after reserving the final evaluation (2 originals and their 2
    rewrites x 32 dev inputs = 128); the summary counts both, not 0."""
    from rlprompt.targets.hf import HFTarget

    monkeypatch.setattr(HFTarget, "from_loaded", staticmethod(lambda *loaded: scripted_rewriter()))
    task = _task()
    target = _target(task)
    cfg = _cfg(tmp_path, preferences=str(tmp_path / "budget.jsonl"), lora_target_modules=["q_proj"], steps=1,
               max_target_queries=128 + 20 + 10)  # pays for one of the two originals
    summary = train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), target=target, task=task)
    assert summary["stop_reason"] == "max_target_queries" and summary["details"]["skipped_originals"] == 1
    # the pairs' 20 and at least the originals' 64 of the evaluation (a rewrite equal to its original is scored once)
    assert 20 + 64 <= summary["target_queries"] == target.stats.sequences <= 158
    rows = [json.loads(line) for line in (tmp_path / "budget.jsonl").read_text().splitlines()]
    assert rows and {r["original"] for r in rows} == {"Say the sentiment."}
    assert json.loads((tmp_path / "run" / "preference_stats.json").read_text())["originals"] == 1
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["target_queries"] == 20 for r in logged if "losses/loss" in r)  # the pairs' queries, from step 1
    with pytest.raises(ConfigError, match="max_target_queries=147 cannot pay for one original"):
        train_dpo(_cfg(tmp_path, preferences=str(tmp_path / "none.jsonl"), max_target_queries=147), tmp_path / "small",
                  rewriter=load_model("tiny-random"), target=target, task=task)


@pytest.mark.slow
def test_two_processes_evaluate_once_and_refuse_to_build_pairs_in_every_process(tmp_path):
    """``accelerate launch --num_processes 2`` (two gloo processes on the CPU): without its pairs the run is a
    ConfigError in every process (each would build and write them); with them, both train and only the main process
    evaluates and writes the summary, whose target_queries are all the run's (the other process queried nothing)."""
    import yaml

    from rlprompt.config import dump_config

    task = _task()
    build_preferences(_cfg(tmp_path), target=_target(task), rewriter=scripted_rewriter(), task=task)
    cfg = _cfg(tmp_path, target="tiny-random", target_dtype="float32", lora_target_modules=["q_proj"])
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(dump_config(cfg)))
    script = tmp_path / "launch.py"
    script.write_text(
        "import json, os, sys\nfrom pathlib import Path\nfrom rlprompt.errors import ConfigError\n"
        "from rlprompt.policies.dpo import load_method_config, train_dpo\n"
        "out = Path(sys.argv[2], f\"rank{os.environ['RANK']}.json\")\n"
        "try:\n    missing = f'preferences={sys.argv[2]}/missing.jsonl'\n"
        "    train_dpo(load_method_config(sys.argv[1], [missing]), Path(sys.argv[2], 'none'))\n"
        "except ConfigError as error:\n    refused = str(error)\n"
        "cfg = load_method_config(sys.argv[1])\ntarget = cfg.build_target()\n"
        "summary = train_dpo(cfg, Path(sys.argv[2], 'run'), target=target)\n"
        "out.write_text(json.dumps({'refused': refused, 'sequences': target.stats.sequences, 'summary': summary}))\n")
    proc = launch_two_processes(script, tmp_path / "dpo.yaml", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert all("build them first with one process" in r["refused"] for r in (main, other))
    assert other == {**other, "summary": {}, "sequences": 0}
    assert main["summary"]["steps"] == 2 and main["summary"]["target_queries"] == main["sequences"] > 0
    assert (tmp_path / "run" / "enhancer").is_dir()


@pytest.mark.parametrize("name, method", [("dpo_sentiment", "dpo"), ("semdpo_sentiment", "sem-dpo")])
def test_shipped_configs_load(name, method):
    from pathlib import Path

    from rlprompt.policies.dpo import load_method_config

    path = Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{name}.yaml"
    cfg = load_method_config(path, ["steps=3"])
    assert type(cfg).method == method and cfg.steps == 3  # the override wins over the file's steps: 20
    assert cfg.eval_originals == ["Classify the review as negative or positive.",
                                  "How does the reviewer feel about the movie?", "Is the sentiment of this text good or bad?"]
    assert cfg.preferences == str(path.parents[2] / "runs" / "preferences" / "sentiment.jsonl")  # relative to the file
    assert (cfg.batch_size, cfg.margin, cfg.samples_per_original) == (4 if method == "dpo" else 8, 10.0, 6)


# -- the DPO vs Sem-DPO benchmark (experiments/semdpo_bench.py) ---------------------------------
def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "semdpo_bench.py"
    spec = importlib.util.spec_from_file_location("semdpo_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HELD_OUT = ["Rate the review.", "Is the film liked?", "Tell the sentiment."]


def _fake_summary(arm: str, seed: int) -> dict:
    """Sem-DPO keeps 0.1 more similarity on every original, at 2% less reward than DPO's 50."""
    sims = [0.5 + 0.01 * seed + 0.02 * i + (0.1 if arm == "sem-dpo" else 0.0) for i in range(len(HELD_OUT))]
    rewards = [(49.0 if arm == "sem-dpo" else 50.0) + 0.5 * (i - 1) + 0.1 * seed for i in range(len(HELD_OUT))]
    return {"eval_reward": float(np.mean(rewards)), "eval_similarity": float(np.mean(sims)), "eval_rewards": rewards,
            "eval_similarities": sims, "eval_rewrites": [f"{arm} rewrite {i}" for i in range(len(HELD_OUT))],
            "train_seconds": 10.0, "mean_weight": 0.3, "weight_scale": 1 / 0.3}


@pytest.fixture
def bench(prefs, tmp_path, monkeypatch):
    """The bench module with training and evaluation replaced by :func:`_fake_summary`, and a config file."""
    import yaml

    module = _bench()
    trained: list[tuple[str, int]] = []

    def fake_train(cfg, run_dir, **kwargs):
        trained.append((type(cfg).method, cfg.seed))
        return {"steps": 2, "details": _fake_summary(type(cfg).method, cfg.seed)}  # train_dpo's figures are details

    monkeypatch.setattr(module, "train_dpo", fake_train)
    monkeypatch.setattr(module, "evaluate_rewriter", lambda *a, **k: _fake_summary("base", 0))
    monkeypatch.setattr(module, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(DPOMethodConfig, "build_target", lambda cfg, target=None: None)
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"method": "dpo", "template": TEMPLATE, "verbalizers": [" negative", " positive"],
                                      "originals": ["Say the sentiment.", "Is it good?"], "eval_originals": HELD_OUT,
                                      "preferences": str(prefs[0]), "steps": 2}))
    return module, trained, config


def test_bench_resumes_skipping_seeds_in_the_output_and_stores_per_original_figures(bench, tmp_path):
    module, trained, config = bench
    out = tmp_path / "res" / "semdpo"
    args = [str(config), "--out", str(out), "--runs", str(tmp_path / "runs")]
    assert module.main([*args, "--seeds", "0", "1"]) == 0
    assert trained == [("dpo", 0), ("sem-dpo", 0), ("dpo", 1), ("sem-dpo", 1)]
    assert module.main([*args, "--seeds", "1", "2", "0"]) == 0  # an interrupted run, started again with more seeds
    assert trained[4:] == [("dpo", 2), ("sem-dpo", 2)]
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in result["seeds"]] == [0, 1, 2] and len(result["resumed_by"]) == 1
    assert result["seeds"][2]["sem-dpo"]["similarities"] == _fake_summary("sem-dpo", 2)["eval_similarities"]
    assert result["seeds"][2]["dpo"]["rewrites"] == _fake_summary("dpo", 2)["eval_rewrites"]
    assert result["arms"]["dpo"]["reward"] == pytest.approx(50.1)  # mean over seeds 0-2 of 50 + 0.1 * seed
    assert result["arms"]["sem-dpo"]["similarity_low"] < result["arms"]["sem-dpo"]["similarity"]
    assert result["comparison"]["similarity_difference"]["mean"] == pytest.approx(0.1)
    assert result["comparison"]["reward_relative"]["mean"] == pytest.approx(-1 / 50.1)
    md = out.with_suffix(".md").read_text()
    assert "the interval lies above 0: Sem-DPO keeps more similarity" in md and "-2.0%" in md
    assert "similarity yes; reward yes by the point estimate" in md
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("steps: 2", "steps: 3"))
    with pytest.raises(ValueError, match=r"another config \(fields \['steps'\]\)"):  # would mix two experiments
        module.main([str(other), *args[1:], "--seeds", "3"])
    assert len(trained) == 6


def test_bench_report_only_rebuilds_the_markdown_from_the_json(bench, tmp_path):
    module, trained, config = bench
    out = tmp_path / "semdpo"
    module.main([str(config), "--out", str(out), "--runs", str(tmp_path / "runs"), "--seeds", "0", "1"])
    md = out.with_suffix(".md")
    expected = md.read_text()
    md.unlink()
    n = len(trained)
    assert module.main(["--out", str(out), "--report-only"]) == 0
    assert md.read_text() == expected and len(trained) == n


def test_bench_refuses_held_out_originals_seen_in_training(tmp_path):
    module = _bench()
    cfg = _cfg(tmp_path, eval_originals=["Rate the review.", "is it good? "])
    with pytest.raises(ValueError, match="Is it good|is it good"):
        module.held_out_originals(cfg)
    assert module.held_out_originals(_cfg(tmp_path, eval_originals=HELD_OUT)) == HELD_OUT


def test_bench_config_has_the_wanted_budget():
    from pathlib import Path

    from rlprompt.policies.dpo import load_method_config

    cfg = load_method_config(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "semdpo_bench.yaml")
    assert len(_bench().held_out_originals(cfg)) >= 32 and cfg.batch_size >= 8 and cfg.normalize_weights


@pytest.mark.parametrize("cls, rewrite, identity", [(DPOMethodConfig, "great rewrite", False),
                                                    (SemDPOConfig, "bad rewrite", True)])
@pytest.mark.model
def test_dpo_and_semdpo_write_an_enhancer_that_keeps_the_original_unless_rewrites_win(
        prefs, tmp_path, monkeypatch, capsys, cls, rewrite, identity):
    """Issue 18: DPO / Sem-DPO runs write ``enhancer/`` with the dev accuracy of the held-out originals beside
    their greedy rewrites; it is the identity unless the rewrites beat the originals."""
    from rlprompt.enhancer import PromptEnhancer

    def scripted(self, prompts, *, k, temperature, seed):  # the trained rewriter's greedy outputs
        return [[(f"Instruction: {rewrite}", True)] * k for _ in prompts]

    monkeypatch.setattr(PromptEnhancer, "_generate", scripted)
    held_out = ["Rate the review.", "Is the film liked?", "Tell the sentiment."]  # QUALITY 0.5: no gold margin
    cfg = _cfg(tmp_path, cls=cls, preferences=str(prefs[0]), lora_target_modules=["q_proj"], steps=1,
               eval_originals=held_out)
    task = _task()
    summary = train_dpo(cfg, tmp_path / "run", rewriter=load_model("tiny-random"), embedder=fake_embedder,
                        target=_target(task), task=task)
    details = summary["details"]
    assert details["enhancer_identity"] is identity and details["eval_rewrites"] == [rewrite] * 3
    assert details["eval_fallbacks"] == [None] * 3 and details["eval_original_accuracies"] == [0.0] * 3
    # best_prompt is what the saved enhancer deploys: the rewrite when it wins on dev, else an original
    assert summary["best_prompt"] == (held_out[0] if identity else rewrite)
    assert summary["best_prompt"] == (tmp_path / "run" / "prompt.txt").read_text()
    assert summary["dev_accuracy"] == (0.0 if identity else 1.0)
    path = tmp_path / "run" / "enhancer"
    evaluation = json.loads((path / "enhancer.json").read_text())["evaluation"]
    assert evaluation["original"] == {"texts": held_out, "scores": [0.0] * 3, "score": 0.0}
    assert evaluation["rewrites"]["greedy"]["score"] == (0.0 if identity else 1.0)
    assert evaluation["metric"] == "dev_accuracy" and evaluation["examples"] == len(task.split("dev").texts)
    assert evaluation["identity"] is identity and (path / "tokenizer.json").is_file()
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith(f"{cls.method}: ")]
    assert len(lines) == 1 and lines[0].endswith("(identity)" if identity else "the enhancer rewrites")
    loaded = PromptEnhancer.from_pretrained(path)
    assert loaded.identity is identity and loaded.info["method"] == cls.method
    assert loaded.enhance("Say the sentiment.") == ("Say the sentiment." if identity else rewrite)


def test_build_preferences_writes_a_file_with_the_umask_mode(tmp_path):
    import os
    import stat

    task = _task()
    old = os.umask(0o022)
    try:
        path = build_preferences(_cfg(tmp_path), target=_target(task), rewriter=scripted_rewriter(), task=task)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text().count("\n") > 0
