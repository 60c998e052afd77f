"""One run contract (issue 14): tiny runs of all five methods, trained through ``rlprompt.train`` on the built-in
sentiment task with two-layer random models as policy, rewriter, optimizer and target, end with the same
summary.json keys, and ``rlprompt report`` draws one curve per run and compares them in one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlprompt
from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.models import BUNDLED
from rlprompt.runs import STOP_REASONS, SUMMARY_KEYS
from rlprompt.training import METHODS, method_entry

DEMOS = Path(__file__).resolve().parents[1] / "experiments" / "configs"

TINY = {"task": "sentiment", "target": "tiny-random", "target_dtype": "float32"}
TOKENS = {"policy_model": "tiny-random", "policy_dtype": "float32", "vocab": [300, 301, 302, 303], "mlp_hidden": 8,
          "value_hidden": 8, "input_batch_size": 2, "eval_every": 1, "checkpoint_every": 1, "steps": 2}
REWRITER = {"rewriter_model": "tiny-random", "lora_r": 2, "lora_alpha": 4, "lora_target_modules": ["q_proj"],
            "steps": 2, "checkpoint_every": 2}
CONFIGS = {
    "rlprompt": {**TINY, **TOKENS, "method": "rlprompt", "prompt_length": 2, "n_envs": 2},
    "multiprompter": {**TINY, **TOKENS, "method": "multiprompter", "n_agents": 2, "segment_length": 1,
                      "n_episodes": 2},
    "prewrite": {**TINY, **REWRITER, "method": "prewrite", "num_generations": 2, "max_completion_length": 4,
                 "input_batch_size": 2, "num_samples": 2, "dev_limit": 4},
    "promptagent": {**TINY, "method": "promptagent", "optimizer_model": "tiny-random",
                    "optimizer_model_dtype": "float32", "steps": 2, "max_evaluations": 10, "expand_width": 2,
                    "depth_limit": 2, "error_batch_size": 4, "gradient_tokens": 4, "revision_tokens": 4,
                    "prefill": True, "parse_fallback": True},
    "sem-dpo": {**TINY, **REWRITER, "method": "sem-dpo", "originals": ["Say the sentiment.", "Is it good?"],
                "samples_per_original": 3, "max_new_tokens": 6, "input_batch_size": 2, "batch_size": 2,
                "max_length": 96},
}
CURVES = {"rlprompt": ("charts/raw_reward", "target_queries"), "multiprompter": ("charts/raw_reward", "target_queries"),
          "prewrite": ("charts/raw_reward_mean", "target_queries"), "promptagent": ("charts/best_reward", None),
          "sem-dpo": ("losses/loss", "step")}
"""Each method's curve: its metric, and its x axis where it is known in advance (DPO's steps query no target, so its
curve runs over steps; a PromptAgent step that finds no new prompt queries nothing either)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each method's run directory and the summary its train function returned."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method, config in CONFIGS.items():
        if method == "sem-dpo":
            config = {**config, "preferences": str(root / "preferences.jsonl")}
        out[method] = (root / method, rlprompt.train(config, root / method))
    return out


@pytest.mark.model
def test_every_method_ends_a_run_with_the_same_summary(runs):
    for method, (run_dir, summary) in runs.items():
        assert tuple(summary) == SUMMARY_KEYS, method
        assert json.loads((run_dir / "summary.json").read_text()) == summary
        assert summary["method"] == method and summary["run_dir"] == str(run_dir)
        assert summary["stop_reason"] in STOP_REASONS and summary["target_queries"] > 0, method
        assert summary["best_prompt"] == (run_dir / "prompt.txt").read_text(), method
        assert summary["wall_seconds"] > 0 and len(summary["config_hash"]) == 12
        assert summary["dev_accuracy"] is None or 0 <= summary["dev_accuracy"] <= 1
    assert runs["promptagent"][1]["test_accuracy"] is not None  # it scores its prompt on test (eval_test)
    assert runs["prewrite"][1]["details"]["prewrite_s"] and "pairs" in runs["sem-dpo"][1]["details"]


@pytest.mark.model
def test_report_draws_a_curve_per_run_and_compares_all_five_methods(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *(str(d) for d, _ in runs.values()), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    assert [row.split(" | ")[:2] for row in rows] == [[f"| {m}", m] for m in runs]
    for row, (_, summary) in zip(rows, runs.values()):
        cells = row.split(" | ")
        assert cells[3:6] == [str(summary["steps"]), str(summary["target_queries"]), summary["stop_reason"]]
        assert cells[9] == summary["config_hash"]
    records = json.loads((out / "report.json").read_text())
    for record, (method, (run_dir, summary)) in zip(records, runs.items()):
        assert {k: record[k] for k in SUMMARY_KEYS if k != "details"} == {k: summary[k] for k in SUMMARY_KEYS
                                                                          if k != "details"}
        key, x = CURVES[method]
        queries = [r["target_queries"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                   if key in r]
        assert record["curve_key"] == key and record["curve_x"] == (x or ("target_queries" if len(set(queries)) > 1
                                                                            else "step")), method
        png = out / record["curve"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, method
        assert f"![{method}]({method}.png)" in (out / "report.md").read_text()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_demo_config_on_the_bundled_target(method):
    """``experiments/configs/<method>_sentiment_demo.yaml`` (a few minutes on a CPU core, `rlprompt train` runs it)."""
    config_cls, _ = method_entry(method)
    cfg = load_config(DEMOS / f"{method.replace('-', '')}_sentiment_demo.yaml", config_cls)
    assert type(cfg).method == method and cfg.task == "sentiment" and cfg.target == BUNDLED


def test_report_on_a_non_run_dir_or_a_broken_summary_is_one_line(tmp_path, capsys):
    """A folder that is no run, or a run whose summary.json is not a JSON object, is a user's error: exit 2 and
    one line naming the folder or file, no traceback."""
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"rlprompt report: error: {str(tmp_path.resolve())!r} is not a run directory "
                                       f"(no metrics.jsonl)\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "target_queries": 0}\n')
    for text, reason in (("{torn", "is not valid JSON"), ("[1, 2]", "must hold a JSON object, got list")):
        (tmp_path / "summary.json").write_text(text)
        assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rlprompt report: error: {str(tmp_path.resolve() / 'summary.json')!r} {reason}")
        assert err.count("\n") == 1
