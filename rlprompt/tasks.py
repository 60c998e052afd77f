"""Tasks: labelled examples plus the template, default prompt and verbalizers a target is queried with.

A :class:`ClassificationTask` follows RLPrompt (Deng et al., 2022): the target fills ``template`` with an
input and a prompt and is scored by the next-token probability of each label's verbalizer; every method
learns prompts for such tasks. :func:`load_task` reads the built-in tasks (``sentiment``, ``topic``,
``yesno``, shipped as JSONL under ``rlprompt/data/``), RLPrompt's 16-shot directories, TSV/CSV/JSONL files,
multiple-choice BIG-bench ``task.json`` files and Hugging Face ``datasets`` data, on disk or in memory (a
``Dataset``, ``DatasetDict``, pandas ``DataFrame`` or list of dicts), with any column names
(``text_column=``, ``label_column=``).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.errors import ConfigError, DataError, MissingFileError
from rlprompt.targets.base import check_template

SPLIT_NAMES = ("train", "dev", "test")
BUILTIN_TASKS: tuple[str, ...] = ("sentiment", "topic", "yesno")
DEFAULT_RLPROMPT_SEED = "16-42"

TEXT_COLUMNS = ("text", "sentence", "input")
LABEL_COLUMNS = ("label",)
REFERENCE_COLUMNS = ("target", "reference", "answer", "output")
"""Columns of generation data (reference answers): named in the error that rejects such data."""
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}

_SENTIMENT = {"label_names": ("negative", "positive"), "verbalizers": (" terrible", " great"),
              "template": "{sentence} {prompt}", "prompt": "It was"}
_TOPIC = {"label_names": ("World", "Sports", "Business", "Tech"),
          "verbalizers": (" World", " Sports", " Business", " Tech"),
          "template": "{sentence} {prompt}", "prompt": "Topic:"}
_YESNO = {"label_names": ("no", "yes"), "verbalizers": (" no", " yes"),
          "template": "{sentence} {prompt}", "prompt": "Answer yes or no:"}
# Defaults for built-in tasks and for datasets recognised by their directory name (lower case, no - or _).
_KNOWN = {"sentiment": _SENTIMENT, "sst2": _SENTIMENT, "topic": _TOPIC, "agnews": _TOPIC, "yesno": _YESNO}
_KNOWN_NAMES = {"sst2": "sst-2", "agnews": "agnews"}
COLUMN_KEYS = ("text", "label")
"""What a column mapping may name: ``load_task(text_column=..., label_column=...)``, a config's ``task_columns``."""
_OVERRIDES = ("template", "prompt", "verbalizers", "label_names", "text_column", "label_column")


# -- types --------------------------------------------------------------------------------------------
def _check_texts(texts: tuple, what: str) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{what} {text!r} of example {i} is not a non-empty string")


@dataclass(frozen=True)
class Split:
    """Classification examples: ``texts[i]`` has label index ``labels[i]``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"split has {len(self.texts)} texts but {len(self.labels)} labels")
        if not self.texts:
            raise DataError("split is empty: it needs at least one example")
        _check_texts(self.texts, "text")
        for i, label in enumerate(self.labels):
            if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
                raise DataError(f"label {label!r} of example {i} is not an int")

    def __len__(self) -> int:
        return len(self.texts)


def _check_splits(splits: dict) -> None:
    if not splits:
        raise DataError("task has no splits: give at least one of 'train', 'dev', 'test'")
    for name, split in splits.items():
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split name {name!r}; expected one of {list(SPLIT_NAMES)}")
        if not isinstance(split, Split):
            raise TypeError(f"split {name!r} is a {type(split).__name__}, expected Split")


def _get_split(task_name: str, splits: dict, name: str):
    name = _SPLIT_ALIASES.get(name.strip().lower(), name)  # validation, valid, val -> dev
    if name not in splits:
        raise DataError(f"task {task_name!r} has no {name!r} split; available splits: {list(splits)}")
    return splits[name]


@dataclass(frozen=True)
class ClassificationTask:
    """A few-shot text classification task scored through verbalizers (RLPrompt, Deng et al., 2022)."""

    name: str
    label_names: tuple[str, ...]
    verbalizers: tuple[str, ...]
    """One target-vocabulary word per label, usually with a leading space (" great")."""
    template: str
    """Holds ``{sentence}`` and ``{prompt}`` exactly once each."""
    prompt: str
    """The default manual prompt."""
    splits: dict[str, Split]

    def __post_init__(self) -> None:
        check_template(self.template)
        if not self.label_names:
            raise DataError(f"task {self.name!r} has no label names")
        if len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"task {self.name!r} has duplicate label names {list(self.label_names)}")
        if len(self.verbalizers) != len(self.label_names):
            raise DataError(f"task {self.name!r} has {len(self.verbalizers)} verbalizers {list(self.verbalizers)} "
                            f"for {len(self.label_names)} labels {list(self.label_names)}")
        if len(set(self.verbalizers)) != len(self.verbalizers):
            raise DataError(f"task {self.name!r} has duplicate verbalizers {list(self.verbalizers)}")
        _check_splits(self.splits)
        for split_name, split in self.splits.items():
            for i, label in enumerate(split.labels):
                if not 0 <= label < len(self.label_names):
                    raise DataError(f"label {label} of example {i} in split {split_name!r} is outside "
                                    f"range({len(self.label_names)}) for labels {list(self.label_names)}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        """The split called ``name`` (or a common alias: validation, valid, val); ``ValueError`` listing the
        available splits if it is missing."""
        return _get_split(self.name, self.splits, name)


# -- few-shot sampling --------------------------------------------------------------------------------
def few_shot(split: Split, shots: int, seed: int) -> Split:
    """Sample ``shots`` examples of every label present in ``split`` with ``np.random.default_rng(seed)``.

    Examples keep their original order. Raises ``ValueError`` if a label has fewer than ``shots``.
    """
    if shots < 1:
        raise ConfigError(f"shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    chosen = []
    for label in sorted(set(split.labels)):
        idx = np.flatnonzero(labels == label)
        if len(idx) < shots:
            raise DataError(f"label {label} has only {len(idx)} examples, fewer than shots={shots}")
        chosen.extend(rng.choice(idx, size=shots, replace=False).tolist())
    chosen.sort()
    return Split(tuple(split.texts[i] for i in chosen), tuple(split.labels[i] for i in chosen))


# -- reading files ------------------------------------------------------------------------------------
Records = list[tuple[str, dict[str, Any]]]
"""Rows as ``(where, fields)``: ``where`` names the row's file and line (or dataset and index) for errors."""


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file; a ``ValueError`` naming the file and the first bad byte when it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} "
                        f"({err.reason}); save it as UTF-8") from None


def _read_table(path: Path) -> Records:
    """Rows of a TSV (no quoting, as in RLPrompt's files), CSV or JSONL file, each with its ``path:line``."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"file {path} is empty")
    rows: Records = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{n}: invalid JSON ({err.msg})") from None
                except RecursionError:
                    raise DataError(f"{path}:{n}: invalid JSON (nested too deeply)") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                rows.append((f"{path}:{n}", row))
        return rows
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv" else csv.reader(stream)
    try:
        lines = [(reader.line_num, row) for row in reader if row]
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: {err}") from None
    header = [h.strip() for h in lines[0][1]]
    for n, row in lines[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} fields, header {header} has {len(header)}")
        rows.append((f"{path}:{n}", dict(zip(header, row))))
    if not rows:
        raise DataError(f"file {path} has a header but no examples")
    return rows


def read_json(path: str | Path) -> Any:
    """The JSON value in a UTF-8 file; a ``ValueError`` naming the file when it is empty, not UTF-8 or not JSON."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"file {path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise DataError(f"{path}: invalid JSON (nested too deeply)") from None


def _records(items: Any, source: object) -> Records:
    """``(where, row)`` pairs for a list of JSON objects read from ``source`` (example ``i`` each)."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{source} example {i}: expected an object, got {type(item).__name__} {str(item)[:80]!r}")
    return [(f"{source} example {i}", item) for i, item in enumerate(items)]


def _by_split(rows: Records, default: str = "test") -> dict[str, Records]:
    """Group rows by a ``split`` column when there is one, else put them all in ``default``."""
    out: dict[str, Records] = {}
    for where, row in rows:
        raw = str(row.get("split", default)).strip().lower()
        if raw not in _SPLIT_ALIASES:
            raise DataError(f"unknown split {raw!r} in {where}; expected one of {list(SPLIT_NAMES)}")
        out.setdefault(_SPLIT_ALIASES[raw], []).append((where, row))
    return out


def _column(columns: Any, options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in columns), None)


def _label_index(value: Any, label_names: tuple[str, ...] | None) -> int | str:
    """An int for numeric labels (ints or digit strings), else the label name as a string."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text) and not (label_names and text in label_names):
        return int(text)
    return text


def _text(value: Any, column: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: the {column!r} column must be a non-empty string, got {value!r}")
    return value


def _label(value: Any, column: str, where: str) -> Any:
    """A label: a non-empty string (its name) or a number (its index)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise DataError(f"{where}: the {column!r} column must be a non-empty string or number, got {value!r}")
    return value


def _pairs(splits: dict[str, Records]) -> dict[str, list[tuple[str, str, Any]]]:
    """(where, text, label) per split, columns resolved per row. Every text must be a non-empty string, every
    label a non-empty string or number; a row holding a reference answer instead of a label (generation data)
    is rejected by name, as every method learns prompts for classification tasks."""
    out: dict[str, list[tuple[str, str, Any]]] = {}
    for split_name, rows in splits.items():
        out[split_name] = []
        for where, row in rows:
            text_col, label_col = _column(row, TEXT_COLUMNS), _column(row, LABEL_COLUMNS)
            reference = _column(row, REFERENCE_COLUMNS)
            if text_col is not None and label_col is None and reference is not None:
                raise DataError(
                    f"{where} holds a reference answer (column {reference!r}), not a label: rlprompt learns prompts "
                    f"for classification tasks only; if {reference!r} holds class labels, name it with "
                    f"label_column= (task_columns in a config)")
            if text_col is None or label_col is None:
                raise DataError(
                    f"unknown column layout in {where}: found columns {list(row)}; expected a text column "
                    f"({', '.join(TEXT_COLUMNS)}) and a label column ({', '.join(LABEL_COLUMNS)}), or name them with "
                    f"text_column= and label_column=")
            out[split_name].append((where, _text(row[text_col], text_col, where),
                                    _label(row[label_col], label_col, where)))
    return out


def _mapped(splits: dict[str, Records], text_column: str | None, label_column: str | None) -> dict[str, Records]:
    """Rows whose user-named text and label columns are renamed to ``text`` and ``label`` (the columns those
    names would otherwise be found in are dropped); a ``ValueError`` naming the column and the row when a row
    lacks one."""
    renames = {new: (column, shadowed) for new, column, shadowed in (
        ("text", text_column, TEXT_COLUMNS), ("label", label_column, LABEL_COLUMNS + REFERENCE_COLUMNS)) if column}
    if not renames:
        return splits
    out: dict[str, Records] = {}
    for split_name, rows in splits.items():
        out[split_name] = []
        for where, row in rows:
            row = dict(row)
            for new, (column, shadowed) in renames.items():
                if column not in row:
                    raise DataError(f"{where} has no {new} column {column!r} (named by {new}_column or "
                                    f"task_columns): found columns {list(row)}")
                value = row[column]
                for name in shadowed:
                    row.pop(name, None)
                row[new] = value
            out[split_name].append((where, row))
    return out


def _build(name: str, splits: dict[str, Records], source: object, known: dict | None,
           overrides: dict[str, Any], feature_names: tuple[str, ...] | None = None) -> ClassificationTask:
    """Turn split rows of texts and labels into a classification task."""
    splits = _mapped(splits, overrides.get("text_column"), overrides.get("label_column"))
    pairs = _pairs(splits)
    defaults = dict(known or {})
    names = overrides.get("label_names") or feature_names or defaults.get("label_names")
    names = tuple(names) if names else None
    raw = {s: [_label_index(v, names) for _, _, v in ps] for s, ps in pairs.items()}
    if names is None:
        values = {v for labels in raw.values() for v in labels}
        if all(isinstance(v, int) for v in values):
            names = tuple(str(i) for i in range(max(values) + 1)) if min(values) >= 0 else None
        elif all(isinstance(v, str) for v in values):
            names = tuple(sorted(values))
        if names is None:
            raise DataError(f"labels in {source} mix numbers and names or are negative: {sorted(map(str, values))}")
    index = {n: i for i, n in enumerate(names)}
    split_objs = {}
    for s, labels in raw.items():
        for i, label in enumerate(labels):
            if isinstance(label, str) and label not in index:
                raise DataError(f"label {label!r} of example {i} in split {s!r} ({pairs[s][i][0]}) is not in the "
                                f"label set {list(names)}")
        split_objs[s] = Split(tuple(t for _, t, _ in pairs[s]),
                              tuple(index[v] if isinstance(v, str) else v for v in labels))
    verbalizers = overrides.get("verbalizers")
    if verbalizers is None:
        same_labels = "label_names" not in overrides and "verbalizers" in defaults \
            and len(defaults["verbalizers"]) == len(names)
        verbalizers = defaults["verbalizers"] if same_labels else tuple(" " + n for n in names)
    return ClassificationTask(
        name=name, label_names=names, verbalizers=tuple(verbalizers),
        template=overrides.get("template", defaults.get("template", "{sentence} {prompt}")),
        prompt=overrides.get("prompt", defaults.get("prompt", "Answer:")), splits=split_objs)


def _known(path: Path) -> tuple[str, dict | None]:
    """The task name and defaults for a path, recognising datasets such as ``sst-2`` by directory name."""
    for part in (path.name if path.is_dir() else path.stem, path.parent.name, path.parent.parent.name):
        key = re.sub(r"[-_\s]", "", part.lower())
        if key in _KNOWN_NAMES:
            return _KNOWN_NAMES[key], _KNOWN[key]
    own = path.name if path.is_dir() else path.stem
    return (path.parent.name if own.lower() in _SPLIT_ALIASES and path.parent.name else own), None


# -- format readers -----------------------------------------------------------------------------------
def _load_bigbench(path: Path, data: Any, overrides: dict[str, Any]) -> ClassificationTask:
    """A multiple-choice BIG-bench ``task.json`` (``target_scores``); a generative one (``target``) is rejected."""
    examples = data.get("examples") if isinstance(data, dict) else None
    if not examples or not isinstance(examples, list):
        raise DataError(f"BIG-bench file {path} has no examples (a list under 'examples')")
    records = _records(examples, path)
    name = str(data.get("name") or path.parent.name)
    defaults = {"template": "{sentence} {prompt}", "prompt": "Answer:"}
    if "target_scores" not in examples[0]:
        raise DataError(f"BIG-bench file {path} is not multiple choice: its examples have no 'target_scores' (found "
                         f"keys {sorted(examples[0])}); rlprompt learns prompts for classification tasks only")
    choices: tuple[str, ...] = ()
    rows = []
    for where, e in records:
        if "input" not in e:
            raise DataError(f"BIG-bench {where} has no 'input': found keys {sorted(e)}")
        scores = e.get("target_scores")
        if not isinstance(scores, dict) or not scores or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
            raise DataError(f"BIG-bench {where}: 'target_scores' must map each choice to a number, got {scores!r}")
        choices = choices or tuple(_text(c, "target_scores", where) for c in scores)
        if set(scores) != set(choices):
            raise DataError(f"BIG-bench {where} has choices {sorted(scores)}, but example 0 has "
                            f"{sorted(choices)}; all examples must share one choice set")
        rows.append((where, {"input": e["input"], "label": choices.index(max(scores, key=scores.get))}))
    verbalizers = tuple(" " + (c.split() or [c])[0] for c in choices)
    defaults.update(label_names=choices, verbalizers=verbalizers)
    return _build(name, {"test": rows}, path, defaults, overrides)


def _load_rlprompt_dir(path: Path, seed: str, overrides: dict[str, Any]) -> ClassificationTask:
    """RLPrompt's 16-shot layout: ``<dir>/<seed>/{train,dev}.tsv`` and ``<dir>/test.tsv``."""
    seed_dir = path / seed
    if not (seed_dir / "train.tsv").is_file():
        seeds = sorted(p.name for p in path.iterdir() if (p / "train.tsv").is_file())
        raise DataError(f"seed {seed!r} not found in {path}; available seeds: {seeds}")
    files = {"train": seed_dir / "train.tsv", "dev": seed_dir / "dev.tsv", "test": path / "test.tsv"}
    name, known = _known(path)
    splits = {s: _read_table(f) for s, f in files.items() if f.is_file()}
    return _build(name, splits, path, known, overrides)


def _split_files(path: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        split = _SPLIT_ALIASES.get(f.stem.lower())
        if f.is_file() and split and f.suffix in TABLE_SUFFIXES:
            if split in found:
                raise DataError(f"{path} holds two files for the {split!r} split: {found[split].name}, {f.name}")
            found[split] = f
    return found


def _load_hf(spec: str, local: bool, overrides: dict[str, Any]) -> ClassificationTask:
    """Data read by Hugging Face ``datasets`` (local files/dirs, or a hub id when nothing local matches)."""
    import datasets

    try:
        saved = any((Path(spec) / f).is_file() for f in ("dataset_dict.json", "state.json"))
        if local and saved:
            data = datasets.load_from_disk(spec)
        elif local and Path(spec).is_file():
            builder = {".parquet": "parquet", ".arrow": "arrow", ".txt": "text"}.get(Path(spec).suffix)
            if builder is None:
                raise DataError(f"unsupported file type {Path(spec).suffix!r}")
            data = datasets.load_dataset(builder, data_files=spec)
        else:
            data = datasets.load_dataset(spec)
    except Exception as err:  # datasets raises many types: report them all the same way
        where = "local data" if local else "a Hugging Face hub dataset (offline, or no such dataset?)"
        raise DataError(f"could not load {spec!r} as {where}: {type(err).__name__}: {err}. Built-in tasks: "
                        f"{list(BUILTIN_TASKS)}") from err
    name, known = _known(Path(spec)) if local else (spec.rsplit("/", 1)[-1], None)
    return _from_datasets(data, name, spec, known, overrides)


def _from_datasets(data: Any, name: str, source: str, known: dict | None, overrides: dict[str, Any]) -> ClassificationTask:
    """A task from a loaded ``datasets.DatasetDict`` (its train/validation/test splits) or ``Dataset`` (the ``test``
    split); a ``ClassLabel`` label column names the labels."""
    import datasets

    if isinstance(data, datasets.Dataset):
        data = {"test": data}
    label_column = overrides.get("label_column") or "label"
    splits, feature_names = {}, None
    for split_name, ds in data.items():
        if split_name not in _SPLIT_ALIASES:
            continue
        splits[_SPLIT_ALIASES[split_name]] = [(f"{source} split {split_name!r} row {i}", row)
                                              for i, row in enumerate(ds.to_list())]
        feature = ds.features.get(label_column)
        if isinstance(feature, datasets.ClassLabel):
            feature_names = tuple(feature.names)
    if not splits or not all(splits.values()):
        raise DataError(f"{source!r} has no non-empty train/validation/test split: found {list(data)}")
    return _build(name, splits, source, known, overrides, feature_names)


def _in_memory(data: Any, overrides: dict[str, Any]) -> ClassificationTask:
    """A task from data in memory: a ``datasets`` ``Dataset`` or ``DatasetDict``, a pandas ``DataFrame`` or a list
    of dicts (as rows of a file: a ``split`` column picks each row's split, else all rows are ``test``)."""
    if isinstance(data, list):
        return _build("data", _by_split(_records(data, "data")), "data", None, overrides)
    if type(data).__module__.partition(".")[0] == "pandas" and hasattr(data, "to_dict"):
        return _build("data", _by_split(_records(data.to_dict("records"), "DataFrame")), "DataFrame", None, overrides)
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        return _from_datasets(data, "data", type(data).__name__, None, overrides)
    raise TypeError(f"task data must be a task name or path, a datasets Dataset or DatasetDict, a pandas DataFrame "
                    f"or a list of dicts; got {type(data).__name__}")


def looks_like_path(spec: str) -> bool:
    """Whether a task spec is meant as a path even when nothing is there: it starts with ``.``, ``/`` or ``~``,
    has a file suffix or more than one ``/`` (``org/name`` is a hub id, ``sentiment`` a built-in task)."""
    return spec.startswith((".", "/", "~")) or "/" in spec.strip("/").rpartition("/")[0] or bool(Path(spec).suffix)


# -- entry point --------------------------------------------------------------------------------------
def load_task(spec: str | Path | Any, *, seed: str | None = None, shots: int | None = None, sample_seed: int = 0,
              **overrides: Any) -> ClassificationTask:
    """Load a task from a built-in name (:data:`BUILTIN_TASKS`), a path or data in memory.

    Paths may be an RLPrompt 16-shot directory (``seed`` picks ``<dir>/<seed>/``, default ``16-42``);
    a TSV/CSV/JSONL file (all rows form the ``test`` split unless a ``split`` column says otherwise);
    a directory of ``train``/``dev``/``test`` files; a multiple-choice BIG-bench ``task.json``; or data that
    Hugging Face ``datasets`` reads. A name that is neither built in nor a local path is tried as a hub id.
    Data holding reference answers instead of labels (generation data) is rejected with a ``ValueError``.
    ``shots`` keeps ``shots`` examples per label of the train and dev splits (:func:`few_shot` with
    ``sample_seed``). In memory, ``spec`` may be a ``datasets`` ``Dataset``/``DatasetDict``, a pandas
    ``DataFrame`` or a list of dicts (rows as in a file). ``overrides`` may set ``template``, ``prompt``,
    ``verbalizers``, ``label_names``, and ``text_column`` / ``label_column``: the columns holding the text and the label when they are not called text/sentence/input
    and label (a CSV with ``utterance,category`` loads with ``text_column="utterance", label_column="category"``).
    """
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise TypeError(f"unknown override(s) {unknown}; allowed: {list(_OVERRIDES)}")
    if not isinstance(spec, (str, Path)):
        if seed is not None:
            raise ConfigError(f"seed={seed!r} only applies to RLPrompt 16-shot directories, not to data in memory")
        task = _in_memory(spec, overrides)
        return _sample(task, shots, sample_seed) if shots is not None else task
    spec = str(spec)
    path = Path(spec).expanduser()
    is_rlprompt = path.is_dir() and (path / "test.tsv").is_file() and any(
        (p / "train.tsv").is_file() for p in path.iterdir() if p.is_dir())
    if seed is not None and not is_rlprompt:
        if spec not in BUILTIN_TASKS and not path.exists():
            where = "" if path.is_absolute() else f" (resolved relative to the current directory {str(Path.cwd())!r})"
            raise MissingFileError(f"task path {spec!r} does not exist{where}; seed={seed!r} needs an RLPrompt "
                                   f"16-shot directory")
        raise ConfigError(f"seed={seed!r} only applies to RLPrompt 16-shot directories, and {spec!r} is not one")
    if spec in BUILTIN_TASKS:
        with resources.as_file(resources.files("rlprompt").joinpath("data", f"{spec}.jsonl")) as builtin:
            task = _build(spec, _by_split(_read_table(builtin)), spec, _KNOWN[spec], overrides)
    elif is_rlprompt:
        task = _load_rlprompt_dir(path, seed or DEFAULT_RLPROMPT_SEED, overrides)
    elif path.is_dir() and (path / "task.json").is_file():
        task = _load_bigbench(path / "task.json", read_json(path / "task.json"), overrides)
    elif path.is_dir() and _split_files(path):
        name, known = _known(path)
        task = _build(name, {s: _read_table(f) for s, f in _split_files(path).items()}, path, known, overrides)
    elif path.is_file() and path.suffix in TABLE_SUFFIXES:
        name, known = _known(path)
        task = _build(name, _by_split(_read_table(path)), path, known, overrides)
    elif path.is_file() and path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict) and "examples" in data:
            task = _load_bigbench(path, data, overrides)
        elif isinstance(data, list) and data:
            name, known = _known(path)
            task = _build(name, _by_split(_records(data, path)), path, known, overrides)
        else:
            raise DataError(f"{path} is neither a BIG-bench task (object with 'examples') nor a list of examples")
    elif path.exists():
        task = _load_hf(str(path), True, overrides)
    elif looks_like_path(spec):
        raise MissingFileError(f"no such file or directory: {spec!r} (built-in tasks: {list(BUILTIN_TASKS)})")
    elif close := difflib.get_close_matches(spec, BUILTIN_TASKS, n=1, cutoff=0.75):
        raise ConfigError(f"unknown task {spec!r}; did you mean the built-in task {close[0]!r}?")
    else:
        task = _load_hf(spec, False, overrides)
    if shots is not None:
        task = _sample(task, shots, sample_seed)
    return task


def _sample(task: ClassificationTask, shots: int, seed: int) -> ClassificationTask:
    if not {"train", "dev"} & set(task.splits):
        raise ConfigError(f"shots needs a 'train' or 'dev' split; task {task.name!r} has {list(task.splits)}")
    splits = {s: few_shot(sp, shots, seed) if s in ("train", "dev") else sp for s, sp in task.splits.items()}
    return ClassificationTask(task.name, task.label_names, task.verbalizers, task.template, task.prompt, splits)
