"""experiments/report_results.py: tables regenerated from synthetic result files, the side-by-side page, --check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlprompt.stats import correctness, digits, mean_interval, paired_bootstrap

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SEEDS = ["16-100", "16-13", "16-21"]
N = 200


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


report = _load("report_results")
page = _load("methods_page")
LABELS = digits(np.random.default_rng(0).integers(0, 2, N).tolist())


def scored(accuracy: float, seed: int) -> tuple[str, float]:
    """Predictions right on about ``accuracy`` of LABELS (a fixed draw per ``seed``) and their exact accuracy."""
    right = np.random.default_rng(seed).random(N) < accuracy
    predictions = digits([int(g) if r else 1 - int(g) for g, r in zip(LABELS, right)])
    return predictions, float(correctness(predictions, LABELS).mean())


def flipped(predictions: str, positions: list[int]) -> str:
    return "".join(str(1 - int(c)) if i in positions else c for i, c in enumerate(predictions))


def rlprompt_result() -> dict:
    """rlprompt_bench's format: the residual arm far above random search, the paper arm equal to it but for 2 flips."""
    runs = []
    for i, seed in enumerate(SEEDS):
        rand, rand_acc = scored(0.55, 100 + i)
        for arm, (pred, acc) in (("residual", scored(0.85, 200 + i)),
                                 ("paper", (p := flipped(rand, [i, i + 1]), float(correctness(p, LABELS).mean())))):
            runs.append({"arm": arm, "seed": seed, "learned_prompt": f"{arm} {seed}", "dev_accuracy": acc + 0.05,
                         "test_accuracy": acc, "test_predictions": pred, "target_queries": 10_000, "updates": 60,
                         "wall_seconds": 1.0, "commit": "a" * 40,
                         "random_search": {"prompt": "r", "dev_accuracy": 0.6, "test_accuracy": rand_acc,
                                           "test_predictions": rand}})
    manual, manual_acc = scored(0.5, 1)
    return {"runs": runs, "test_examples": N, "command": "python experiments/rlprompt_bench.py", "commits": ["a" * 40],
            "baselines": {"manual_prompt": "It was", "manual_raw_test_accuracy": manual_acc,
                          "manual_raw_test_predictions": manual, "manual_calibrated_test_accuracy": manual_acc,
                          "manual_calibrated_test_predictions": manual, "test_labels": LABELS, "test_indices": "all"},
            "config": {"task": "../shared/data/rlprompt-16shot/sst-2", "total_updates": 60},
            "budgets": {"total_updates": 60, "complete": [f"{a}/{s}" for a in ("residual", "paper") for s in SEEDS][:5],
                        "incomplete": ["paper/16-21"]}}


def multiprompter_result() -> dict:
    """multiprompter_bench's format: K = 1 and 2 on the same seeds and test rows as RLPrompt, 12,000 queries a run."""
    arms = {}
    for k in (1, 2):
        runs = []
        for i, seed in enumerate(SEEDS):
            pred, acc = scored(0.5 + 0.2 * k, 300 + 10 * k + i)
            runs.append({"arm": f"k{k}", "seed": seed, "policy_seed": i, "prompt": f"k{k}", "dev_accuracy": acc,
                         "test_accuracy": acc, "test_predictions": pred, "target_queries": 12_000, "updates": 120,
                         "wall_seconds": 1.0, "curve": [[0, 0.1], [12_000, 0.3]], "commit": "b" * 40})
        arms[f"k{k}"] = {"n_agents": k, "dev_accuracy": 0.7, "runs": runs}
    return {"arms": arms, "prompt_length": 6, "updates": 120, "test_examples": N, "test_indices": "all",
            "test_labels": LABELS, "commands": ["python experiments/multiprompter_bench.py"], "commits": ["b" * 40],
            "plot": "multiprompter.png", "config": {"task": "../shared/data/rlprompt-16shot/sst-2", "n_episodes": 16,
                                                    "input_batch_size": 16, "eval_top_k": 3, "eval_every": 5}}


def promptagent_result() -> dict:
    """promptagent_bench's format: MCTS and greedy at 1,000 queries, beam at 9,000, search seeds 0-2, test rows not
    recorded (the count of sequences includes the test scoring, N)."""
    init, init_acc = scored(0.5, 2)
    tasks = {}
    for j, (search, queries) in enumerate((("mcts", 1_000), ("greedy", 1_000), ("beam", 9_000))):
        seeds = []
        for s in range(3):
            pred, acc = scored(0.7, 400 + 10 * j + s)
            seeds.append({"seed": s, "prompt": search, "reward": acc + 0.1, "test_accuracy": acc,
                          "test_predictions": pred, "evaluations": 16 - (search == "beam"),
                          "target_sequences": queries + N})
        tasks[search] = {"prompt": search, "reward": 0.8, "evaluations": 16.0, "iterations": 5.0,
                         "optimizer_requests": 10.0, "cpu_seconds": 9.0, "seeds": seeds}
    return {"command": "python experiments/promptagent_bench.py", "settings": {"max_evaluations": 16},
            "gold": {"sst-2": LABELS}, "tasks": {"sst-2": tasks},
            "init": {"sst-2": {"prompt": "It was", "reward": 0.5, "test_accuracy": init_acc, "test_predictions": init,
                               "pool_size": 64, "test_size": N}}}


RESULTS = {"rlprompt_sst2": rlprompt_result, "multiprompter": multiprompter_result, "promptagent": promptagent_result}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for stem, make in RESULTS.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps(make()), encoding="utf-8")
    return tmp_path


def row(text: str, method: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| ") and f"| {method} |" in line)


@pytest.mark.heavy
def test_report_regenerates_every_table_and_the_side_by_side_page(results: Path, capsys):
    assert report.main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    for stem, make in RESULTS.items():  # each .md is its bench's own markdown of its JSON
        bench = next(b for b in report.BENCHES if stem in b.stems)
        assert (results / f"{stem}.md").read_text(encoding="utf-8") == _load(bench.script).markdown(make())
        assert f"{stem}.md: regenerated" in out
    assert (results / "multiprompter.png").stat().st_size > 0 and (results / "methods.png").stat().st_size > 0

    text = (results / "methods.md").read_text(encoding="utf-8")
    rl = rlprompt_result()
    labels = LABELS
    residual = [r for r in rl["runs"] if r["arm"] == "residual"]
    gain = paired_bootstrap([correctness(r["test_predictions"], labels) for r in residual],
                            [correctness(r["random_search"]["test_predictions"], labels) for r in residual])
    line = row(text, "RLPrompt residual")
    assert gain.low > 0.2 and f"{gain:+.3f} better" in line  # 0.85 against 0.55: the interval excludes 0
    assert f"{mean_interval([r['test_accuracy'] for r in residual])}" in line and "| 10,000 |" in line
    assert "| 3/3 |" in line and "@ aaaaaaa |" in line
    paper = row(text, "RLPrompt paper")
    assert "inside the noise" in paper and "| 2/3 |" in paper  # random search but for two flips; one short run
    assert "| +0.050 |" in paper  # dev-test gap: dev was test + 0.05
    assert "better" in row(text, "MultiPrompter K=2") and "| - |" in row(text, "MultiPrompter K=1")
    # budgets: PromptAgent's MCTS and greedy (1,000 queries) in group A; its beam (9,000), RLPrompt and MultiPrompter
    # (10,000-12,000) in group B; A and B are not compared
    assert row(text, "PromptAgent mcts").startswith("| A |") and row(text, "RLPrompt residual").startswith("| B |")
    assert row(text, "PromptAgent beam").startswith("| B |") and "| 0/3 |" in row(text, "PromptAgent beam")
    assert "| 1,000 |" in row(text, "PromptAgent mcts") and "commit not recorded" in row(text, "PromptAgent mcts")
    assert "the nearest budgets of A and B are 1,000 and 9,000 (9.0x)" in text
    assert "| A | PromptAgent mcts - PromptAgent greedy |" in text  # one file: the same test examples
    assert "| B | MultiPrompter K=2 - RLPrompt residual |" in text  # same seeds and test rows: paired across benches
    unpaired = next(line for line in text.splitlines() if line.startswith("Not paired, as one of the two does not"))
    assert "PromptAgent beam" in unpaired and "PromptAgent mcts" not in unpaired
    assert not any(line.startswith("| A |") and "RLPrompt" in line for line in text.splitlines())
    assert "Sem-DPO and DPO" in text and "`prewrite.json`: no such file." in text


def test_an_old_format_file_is_reported_and_left_untouched(results: Path, capsys):
    old = {"runs": [{"seed": "16-42", "learned_prompt": "x", "dev_accuracy": 0.6, "test_accuracy": 0.6,
                     "target_queries": 10, "wall_seconds": 1.0, "updates": 1, "run_dir": "r"}],
           "baselines": {"manual_prompt": "It was", "random_search": []}, "test_examples": 4,
           "config": {"task": "sst-2", "total_updates": 1}, "command": "old"}
    (results / "rlprompt_sst2.json").write_text(json.dumps(old), encoding="utf-8")
    (results / "rlprompt_sst2.md").write_text("the old table\n", encoding="utf-8")
    (results / "stray.json").write_text("{}", encoding="utf-8")
    assert report.main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "rlprompt_sst2.md: old format (KeyError" in out and "rerun: python experiments/rlprompt_bench.py" in out
    assert (results / "rlprompt_sst2.md").read_text(encoding="utf-8") == "the old table\n"
    assert "multiprompter.md: regenerated" in out  # the other files still are
    assert "stray.json: no entry in experiments/report_results.py's BENCHES" in out
    text = (results / "methods.md").read_text(encoding="utf-8")
    assert "`rlprompt_sst2.json`: older format (KeyError" in text and "RLPrompt residual" not in text


@pytest.mark.heavy
def test_check_finds_a_stale_table_and_keeps_hand_notes(results: Path, capsys):
    assert report.main(["--results", str(results)]) == 0
    assert report.main(["--results", str(results), "--check"]) == 0
    md = results / "multiprompter.md"
    note = "Note (added by hand): ran on 16 cores.\nMore words.\n"
    md.write_text(md.read_text(encoding="utf-8") + "\n" + note, encoding="utf-8")
    assert report.main(["--results", str(results), "--check"]) == 0  # a hand-written note is not staleness
    fresh = md.read_text(encoding="utf-8")
    mean = f"{multiprompter_result()['arms']['k1']['dev_accuracy']:.3f}"
    assert f"| {mean} |" in fresh
    md.write_text(fresh.replace(f"| {mean} |", "| 0.999 |"), encoding="utf-8")  # a number edited by hand
    capsys.readouterr()
    assert report.main(["--results", str(results), "--check"]) == 1
    assert "multiprompter.md: STALE" in capsys.readouterr().out
    assert "| 0.999 |" in md.read_text(encoding="utf-8")  # --check writes nothing
    assert report.main(["--results", str(results)]) == 0
    assert md.read_text(encoding="utf-8") == fresh and fresh.endswith("\n\n" + note)


def test_budget_groups_hold_budgets_within_2x():
    def arm(queries: int | None) -> page.Arm:
        run = page.Run("16-42", 0.5, 0.5, queries, True, "01", None, None)
        return page.Arm("SST-2", f"m{queries}", "x.json", None, "01", (0, 1), (run,))

    groups = page.budget_groups([arm(q) for q in (1000, 100, 150, 210, 500, 2100, None)])
    assert [[a.queries for a in g] for g in groups] == [[100, 150], [210], [500, 1000], [2100]]


def test_prewrite_rows_pair_each_arm_with_the_initial_instruction_of_its_own_run():
    """prewrite_bench's per-example format (in progress on its own branch): tasks.<task>.seeds[] with every arm."""
    seeds = []
    for i, seed in enumerate(SEEDS[:2]):
        arms = {arm: scored(acc, 500 + 10 * j + i) for j, (arm, acc) in
                enumerate((("initial", 0.5), ("prewrite_i", 0.6), ("prewrite_s", 0.9)))}
        figures = {arm: {"test_predictions": p, "test_accuracy": a, "dev_accuracy": a} for arm, (p, a) in arms.items()}
        seeds.append({"data_seed": seed, "target_queries": 5_000 + i, "commit": "c" * 40, **figures})
    result = {"tasks": {"agnews": {"seeds": seeds, "test_labels": LABELS, "test_indices": list(range(N))}},
              "budget": {"complete": ["agnews/16-100"]}}
    rows = page.prewrite_arms(result, "prewrite.json")
    assert [(a.task, a.method, a.baseline) for a in rows] == [("AG News", "PRewrite-I", "initial instruction"),
                                                               ("AG News", "PRewrite-S", "initial instruction")]
    s = rows[1]
    assert [r.complete for r in s.runs] == [True, False] and s.queries == 5_000.5
    assert s.runs[1].baseline_predictions == seeds[1]["initial"]["test_predictions"]
    assert page.own_difference(s).reading == "better" and page.own_difference(rows[0]).mean == pytest.approx(
        np.mean([seeds[i]["prewrite_i"]["test_accuracy"] - seeds[i]["initial"]["test_accuracy"] for i in range(2)]))


def test_the_committed_tables_match_their_json(capsys):
    """experiments/results/ as committed: every table its JSON can give is what is there (else: run the report)."""
    code = report.main(["--check"])
    assert code == 0, capsys.readouterr().out
