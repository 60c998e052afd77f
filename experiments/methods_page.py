"""The side-by-side page: every method on SST-2 and AG News 16-shot, from the benchmarks' result files alone.

RLPrompt (Deng et al. 2022), MultiPrompter (Kim et al. 2023), PromptAgent (Wang et al. 2023) and PRewrite (Kong et al.
2024) each have a benchmark with its own baseline and budget; no paper puts them in one table. This page does, with the
project's rules: test accuracy as the mean over runs (seeds) with a 95% t-interval, each method minus its own baseline
with a 95% paired bootstrap interval over seeds x test examples (better or worse only when the interval excludes 0,
otherwise inside the noise), and the dev-test gap of the prompt each run selected.

Budgets differ between benchmarks, so rows are grouped by mean target queries per run: inside a group the largest
budget is at most twice the smallest, and only rows of one group are compared with each other (each against the
group's leader, paired on the data seeds and test examples the two share; where they share none the page says so).
Rows of different groups are not at equal budget and are not compared. ``accuracy_vs_queries`` plots every run.

Each result file is read by one function of :data:`SOURCES`; a file it cannot read (an older format) is listed under
"Not in this table" with the reason. Adding a method is one reading function and one entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.figures import save_figure
from rlprompt.stats import Interval, correctness, mean_interval, paired_bootstrap

TASKS = {"sst-2": "SST-2", "agnews": "AG News"}
"""Data directory name -> the task's name on the page (other tasks are left to their benchmark's own page)."""
BUDGET_RATIO = 2.0
"""Rows whose mean target queries per run lie within this factor of each other count as one budget."""


@dataclass(frozen=True)
class Run:
    """One training run (one seed) of a method, as its result file records it."""

    seed: str
    test_accuracy: float
    dev_accuracy: float
    """Accuracy on the set the run selected its prompt on (dev; PromptAgent: its reward set)."""
    target_queries: int | None
    """(prompt, input) sequences the target scored during training and selection; None when not recorded."""
    complete: bool
    """Whether the run reached its benchmark's full budget."""
    predictions: str
    baseline_predictions: str | None
    commit: str | None


@dataclass(frozen=True)
class Arm:
    """One method (or arm) on one task: its runs, its own baseline and the test examples it was scored on."""

    task: str
    method: str
    source: str
    baseline: str | None
    """The baseline its benchmark ran on the same test examples (None: it has none)."""
    labels: str
    """Gold test labels as a digit string."""
    indices: tuple[int, ...] | None
    """Positions of the scored examples in the task's test file (None: not recorded)."""
    runs: tuple[Run, ...]

    @property
    def queries(self) -> float | None:
        """Mean target queries per run, or None when any run's count is missing."""
        counts = [r.target_queries for r in self.runs]
        return None if any(c is None for c in counts) else float(np.mean(counts))

    def correct(self, seeds: list[str], keep: list[int] | None = None) -> list[np.ndarray]:
        """1/0 per example (those at positions ``keep``, default all) for the runs of ``seeds``."""
        by_seed = {r.seed: r for r in self.runs}
        return [correctness(_pick(by_seed[s].predictions, keep), _pick(self.labels, keep)) for s in seeds]


def _pick(text: str, keep: list[int] | None) -> str:
    return text if keep is None else "".join(text[i] for i in keep)


def _indices(value: Any, n: int) -> tuple[int, ...]:
    return tuple(range(n)) if value == "all" else tuple(int(i) for i in value)


def task_name(path: str) -> str | None:
    """The page's name of a task given as a data path or a task name, None for a task the page leaves out."""
    return TASKS.get(Path(path).name)


# -- one reading function per benchmark result file ------------------------------------------------------------------
def rlprompt_arms(result: dict[str, Any], source: str) -> list[Arm]:
    """RLPrompt's two arms (experiments/rlprompt_bench.py); baseline: random search at the run's own query count."""
    b, complete = result["baselines"], set(result["budgets"]["complete"])
    task, labels = task_name(result["config"]["task"]), b["test_labels"]
    arms = []
    for arm in dict.fromkeys(r["arm"] for r in result["runs"]):
        runs = tuple(Run(r["seed"], r["test_accuracy"], r["dev_accuracy"], r["target_queries"],
                         f"{arm}/{r['seed']}" in complete, r["test_predictions"],
                         r["random_search"]["test_predictions"], r.get("commit"))
                     for r in result["runs"] if r["arm"] == arm)
        arms.append(Arm(task, f"RLPrompt {arm}", source, "random search, same queries", labels,
                        _indices(b["test_indices"], len(labels)), runs))
    return arms


def multiprompter_arms(result: dict[str, Any], source: str) -> list[Arm]:
    """MultiPrompter with K = 1, 2, 3 agents (experiments/multiprompter_bench.py); baseline of K > 1: K = 1."""
    labels, first = result["test_labels"], result["arms"].get("k1", {}).get("runs", [])
    single = {r["seed"]: r["test_predictions"] for r in first}
    arms = []
    for name, arm in result["arms"].items():
        k = arm["n_agents"]
        runs = tuple(Run(r["seed"], r["test_accuracy"], r["dev_accuracy"], r["target_queries"],
                         r["updates"] >= result["updates"], r["test_predictions"],
                         single.get(r["seed"]) if k > 1 else None, r.get("commit")) for r in arm["runs"])
        arms.append(Arm(task_name(result["config"]["task"]), f"MultiPrompter K={k}", source,
                        "K=1, same seeds" if k > 1 else None, labels, _indices(result["test_indices"], len(labels)),
                        runs))
    return arms


def promptagent_arms(result: dict[str, Any], source: str) -> list[Arm]:
    """PromptAgent's searches (experiments/promptagent_bench.py); baseline: the initial prompt. Its seeds are search
    seeds on one data split; its dev accuracy is the reward set's (train and dev pooled); its target queries are the
    sequences one search sent to the model (which is target and optimizer at once) minus the final test scoring.
    The bench does not record which test-file rows it scored, so it is not paired with other methods."""
    arms = []
    for name, searches in result["tasks"].items():
        if task_name(name) is None:
            continue
        init, budget = result["init"][name], result["settings"]["max_evaluations"]
        for search, summary in searches.items():
            runs = tuple(Run(str(r["seed"]), r["test_accuracy"], r["reward"], r["target_sequences"] - init["test_size"],
                             r["evaluations"] >= budget, r["test_predictions"], init["test_predictions"], None)
                         for r in summary["seeds"])
            arms.append(Arm(task_name(name), f"PromptAgent {search}", source, "initial prompt", result["gold"][name],
                            None, runs))
    return arms


def prewrite_arms(result: dict[str, Any], source: str) -> list[Arm]:
    """PRewrite-I and PRewrite-S (experiments/prewrite_bench.py, the version with per-example predictions); baseline:
    the initial instruction, scored in the same run."""
    complete, arms = set(result["budget"]["complete"]), []
    for name, entry in result["tasks"].items():
        labels = entry["test_labels"]
        for key, method in (("prewrite_i", "PRewrite-I"), ("prewrite_s", "PRewrite-S")):
            runs = tuple(Run(r["data_seed"], r[key]["test_accuracy"], r[key]["dev_accuracy"], r["target_queries"],
                             f"{name}/{r['data_seed']}" in complete, r[key]["test_predictions"],
                             r["initial"]["test_predictions"], r.get("commit")) for r in entry["seeds"])
            arms.append(Arm(task_name(name), method, source, "initial instruction", labels,
                            _indices(entry["test_indices"], len(labels)), runs))
    return arms


SOURCES: dict[str, Callable[[dict[str, Any], str], list[Arm]]] = {
    "rlprompt_sst2": rlprompt_arms, "rlprompt_agnews": rlprompt_arms, "multiprompter": multiprompter_arms,
    "promptagent": promptagent_arms, "prewrite": prewrite_arms}
"""Result file stem -> the function that reads its rows."""

ABSENT = ["Sem-DPO and DPO (`semdpo.md`): not in this table. Their benchmark trains rewriters of task instructions on "
          "the built-in sentiment task and measures the rewrites' similarity to their originals and their task reward; "
          "it has no SST-2 or AG News test accuracy to put beside the others.",
          "PromptAgent's other tasks (built-in sentiment, BIG-bench): `promptagent.md`."]
"""Methods the page does not force into its table, and why."""


# -- comparisons ------------------------------------------------------------------------------------------------------
def budget_groups(arms: list[Arm]) -> list[list[Arm]]:
    """Arms with a known budget, smallest first, grouped so that within a group the largest mean target queries per
    run is at most :data:`BUDGET_RATIO` times the smallest."""
    groups: list[list[Arm]] = []
    for arm in sorted((a for a in arms if a.queries is not None), key=lambda a: a.queries):
        if groups and arm.queries <= BUDGET_RATIO * groups[-1][0].queries:
            groups[-1].append(arm)
        else:
            groups.append([arm])
    return groups


def own_difference(arm: Arm) -> Interval | None:
    """The arm minus its own baseline, paired over its seeds x test examples (None without a baseline)."""
    runs = [r for r in arm.runs if r.baseline_predictions is not None]
    if not runs:
        return None
    return paired_bootstrap(arm.correct([r.seed for r in runs]),
                            [correctness(r.baseline_predictions, arm.labels) for r in runs])


def difference(a: Arm, b: Arm) -> tuple[Interval, int] | str:
    """``a`` minus ``b``, paired over the data seeds and test-file rows both were scored on, with the number of those
    rows; the reason when they share none (or one does not record its rows). Two arms of one result file share its
    test examples, recorded or not."""
    if a.indices is None or b.indices is None:
        if a.source != b.source or a.labels != b.labels:
            return "not paired, as one of the two does not record which test rows it scored"
        shared = [(p, p) for p in range(len(a.labels))]
    else:
        where_b = {i: p for p, i in enumerate(b.indices)}
        shared = [(p, where_b[i]) for p, i in enumerate(a.indices) if i in where_b]
    keep_a, keep_b = [p for p, _ in shared], [q for _, q in shared]
    if not shared:
        return "not paired, as they share no test rows"
    if _pick(a.labels, keep_a) != _pick(b.labels, keep_b):
        return "not paired, as their gold labels differ on the same test rows (another test file?)"
    seeds = [r.seed for r in a.runs if r.seed in {s.seed for s in b.runs}]
    if not seeds:
        return "not paired, as they share no data seed"
    return paired_bootstrap(a.correct(seeds, keep_a), b.correct(seeds, keep_b)), len(shared)


# -- the page ---------------------------------------------------------------------------------------------------------
def _commits(arm: Arm) -> str:
    commits = sorted({r.commit[:7] + ("+dirty" if r.commit.endswith("+dirty") else "") for r in arm.runs if r.commit})
    return ", ".join(commits) or "commit not recorded"


def _row(group: str, arm: Arm) -> str:
    runs, own = arm.runs, own_difference(arm)
    gap = np.mean([r.dev_accuracy - r.test_accuracy for r in runs])
    queries = "not recorded" if arm.queries is None else f"{arm.queries:,.0f}"
    versus = "-" if own is None else f"{own:+.3f} {own.reading}"
    return (f"| {group} | {arm.method} | {len(runs)} | {mean_interval([r.test_accuracy for r in runs])} | {queries} | "
            f"{arm.baseline or '-'} | {versus} | {gap:+.3f} | {sum(r.complete for r in runs)}/{len(runs)} | "
            f"`{arm.source}` @ {_commits(arm)} |")


def _budget_note(groups: list[list[Arm]], names: dict[int, str], unknown: list[Arm]) -> str:
    parts = []
    for g in groups:
        span = f"{g[0].queries:,.0f}" + (f"-{g[-1].queries:,.0f}" if g[-1].queries > g[0].queries else "")
        parts.append(f"{names[id(g[0])]} = {', '.join(a.method for a in g)} ({span} queries per run)")
    note = f"Budget groups: {'; '.join(parts) or 'none'}."
    if len(groups) > 1:
        gaps = [f"the nearest budgets of {names[id(low[0])]} and {names[id(high[0])]} are {low[-1].queries:,.0f} and "
                f"{high[0].queries:,.0f} ({high[0].queries / low[-1].queries:.1f}x)"
                for low, high in zip(groups, groups[1:])]
        note += f" Rows of different groups are not compared: {'; '.join(gaps)}."
    if unknown:
        note += f" Budget not recorded, not compared: {', '.join(a.method for a in unknown)}."
    return note


def _task_section(task: str, arms: list[Arm]) -> list[str]:
    groups = budget_groups(arms)
    unknown = [a for a in arms if a.queries is None]
    names = {id(a): chr(ord("A") + g) for g, group in enumerate(groups) for a in group}
    lines = [f"## {task}", "", "| budget group | method | runs | test acc [95% CI] | target queries per run | "
             "own baseline | minus own baseline [95% CI] | dev-test gap | runs at full budget | source @ commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(names[id(a)], a) for group in groups for a in group] + [_row("-", a) for a in unknown]
    lines += ["", _budget_note(groups, names, unknown), ""]
    compared = [g for g in groups if len(g) > 1]
    if not compared:
        return lines + ["No two methods here ran at a budget within 2x of each other: no method is compared with "
                        "another at equal budget.", ""]
    lines += ["Inside each budget group, every pair of methods (higher mean minus lower), 95% paired bootstrap over "
              "the data seeds x test examples the two share:", "",
              "| budget group | difference | mean [95% CI] | seeds x test examples | reading |",
              "|---|---|---|---|---|"]
    unpaired: dict[str, list[str]] = {}
    for group in compared:
        ranked = sorted(group, key=lambda a: -np.mean([r.test_accuracy for r in a.runs]))
        for i, high in enumerate(ranked):
            for low in ranked[i + 1:]:
                paired = difference(high, low)
                if isinstance(paired, str):
                    unpaired.setdefault(paired, []).append(f"{high.method} / {low.method}")
                else:
                    diff, examples = paired
                    lines.append(f"| {names[id(high)]} | {high.method} - {low.method} | {diff:+.3f} | "
                                 f"{diff.n} x {examples} | {diff.reading} |")
    lines += [""] + [f"{reason.capitalize()}: {'; '.join(pairs)}." for reason, pairs in unpaired.items()]
    return lines + [""]


def read_arms(results: dict[str, dict[str, Any]], rerun: dict[str, str]) -> tuple[list[Arm], list[str]]:
    """Every row the files of ``results`` (stem -> result JSON) give, and one line per file that gives none (missing,
    or in a format its reading function cannot read: ``rerun`` says how to make it again)."""
    arms, absent = [], []
    for stem, read in SOURCES.items():
        if stem not in results:
            absent.append(f"`{stem}.json`: no such file.")
            continue
        try:
            rows = [a for a in read(results[stem], f"{stem}.json") if a.task is not None]
        except Exception as e:  # one unreadable file must not stop the page
            absent.append(f"`{stem}.json`: older format ({type(e).__name__}: {e}); rerun: `{rerun.get(stem, '?')}`.")
            continue
        arms += rows
        if not rows:
            absent.append(f"`{stem}.json`: no SST-2 or AG News runs.")
    return arms, absent


def markdown(arms: list[Arm], absent: list[str], plot: str) -> str:
    """The side-by-side page of ``arms``, with the files that gave no rows (``absent``) and the plot's file name."""
    lines = ["# The methods side by side on SST-2 and AG News 16-shot", "",
             "Regenerated from the result files by `python experiments/report_results.py`; no model runs.", "",
             "How to read it. Test accuracy: mean over runs (seeds) with its 95% t-interval. Target queries: the "
             "(prompt, input) sequences the target scored per run for training and prompt selection (test scoring "
             "excluded; PromptAgent's count includes its optimizer's generations, as one model is target and "
             "optimizer). Own baseline: what the method's benchmark ran beside it on the same test examples; the "
             "difference is a 95% paired bootstrap interval over seeds x test examples, \"better\" or \"worse\" only "
             "when it excludes 0, else \"inside the noise\". Dev-test gap: mean over runs of the selection-set "
             "accuracy of the selected prompt minus its test accuracy (PromptAgent selects on its reward set, train "
             "and dev pooled; selection on a small set makes the gap optimistic).", "",
             f"Equal budgets: rows are grouped by mean target queries per run; inside a group the largest is at most "
             f"{BUDGET_RATIO:g}x the smallest. Only rows of one group are compared with each other; rows of different "
             f"groups are NOT at equal budget and their accuracies do not rank the methods. By design, MultiPrompter's "
             f"K=1/2/3 share one budget, and each RLPrompt run's random-search baseline uses exactly its query count. "
             f"`{plot}` shows test accuracy against target queries (log scale), one point per run.", ""]
    for task in TASKS.values():
        mine = [a for a in arms if a.task == task]
        lines += _task_section(task, mine) if mine else [f"## {task}", "", "No result file gives rows yet.", ""]
    lines += ["## Not in this table", "", *[f"- {line}" for line in absent + ABSENT], ""]
    return "\n".join(lines)


def accuracy_vs_queries(arms: list[Arm], path: Path) -> None:
    """One panel per task: test accuracy against target queries per run (log x), a small point per run and a large
    one at each method's means; written atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(a.method for a in arms))}  # same color per method
    fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 4.5), squeeze=False)
    for ax, task in zip(axes[0], TASKS.values()):
        mine = [a for a in arms if a.task == task and a.queries is not None]
        ax.set_title(task)
        if not mine:
            ax.text(0.5, 0.5, "no runs in the result files yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for arm in mine:
            ax.scatter([r.target_queries for r in arm.runs], [r.test_accuracy for r in arm.runs],
                       color=colors[arm.method], alpha=0.35, s=14)
            ax.scatter([arm.queries], [np.mean([r.test_accuracy for r in arm.runs])], color=colors[arm.method], s=70,
                       edgecolors="black", label=arm.method)
        counts = [r.target_queries for a in mine for r in a.runs]
        ax.set_xscale("log")
        ax.set_xlim(min(counts) / 1.6, max(counts) * 1.6)  # wide enough to hold a 1-2-5 tick
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("target queries per run (log scale)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


__all__ = ["Arm", "Run", "SOURCES", "accuracy_vs_queries", "budget_groups", "difference", "markdown", "read_arms"]
