"""Tasks: types and their validation, every loader, few-shot sampling, and the built-in task data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rlprompt.tasks import (
    BUILTIN_TASKS,
    ClassificationTask,
    Split,
    few_shot,
    load_task,
)

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rlprompt-16shot"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared RLPrompt data not found at {SHARED_DATA}")


def _task(**kw) -> ClassificationTask:
    args = dict(name="t", label_names=("a", "b"), verbalizers=(" a", " b"), template="{sentence} {prompt}",
                prompt="P", splits={"test": Split(("x", "y"), (0, 1))})
    args.update(kw)
    return ClassificationTask(**args)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- types and validation -----------------------------------------------------------------------------
def test_split_validation():
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Split(("a", "b"), (0,))
    with pytest.raises(ValueError, match="empty"):
        Split((), ())
    with pytest.raises(ValueError, match="'x'.*example 1"):
        Split(("a", "b"), (0, "x"))


def test_classification_task_validation():
    with pytest.raises(ValueError, match=r"label 2 of example 1 in split 'test'.*range\(2\)"):
        _task(splits={"test": Split(("x", "y"), (0, 2))})
    with pytest.raises(ValueError, match=r"label -1 of example 0"):
        _task(splits={"test": Split(("x",), (-1,))})
    with pytest.raises(ValueError, match=r"1 verbalizers \[' a'\] for 2 labels"):
        _task(verbalizers=(" a",))
    with pytest.raises(ValueError, match="duplicate verbalizers"):
        _task(verbalizers=(" a", " a"))
    with pytest.raises(ValueError, match=r"'\{sentence\} only'.*\{prompt\}"):
        _task(template="{sentence} only")
    with pytest.raises(ValueError, match=r"\{sentence\}"):
        _task(template="{sentence} {sentence} {prompt}")
    with pytest.raises(ValueError, match="no splits"):
        _task(splits={})
    with pytest.raises(ValueError, match="'validation'"):
        _task(splits={"validation": Split(("x",), (0,))})


def test_split_lookup_names_missing_and_available():
    task = _task()
    assert task.split("test").texts == ("x", "y")
    with pytest.raises(ValueError, match=r"no 'train' split; available splits: \['test'\]"):
        task.split("train")


# -- few-shot sampling --------------------------------------------------------------------------------
def test_few_shot_counts_and_determinism():
    split = Split(tuple(f"t{i}" for i in range(30)), tuple(i % 3 for i in range(30)))
    a, b, c = few_shot(split, 4, seed=7), few_shot(split, 4, seed=7), few_shot(split, 4, seed=8)
    assert a == b and a != c
    assert Counter(a.labels) == {0: 4, 1: 4, 2: 4}
    assert all(split.labels[int(t[1:])] == y for t, y in zip(a.texts, a.labels))
    with pytest.raises(ValueError, match="label 0 has only 10 examples, fewer than shots=11"):
        few_shot(split, 11, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        few_shot(split, 0, seed=0)


# -- built-in tasks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_tasks_sizes_and_balance(name):
    task = load_task(name)
    assert isinstance(task, ClassificationTask) and task.name == name
    assert {s: len(sp) for s, sp in task.splits.items()} == {"train": 32, "dev": 32, "test": 136}
    for split in task.splits.values():
        counts = Counter(split.labels)
        assert sorted(counts) == list(range(task.num_labels))
        assert len(set(counts.values())) == 1, counts
    texts = [t for sp in task.splits.values() for t in sp.texts]
    assert len(set(texts)) == len(texts), "duplicate texts across or within splits"


def test_builtin_defaults():
    sentiment, topic, yesno = (load_task(n) for n in ("sentiment", "topic", "yesno"))
    assert (sentiment.label_names, sentiment.verbalizers, sentiment.template, sentiment.prompt) == (
        ("negative", "positive"), (" terrible", " great"), "{sentence} {prompt}", "It was")
    assert topic.label_names == ("World", "Sports", "Business", "Tech") and topic.prompt == "Topic:"
    assert yesno.verbalizers == (" no", " yes") and yesno.prompt == "Answer yes or no:"
    label = dict(zip(sum((sp.texts for sp in yesno.splits.values()), ()),
                     sum((sp.labels for sp in yesno.splits.values()), ())))
    assert label["Does a week have more days than a weekend?"] == 1
    assert label["Is a minute longer than an hour?"] == 0


def test_builtin_overrides_and_shots():
    task = load_task("sentiment", prompt="Overall:", template="Review: {sentence} {prompt}", shots=3, sample_seed=5)
    assert task.prompt == "Overall:" and task.template.startswith("Review:")
    assert len(task.split("train")) == 6 and len(task.split("dev")) == 6 and len(task.split("test")) == 136
    assert task == load_task("sentiment", prompt="Overall:", template="Review: {sentence} {prompt}", shots=3,
                             sample_seed=5)
    with pytest.raises(TypeError, match="'promt'"):
        load_task("sentiment", promt="x")
    with pytest.raises(ValueError, match="seed='16-13'"):
        load_task("sentiment", seed="16-13")


@pytest.mark.model
def test_builtin_verbalizers_are_single_tokens():
    from rlprompt.models import ModelNotFoundError, load_tokenizer

    try:
        tok = load_tokenizer()
    except (ModelNotFoundError, OSError) as err:
        pytest.skip(f"bundled tokenizer unavailable: {err}")
    for name in BUILTIN_TASKS:
        for v in load_task(name).verbalizers:
            assert len(tok(v, add_special_tokens=False).input_ids) == 1, (name, v)


# -- file loaders -------------------------------------------------------------------------------------
def test_tsv_file_becomes_test_split_with_label_names_from_data(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text('sentence\tlabel\nit "rocks"\t1\nmeh\t0\nok\t2\n')
    task = load_task(str(path))
    assert task.name == "reviews" and list(task.splits) == ["test"]
    assert task.split("test") == Split(('it "rocks"', "meh", "ok"), (1, 0, 2))
    assert task.label_names == ("0", "1", "2") and task.verbalizers == (" 0", " 1", " 2")


def test_csv_with_split_column_and_named_labels(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label,split\n"good, really",pos,train\nbad,neg,train\nfine,pos,validation\nugh,neg,test\n')
    task = load_task(str(path), verbalizers=(" bad", " good"))
    assert task.label_names == ("neg", "pos") and task.verbalizers == (" bad", " good")
    assert task.split("train") == Split(("good, really", "bad"), (1, 0))
    assert list(task.splits) == ["train", "dev", "test"]


def test_jsonl_with_label_names_override(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"input": "q1", "label": "yes"}, {"input": "q2", "label": 0}])
    task = load_task(str(path), label_names=("no", "yes"))
    assert task.split("test").labels == (1, 0) and task.verbalizers == (" no", " yes")


def test_generation_data_is_rejected_naming_the_row_and_the_column(tmp_path):
    path = _write_jsonl(tmp_path / "qa.jsonl", [{"input": "2+2?", "target": "4"}, {"input": "3+3?", "answer": "6"}])
    with pytest.raises(ValueError, match=r"qa\.jsonl:1 holds a reference answer \(column 'target'\), not a label.*"
                                         r"classification tasks only.*label_column="):
        load_task(str(path))
    named = _write_jsonl(tmp_path / "yn.jsonl", [{"input": "2+2=4?", "answer": "yes"}, {"input": "1+1=3?", "answer": "no"}])
    assert load_task(str(named), label_column="answer").split("test").labels == (1, 0)  # named: it holds labels


def test_directory_of_split_files(tmp_path):
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\nnice\t1\nawful\t0\n")
    _write_jsonl(data / "dev.jsonl", [{"text": "great", "label": 1}])
    (data / "test.csv").write_text("text,label\nbad,0\n")
    task = load_task(str(data))
    assert task.name == "sst-2" and task.verbalizers == (" terrible", " great") and task.prompt == "It was"
    assert {s: len(sp) for s, sp in task.splits.items()} == {"train": 2, "dev": 1, "test": 1}


def _rlprompt_dir(root: Path, name: str = "agnews") -> Path:
    data = root / name
    for seed in ("16-42", "16-13"):
        (data / seed).mkdir(parents=True)
        rows = "".join(f"{seed} t{k}{i}\t{k}\n" for k in range(4) for i in range(3))
        (data / seed / "train.tsv").write_text("text\tlabel\n" + rows)
        (data / seed / "dev.tsv").write_text("text\tlabel\n" + rows)
    (data / "test.tsv").write_text("sentence\tlabel\n" + "".join(f"x{k}\t{k}\n" for k in range(4)))
    return data


def test_rlprompt_directory_seeds_and_known_defaults(tmp_path):
    data = _rlprompt_dir(tmp_path)
    task = load_task(str(data))
    assert task.name == "agnews" and task.label_names == ("World", "Sports", "Business", "Tech")
    assert task.verbalizers == (" World", " Sports", " Business", " Tech") and task.prompt == "Topic:"
    assert task.split("train").texts[0].startswith("16-42 ")
    assert load_task(str(data), seed="16-13").split("dev").texts[0].startswith("16-13 ")
    sampled = load_task(str(data), shots=2, sample_seed=3)
    assert Counter(sampled.split("train").labels) == {0: 2, 1: 2, 2: 2, 3: 2} and len(sampled.split("test")) == 4
    with pytest.raises(ValueError, match=r"seed '16-99' not found.*\['16-13', '16-42'\]"):
        load_task(str(data), seed="16-99")


def test_bigbench_multiple_choice(tmp_path):
    examples = [{"input": "Sky colour?", "target_scores": {"blue sky": 1, "green grass": 0}},
                {"input": "Grass colour?", "target_scores": {"green grass": 1, "blue sky": 0}}]
    (tmp_path / "task.json").write_text(json.dumps({"name": "colours", "examples": examples}))
    task = load_task(str(tmp_path))
    assert task.name == "colours" and task.label_names == ("blue sky", "green grass")
    assert task.verbalizers == (" blue", " green") and task.split("test").labels == (0, 1)
    examples.append({"input": "Sun?", "target_scores": {"yellow": 1, "blue sky": 0}})
    (tmp_path / "task.json").write_text(json.dumps({"examples": examples}))
    with pytest.raises(ValueError, match=r"example 2 .*\['blue sky', 'yellow'\].*one choice set"):
        load_task(str(tmp_path / "task.json"))


def test_bigbench_generative_is_rejected(tmp_path):
    path = tmp_path / "task.json"
    examples = [{"input": "1+1", "target": "2"}, {"input": "2+1", "target": ["3", "three"]}]
    path.write_text(json.dumps({"examples": examples}))
    with pytest.raises(ValueError, match=r"task\.json is not multiple choice: .*\['input', 'target'\].*classification"):
        load_task(str(path))


def test_huggingface_local_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 1]}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    task = load_task(str(tmp_path / "saved"))
    assert task.label_names == ("neg", "pos") and task.split("test").labels == (0, 1, 1)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert load_task(str(tmp_path / "d.parquet"), label_names=("neg", "pos")).split("train").texts == ("a", "b", "c")


def test_hub_name_fails_clearly_when_unreachable(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match="'no-such-task'.*Hugging Face hub.*ConnectionError.*sentiment"):
        load_task("no-such-task")


def test_misspelt_builtin_fails_fast():
    with pytest.raises(ValueError, match="'sentimnt'.*'sentiment'"):
        load_task("sentimnt")


# -- loader errors ------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        load_task(str(tmp_path / "nope.tsv"))


@pytest.mark.parametrize("fname", ["e.tsv", "e.csv", "e.jsonl", "e.json"])
def test_empty_file(tmp_path, fname):
    (tmp_path / fname).write_text("\n")
    with pytest.raises(ValueError, match=f"{fname} is empty"):
        load_task(str(tmp_path / fname))


def test_invalid_json_names_file(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        load_task(str(tmp_path / "bad.jsonl"))
    (tmp_path / "task.json").write_text("{")
    with pytest.raises(ValueError, match=r"task.json: invalid JSON"):
        load_task(str(tmp_path))


def test_split_named_file_takes_directory_name(tmp_path):
    (tmp_path / "mydata").mkdir()
    _write_jsonl(tmp_path / "mydata" / "test.jsonl", [{"text": "a", "label": "x"}])
    assert load_task(str(tmp_path / "mydata" / "test.jsonl")).name == "mydata"


def test_header_only_file(tmp_path):
    (tmp_path / "h.tsv").write_text("text\tlabel\n")
    with pytest.raises(ValueError, match="no examples"):
        load_task(str(tmp_path / "h.tsv"))


def test_unknown_column_layout_names_columns(tmp_path):
    (tmp_path / "c.csv").write_text("review,stars\ngood,5\n")
    with pytest.raises(ValueError, match=r"found columns \['review', 'stars'\]"):
        load_task(str(tmp_path / "c.csv"))


def test_label_not_in_label_set(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "meh"}])
    with pytest.raises(ValueError, match=r"label 'meh' of example 1.*\['negative', 'positive'\]"):
        load_task(str(path), label_names=("negative", "positive"))
    with pytest.raises(ValueError, match=r"label 5 of example 0"):
        load_task(str(_write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": 5}])), label_names=("a", "b"))


def test_bad_tsv_row_and_bad_split(tmp_path):
    (tmp_path / "r.tsv").write_text("text\tlabel\na\t0\nb\t1\textra\n")
    with pytest.raises(ValueError, match=r"r.tsv:3: 3 fields"):
        load_task(str(tmp_path / "r.tsv"))
    path = _write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "label": 0, "split": "holdout"}])
    with pytest.raises(ValueError, match="'holdout'"):
        load_task(str(path))


# -- the real RLPrompt data (only next to a checkout that has ../shared/data) ---------------------------
@needs_shared
@pytest.mark.parametrize("name,classes,test_rows", [("sst-2", 2, 1821), ("agnews", 4, 7600)])
def test_shared_rlprompt_data(name, classes, test_rows):
    task = load_task(str(SHARED_DATA / name), seed="16-100")
    assert task.name == name and task.num_labels == classes and len(task.split("test")) == test_rows
    assert Counter(task.split("train").labels) == {k: 16 for k in range(classes)}


# -- every text a non-empty string, errors naming file and row (issue 17) -----------------------------
@pytest.mark.parametrize("row,message", [
    ({"text": None, "label": 0}, r"d\.jsonl:2: the 'text' column must be a non-empty string, got None"),
    ({"text": "", "label": 0}, r"d\.jsonl:2: the 'text' column .* got ''"),
    ({"text": "  \t", "label": 0}, r"d\.jsonl:2: the 'text' column"),
    ({"sentence": 5, "label": 0}, r"d\.jsonl:2: the 'sentence' column .* got 5"),
    ({"text": ["a"], "label": 0}, r"d\.jsonl:2: the 'text' column .* got \['a'\]"),
    ({"text": "b", "label": None}, r"d\.jsonl:2: the 'label' column must be a non-empty string or number, got None"),
    ({"text": "b", "label": ""}, r"d\.jsonl:2: the 'label' column"),
    ({"text": "b", "label": True}, r"d\.jsonl:2: the 'label' column .* got True"),
])
def test_hostile_jsonl_text_must_be_a_non_empty_string_naming_file_and_row(tmp_path, row, message):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, row])
    with pytest.raises(ValueError, match=message):
        load_task(str(path))


def test_empty_text_in_tsv_csv_json_and_split_dirs_names_file_and_line(tmp_path):
    (tmp_path / "r.tsv").write_text("text\tlabel\na\t0\n\nb\t1\n\t1\n")  # a blank line, then an empty text on line 5
    with pytest.raises(ValueError, match=r"r\.tsv:5: the 'text' column must be a non-empty string, got ''"):
        load_task(str(tmp_path / "r.tsv"))
    (tmp_path / "c.csv").write_text('text,label\n"multi\nline",0\n" ",1\n')
    with pytest.raises(ValueError, match=r"c\.csv:4: the 'text' column .* got ' '"):
        load_task(str(tmp_path / "c.csv"))
    (tmp_path / "l.json").write_text(json.dumps([{"text": "a", "label": 0}, {"text": None, "label": 1}]))
    with pytest.raises(ValueError, match=r"l\.json example 1: the 'text' column"):
        load_task(str(tmp_path / "l.json"))
    (tmp_path / "o.json").write_text(json.dumps([{"text": "a", "label": 0}, "just text"]))
    with pytest.raises(ValueError, match=r"o\.json example 1: expected an object, got str"):
        load_task(str(tmp_path / "o.json"))
    folder = tmp_path / "splits"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"text": "a", "label": 0}])
    _write_jsonl(folder / "dev.jsonl", [{"text": "b", "label": 1}, {"text": None, "label": 0}])
    with pytest.raises(ValueError, match=r"splits/dev\.jsonl:2: the 'text' column"):
        load_task(str(folder))


def test_empty_text_in_a_16_shot_directory_names_the_seed_file(tmp_path):
    data = _rlprompt_dir(tmp_path)
    train = data / "16-42" / "train.tsv"
    train.write_text(train.read_text() + "\t2\n")
    with pytest.raises(ValueError, match=r"16-42/train\.tsv:14: the 'text' column .* got ''"):
        load_task(str(data))


def test_bigbench_null_input_or_bad_scores_names_the_example(tmp_path):
    path = tmp_path / "task.json"
    for examples, message in [
        ([{"input": "a", "target_scores": {"x": 1, "y": 0}}, {"input": None, "target_scores": {"x": 0, "y": 1}}],
         r"task\.json example 1: the 'input' column"),
        ([{"input": "a", "target_scores": {"x": 1, "y": 0}}, {"input": "b", "target_scores": None}],
         r"task\.json example 1: 'target_scores' must map each choice to a number, got None"),
        ([{"input": "a", "target_scores": {"": 1, "y": 0}}], r"task\.json example 0: the 'target_scores' column"),
        ([{"input": "a", "target_scores": {"x": 1, "y": 0}}, 7], r"task\.json example 1: expected an object, got int"),
    ]:
        path.write_text(json.dumps({"examples": examples}))
        with pytest.raises(ValueError, match=message):
            load_task(str(path))
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="example 0: expected an object"):
        load_task(str(path))


def test_huggingface_null_text_names_split_and_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["a", None, "c"], "label": [0, 1, 1]})
    ds.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"saved split 'test' row 1: the 'sentence' column .* got None"):
        load_task(str(tmp_path / "saved"))


def test_split_types_reject_empty_or_non_string_texts():
    with pytest.raises(ValueError, match=r"text '' of example 1 is not a non-empty string"):
        Split(("a", ""), (0, 1))
    with pytest.raises(ValueError, match=r"text None of example 0"):
        Split((None,), (0,))


@pytest.mark.parametrize("fname,text", [
    ("d.tsv", "text\tlabel\ncaf\u00e9\t1\n"),
    ("d.csv", "text,label\ncaf\u00e9,1\n"),
    ("d.jsonl", '{"text": "caf\u00e9", "label": 1}\n'),
    ("task.json", '{"examples": [{"input": "caf\u00e9", "target": "x"}]}'),
])
def test_non_utf8_data_file_is_named_in_the_error(tmp_path, fname, text):
    (tmp_path / fname).write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{fname} is not UTF-8 text: byte 0xe9 at offset \d+"):
        load_task(str(tmp_path / fname))


# -- data in memory and column mappings (issue 18) -----------------------------------------------------
ROWS = [{"utterance": "great fun", "category": "pos", "split": "train"},
        {"utterance": "a bore", "category": "neg", "split": "train"},
        {"utterance": "loved it", "category": "pos", "split": "validation"},
        {"utterance": "hated it", "category": "neg", "split": "validation"}]
COLUMNS = {"text_column": "utterance", "label_column": "category"}


def _check_rows_task(task: ClassificationTask) -> None:
    assert task.label_names == ("neg", "pos") and task.verbalizers == (" neg", " pos")
    assert task.split("train").texts == ("great fun", "a bore") and task.split("train").labels == (1, 0)
    assert task.split("dev").labels == (1, 0)


def test_a_list_of_dicts_and_a_dataframe_load_with_a_column_mapping():
    pandas = pytest.importorskip("pandas")
    _check_rows_task(load_task(ROWS, **COLUMNS))
    _check_rows_task(load_task(pandas.DataFrame(ROWS), **COLUMNS))
    named = load_task([{k: v for k, v in r.items() if k != "split"} for r in ROWS], **COLUMNS,
                      label_names=["pos", "neg"])
    assert named.label_names == ("pos", "neg") and named.split("test").labels == (0, 1, 0, 1)
    with pytest.raises(ValueError, match=r"data example 0 has no text column 'text' .* found columns \['utterance'"):
        load_task(ROWS, text_column="text", label_column="category")


def test_datasets_in_memory_load_with_a_column_mapping():
    datasets = pytest.importorskip("datasets")
    splits = {"train": ROWS[:2], "validation": ROWS[2:]}
    dataset_dict = datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in splits.items()})
    _check_rows_task(load_task(dataset_dict, **COLUMNS))
    labelled = datasets.Dataset.from_dict({"utterance": ["x", "y"], "category": [1, 0]}).cast_column(
        "category", datasets.ClassLabel(names=["bad", "good"]))
    task = load_task(labelled, **COLUMNS)
    assert task.label_names == ("bad", "good") and task.split("test").labels == (1, 0)
    with pytest.raises(TypeError, match="task data must be .* got int"):
        load_task(3)


def test_a_csv_with_its_own_column_names_loads_with_a_mapping(tmp_path):
    (tmp_path / "intents.csv").write_text("utterance,category,split\n" + "".join(
        f"{r['utterance']},{r['category']},{r['split']}\n" for r in ROWS))
    with pytest.raises(ValueError, match="unknown column layout"):
        load_task(str(tmp_path / "intents.csv"))
    _check_rows_task(load_task(str(tmp_path / "intents.csv"), **COLUMNS))


def test_common_split_names_are_accepted():
    task = load_task(ROWS, **COLUMNS)
    assert task.split("validation") is task.split("dev") is task.split("val")
    with pytest.raises(ValueError, match="no 'test' split"):
        task.split("test")


def test_a_missing_16_shot_directory_is_named_as_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="task path .*sst-2' does not exist"):
        load_task(str(tmp_path / "sst-2"), seed="16-42")
