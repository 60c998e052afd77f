"""Evaluation and calibration math against hand-computed values, and `rlprompt eval` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rlprompt.cli import main
from rlprompt.evaluation import CONTENT_FREE_INPUTS, contextual_calibration, evaluate, mean_calibration, normalize
from tests.conftest import SST2, FakeTarget


def table_target(table: dict[str, list[float]]) -> FakeTarget:
    """Scores each input by a fixed row of probabilities, whatever the prompt."""
    return FakeTarget(lambda prompt, text, k, position: np.log(table[text]), name="table")


def test_normalize_and_calibrations_by_hand():
    np.testing.assert_allclose(np.exp(normalize(np.log([[0.2, 0.6]]))), [[0.25, 0.75]])
    # content-free inputs put 0.8 on label 1: dividing by [0.2, 0.8] flips [0.25, 0.75] to [0.571, 0.429]
    calibrated = np.exp(contextual_calibration(np.log([[0.25, 0.75]]), np.log([[0.2, 0.8], [0.2, 0.8]])))
    np.testing.assert_allclose(calibrated, [[4 / 7, 3 / 7]])
    # mean calibration: log-odds 0 and log(3) -> shifted by their mean log(3)/2 -> symmetric around 0.5
    out = np.exp(mean_calibration(np.log([[0.5, 0.5], [0.25, 0.75]])))
    np.testing.assert_allclose(out[:, 1], [1 / (1 + np.sqrt(3)), np.sqrt(3) / (1 + np.sqrt(3))])


def test_evaluate_counts_accuracy_and_queries():
    target = table_target({"a": [0.9, 0.1], "b": [0.4, 0.6], "c": [0.3, 0.7], "N/A": [0.5, 0.5], "": [0.5, 0.5], "[MASK]": [0.5, 0.5]})
    result = evaluate(target, template="{sentence} {prompt}", prompt="p", verbalizers=["x", "y"], texts=["a", "b", "c"], labels=[0, 0, 1], chunk_size=2)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.predictions == [0, 1, 1] and result.predictions_per_class == [1, 2]
    assert (result.target_calls, result.target_sequences) == (2, 3)
    calibrated = evaluate(target, template="{sentence} {prompt}", prompt="p", verbalizers=["x", "y"], texts=["a", "b", "c"], labels=[0, 0, 1], calibrate="contextual")
    assert calibrated.predictions == [0, 1, 1] and calibrated.target_sequences == 6
    assert result.unparsed == calibrated.unparsed == 0  # a target scored by log-probabilities parses nothing


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(labels=[0, 2]), "label 2 is outside the label set"),
        (dict(texts=[], labels=[]), "no examples"),
        (dict(calibrate="platt"), "calibrate='platt'"),
    ],
)
def test_evaluate_rejects_bad_input(kwargs, message):
    target = table_target({"a": [0.9, 0.1], "b": [0.4, 0.6]})
    args = dict(template="{sentence} {prompt}", prompt="p", verbalizers=["x", "y"], texts=["a", "b"], labels=[0, 1]) | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate(target, **args)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlprompt.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.model
@pytest.mark.subprocess
def test_cli_eval_json_on_tiny_target():
    out = _cli("eval", "--task", "sentiment", "--target", "tiny-random", "--limit", "8", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n"] == 8 and 0 <= result["accuracy"] <= 1 and result["target_calls"] >= 1


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--verbalizers", " bad", " goodd"], "' goodd' is not a single token", marks=pytest.mark.model),
        (["--template", "{sentence} It was"], "must contain {prompt}"),
        (["--target", "no-such-model"], "unknown model 'no-such-model'"),
        (["--split", "holdout"], "no 'holdout' split"),
        (["--task", "sentimnt"], "did you mean the built-in task 'sentiment'"),
    ],
)
def test_cli_eval_bad_input_is_one_clear_line(args, message, capsys):
    assert main(["eval", "--target", "tiny-random", "--limit", "2", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_eval_reproduces_notes_on_sst2():
    """NOTES: `{s} It was` with terrible/great scores ~0.49 raw and ~0.72 calibrated on 400 test sentences."""
    base = ["eval", "--task", str(SST2), "--split", "test", "--template", "{sentence} {prompt}", "--prompt", "It was",
            "--verbalizers", " terrible", " great", "--limit", "400", "--json"]
    raw = json.loads(_cli(*base).stdout)
    calibrated = json.loads(_cli(*base, "--calibrate", "mean").stdout)
    assert raw["n"] == 400 and 0.45 <= raw["accuracy"] <= 0.58
    assert max(raw["predictions_per_class"]) >= 380  # the uncalibrated target predicts one class
    assert 0.65 <= calibrated["accuracy"] <= 0.78


# -- endpoints without logprobs (issue 18): an error by default, label parsing opt-in with its unparsed count ----
def test_cli_eval_against_an_endpoint_without_logprobs_is_an_error_naming_the_opt_in(capsys):
    pytest.importorskip("uvicorn")
    from rlprompt.targets.faulty import FaultyEndpoint

    with FaultyEndpoint([" terrible", " great"], fault_rate=1.0, faults=["no_logprobs"]) as endpoint:
        code = main(["eval", "--target", f"openai:{endpoint.url}:fake?max_retries=3", "--limit", "4", "--json"])
        requests = endpoint.requests
    err = capsys.readouterr().err
    assert code == 1 and "returned no logprobs for fake" in err and f"openai:{endpoint.url}:fake?scoring=labels" in err
    assert requests == 4  # one request per text, no retries: the endpoint is not failing, it lacks logprobs


def test_label_parsing_reports_unparsed_answers_in_eval_result_and_cli_json(capsys):
    """The endpoint answers its greedy token among " meh", " terrible" and " great"; " meh" names no verbalizer."""
    pytest.importorskip("uvicorn")
    from rlprompt.tasks import load_task
    from rlprompt.targets import make_target
    from rlprompt.targets.faulty import FaultyEndpoint

    task = load_task("sentiment")
    test = task.split("test")
    texts, labels = list(test.texts[:12]), list(test.labels[:12])
    with FaultyEndpoint([" meh", " terrible", " great"]) as endpoint:
        def answer(text: str) -> str:
            top = endpoint.logprobs(f"{text} {task.prompt}")
            return max(top, key=top.get)

        answers = [answer(x) for x in texts]
        expected = answers.count(" meh")
        assert 0 < expected < len(texts)  # the hashed scores give both kinds of answer
        assert {answer(x) for x in CONTENT_FREE_INPUTS} == {" meh"}  # ... and calibration's inputs name none
        spec = f"openai:{endpoint.url}:fake?scoring=labels"
        target = make_target(spec)
        args = dict(template=task.template, prompt=task.prompt, verbalizers=task.verbalizers, texts=texts,
                    labels=labels)
        result = evaluate(target, **args)
        assert result.unparsed == expected
        assert [p for p, a in zip(result.predictions, answers) if a != " meh"] == \
            [task.verbalizers.index(a) for a in answers if a != " meh"]
        assert evaluate(target, **args, calibrate="contextual").unparsed == expected  # content-free inputs not counted
        # the CLI's --limit takes a stratified seeded sample: count the unparsed answers on that sample
        from rlprompt.benchmarking import stratified_indices

        sample = [test.texts[i] for i in stratified_indices(test.labels, 12)]
        expected_cli = [answer(x) for x in sample].count(" meh")
        assert main(["eval", "--target", spec, "--limit", "12", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["unparsed"] == expected_cli
    assert expected_cli > 0 and f"warning: {expected_cli} of 12 answers named no verbalizer" in err
