"""An on-disk response cache in front of any :class:`Target`, so repeated queries cost nothing."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.targets.base import Target, TargetError

_CHUNK = 500  # keys per SELECT, below SQLite's bound-parameter limit
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_CORRUPT_MESSAGES = ("database disk image is malformed", "file is not a database")  # Python 3.10 has no codes


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _is_corrupt(err: sqlite3.Error) -> bool:
    """Whether SQLite reports the file itself as damaged or not a database (primary result code)."""
    code = getattr(err, "sqlite_errorcode", None)
    return (code & 0xFF) in _CORRUPT if code is not None else any(m in str(err) for m in _CORRUPT_MESSAGES)


def _number(value: object) -> bool:
    """A JSON number usable as a log-probability: not a bool, not NaN (``-inf`` is a valid log 0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _scores(k: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and len(v) == k and all(_number(x) and x <= 1e-3 for x in v)


def _texts(n: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and len(v) == n and all(isinstance(x, str) for x in v)


class CachedTarget(Target):
    """Wrap ``inner`` with a SQLite cache (WAL mode, one ``responses`` table keyed by the sha256 of
    ``(inner.name, method, arguments)``), shared safely by several threads and processes.

    * ``classify`` is cached per (template, prompt, input, verbalizers) row: only missing rows reach
      ``inner``, grouped so that prompts missing the same inputs share one call.
    * ``generate`` is cached per text when greedy (``temperature == 0``) and per whole call when sampled
      with a ``seed`` (the samples of one text may depend on the rest of the batch); unseeded sampled
      generations are never cached.
    * ``loglikelihood`` is cached per (context, continuation).

    :attr:`stats` is the inner target's, so its counts cover both; answers read from the cache add to
    ``stats.cache_hits`` only. The query budget is the inner target's and applies to misses only.

    The cache never costs an answer that was paid for: a file SQLite reports as corrupt (or not a
    database) is renamed to ``<name>.corrupt-<time>-<pid>`` (with its ``-wal``/``-shm`` files; never
    deleted) and an empty cache replaces it, with a warning; a row that does not decode to a value of the
    expected shape is a miss (and is overwritten); a write that fails (a lock held past ``busy_timeout``
    seconds, a full disk) warns and the answers are returned uncached. Any other failure to open or read
    the cache is a :class:`TargetError` naming its path.
    """

    def __init__(self, inner: Target, path: str | os.PathLike, *, busy_timeout: float = 60.0) -> None:
        super().__init__(max_sequences=None)
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        self.inner = inner
        self.stats = inner.stats
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._moving = threading.Lock()
        try:
            self._connect()  # create the file and table now, so a bad path fails here
        except sqlite3.Error as err:
            raise TargetError(f"cannot open the response cache {self.path}: {err}") from None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def tokenizer(self) -> Any:
        """The inner target's tokenizer (None when it has none), so code that needs the target's vocabulary or chat
        format (the prompt-token envs, PRewrite's template) sees the model behind the cache."""
        return getattr(self.inner, "tokenizer", None)

    # -- storage ------------------------------------------------------------------------------------
    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _connect(self) -> sqlite3.Connection:
        """One connection per thread and process (SQLite connections must not cross a fork), opened again
        when the file at :attr:`path` changed (moved aside here or by another process). A corrupt file is
        moved aside and replaced once; other ``sqlite3.Error``s propagate."""
        local, inode = self._local, self._inode()
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and inode is not None and local.inode == inode:
            return conn
        self._close_local()
        try:
            return self._open()
        except sqlite3.Error as err:
            if not _is_corrupt(err):
                self._close_local()
                raise
            self._move_aside(err)
        try:
            return self._open()
        except sqlite3.Error:
            self._close_local()
            raise

    def _open(self) -> sqlite3.Connection:
        local = self._local
        local.inode = self._inode()  # the file this connection reads (None when SQLite creates it)
        local.conn = conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        local.pid = os.getpid()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        local.inode = self._inode()
        return conn

    def _close_local(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def _move_aside(self, err: sqlite3.Error) -> None:
        """Rename the corrupt cache file (and its WAL files) out of the way, unless another thread or
        process already did; the next :meth:`_connect` creates an empty cache in its place."""
        opened = getattr(self._local, "inode", None)
        self._close_local()
        with self._moving:
            if opened is None or self._inode() != opened:
                return  # already replaced by someone else: just reconnect
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for n in itertools.count():
                aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}" + (f"-{n}" if n else ""))
                if not aside.exists():
                    break
            try:
                for suffix in ("", "-wal", "-shm"):
                    source = Path(f"{self.path}{suffix}")
                    if source.exists():
                        os.rename(source, f"{aside}{suffix}")
            except OSError as move_err:
                raise TargetError(f"the response cache {self.path} is corrupt ({err}) and cannot be moved "
                                  f"aside: {move_err}") from None
        warnings.warn(f"the response cache {self.path} is corrupt ({err}): moved it to {aside} and started an "
                      f"empty cache", RuntimeWarning, stacklevel=2)

    def _get(self, keys: Sequence[str], valid: Callable[[object], bool]) -> dict[str, object]:
        """Cached values of ``keys`` that decode to something ``valid`` (the rest are misses)."""
        unique, found, bad = list(dict.fromkeys(keys)), {}, 0
        try:
            conn = self._connect()
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value in conn.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                    try:
                        decoded = json.loads(value)
                    except (TypeError, ValueError, RecursionError):
                        decoded = None
                    if decoded is not None and valid(decoded):
                        found[key] = decoded
                    else:
                        bad += 1
        except sqlite3.Error as err:
            if not _is_corrupt(err):
                raise TargetError(f"cannot read the response cache {self.path}: {err}") from None
            self._move_aside(err)
            return {}
        if bad:
            warnings.warn(f"{bad} unreadable rows in the response cache {self.path} were treated as misses",
                          RuntimeWarning, stacklevel=3)
        return found

    def _put(self, items: dict[str, object]) -> None:
        """Store answers the inner target returned; a failure warns (the caller returns them anyway)."""
        rows = [(key, json.dumps(value)) for key, value in items.items()]
        problem: Exception | None = None
        for attempt in range(2):
            try:
                conn = self._connect()
                with conn:  # one transaction; concurrent writers wait up to busy_timeout seconds
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)
                return
            except sqlite3.Error as err:
                problem = err
                if attempt or not _is_corrupt(err):
                    break
                try:
                    self._move_aside(err)  # then try once more, in the fresh file
                except TargetError as move_err:
                    problem = move_err
                    break
            except TargetError as err:  # the file was corrupt at open and could not be moved aside
                problem = err
                break
        warnings.warn(f"could not store {len(rows)} answers in the response cache {self.path} ({problem}); "
                      f"they are returned but not cached", RuntimeWarning, stacklevel=3)

    def __len__(self) -> int:
        try:
            return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.Error as err:
            raise TargetError(f"cannot read the response cache {self.path}: {err}") from None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_local"], state["_moving"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._moving = threading.Lock()

    # -- cached methods -----------------------------------------------------------------------------
    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        keys = [[_key(self.name, "classify", template, p, x, verbalizers) for x in inputs] for p in prompts]
        found = self._get([k for row in keys for k in row], _scores(len(verbalizers)))
        hits = sum(k in found for row in keys for k in row)
        # prompts that miss the same inputs go to the inner target together (one cross product)
        groups: dict[tuple[str, ...], list[str]] = {}
        for prompt, row in zip(prompts, keys):
            missing = tuple(dict.fromkeys(x for x, k in zip(inputs, row) if k not in found))
            if missing and prompt not in groups.setdefault(missing, []):
                groups[missing].append(prompt)
        for missing, group in groups.items():
            scores = self.inner.classify(template, group, list(missing), verbalizers)
            new = {
                _key(self.name, "classify", template, p, x, verbalizers): scores[i, j].tolist()
                for i, p in enumerate(group)
                for j, x in enumerate(missing)
            }
            self._put(new)
            found.update(new)
        self.stats.cache_hits += hits
        return np.array([[found[k] for k in row] for row in keys], dtype=np.float64)

    def _generate(self, texts, max_new_tokens, temperature, top_p, num_samples, seed, chat) -> list[str]:
        settings = (max_new_tokens, temperature, top_p, num_samples, seed, chat)
        call = dict(zip(("max_new_tokens", "temperature", "top_p", "num_samples", "seed", "chat"), settings))
        if temperature > 0 and seed is None:
            return self.inner.generate(texts, **call)
        if temperature > 0:  # seeded sampling: cache the whole call
            key = _key(self.name, "generate-batch", texts, *settings)
            cached = self._get([key], _texts(len(texts) * num_samples)).get(key)
            if cached is not None:
                self.stats.cache_hits += len(cached)
                return cached
            out = self.inner.generate(texts, **call)
            self._put({key: out})
            return out
        keys = [_key(self.name, "generate", text, *settings) for text in texts]
        found = self._get(keys, _texts(num_samples))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        self.stats.cache_hits += sum(len(found[k]) for k in keys if k in found)
        if missing:
            out = self.inner.generate(missing, **call)
            new = {
                _key(self.name, "generate", t, *settings): out[i * num_samples:(i + 1) * num_samples]
                for i, t in enumerate(missing)
            }
            self._put(new)
            found.update(new)
        return [sample for k in keys for sample in found[k]]

    def _loglikelihood(self, contexts: list[str], continuations: list[str]) -> np.ndarray:
        keys = [_key(self.name, "loglikelihood", c, x) for c, x in zip(contexts, continuations)]
        found = self._get(keys, _number)
        self.stats.cache_hits += sum(k in found for k in keys)
        pairs = list(dict.fromkeys((c, x) for c, x, k in zip(contexts, continuations, keys) if k not in found))
        if pairs:
            out = self.inner.loglikelihood([c for c, _ in pairs], [x for _, x in pairs])
            new = {_key(self.name, "loglikelihood", c, x): float(v) for (c, x), v in zip(pairs, out)}
            self._put(new)
            found.update(new)
        return np.array([found[k] for k in keys], dtype=np.float64)
