"""Typed run configs: a YAML file (or dict) may only set the fields of one config dataclass.

Every method has one ``@dataclass`` config with a one-line docstring per field and checks in
``__post_init__`` (trl's convention). :func:`load_config` fills it from YAML plus ``key=value``
overrides and rejects unknown keys and values of the wrong type with the offending key and value (a
:class:`~rlprompt.errors.ConfigError`, as is a value the class's ``__post_init__`` refuses);
:func:`dump_config` turns it back into the plain dict written as a run's ``config.yaml``, and
:func:`default_yaml` writes a class's defaults as a commented YAML file.

A config file may carry a top-level ``method:`` key (``rlprompt``, ``prewrite``, ``dpo``, ...).
The CLI reads it with :func:`config_method` and picks the config class from a plain dict; the class
itself names its method in the class variable ``method``.

Paths: a relative path in a field a config class lists in ``path_fields`` (the task, DPO's preferences file)
resolves against the folder of the YAML file that holds it, and against the current directory when it comes
from a dict or a ``key=value`` override; the loaded config holds it as an absolute path, so a run's
``config.yaml`` means the same from any directory.

Renamed keys: every method's training length is ``steps``, and PromptAgent's optimizer LM is ``optimizer_model``
(a config name means one thing in every method); the old names (:data:`RENAMED_FIELDS`) are still read, with a
warning, so configs and run directories written before the rename load and resume.
A resumed run may change only :data:`RESUME_CHANGEABLE` (:func:`check_resume_config`).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import yaml

from rlprompt.devices import check_device
from rlprompt.errors import ConfigError, DataError, MissingFileError, RLPromptError
from rlprompt.model_names import BUNDLED, DEFAULT_DTYPE, DTYPE_NAMES
from rlprompt.tasks import BUILTIN_TASKS, COLUMN_KEYS, ClassificationTask, load_task, looks_like_path, read_text

if TYPE_CHECKING:
    from rlprompt.targets.base import Target

T = TypeVar("T")
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
METHOD_KEY = "method"
RENAMED_FIELDS = {"total_updates": "steps", "iterations": "steps", "optimizer": "optimizer_model",
                  "optimizer_dtype": "optimizer_model_dtype"}
"""Old config keys read under their new name, with a warning, by the configs that have the new name and not the
old one (RLPrompt and MultiPrompter said total_updates, PromptAgent iterations; PromptAgent's optimizer LM was
optimizer and optimizer_dtype, names that elsewhere mean a torch optimizer)."""
RESUME_CHANGEABLE = ("steps", "max_target_queries", "max_evaluations", "checkpoint_every")
"""The fields a resumed run may change: its length, its budgets and its checkpoint cadence."""


def _read(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise MissingFileError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def config_method(source: str | Path | Mapping[str, Any], default: str = "rlprompt") -> str:
    """The ``method:`` key of a config file or dict (``default`` when absent)."""
    method = _read(source).get(METHOD_KEY, default)
    if not isinstance(method, str):
        raise ConfigError(f"config key {METHOD_KEY!r} must be a string, got {method!r}")
    return method


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars (``lr=1e-4``, ``top_k=null``, ``vocab=[1,2]``)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value {raw!r} ({err})") from None
    return out


def _matches(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the type ``hint``, and the value converted (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _matches(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in args, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return True, float(value)  # PyYAML reads 1e-3 (no dot) as a string
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = args[0] if args else Any
        converted = []
        for v in value:
            ok, c = _matches(v, item)
            if not ok:
                return False, value
            converted.append(c)
        return True, (tuple(converted) if origin is tuple or hint is tuple else converted)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    return isinstance(value, hint if isinstance(hint, type) else object), value


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def config_from_dict(data: Mapping[str, Any], cls: type[T]) -> T:
    """Build ``cls`` from ``data``, rejecting unknown keys, values of the wrong type and values its ``__post_init__``
    refuses with a :class:`~rlprompt.errors.ConfigError` (old key names are read under their new ones, relative
    paths against the current directory: see the module docstring)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = _resolved_paths(_renamed(data, cls, "the config"), cls)
    method = data.pop(METHOD_KEY, None)
    own = getattr(cls, "method", None)
    if method is not None and own is not None and method != own:
        raise ConfigError(f"config says method={method!r} but is being loaded as {cls.__name__} (method {own!r})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        ok, converted = _matches(value, hints[key])
        if not ok:
            raise ConfigError(
                f"config field {key!r} of {cls.__name__} expects {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__})"
            )
        values[key] = converted
    try:
        return cls(**values)
    except ValueError as err:  # a check of the class's __post_init__: the config holds a bad value
        if isinstance(err, RLPromptError):
            raise
        raise ConfigError(str(err)) from err


def _renamed(data: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """``data`` with the old keys of :data:`RENAMED_FIELDS` that ``cls`` no longer has under their new name
    (one warning each); an error when one mapping gives both names."""
    fields = {f.name for f in dataclasses.fields(cls)}
    out = dict(data)
    for old, new in RENAMED_FIELDS.items():
        if old not in out or old in fields or new not in fields:
            continue
        if new in out:
            raise ConfigError(f"{where} sets both {old!r} (the old name) and {new!r}: keep only {new!r}")
        warnings.warn(f"config key {old!r} is deprecated, read as {new!r} ({where}): rename it", FutureWarning,
                      stacklevel=4)
        out[new] = out.pop(old)
    return out


def _resolved_paths(data: Mapping[str, Any], cls: type, config_file: Path | None = None) -> dict[str, Any]:
    """``data`` with each relative path of ``cls.path_fields`` made absolute against the folder of ``config_file``
    (the current directory when None). A value that is no path (a built-in task, a hub id) stays. A file's relative
    path that must exist and does not is a ``FileNotFoundError`` naming where it was looked for, unless it is found
    relative to the current directory (how configs were read before): that one is used, with a warning."""
    base = Path.cwd() if config_file is None else config_file.resolve().parent
    where = "the current directory" if config_file is None else f"the config file {str(config_file)!r}"
    out = dict(data)
    for name, must_exist in getattr(cls, "path_fields", {}).items():
        value = out.get(name)
        if not isinstance(value, str) or not value.strip() or value in BUILTIN_TASKS:
            continue
        value = os.path.expanduser(value)
        candidate = os.path.normpath(base / value)  # an absolute value stays itself
        if os.path.exists(candidate):
            out[name] = candidate
        elif not looks_like_path(value):
            continue  # a name, e.g. a hub id
        elif config_file is not None and os.path.exists(value):
            warnings.warn(f"{name} path {value!r} is not found relative to {where} but is relative to the current "
                          f"directory, so that is used: write it relative to the config file", FutureWarning,
                          stacklevel=4)
            out[name] = os.path.abspath(value)
        elif must_exist and config_file is not None and not os.path.isabs(value):
            raise MissingFileError(f"{name} path {value!r} does not exist (resolved relative to {where}: "
                                   f"{candidate})")
        else:  # made absolute; a missing one is reported by whatever reads it
            out[name] = candidate
    return out


def _override_dict(overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    return dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)


def load_config(source: str | Path | Mapping[str, Any], cls: type[T],
                overrides: Sequence[str] | Mapping[str, Any] = ()) -> T:
    """Load ``cls`` from a YAML path or a dict, then apply overrides (``key=value`` strings, YAML scalars, or a
    dict of values; later ones win). Relative paths resolve against the YAML file's folder (module docstring)."""
    data = _read(source)
    if isinstance(source, Mapping):
        data = _renamed(data, cls, "the config")
    else:
        data = _resolved_paths(_renamed(data, cls, f"the config file {str(source)!r}"), cls, Path(source))
    data.update(_renamed(_override_dict(overrides), cls, "the overrides"))
    return config_from_dict(data, cls)


def check_resume_config(saved: Mapping[str, Any], cfg: Any, where: str = "the run's config.yaml") -> None:
    """Raise :class:`~rlprompt.errors.ConfigError` unless ``cfg`` matches the config a run was started with
    (``saved``, as its ``config.yaml`` holds it; old key names and relative paths are read as :func:`load_config`
    reads them) in every field but :data:`RESUME_CHANGEABLE`; the error names each other field that differs, with
    both values."""
    cls = type(cfg)
    before = dump_config(config_from_dict(saved, cls))
    after = dump_config(config_from_dict(dump_config(cfg), cls))
    fixed = [k for k, v in after.items() if before.get(k) != v and k not in RESUME_CHANGEABLE]
    if fixed:
        changes = "; ".join(f"{k}: {before.get(k)!r} -> {after[k]!r}" for k in fixed)
        raise ConfigError(f"cannot resume with a config that differs from {where} in {fixed} ({changes}); a resumed "
                          f"run may only change {list(RESUME_CHANGEABLE)} (`rlprompt train --resume --run-dir DIR` "
                          f"alone reuses the run's own config)")


def dump_config(cfg: Any) -> dict[str, Any]:
    """The config as a plain YAML-able dict (tuples as lists), with its ``method`` key first when it has one."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_config needs a dataclass instance, got {cfg!r}")
    out: dict[str, Any] = {}
    method = getattr(type(cfg), "method", None)
    if isinstance(method, str):
        out[METHOD_KEY] = method

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    for f in dataclasses.fields(cfg):
        out[f.name] = plain(getattr(cfg, f.name))
    return out


@dataclasses.dataclass
class TaskTargetConfig:
    """The fields every method's config starts with: the task, the frozen target that scores prompts on it, and the
    template and verbalizers it scores them through.
    Subclasses add their own fields and call ``super().__post_init__()`` from theirs."""

    path_fields: ClassVar[dict[str, bool]] = {"task": True, "target_cache": False}
    """Fields that may hold a path, each with whether it must exist (see the module docstring)."""

    task: str = "sentiment"
    """Built-in task name or data path, relative to the config file (rlprompt.tasks.load_task); each method says
    which splits it needs."""
    task_seed: str | None = None
    """Dataset seed directory of an RLPrompt 16-shot dataset (e.g. 16-42); None for other tasks."""
    task_columns: dict[str, str] | None = None
    """Columns of the task's data holding the text and the label, e.g. {text: utterance, label: category}; None
    reads a text, sentence or input column and a label column."""
    target: str = BUNDLED
    """Frozen target (rlprompt.targets.make_target spec: a model name, or openai:<base_url>:<model>[?options])."""
    target_dtype: str = DEFAULT_DTYPE
    """dtype of a local target model (bfloat16, float32 or float16); remote targets ignore it."""
    target_cache: str | None = None
    """SQLite file of a response cache in front of the target (rlprompt.targets.CachedTarget), relative to the config
    file: a query asked before, in this run or another, is answered from it; None: no cache."""
    device: str = "cpu"
    """Torch device of the local target and every trainable part: cpu, cuda, cuda:N or auto (CUDA when available)."""
    template: str | None = None
    """Template with {sentence} and {prompt} the target reads; None: the task's own (PRewrite and DPO: the target's
    chat format, rlprompt.policies.rewriter.chat_template)."""
    verbalizers: list[str] | None = None
    """One single-token verbalizer per label; None: the task's own (PRewrite and DPO: " <label name>")."""

    def __post_init__(self) -> None:
        check_dtypes(self, "target_dtype")
        check_device(self.device)
        if self.target_cache is not None and not self.target_cache.strip():
            raise ValueError(f"target_cache must be a file path or null, got {self.target_cache!r}")
        columns = self.task_columns or {}
        bad = {k: v for k, v in columns.items() if k not in COLUMN_KEYS or not isinstance(v, str) or not v.strip()}
        if bad:
            raise ConfigError(f"task_columns may map {list(COLUMN_KEYS)} to column names, got {bad}")

    def load_task(self, **overrides: Any) -> ClassificationTask:
        """The config's task (:func:`rlprompt.tasks.load_task` with ``task_seed`` and ``task_columns``), with
        ``overrides`` (template, prompt, verbalizers, ...)."""
        columns = {f"{key}_column": name for key, name in (self.task_columns or {}).items()}
        return load_task(self.task, seed=self.task_seed, **columns, **overrides)

    def classification_task(self, splits: Sequence[str], **overrides: Any) -> ClassificationTask:
        """The config's task with its ``template`` and ``verbalizers`` where set, then ``overrides``; a
        :class:`~rlprompt.errors.DataError` naming the method unless the task holds every split of ``splits``."""
        if self.template is not None:
            overrides = {"template": self.template, **overrides}
        if self.verbalizers is not None:
            overrides = {"verbalizers": tuple(self.verbalizers), **overrides}
        task = self.load_task(**overrides)
        method = getattr(type(self), "method", type(self).__name__)
        missing = [s for s in splits if s not in task.splits]
        if missing:
            raise DataError(f"task {self.task!r} lacks the split(s) {missing} that {method} needs; it has "
                            f"{list(task.splits)}")
        return task

    def build_target(self, target: Target | None = None) -> Target:
        """The run's frozen target: ``target`` when given (tests pass scripted fakes), else one built from
        ``target`` in ``target_dtype`` on ``device``; behind a :class:`~rlprompt.targets.CachedTarget` at
        ``target_cache`` when that is set (a target already behind a response cache is returned as it is). Each
        call without ``target`` builds a new one: an entry point builds it once and passes it down."""
        from rlprompt.targets import CachedTarget, make_target

        if target is None:
            return make_target(self.target, dtype=self.target_dtype, device=self.device, cache=self.target_cache)
        if self.target_cache is None or isinstance(target, CachedTarget):
            return target
        return CachedTarget(target, self.target_cache)


@dataclasses.dataclass
class RunConfig(TaskTargetConfig):
    """:class:`TaskTargetConfig` plus the fields the run loop (:class:`rlprompt.loop.RunLoop`) reads, the same for
    every method: the run's length, its checkpoints, its target-query budget and its seed. Each method's config
    subclasses it (and may change a default by declaring the field again)."""

    steps: int = 100
    """Training steps of the run: PPO updates (RLPrompt, MultiPrompter), optimizer steps (PRewrite's GRPO, DPO),
    search iterations (PromptAgent)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (and after the last); --resume continues from the newest intact one."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (the newest ones)."""
    max_target_queries: int | None = None
    """Target sequences the run may send, counted from its start across resumes (None: no bound): it stops before a
    step whose cost bound could pass them, keeping room for its final evaluation on dev."""
    seed: int = 0
    """Seeds python, numpy and torch, and through them every sampler of the run (minibatches, the policy's or the
    rewriter's sampling, trl)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "steps", "checkpoint_every", "keep_checkpoints")
        if self.max_target_queries is not None and self.max_target_queries < 1:
            raise ConfigError(f"max_target_queries must be >= 1 or null, got {self.max_target_queries}")


def check_dtypes(cfg: Any, *names: str) -> None:
    """Raise :class:`~rlprompt.errors.ConfigError` naming the first field of ``names`` that is not a dtype name
    models load in."""
    for name in names:
        if getattr(cfg, name) not in DTYPE_NAMES:
            raise ConfigError(f"{name} must be one of {list(DTYPE_NAMES)}, got {getattr(cfg, name)!r}")


def check_positive(cfg: Any, *names: str) -> None:
    """Raise :class:`~rlprompt.errors.ConfigError` naming every field of ``names`` (counts and sizes) that is below
    1, with its value."""
    bad = {name: getattr(cfg, name) for name in names if getattr(cfg, name) < 1}
    if bad:
        raise ConfigError(f"these {type(cfg).__name__} fields must be >= 1: {bad}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass and its dataclass bases, its first paragraph as one
    line (for ``--help``, :func:`default_yaml` and docs)."""
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                first = nxt.value.value.strip().split("\n\n")[0]
                docs[node.target.id] = " ".join(line.strip() for line in first.splitlines())
    fields = {f.name for f in dataclasses.fields(cls)}
    return {name: doc for name, doc in docs.items() if name in fields}


def default_yaml(cls: type) -> str:
    """A complete config file for ``cls``: its ``method:`` and every field at its default value, each under its
    documentation as a comment; :func:`load_config` reads it back to the defaults."""
    import textwrap

    docs = field_docs(cls)
    summary = " ".join((cls.__doc__ or cls.__name__).split("\n\n")[0].split())
    lines = [f"# {line}" for line in textwrap.wrap(summary, 110)]
    lines += ["# Every key is optional (these are the defaults); `key=value` arguments of `rlprompt train` override",
              "# them, and relative paths resolve against this file's folder."]
    method = getattr(cls, "method", None)
    if isinstance(method, str):
        lines.append(f"{METHOD_KEY}: {method}")
    defaults = dump_config(cls())
    defaults.pop(METHOD_KEY, None)
    for name, value in defaults.items():
        lines.append("")
        lines += [f"# {line}" for line in textwrap.wrap(docs.get(name, ""), 110, break_on_hyphens=False,
                                                         break_long_words=False)]
        flat = isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value)
        text = yaml.safe_dump(value if flat else {name: value}, sort_keys=False, default_flow_style=flat,
                              width=1 << 16, allow_unicode=True)
        lines.append((f"{name}: " if flat else "") + text.rstrip("\n"))
    return "\n".join(lines) + "\n"


__all__ = ["METHOD_KEY", "RENAMED_FIELDS", "RESUME_CHANGEABLE", "RunConfig", "TaskTargetConfig", "check_dtypes", "check_positive",
           "check_resume_config",
           "config_from_dict", "config_method", "default_yaml", "dump_config", "field_docs", "load_config",
           "parse_overrides"]
