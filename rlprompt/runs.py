"""Run directories: the one place that writes a run's files, for every method.

Layout of a run directory::

    config.yaml                     the config the run was started with (dump_config)
    metrics.jsonl                   one JSON object per log call: step, target_queries, namespaced keys
    events.out.tfevents.*           the same scalars for TensorBoard
    prompt.txt                      the best prompt found so far (on the dev split)
    summary.json                    how the run ended, the same keys for every method (RunResult)
    checkpoints/step_<n>/           model.safetensors (trainable tensors only), optimizer.safetensors,
                                    state.json (step, rng states, counters, ...), manifest.json (sha256)

Every file is written atomically (temporary file + ``os.replace``; checkpoints are built in a
temporary directory that is renamed into place, with the manifest written last), so a crash leaves
either the old state or the new one. :meth:`RunDir.latest_checkpoint` skips checkpoints whose
manifest is missing or whose files fail their checksum, and :meth:`RunDir.load_checkpoint` checks what
``state.json`` holds (an edited file with a matching checksum is an error naming it). A write that fails
(a full disk, a quota, a read-only file system) stops the run with one :class:`RunWriteError` naming the
file and the newest complete checkpoint to ``--resume`` from. Nothing here uses pickle.

trl methods (PRewrite, DPO) keep trl's own ``checkpoints/checkpoint-<n>/`` folders, which the Trainer
writes in place; :func:`trainer_checkpoint_sealer` seals each one with the same sha256 manifest once it
is complete, and :func:`resume_trainer_checkpoint` resumes only from a sealed, intact one. (The Trainer
reads its optimizer, scheduler and rng files with ``torch.load(weights_only=True)``: tensors and plain
containers only, no code runs.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlprompt.errors import ConfigError, DataError, RLPromptError
from rlprompt.tasks import read_json

if TYPE_CHECKING:
    from rlprompt.targets.base import Target

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TRAINER_DIR = re.compile(r"^checkpoint-(\d+)$")
NAMESPACES = ("charts", "losses", "eval", "perf")
"""Metric keys must start with one of these namespaces (``charts/reward``, ``losses/value``, ``eval/accuracy``)."""


class RunWriteError(RLPromptError, RuntimeError):
    """A file of the run could not be written (no space left, a quota, a read-only file system): the run
    stops; its newest complete checkpoint is intact and ``--resume`` continues from it."""

    exit_code = 1


class _MissingStateKey(DataError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class _State(dict):
    """A checkpoint's ``state.json``: a missing key is an error naming the file, not a bare ``KeyError``."""

    def __init__(self, data: dict[str, Any], source: Path) -> None:
        super().__init__(data)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise _MissingStateKey(f"{self.source} has no {key!r}: it was edited, or written by another version "
                               f"of rlprompt")


# -- seeding --------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global random states of Python, NumPy and torch as JSON-able lists."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, np_gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]])


# -- optimizer state without pickle ---------------------------------------------------------------
def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer ``state_dict`` into tensors (``state.<param>.<key>``) and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- checkpoint state checks -------------------------------------------------------------------------
def _check_rng(state: Any) -> None:
    """Raise unless ``state`` is what :func:`rng_state` writes (restored on fresh generators, as
    :func:`set_rng_state` would, so the global ones are untouched)."""
    version, py_state, gauss = state["python"]
    random.Random().setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.RandomState().set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, np_gauss))
    torch.Generator().set_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _check_bit_generator(state: Any) -> None:
    """Raise unless ``state`` is a NumPy bit generator's ``.state`` (restored on a fresh one)."""
    kind = getattr(np.random, state["bit_generator"])
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise DataError(f"{state['bit_generator']!r} is not a NumPy bit generator")
    kind().state = state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# What the shared entries of a checkpoint's state must hold, when present, at its top level or in its ``loop`` and
# ``method`` parts (RunDir writes ``step`` and ``optimizer``, rlprompt.loop.RunLoop the loop's part, the method the rest).
_STATE_CHECKS: dict[str, tuple[str, Any]] = {
    "step": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "target_queries": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "num_timesteps": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "best_accuracy": ("a number or null", lambda v: v is None or _is_number(v)),
    "best_prompt": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "greedy_prompt": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "pool": ("an object of prompt: number", lambda v: isinstance(v, dict) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())),
    "stabilizer": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "optimizer": ("an object with 'param_groups' (a list of objects) and 'scalars'",
                  lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                  and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"])
                  and isinstance(v.get("scalars", {}), dict)),
}


def _check_state(path: Path, state: Any, step: int) -> _State:
    """The checkpoint state read from ``path`` (``state.json`` of checkpoint ``step``), or a ``ValueError``
    naming the file and the entry that is not what this code wrote there."""
    if not isinstance(state, dict):
        raise DataError(f"checkpoint state {path} must hold a JSON object, got {type(state).__name__}")
    if "step" not in state:
        raise DataError(f"checkpoint state {path} has no 'step'")
    parts = {"": state, **{f"{name}.": state[name] for name in ("loop", "method") if isinstance(state.get(name), dict)}}
    for where, part in parts.items():
        for key, (wanted, ok) in _STATE_CHECKS.items():
            if key in part and not ok(part[key]):
                raise DataError(f"checkpoint state {path}: {where}{key!r} must be {wanted}, got {str(part[key])[:80]}")
        for key, check in (("rng", _check_rng), ("scorer_rng", _check_bit_generator),
                           ("search_rng", _check_bit_generator)):
            if key in part:
                try:
                    check(part[key])
                except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as err:
                    raise DataError(f"checkpoint state {path}: {where}{key!r} is not a valid random state "
                                    f"({type(err).__name__}: {str(err)[:120]})") from None
    if state["step"] != step:
        raise DataError(f"checkpoint state {path} says step {state['step']}, but its manifest says step {step}")
    for name in ("loop", "method"):
        if isinstance(state.get(name), dict):
            state[name] = _State(state[name], path)  # a missing entry there names the file too
    return _State(state, path)


# -- files ----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``); elsewhere
    by setting and restoring it (a moment in which another thread's new file would get the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: readers
    see the old file or the new one, never a partial one (folders are created as needed). The file gets
    the mode ``open()`` would give a new file (0o666 minus the umask), not ``mkstemp``'s private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


@dataclass
class Checkpoint:
    """A checkpoint read back from disk: its step, trainable tensors, optimizer state and JSON state."""

    path: Path
    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    optimizer: dict[str, Any] | None = field(default=None, repr=False)


# -- how a run ends: one summary for every method ----------------------------------------------------
SUMMARY_KEYS = ("method", "run_dir", "best_prompt", "dev_accuracy", "test_accuracy", "target_queries", "steps",
                "stop_reason", "wall_seconds", "config_hash", "details")
"""The top-level keys of every run's ``summary.json``, in order (:class:`RunResult`)."""
STOP_REASONS = ("steps", "max_target_queries", "max_evaluations", "tree_exhausted")
"""Why a run ended: its ``steps`` done, its target-query budget, PromptAgent's evaluation budget, or its whole tree
expanded."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A short sha256 (12 hex digits) of a run's config as its canonical JSON (keys sorted): two runs with the same
    hash ran the same settings."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class RunResult:
    """How a run ended, the same for every method (issue 14): what ``summary.json`` holds and a train function returns.

    ``best_prompt`` is the prompt the run recommends filling into the task's template, the one ``prompt.txt`` holds,
    and ``dev_accuracy`` its accuracy on the dev split (None when the run never scored one there). For the prompt
    search methods (RLPrompt, MultiPrompter, PromptAgent) it is the best prompt found. The rewriter methods learn a
    rewriter, saved as ``enhancer/``, and report the best instruction their final selection on dev scored: PRewrite
    the best of the initial instruction, PRewrite-I and PRewrite-S (the initial one when neither rewrite beats it);
    DPO / Sem-DPO the best of the evaluated instructions as the saved enhancer deploys them (their greedy rewrites,
    or the originals themselves when the enhancer is the identity). ``test_accuracy`` is None unless the run scored
    its prompt on the test split. ``target_queries`` counts the target sequences this run used, across resumes;
    ``wall_seconds`` its wall-clock time, across resumes. ``details`` holds the method's own figures.
    """

    method: str
    best_prompt: str | None
    dev_accuracy: float | None
    target_queries: int
    steps: int
    stop_reason: str
    wall_seconds: float
    test_accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stop_reason not in STOP_REASONS:
            raise ConfigError(f"stop_reason must be one of {list(STOP_REASONS)}, got {self.stop_reason!r}")
        if self.target_queries < 0 or self.steps < 0:
            raise ConfigError(f"target_queries and steps must be >= 0, got {self.target_queries} and {self.steps}")

    def write(self, run: RunDir) -> dict[str, Any]:
        """Write ``summary.json`` into ``run`` (atomically; ``run_dir`` and ``config_hash`` of its ``config.yaml``
        added) and return the same dict, keys in :data:`SUMMARY_KEYS` order."""
        values = {**{k: getattr(self, k) for k in ("method", "best_prompt", "dev_accuracy", "test_accuracy",
                                                   "target_queries", "steps", "stop_reason", "wall_seconds")},
                  "run_dir": str(run.path), "config_hash": config_hash(run.read_config()),
                  "details": dict(self.details)}
        summary = json.loads(json.dumps({k: values[k] for k in SUMMARY_KEYS}, default=_jsonable))
        run.write_json("summary.json", summary)
        return summary


class QueryBudget:
    """A run's count of target sequences and its budget (``max_target_queries``), counted from the run's start.

    :meth:`spent` is ``before`` (what the run had used before this process, read back from its checkpoint or
    metrics) plus what ``target`` has scored since the budget was made, so a target shared with other runs counts
    only this run's sequences. :meth:`affords` says whether ``cost`` more sequences stay within ``limit`` (always,
    when it is None). Inside ``with budget:`` the target itself refuses a query past the budget
    (``Target.max_sequences``, :class:`~rlprompt.targets.base.BudgetExceeded`), so a cost bound that was wrong stops
    the run with an error instead of overspending; the target's own limit comes back on exit.

    A run of several processes (``accelerate launch --num_processes N``: each process has its own target) spends the
    sum of their sequences. :meth:`sync`, called by every process at the same points, adds what the other processes
    have spent since the start (:attr:`others`) to :meth:`spent`, so every process then holds the run's total; inside
    ``with budget.shared():`` (entered by every process) each target is capped at its equal share of what is left,
    so together they cannot pass the budget. With one process, :meth:`sync` does nothing and :meth:`shared` is
    ``with budget:``.
    """

    def __init__(self, target: Target, limit: int | None, before: int = 0) -> None:
        self.target, self.limit, self.before = target, limit, int(before)
        self.start = target.stats.sequences
        self.others = 0
        """Sequences the run's other processes had spent since the start at the last :meth:`sync`."""
        self._saved: list[int | None] = []

    def spent(self) -> int:
        """Target sequences this run has used so far, across resumes (and, as of the last :meth:`sync`, across
        processes)."""
        return self.before + self.target.stats.sequences - self.start + self.others

    def affords(self, cost: int) -> bool:
        """True when ``cost`` more target sequences keep the run within its budget."""
        return self.limit is None or self.spent() + cost <= self.limit

    @staticmethod
    def processes() -> int:
        """How many processes share the run's budget: torch.distributed's world size once its process group is up,
        else ``WORLD_SIZE`` (set by ``accelerate launch`` and ``torchrun`` before the group is made), else 1."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return int(os.environ.get("WORLD_SIZE", 1))

    def sync(self) -> int:
        """Sum every process's sequences since the start (an ``all_reduce``: every process must call this at the same
        point) into :attr:`others`, and return :meth:`spent`, now the run's total; nothing to do with one process."""
        if self.processes() > 1:
            own = self.target.stats.sequences - self.start
            device = (torch.device("cuda", torch.cuda.current_device())
                      if torch.distributed.get_backend() == "nccl" else torch.device("cpu"))
            total = torch.tensor([own], dtype=torch.int64, device=device)
            torch.distributed.all_reduce(total)
            self.others = int(total.item()) - own
        return self.spent()

    @contextlib.contextmanager
    def shared(self) -> Iterator[QueryBudget]:
        """``with budget:`` for a block that every process runs (a Trainer's training): counts synced on entry and
        on a normal exit, and each process's target capped at ``1 / processes()`` of what is left on entry."""
        self.sync()
        self._cap(self.processes())
        try:
            yield self
        finally:
            self.__exit__()
        self.sync()

    def __enter__(self) -> QueryBudget:
        self._cap(1)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.target.max_sequences = self._saved.pop()

    def _cap(self, share: int) -> None:
        """Cap the target at ``1 / share`` of what the budget has left (its own tighter limit kept; :meth:`__exit__`
        restores it)."""
        saved = self.target.max_sequences
        self._saved.append(saved)
        if self.limit is not None:
            cap = self.target.stats.sequences + (self.limit - self.spent()) // share
            self.target.max_sequences = cap if saved is None else min(cap, saved)


class RunClock:
    """Wall-clock seconds of a run across resumes: the last ``perf/wall_seconds`` its metrics hold (what the
    processes before this one spent; make the clock after :meth:`RunDir.truncate_to`) plus the seconds since the
    clock was made."""

    def __init__(self, run: RunDir) -> None:
        logged = [r["perf/wall_seconds"] for r in run.read_metrics() if r.get("perf/wall_seconds") is not None]
        self.before = float(logged[-1]) if logged else 0.0
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.start


class RunDir:
    """A run directory (see the module docstring). Create with ``RunDir(path)``; call :meth:`close` at the end.

    ``resume=False`` refuses a directory that already holds checkpoints or metrics (so a run is never
    overwritten by accident); ``resume=True`` reopens it. :meth:`truncate_to` drops metrics logged after
    the checkpoint a resumed run continues from, so curves do not repeat.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, tensorboard: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        if not resume and self.path.exists() and (
            (self.path / "metrics.jsonl").exists() or any(self.checkpoint_dirs())
        ):
            raise ConfigError(f"run directory {str(self.path)!r} already holds a run; pass resume=True (--resume) "
                              "to continue it, or choose a new directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self._tensorboard = tensorboard
        self._writer = None
        self._purge_step: int | None = None
        self._tail_checked = False

    # -- paths ----------------------------------------------------------------------------------------
    def file(self, relative: str | Path) -> Path:
        """``relative`` resolved inside the run directory; a ``ValueError`` if it would escape it."""
        candidate = (self.path / relative).resolve()
        if candidate != self.path and self.path not in candidate.parents:
            raise ValueError(f"path {str(relative)!r} escapes the run directory {str(self.path)!r}")
        return candidate

    def write_text(self, relative: str | Path, text: str) -> Path:
        """Write a text file inside the run directory atomically."""
        path = self.file(relative)
        with self._writing(path):
            write_atomic(path, text)
        return path

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a failed write of ``path`` (``OSError``, or safetensors' error for the same causes) into one
        :class:`RunWriteError` that names the file and the checkpoint a ``--resume`` would continue from."""
        try:
            yield
        except (OSError, SafetensorError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            latest = self.latest_checkpoint()
            resume = (f"the newest complete checkpoint is {latest.name}: free space (or fix the file system), then "
                      f"continue with --resume" if latest is not None else "the run has no complete checkpoint yet")
            raise RunWriteError(f"cannot write {path}: {reason}; the run stopped, {resume}") from err

    def write_json(self, relative: str | Path, obj: Any) -> Path:
        """Write a JSON file inside the run directory atomically."""
        return self.write_text(relative, json.dumps(obj, indent=2, default=_jsonable) + "\n")

    # -- config and prompt ----------------------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config.yaml`` (a dict, as :func:`rlprompt.config.dump_config` returns)."""
        return self.write_text("config.yaml", yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.yaml`` as a dict."""
        return yaml.safe_load(self.file("config.yaml").read_text(encoding="utf-8")) or {}

    def write_prompt(self, prompt: str) -> Path:
        """Write the best prompt as ``prompt.txt`` (exactly the text filled into ``{prompt}``)."""
        return self.write_text("prompt.txt", prompt)

    # -- metrics --------------------------------------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, float], *, target_queries: int) -> dict[str, Any]:
        """Append one record to ``metrics.jsonl`` and write the same scalars to TensorBoard."""
        bad = [k for k in metrics if k.split("/", 1)[0] not in NAMESPACES or "/" not in k]
        if bad:
            raise ValueError(f"metric keys {bad} must start with one of the namespaces {[n + '/' for n in NAMESPACES]}")
        record: dict[str, Any] = {"step": int(step), "target_queries": int(target_queries)}
        for key, value in metrics.items():
            value = float(_jsonable(value))
            record[key] = value if math.isfinite(value) else None
        path = self.file("metrics.jsonl")
        if not self._tail_checked:
            self._drop_torn_tail(path)
        with self._writing(path), open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        writer = self._summary_writer()
        if writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    writer.add_scalar(key, value, global_step=int(step))
            writer.flush()
        return record

    def _drop_torn_tail(self, path: Path) -> None:
        """Before the first append: cut a torn last line (a crash or a full disk mid-write) off ``path``, so
        the next record starts on a line of its own instead of being glued to the fragment and lost."""
        data = path.read_bytes() if path.exists() else b""
        if data and not data.endswith(b"\n"):
            self.write_text(path.name, data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace"))
        self._tail_checked = True

    def _summary_writer(self):
        if not self._tensorboard:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path), purge_step=self._purge_step)
        return self._writer

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
        path = self.file("metrics.jsonl")
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_to(self, step: int, *, training_only: bool = False) -> None:
        """Drop metric records after ``step`` (in metrics.jsonl and, via purge, in TensorBoard); with
        ``training_only``, also the final evaluation's records (``eval/*`` keys) at ``step`` itself, which a run
        resumed from its last checkpoint writes again."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) < step or (
            r.get("step", 0) == step and not (training_only and any(k.startswith("eval/") for k in r)))]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        self._purge_step = step + 1
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_dirs(self) -> list[Path]:
        """Checkpoint directories, oldest step first (valid or not)."""
        root = self.path / CHECKPOINT_DIR
        if not root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found)]

    def save_checkpoint(
        self,
        step: int,
        tensors: Mapping[str, torch.Tensor],
        state: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        *,
        keep: int | None = 3,
    ) -> Path:
        """Write ``checkpoints/step_<step>/`` atomically and keep only the ``keep`` newest checkpoints."""
        root = self.file(CHECKPOINT_DIR)
        final = self.file(f"{CHECKPOINT_DIR}/step_{int(step)}")
        with self._writing(final):
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".step_{int(step)}-", dir=root))
            try:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                          str(tmp / "model.safetensors"))
                files = ["model.safetensors"]
                full_state = {"step": int(step), **dict(state)}
                if optimizer is not None:
                    opt_tensors, opt_meta = flatten_optimizer_state(optimizer)
                    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
                    full_state["optimizer"] = opt_meta
                    files.append("optimizer.safetensors")
                (tmp / "state.json").write_text(json.dumps(full_state, default=_jsonable), encoding="utf-8")
                files.append("state.json")
                manifest = {"step": int(step), "files": {name: _sha256(tmp / name) for name in files}}
                (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        if keep is not None:
            for old in self.checkpoint_dirs()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def is_valid_checkpoint(path: Path) -> bool:
        """True when ``path`` has a manifest and every file it lists matches its sha256."""
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            return bool(manifest["files"]) and all(
                (path / name).is_file() and _sha256(path / name) == digest for name, digest in manifest["files"].items()
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that passes :meth:`is_valid_checkpoint` (corrupt or partial ones are skipped)."""
        for path in reversed(self.checkpoint_dirs()):
            if self.is_valid_checkpoint(path):
                return path
        return None

    def load_checkpoint(self, path: str | Path | None = None) -> Checkpoint:
        """Read a checkpoint (the latest valid one by default); a ``ValueError`` when there is none or it is corrupt."""
        path = self.latest_checkpoint() if path is None else Path(path)
        if path is None:
            raise DataError(f"run directory {str(self.path)!r} has no valid checkpoint to resume from")
        if not self.is_valid_checkpoint(path):
            raise DataError(f"checkpoint {str(path)!r} is corrupt or incomplete (checksum mismatch)")
        named = _STEP_DIR.match(path.name)
        state = _check_state(path / "state.json", read_json(path / "state.json"),
                             int(named.group(1)) if named else read_json(path / "manifest.json")["step"])
        optimizer = None
        if "optimizer" in state:
            try:
                optimizer = unflatten_optimizer_state(load_file(str(path / "optimizer.safetensors")),
                                                      state.pop("optimizer"))
            except (KeyError, ValueError, TypeError, AttributeError, SafetensorError) as err:
                raise DataError(f"checkpoint {str(path)!r}: the optimizer state does not match optimizer.safetensors "
                                f"({type(err).__name__}: {str(err)[:120]})") from None
        return Checkpoint(path=path, step=state["step"], tensors=load_file(str(path / "model.safetensors")),
                          state=state, optimizer=optimizer)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "Checkpoint",
    "QueryBudget",
    "RunClock",
    "RunResult",
    "RunWriteError",
    "NAMESPACES",
    "STOP_REASONS",
    "SUMMARY_KEYS",
    "RunDir",
    "config_hash",
    "flatten_optimizer_state",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "unflatten_optimizer_state",
]


# -- trl / transformers Trainer checkpoints ---------------------------------------------------------
def seal_trainer_checkpoint(folder: str | Path) -> None:
    """Mark a Trainer checkpoint as complete: ``manifest.json`` with the sha256 of every file in it,
    written atomically after the Trainer has written everything else."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {"step": int(_TRAINER_DIR.match(folder.name).group(1)), "files": {n: _sha256(folder / n) for n in files}}
    write_atomic(folder / "manifest.json", json.dumps(manifest))


def trainer_checkpoint_sealer() -> Any:
    """A ``transformers.TrainerCallback`` that seals each checkpoint the Trainer saves (add it last, after
    callbacks that write files into the checkpoint)."""
    from transformers import TrainerCallback

    class Sealer(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                seal_trainer_checkpoint(folder)

    return Sealer()


def trainer_checkpoint_step(checkpoint: str | Path) -> int:
    """The step of a trl/transformers ``checkpoint-<n>`` folder."""
    match = _TRAINER_DIR.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{str(checkpoint)!r} is not a checkpoint-<n> folder")
    return int(match.group(1))


def train_or_finish(trainer: Any, checkpoint: Path | None, steps: int) -> None:
    """``trainer.train()`` up to step ``steps``, resumed from ``checkpoint`` when given. ``steps`` below the trainer's
    ``max_steps`` (a query budget that pays for fewer) ends training after that step, checkpointed there so that a
    resume with a larger budget continues from it. When the checkpoint already holds step ``steps``, its LoRA adapter
    weights are loaded and training is not entered (transformers' Trainer, resumed at ``max_steps`` in the middle of
    an epoch, takes one more step before it checks ``max_steps``); with no checkpoint and ``steps`` 0 it stays
    untrained."""
    start = trainer_checkpoint_step(checkpoint) if checkpoint is not None else 0
    if start < steps:
        from transformers import TrainerCallback
        from transformers.trainer_callback import PrinterCallback

        class StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if steps <= state.global_step < state.max_steps:
                    control.should_training_stop = control.should_save = True

        trainer.add_callback(StopAt())
        trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout: the run loop's bar shows them instead
        from rlprompt.models import peft_deprecations_silenced

        with peft_deprecations_silenced():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        return
    if checkpoint is None:
        return
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(trainer.model, load_file(str(Path(checkpoint) / "adapter_model.safetensors")))
    trainer.state.global_step = start


def resume_trainer_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest sealed, intact ``checkpoint-<n>`` under ``output_dir`` (None if there is none).
    Newer ones that are unsealed (a crash while the Trainer was saving) or fail their checksum are
    renamed to ``.broken-checkpoint-<n>`` (kept for inspection, never deleted), so the Trainer neither
    resumes from nor rotates them."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _TRAINER_DIR.match(p.name)))
    for _, path in reversed(found):
        if RunDir.is_valid_checkpoint(path):
            return path
        path.rename(root / f".broken-{path.name}")
    return None

