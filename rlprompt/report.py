"""Plots and tables from run directories (read-only: :mod:`rlprompt.runs` writes them).

:func:`write_report` draws the training reward and the dev accuracy of every run against the target
queries it had spent (the cost axis that compares prompt optimizers fairly) as PNG files with
matplotlib's Agg backend, and writes a markdown table of each run's best prompt and final numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlprompt.errors import MissingFileError


@dataclass
class RunSummary:
    """One run directory read back: its config, its metric records and its best prompt."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    prompt: str | None

    @property
    def name(self) -> str:
        return self.path.name

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(target_queries, value) pairs of the records that hold ``key``."""
        points = [(r["target_queries"], r[key]) for r in self.metrics if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    def last(self, key: str) -> float | None:
        values = self.series(key)[1]
        return values[-1] if values else None


def load_run(path: str | Path) -> RunSummary:
    """Read ``config.yaml``, ``metrics.jsonl`` and ``prompt.txt`` of a run directory."""
    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise MissingFileError(f"{str(path)!r} is not a run directory (no metrics.jsonl)")
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) if (path / "config.yaml").is_file() else {}
    metrics = []
    for line in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            metrics.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    prompt = (path / "prompt.txt").read_text(encoding="utf-8") if (path / "prompt.txt").is_file() else None
    return RunSummary(path, config or {}, metrics, prompt)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_cell(text: str) -> str:
    """``text`` as one markdown table cell, in a code span: newlines and other unprintable characters written as
    escapes (``\\n``), pipes escaped, backticks turned into quotes, so a prompt never breaks its row."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return "`" + shown.replace("|", "\\|").replace("`", "'") + "`"


def markdown_table(runs: Sequence[RunSummary]) -> str:
    """One row per run: method, task, updates, target queries, dev accuracies, final reward, best prompt."""
    lines = ["| run | method | task | updates | target queries | best dev acc | last greedy dev acc | last reward | best prompt |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        last = run.metrics[-1] if run.metrics else {}
        prompt = "-" if run.prompt is None else markdown_cell(run.prompt)
        task = str(run.config.get("task", "-"))
        task = Path(task).name if Path(task).is_absolute() else task  # configs hold data paths as absolute paths
        lines.append(
            f"| {run.name} | {run.config.get('method', '-')} | {task} | {last.get('step', 0)} | "
            f"{last.get('target_queries', 0)} | {_fmt(run.last('eval/best_accuracy'))} | "
            f"{_fmt(run.last('eval/greedy_accuracy'))} | {_fmt(run.last('charts/raw_reward'), 2)} | {prompt} |")
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[RunSummary], key: str, ylabel: str, path: Path) -> Path:
    """A PNG of ``key`` against target queries, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        x, y = run.series(key)
        if x:
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=run.name)
    ax.set_xlabel("target queries (sequences scored)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write ``reward.png``, ``dev_accuracy.png`` and ``report.md`` for ``run_dirs`` into ``out_dir``."""
    runs = [load_run(p) for p in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "reward": plot(runs, "charts/raw_reward", "mean train reward (raw gap reward)", out / "reward.png"),
        "dev_accuracy": plot(runs, "eval/best_accuracy", "best dev accuracy so far", out / "dev_accuracy.png"),
    }
    md = ["# Runs", "", markdown_table(runs), "![reward](reward.png)", "", "![dev accuracy](dev_accuracy.png)", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    paths["markdown"] = out / "report.md"
    return paths


__all__ = ["RunSummary", "load_run", "markdown_cell", "markdown_table", "plot", "write_report"]
