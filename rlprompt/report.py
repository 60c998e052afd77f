"""Curves and a comparison table from run directories of any method (read-only: :mod:`rlprompt.runs` writes them).

:func:`write_report` draws one PNG per run: its training curve (:data:`CURVE_KEYS`, the first key the run logs) against
the target queries it had spent, the cost axis that compares prompt optimizers fairly, or against its steps when the
curve spent none (DPO trains on pairs built before its first step). It writes one table of every run's common
``summary.json`` keys (:class:`rlprompt.runs.RunResult`) as markdown and JSON. A run without a summary (still
running, or stopped by a crash) gets a row from its config, its last metric record and ``prompt.txt``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlprompt.errors import DataError, MissingFileError
from rlprompt.runs import SUMMARY_KEYS, RunDir, write_atomic

CURVE_KEYS = (
    "charts/raw_reward",       # RLPrompt, MultiPrompter: mean raw (unstabilized) reward of the update's prompts
    "charts/raw_reward_mean",  # PRewrite: mean raw reward of the step's rewrites
    "charts/reward",           # any GRPO run: trl's mean reward
    "charts/best_reward",      # PromptAgent: best reward-split accuracy found so far
    "losses/loss",             # DPO / Sem-DPO: the (weighted) DPO loss
)
"""Metric keys a run's curve is drawn from, the first one the run logs."""
TABLE_KEYS = tuple(k for k in SUMMARY_KEYS if k != "details")
"""The summary keys the comparison table holds (a method's own ``details`` are not comparable across methods)."""


@dataclass
class RunSummary:
    """One run directory read back: its config, metric records, best prompt and ``summary.json`` (None when absent)."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    prompt: str | None
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def series(self, key: str, x: str = "target_queries") -> tuple[list[float], list[float]]:
        """(``x``, value) pairs of the records that hold ``key``; ``x`` is ``target_queries`` or ``step``."""
        points = [(r[x], r[key]) for r in self.metrics if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    def curve(self) -> tuple[str, str] | None:
        """The run's curve as (metric key, x key): the first of :data:`CURVE_KEYS` it logs, against
        ``target_queries`` when they grow along it, else ``step``; None when it logs none of them."""
        for key in CURVE_KEYS:
            queries = self.series(key)[0]
            if queries:
                return key, "target_queries" if max(queries) > min(queries) else "step"
        return None

    def row(self) -> dict[str, Any]:
        """The run's :data:`TABLE_KEYS` from ``summary.json``, or what its config and metrics tell without one."""
        if self.summary is not None:
            return {k: self.summary.get(k) for k in TABLE_KEYS}
        last = self.metrics[-1] if self.metrics else {}
        return {**dict.fromkeys(TABLE_KEYS), "method": self.config.get("method"), "run_dir": str(self.path),
                "best_prompt": self.prompt, "target_queries": last.get("target_queries"), "steps": last.get("step")}


def load_run(path: str | Path) -> RunSummary:
    """Read ``config.yaml``, ``metrics.jsonl``, ``prompt.txt`` and ``summary.json`` of a run directory."""
    path = Path(path).resolve()
    if not (path / "metrics.jsonl").is_file():
        raise MissingFileError(f"{str(path)!r} is not a run directory (no metrics.jsonl)")
    run = RunDir(path, resume=True, tensorboard=False)  # reads only: the directory exists
    config = run.read_config() if (path / "config.yaml").is_file() else {}
    metrics = run.read_metrics()  # a torn last line from a crash is skipped
    prompt = (path / "prompt.txt").read_text(encoding="utf-8") if (path / "prompt.txt").is_file() else None
    summary = None
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{str(path / 'summary.json')!r} is not valid JSON ({err})") from None
        if not isinstance(summary, dict):
            raise DataError(f"{str(path / 'summary.json')!r} must hold a JSON object, got {type(summary).__name__}")
    return RunSummary(path, config or {}, metrics, prompt, summary)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_cell(text: str) -> str:
    """``text`` as one markdown table cell, in a code span: newlines and other unprintable characters written as
    escapes (``\\n``), pipes escaped, backticks turned into quotes, so a prompt never breaks its row."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return "`" + shown.replace("|", "\\|").replace("`", "'") + "`"


def markdown_table(runs: Sequence[RunSummary], names: Sequence[str] | None = None) -> str:
    """One row per run (named by ``names``, default the folder names): method, task, steps, target queries, why it
    stopped, dev and test accuracy, wall time, config hash and best prompt."""
    lines = ["| run | method | task | steps | target queries | stop | dev acc | test acc | wall s | config | "
             "best prompt |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in zip(names or [r.name for r in runs], runs):
        row = run.row()
        task = str(run.config.get("task", "-"))
        task = Path(task).name if Path(task).is_absolute() else task  # configs hold data paths as absolute paths
        cells = [name, row["method"] or "-", task, row["steps"] if row["steps"] is not None else "-",
                 row["target_queries"] if row["target_queries"] is not None else "-", row["stop_reason"] or "-",
                 _fmt(row["dev_accuracy"]), _fmt(row["test_accuracy"]), _fmt(row["wall_seconds"], 0),
                 row["config_hash"] or "-", "-" if row["best_prompt"] is None else markdown_cell(row["best_prompt"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def plot_curve(run: RunSummary, path: Path, title: str) -> Path:
    """A PNG of the run's curve (:meth:`RunSummary.curve`); a note instead when it logged none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    curve = run.curve()
    if curve is None:
        ax.text(0.5, 0.5, "no training curve logged", ha="center", va="center", transform=ax.transAxes)
    else:
        key, x = curve
        xs, ys = run.series(key, x)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_xlabel("target queries (sequences scored)" if x == "target_queries" else "step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _names(runs: Sequence[RunSummary]) -> list[str]:
    """Each run's folder name, made unique with ``-2``, ``-3``, ... (two runs may both be called ``run``)."""
    names: list[str] = []
    for run in runs:
        name, n = run.name, 1
        while name in names:
            n += 1
            name = f"{run.name}-{n}"
        names.append(name)
    return names


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write ``<run>.png`` (its curve) for each of ``run_dirs`` and the comparison table as ``report.md`` (with the
    curves) and ``report.json`` into ``out_dir``; returns their paths (``markdown``, ``json``, ``curve <run>``)."""
    runs = [load_run(p) for p in run_dirs]
    names = _names(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    rows = []
    for name, run in zip(names, runs):
        method = run.row()["method"] or "?"
        paths[f"curve {name}"] = plot_curve(run, out / f"{name}.png", f"{name} ({method})")
        curve = run.curve()
        rows.append({"run": name, **run.row(), "curve": f"{name}.png", "curve_key": curve and curve[0],
                     "curve_x": curve and curve[1]})
    md = ["# Runs", "", markdown_table(runs, names), *(f"![{name}]({name}.png)\n" for name in names)]
    write_atomic(out / "report.md", "\n".join(md))
    write_atomic(out / "report.json", json.dumps(rows, indent=2) + "\n")
    return {"markdown": out / "report.md", "json": out / "report.json", **paths}


__all__ = ["CURVE_KEYS", "RunSummary", "TABLE_KEYS", "load_run", "markdown_cell", "markdown_table", "plot_curve",
           "write_report"]
