"""CachedTarget: only misses reach the inner target, hits are counted, the cache persists on disk and
two processes can share one file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from rlprompt.targets import BudgetExceeded, CachedTarget, TargetError
from tests.conftest import FakeTarget

TEMPLATE = "{sentence} {prompt}"
VERBALIZERS = [" no", " yes"]

REPO = Path(__file__).resolve().parents[1]


def hashed_scores(prompt: str, text: str, k: int, position: int) -> np.ndarray:
    """Deterministic log-probabilities from a hash of the (prompt, input) pair."""
    h = zlib.crc32(f"{prompt}|{text}".encode()) / 2**32
    return np.log([h, 1 - h][:k] + [1e-3] * (k - 2))


def scripted(max_sequences: int | None = None) -> FakeTarget:
    """The fake target every cache test wraps: hashed scores, generations and likelihoods that name their input."""
    return FakeTarget(hashed_scores, generate=lambda text, i, seed: f"{text}->{i}:{seed}",
                      loglikelihood=lambda context, continuation: -float(len(context) + len(continuation)),
                      name="scripted", max_sequences=max_sequences)


def test_classify_only_misses_reach_the_inner_target(tmp_path):
    inner = scripted()
    cached = CachedTarget(inner, tmp_path / "cache.sqlite")
    assert cached.stats is inner.stats and cached.name == "scripted"
    first = cached.classify(TEMPLATE, ["p1", "p2"], ["a", "b"], VERBALIZERS)
    np.testing.assert_array_equal(first, inner.classify(TEMPLATE, ["p1", "p2"], ["a", "b"], VERBALIZERS))
    inner.rows.clear()
    calls = inner.stats.calls
    # p1 and p2 miss only "c"; p3 misses everything: two inner calls, 2 + 3 rows
    second = cached.classify(TEMPLATE, ["p1", "p2", "p3"], ["a", "b", "c"], VERBALIZERS)
    assert sorted(inner.rows) == sorted([("p1", "c"), ("p2", "c"), ("p3", "a"), ("p3", "b"), ("p3", "c")])
    assert inner.stats.calls == calls + 2 and inner.stats.cache_hits == 4
    np.testing.assert_array_equal(second[:2, :2], first)
    np.testing.assert_array_equal(second, inner.classify(TEMPLATE, ["p1", "p2", "p3"], ["a", "b", "c"], VERBALIZERS))
    # a different template or verbalizer set is a different row
    inner.rows.clear()
    cached.classify("{prompt} {sentence}", ["p1"], ["a"], VERBALIZERS)
    cached.classify(TEMPLATE, ["p1"], ["a"], [" yes", " no"])
    assert len(inner.rows) == 2


def test_persistence_across_instances_and_budget_applies_to_misses(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    first = CachedTarget(scripted(), path).classify(TEMPLATE, ["p"], ["a", "b", "c"], VERBALIZERS)
    inner = scripted(max_sequences=1)
    cached = CachedTarget(inner, path)
    np.testing.assert_array_equal(cached.classify(TEMPLATE, ["p"], ["a", "b", "c"], VERBALIZERS), first)
    assert inner.rows == [] and inner.stats.sequences == 0 and inner.stats.cache_hits == 3
    cached.classify(TEMPLATE, ["p"], ["a", "b", "d"], VERBALIZERS)  # one miss fits the budget
    with pytest.raises(BudgetExceeded):
        cached.classify(TEMPLATE, ["p"], ["e", "f"], VERBALIZERS)
    assert len(cached) == 4


def test_generate_caches_greedy_and_seeded_but_not_unseeded_sampling(tmp_path):
    inner = scripted()
    cached = CachedTarget(inner, tmp_path / "c.sqlite")
    assert cached.generate(["x", "y"]) == ["x->0:None", "y->0:None"]
    assert cached.generate(["y", "z"]) == ["y->0:None", "z->0:None"]
    assert inner.generated == [["x", "y"], ["z"]] and inner.stats.cache_hits == 1
    assert cached.generate(["y"], max_new_tokens=5) == ["y->0:None"] and inner.generated[-1] == ["y"]
    for _ in range(2):
        cached.generate(["x"], temperature=1.0, num_samples=2)
    assert inner.generated[-2:] == [["x"], ["x"]]
    first = cached.generate(["x", "y"], temperature=1.0, num_samples=2, seed=3)
    assert cached.generate(["x", "y"], temperature=1.0, num_samples=2, seed=3) == first
    assert inner.generated[-1] == ["x", "y"] and len(inner.generated) == 6 and inner.stats.cache_hits == 5


def test_loglikelihood_cached_per_pair(tmp_path):
    inner = scripted()
    cached = CachedTarget(inner, tmp_path / "c.sqlite")
    np.testing.assert_array_equal(cached.loglikelihood(["a", "b"], ["x", "yy"]), [-2.0, -3.0])
    np.testing.assert_array_equal(cached.loglikelihood(["b", "c"], ["yy", "z"]), [-3.0, -2.0])
    assert inner.scored == [[("a", "x"), ("b", "yy")], [("c", "z")]] and inner.stats.cache_hits == 1


def test_two_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from rlprompt.targets import CachedTarget
        from tests.test_cache import scripted
        cached = CachedTarget(scripted(), {str(path)!r})
        worker = int(sys.argv[1])
        for step in range(30):
            prompts = [f"p{{(step + worker) % 7}}", f"p{{step % 5}}"]
            cached.classify("{TEMPLATE}", prompts, [f"s{{i}}" for i in range(20)], {VERBALIZERS!r})
            cached.generate([f"g{{step % 9}}"])
        print(cached.stats.sequences, cached.stats.cache_hits)
        """
    )
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=pipe, stderr=pipe, text=True)
        for w in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert int(out.split()[1]) > 0
    inner = scripted()
    cached = CachedTarget(inner, path)
    prompts = [f"p{i}" for i in range(7)]
    inputs = [f"s{i}" for i in range(20)]
    scores = cached.classify(TEMPLATE, prompts, inputs, VERBALIZERS)
    assert inner.rows == [] and len(cached) == 7 * 20 + 9
    np.testing.assert_array_equal(scores, scripted().classify(TEMPLATE, prompts, inputs, VERBALIZERS))



# -- a damaged, edited or locked cache file (issue 17): never a traceback after the target was paid ----
def filled_cache(path, n=400) -> np.ndarray:
    """A cache file with ``n`` classify rows, its WAL merged into the main file; returns their scores."""
    import gc
    import sqlite3

    cached = CachedTarget(scripted(), path)
    scores = cached.classify(TEMPLATE, ["p"], [f"s{i}" for i in range(n)], VERBALIZERS)
    del cached
    gc.collect()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return scores


def bad_header(path):
    data = bytearray(path.read_bytes())
    data[:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))


def truncated(path):
    os.truncate(path, path.stat().st_size // 2)


def overwritten_pages(path):
    data, rng = bytearray(path.read_bytes()), np.random.default_rng(0)
    for page in range(1, len(data) // 4096, 2):  # every other page after the header page
        data[page * 4096:(page + 1) * 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def text_file(path):
    path.write_text("these are my notes, not a database\n" * 50)


@pytest.mark.parametrize("damage", [bad_header, truncated, overwritten_pages, text_file], ids=lambda f: f.__name__)
def test_cache_corrupt_file_is_moved_aside_and_recreated(tmp_path, damage):
    path = tmp_path / "cache.sqlite"
    expected = filled_cache(path)
    damage(path)
    broken = path.read_bytes()
    inner = scripted()
    inputs = [f"s{i}" for i in range(400)]
    with pytest.warns(RuntimeWarning, match="is corrupt.*moved it to") as caught:
        cached = CachedTarget(inner, path)
        scores = cached.classify(TEMPLATE, ["p"], inputs, VERBALIZERS)
    np.testing.assert_array_equal(scores, expected)
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == broken  # kept as it was, never deleted
    assert str(aside[0]) in str(caught[0].message)
    inner.rows.clear()
    np.testing.assert_array_equal(CachedTarget(inner, path).classify(TEMPLATE, ["p"], inputs, VERBALIZERS), expected)
    assert inner.rows == []  # the recreated cache holds the answers paid for after the damage


def test_cache_corrupt_rows_are_misses_and_get_overwritten(tmp_path):
    import sqlite3

    path = tmp_path / "cache.sqlite"
    inner = scripted()
    cached = CachedTarget(inner, path)
    expected = cached.classify(TEMPLATE, ["p"], ["a", "b", "c", "d", "e"], VERBALIZERS)
    cached.generate(["g"])
    cached.loglikelihood(["c"], ["x"])
    with sqlite3.connect(path) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM responses ORDER BY key")]
        edits = ["{not json", "null", "[1.0]", '["x", "y"]', "[NaN, 0.0]", "[0.5, 7.0]", '"text"']
        for key, value in zip(keys, edits):
            conn.execute("UPDATE responses SET value = ? WHERE key = ?", (value, key))
    inner.rows.clear()
    with pytest.warns(RuntimeWarning, match="unreadable rows in the response cache .*cache.sqlite"):
        scores = cached.classify(TEMPLATE, ["p"], ["a", "b", "c", "d", "e"], VERBALIZERS)
        generated = cached.generate(["g"])
        likelihood = cached.loglikelihood(["c"], ["x"])
    np.testing.assert_array_equal(scores, expected)
    assert generated == ["g->0:None"] and likelihood.tolist() == [-2.0]
    assert len(inner.rows) + len(inner.generated) - 1 + len(inner.scored) - 1 == len(edits)  # each bad row a miss
    before = inner.stats.calls
    cached.classify(TEMPLATE, ["p"], ["a", "b", "c", "d", "e"], VERBALIZERS)
    cached.generate(["g"])
    assert inner.stats.calls == before  # the bad rows were overwritten with the paid answers


def test_cache_corrupt_lock_on_write_warns_and_returns_the_paid_answer(tmp_path):
    import sqlite3

    path = tmp_path / "cache.sqlite"
    inner = scripted()
    cached = CachedTarget(inner, path, busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock (for 70 s, say)
    try:
        locked = r"could not store 2 answers in the response cache .*cache\.sqlite.*locked"
        with pytest.warns(RuntimeWarning, match=locked):
            scores = cached.classify(TEMPLATE, ["p"], ["a", "b"], VERBALIZERS)
        np.testing.assert_array_equal(scores, scripted().classify(TEMPLATE, ["p"], ["a", "b"], VERBALIZERS))
        assert inner.stats.sequences == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    cached.classify(TEMPLATE, ["p"], ["a", "b"], VERBALIZERS)  # the lock is gone: stored now
    assert inner.stats.sequences == 4 and len(cached) == 2


def test_cache_corrupt_or_locked_at_open_is_a_clear_error_naming_the_path(tmp_path):
    import sqlite3

    path = tmp_path / "cache.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)  # a rollback-journal database, locked exclusively
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TargetError, match=r"cannot open the response cache .*cache\.sqlite.*locked"):
            CachedTarget(scripted(), path, busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    folder = tmp_path / "a-directory.sqlite"
    folder.mkdir()
    with pytest.raises(TargetError, match=r"cannot open the response cache .*a-directory\.sqlite"):
        CachedTarget(scripted(), folder)
    with pytest.raises(ValueError, match="busy_timeout"):
        CachedTarget(scripted(), tmp_path / "c.sqlite", busy_timeout=-1)
