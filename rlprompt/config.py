"""Typed run configs: a YAML file (or dict) may only set the fields of one config dataclass.

Every method has one ``@dataclass`` config with a one-line docstring per field and checks in
``__post_init__`` (trl's convention). :func:`load_config` fills it from YAML plus ``key=value``
overrides and rejects unknown keys and values of the wrong type with the offending key and value;
:func:`dump_config` turns it back into the plain dict written as a run's ``config.yaml``.

A config file may carry a top-level ``method:`` key (``rlprompt``, later ``prewrite``, ``dpo``, ...).
The CLI reads it with :func:`config_method` and picks the config class from a plain dict; the class
itself names its method in the class variable ``method``.
"""

from __future__ import annotations

import ast
import re
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlprompt.devices import check_device
from rlprompt.models import BUNDLED, DTYPES
from rlprompt.tasks import read_text

T = TypeVar("T")
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
METHOD_KEY = "method"


def _read(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def config_method(source: str | Path | Mapping[str, Any], default: str = "rlprompt") -> str:
    """The ``method:`` key of a config file or dict (``default`` when absent)."""
    method = _read(source).get(METHOD_KEY, default)
    if not isinstance(method, str):
        raise ValueError(f"config key {METHOD_KEY!r} must be a string, got {method!r}")
    return method


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars (``lr=1e-4``, ``top_k=null``, ``vocab=[1,2]``)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: cannot parse value {raw!r} ({err})") from None
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
    """Build ``cls`` from ``data``, rejecting unknown keys and values of the wrong type."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = dict(data)
    method = data.pop(METHOD_KEY, None)
    own = getattr(cls, "method", None)
    if method is not None and own is not None and method != own:
        raise ValueError(f"config says method={method!r} but is being loaded as {cls.__name__} (method {own!r})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        ok, converted = _matches(value, hints[key])
        if not ok:
            raise ValueError(
                f"config field {key!r} of {cls.__name__} expects {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__})"
            )
        values[key] = converted
    return cls(**values)


def load_config(source: str | Path | Mapping[str, Any], cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from a YAML path or a dict, then apply ``key=value`` overrides (later ones win)."""
    data = _read(source)
    data.update(parse_overrides(overrides))
    return config_from_dict(data, cls)


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
    """The fields every method's config starts with: the task and the frozen target that scores prompts on it.
    Subclasses add their own fields and call ``super().__post_init__()`` from theirs."""

    task: str = "sentiment"
    """Built-in task name or data path (rlprompt.tasks.load_task); each method says which splits it needs."""
    task_seed: str | None = None
    """Dataset seed directory of an RLPrompt 16-shot dataset (e.g. 16-42); None for other tasks."""
    target: str = BUNDLED
    """Frozen target (rlprompt.targets.make_target spec: a model name, or openai:<base_url>:<model>[?options])."""
    target_dtype: str = "bfloat16"
    """dtype of a local target model (bfloat16, float32 or float16); remote targets ignore it."""
    device: str = "cpu"
    """Torch device of the local target and every trainable part: cpu, cuda, cuda:N or auto (CUDA when available)."""

    def __post_init__(self) -> None:
        check_dtypes(self, "target_dtype")
        check_device(self.device)


def check_dtypes(cfg: Any, *names: str) -> None:
    """Raise ``ValueError`` naming the first field of ``names`` that is not a dtype name models load in."""
    for name in names:
        if getattr(cfg, name) not in DTYPES:
            raise ValueError(f"{name} must be one of {list(DTYPES)}, got {getattr(cfg, name)!r}")


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a config dataclass and its dataclass bases (for
    ``--help`` and docs)."""
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
                docs[node.target.id] = nxt.value.value.strip().splitlines()[0]
    return docs


__all__ = ["METHOD_KEY", "TaskTargetConfig", "check_dtypes", "config_from_dict", "config_method", "dump_config", "field_docs", "load_config", "parse_overrides"]
