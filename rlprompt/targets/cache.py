"""An on-disk response cache in front of any :class:`Target`, so repeated queries cost nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlprompt.targets.base import Target

_CHUNK = 500  # keys per SELECT, below SQLite's bound-parameter limit


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


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
    """

    def __init__(self, inner: Target, path: str | os.PathLike) -> None:
        super().__init__(max_sequences=None)
        self.inner = inner
        self.stats = inner.stats
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect()  # create the file and table now, so a bad path fails here

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    # -- storage ------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """One connection per thread and process (SQLite connections must not cross a fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _get(self, keys: Sequence[str]) -> dict[str, object]:
        conn, found = self._connect(), {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, value in conn.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def _put(self, items: dict[str, object]) -> None:
        conn = self._connect()
        rows = [(key, json.dumps(value)) for key, value in items.items()]
        with conn:  # one transaction; concurrent writers wait on SQLite's busy timeout
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # -- cached methods -----------------------------------------------------------------------------
    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        keys = [[_key(self.name, "classify", template, p, x, verbalizers) for x in inputs] for p in prompts]
        found = self._get([k for row in keys for k in row])
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
            cached = self._get([key]).get(key)
            if cached is not None:
                self.stats.cache_hits += len(cached)
                return cached
            out = self.inner.generate(texts, **call)
            self._put({key: out})
            return out
        keys = [_key(self.name, "generate", text, *settings) for text in texts]
        found = self._get(keys)
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
        found = self._get(keys)
        self.stats.cache_hits += sum(k in found for k in keys)
        pairs = list(dict.fromkeys((c, x) for c, x, k in zip(contexts, continuations, keys) if k not in found))
        if pairs:
            out = self.inner.loglikelihood([c for c, _ in pairs], [x for _, x in pairs])
            new = {_key(self.name, "loglikelihood", c, x): float(v) for (c, x), v in zip(pairs, out)}
            self._put(new)
            found.update(new)
        return np.array([found[k] for k in keys], dtype=np.float64)
