"""Regenerate every table and plot under ``experiments/results/`` from the result JSON files; nothing is trained.

For each results file in :data:`BENCHES`, the benchmark script that made it is imported by path and its
``markdown(result)`` rewrites ``<stem>.md`` (and its ``plot(result, path)`` redraws ``<stem>.png`` where it draws one),
atomically. A file the current script cannot read (made by an older version) is reported in one line with the
command that makes it again, and left untouched: one file never stops the report. A ``.md`` may end with a
hand-written section that starts with a line ``Note (added by hand)``; it is kept below the regenerated tables. Then
``methods.md`` and ``methods.png`` put every method side by side on SST-2 and AG News (``methods_page.py``).

    python experiments/report_results.py                  # rewrite the tables, plots and methods.md
    python experiments/report_results.py --check          # exit 1 if a table differs from what its JSON gives
    python experiments/report_results.py --results DIR    # another results folder

Adding a benchmark is one :class:`Bench` entry (its script needs a ``markdown(result) -> str`` of the JSON alone).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from rlprompt.runs import write_atomic

ROOT = Path(__file__).resolve().parent
HAND_NOTE = "Note (added by hand)"
"""A line starting with this opens a .md's hand-written section, which the report keeps."""


@dataclass(frozen=True)
class Bench:
    """A benchmark script and the result files it made."""

    script: str
    """Its file under experiments/, without ``.py``; it must have ``markdown(result) -> str``."""
    stems: tuple[str, ...]
    """Its result files under the results folder, without suffix (``<stem>.json`` -> ``<stem>.md``)."""
    rerun: str
    """How to make a result file the current script reads (shown for a file in an older format)."""
    plot: bool = False
    """Whether its ``plot(result, path)`` draws ``<stem>.png``."""


BENCHES = (
    Bench("rlprompt_bench", ("rlprompt_sst2", "rlprompt_agnews"),
          "python experiments/rlprompt_bench.py [--config CONFIG] --runs-dir RUNS --out FILE (--report-only once run)"),
    Bench("multiprompter_bench", ("multiprompter",),
          "python experiments/multiprompter_bench.py --runs-dir RUNS (--report-only once run)", plot=True),
    Bench("promptagent_bench", ("promptagent",), "python experiments/promptagent_bench.py --tasks ... --seeds 0 1 2"),
    Bench("prewrite_bench", ("prewrite", "prewrite_agnews_40steps"),
          "python experiments/prewrite_bench.py --runs-dir RUNS (--report-only once run)"),
    Bench("semdpo_bench", ("semdpo",), "python experiments/semdpo_bench.py experiments/configs/semdpo_bench.yaml"),
    Bench("prewrite_candidates", ("prewrite_candidates_agnews",), "python experiments/prewrite_candidates.py RUN"),
    Bench("train_prompt_edit", ("prompt_edit_sst2",), "python experiments/train_prompt_edit.py"),
    Bench("bench_target", ("bench_target",), "python experiments/bench_target.py"),
    Bench("bench_envs", ("bench_envs",), "python experiments/bench_envs.py"),
    Bench("device_check", ("device_check",), "bash experiments/device_check.sh run"),
    Bench("bench_remote", ("bench_remote",), "python experiments/bench_remote.py"),
    Bench("reliability", ("reliability",), "python experiments/reliability.py"),
)
"""Every results file the report regenerates, with the script that renders it."""


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py`` imported as a module (registered under ``name``, as its dataclasses need)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def hand_note(text: str) -> str:
    """The hand-written section at the end of a .md (from its first ``Note (added by hand)`` line), or ""."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(HAND_NOTE)), len(lines))
    return "".join(lines[start:])


def with_note(generated: str, note: str) -> str:
    """``generated`` with the hand-written ``note`` kept below it, after one blank line."""
    return generated if not note else generated.rstrip("\n") + "\n\n" + note


def draw(plot, result: dict, path: Path) -> None:
    """``plot(result, file)`` drawn to a temporary file beside ``path``, then moved onto it (atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        plot(result, Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def update(path: Path, text: str, check: bool) -> str:
    """Write ``text`` to ``path`` unless it is already there (or ``check``); the one-word outcome."""
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    if old == text:
        return "unchanged"
    if check:
        return "STALE: differs from what its JSON gives"
    write_atomic(path, text)
    return "regenerated"


def regenerate(results: Path, check: bool = False) -> tuple[list[str], bool, dict[str, dict]]:
    """Rewrite the .md (and .png) of every result file of :data:`BENCHES` in ``results`` (with ``check``: compare,
    write nothing). Returns one line per file, whether any .md is stale, and the JSON read per stem."""
    lines, stale, loaded = [], False, {}
    for bench in BENCHES:
        for stem in bench.stems:
            source, md = results / f"{stem}.json", results / f"{stem}.md"
            if not source.is_file():
                lines.append(f"{stem}: no {source.name}, nothing to regenerate")
                continue
            try:
                result = loaded[stem] = json.loads(source.read_text(encoding="utf-8"))
                module = load_script(bench.script)
            except Exception as e:  # a broken file or a script that cannot load here: report it, go on
                lines.append(f"{md.name}: not regenerated ({type(e).__name__}: {e})")
                continue
            try:
                generated = module.markdown(result)
            except Exception as e:  # made by an older version of the script: report it, go on
                lines.append(f"{md.name}: old format ({type(e).__name__}: {e}) for experiments/{bench.script}.py, left "
                             f"untouched; rerun: {bench.rerun}")
                continue
            note = hand_note(md.read_text(encoding="utf-8")) if md.is_file() else ""
            outcome = update(md, with_note(generated, note), check)
            stale |= outcome.startswith("STALE")
            lines.append(f"{md.name}: {outcome}" + (" (hand-written note kept)" if note else ""))
            if bench.plot and not check:
                draw(module.plot, result, results / f"{stem}.png")
    known = {stem for bench in BENCHES for stem in bench.stems}
    lines += [f"{p.name}: no entry in experiments/report_results.py's BENCHES, not regenerated"
              for p in sorted(results.glob("*.json")) if p.stem not in known]
    return lines, stale, loaded


def methods(results: Path, loaded: dict[str, dict], check: bool = False) -> tuple[str, bool]:
    """Write ``methods.md`` and ``methods.png`` (with ``check``: compare the .md only); its line and staleness."""
    page = load_script("methods_page")
    rerun = {stem: bench.rerun for bench in BENCHES for stem in bench.stems}
    arms, absent = page.read_arms(loaded, rerun)
    outcome = update(results / "methods.md", page.markdown(arms, absent, "methods.png"), check)
    if not check:
        page.accuracy_vs_queries(arms, results / "methods.png")
    line = f"methods.md: {outcome} ({len(arms)} method rows, {len(absent)} files without rows)"
    return line, outcome.startswith("STALE")


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or ``--check``) the results folder; exit 1 when ``--check`` finds a stale table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "results"), help="the folder of result JSON files")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a .md differs from its JSON's")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        parser.error(f"--results {results} is not a folder")
    lines, stale, loaded = regenerate(results, args.check)
    line, methods_stale = methods(results, loaded, args.check)
    print("\n".join([*lines, line]))
    return 1 if args.check and (stale or methods_stale) else 0


if __name__ == "__main__":
    sys.exit(main())
