"""CachedTarget: only misses reach the inner target, hits are counted, the cache persists on disk and
two processes can share one file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlprompt.targets import BudgetExceeded, CachedTarget

TEMPLATE = "{sentence} {prompt}"
VERBALIZERS = [" no", " yes"]

FAKE = '''
import zlib
import numpy as np
from rlprompt.targets import Target


class ScriptedTarget(Target):
    """Deterministic scores from a hash of the filled text; records every row it is asked for."""

    name = "scripted"

    def __init__(self, max_sequences=None):
        super().__init__(max_sequences=max_sequences)
        self.rows, self.generated, self.scored = [], [], []

    def _classify(self, template, prompts, inputs, verbalizers):
        out = np.empty((len(prompts), len(inputs), len(verbalizers)))
        for p, prompt in enumerate(prompts):
            for n, text in enumerate(inputs):
                self.rows.append((prompt, text))
                h = zlib.crc32(f"{prompt}|{text}".encode()) / 2**32
                out[p, n] = np.log([h, 1 - h][: len(verbalizers)] + [1e-3] * (len(verbalizers) - 2))
        self.stats.calls += 1
        self.stats.sequences += len(prompts) * len(inputs)
        return out

    def _generate(self, texts, max_new_tokens, temperature, top_p, num_samples, seed, chat):
        self.generated.append(list(texts))
        self.stats.calls += 1
        self.stats.sequences += len(texts) * num_samples
        return [f"{t}->{i}:{seed}" for t in texts for i in range(num_samples)]

    def _loglikelihood(self, contexts, continuations):
        self.scored.append(list(zip(contexts, continuations)))
        self.stats.calls += 1
        self.stats.sequences += len(contexts)
        return np.array([-float(len(c) + len(x)) for c, x in zip(contexts, continuations)])
'''
namespace: dict = {}
exec(compile(FAKE, "scripted_target", "exec"), namespace)
ScriptedTarget = namespace["ScriptedTarget"]


def test_classify_only_misses_reach_the_inner_target(tmp_path):
    inner = ScriptedTarget()
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
    first = CachedTarget(ScriptedTarget(), path).classify(TEMPLATE, ["p"], ["a", "b", "c"], VERBALIZERS)
    inner = ScriptedTarget(max_sequences=1)
    cached = CachedTarget(inner, path)
    np.testing.assert_array_equal(cached.classify(TEMPLATE, ["p"], ["a", "b", "c"], VERBALIZERS), first)
    assert inner.rows == [] and inner.stats.sequences == 0 and inner.stats.cache_hits == 3
    cached.classify(TEMPLATE, ["p"], ["a", "b", "d"], VERBALIZERS)  # one miss fits the budget
    with pytest.raises(BudgetExceeded):
        cached.classify(TEMPLATE, ["p"], ["e", "f"], VERBALIZERS)
    assert len(cached) == 4


def test_generate_caches_greedy_and_seeded_but_not_unseeded_sampling(tmp_path):
    inner = ScriptedTarget()
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
    inner = ScriptedTarget()
    cached = CachedTarget(inner, tmp_path / "c.sqlite")
    np.testing.assert_array_equal(cached.loglikelihood(["a", "b"], ["x", "yy"]), [-2.0, -3.0])
    np.testing.assert_array_equal(cached.loglikelihood(["b", "c"], ["yy", "z"]), [-3.0, -2.0])
    assert inner.scored == [[("a", "x"), ("b", "yy")], [("c", "z")]] and inner.stats.cache_hits == 1


def test_two_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    script = FAKE + textwrap.dedent(
        f"""
        import sys
        from rlprompt.targets import CachedTarget
        cached = CachedTarget(ScriptedTarget(), {str(path)!r})
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
    inner = ScriptedTarget()
    cached = CachedTarget(inner, path)
    prompts = [f"p{i}" for i in range(7)]
    inputs = [f"s{i}" for i in range(20)]
    scores = cached.classify(TEMPLATE, prompts, inputs, VERBALIZERS)
    assert inner.rows == [] and len(cached) == 7 * 20 + 9
    np.testing.assert_array_equal(scores, ScriptedTarget().classify(TEMPLATE, prompts, inputs, VERBALIZERS))

