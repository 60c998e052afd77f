"""One run loop for every method (issue 14): :class:`RunLoop` alone owns a run's directory, its target-query
budget, its clock, its metric keys, its evaluation and checkpoint cadence, its resume check and its ``summary.json``;
a method only says how to take one step.

Two ways in, one loop:

* a **stepped** method (RLPrompt's and MultiPrompter's PPO updates, PromptAgent's search iterations) is an object with
  the :class:`Method` interface, and :meth:`RunLoop.run` drives it. Before each step the budget must afford the step's
  cost bound (:meth:`Method.step_cost`); after it the loop logs the step's metrics, scores the method's candidate
  prompts on dev every ``eval_every`` steps and after the last one (:meth:`Method.candidates`,
  :meth:`Method.evaluate`), keeps the best (``prompt.txt``, ``best_prompt.json``; the first candidate wins ties) and
  writes a checkpoint every ``checkpoint_every`` steps and after the last one, holding the method's state
  (:meth:`Method.state_dict`) beside its own.
* a **trainer** method (PRewrite's GRPO, DPO / Sem-DPO: their loop is a transformers ``Trainer``'s) feeds the same
  loop through one callback adapter, :meth:`RunLoop.trainer_callback`: each logged Trainer step goes through
  :meth:`RunLoop.log`, and each trl checkpoint gets the loop's state (``loop_state.json``) beside the Trainer's.
  :meth:`RunLoop.affordable_steps` says, once and the same in every process, how many steps the budget pays for.
  Under ``accelerate launch --num_processes N`` every process queries its own target: the run's count is their sum
  (:meth:`~rlprompt.runs.QueryBudget.sync` at every logged step and checkpoint, on every process, before the main
  process writes), each step costs N times a process's cost, and ``with loop.budget.shared():`` caps each process at
  1/N of what is left, so the run's total never passes ``max_target_queries``.

Both end with :meth:`RunLoop.finish`, which writes ``summary.json`` (:class:`~rlprompt.runs.RunResult`).

Metric keys (:data:`~rlprompt.runs.NAMESPACES`): ``charts/`` what a step measured, ``losses/`` optimiser figures,
``eval/`` dev scores (``eval/<role>_accuracy``, the best of each role of candidates, and ``eval/best_accuracy``),
``perf/`` timings (``perf/wall_seconds``: the run's clock across resumes, on every row). Every row also carries
``target_queries``, the target sequences the run has used since its start, across resumes and processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rlprompt.config import check_resume_config, dump_config
from rlprompt.errors import ConfigError, DataError
from rlprompt.runs import (
    QueryBudget,
    RunClock,
    RunDir,
    RunResult,
    resume_trainer_checkpoint,
    seed_everything,
    trainer_checkpoint_step,
    write_atomic,
)
from rlprompt.targets.base import Target

LOOP_STATE_FILE = "loop_state.json"
"""The loop's own state inside a trl checkpoint folder (a stepped run keeps it in its checkpoint's ``state.json``)."""


@dataclass
class MethodState:
    """What a method saves in a checkpoint: trainable tensors, optimizer state (a torch ``state_dict``) and JSON."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None


class Method(Protocol):
    """A stepped method: what :meth:`RunLoop.run` needs from it."""

    def step(self) -> Mapping[str, float]:
        """Take one training step (a rollout and its update, a search iteration) and return its metrics
        (namespaced keys, :data:`~rlprompt.runs.NAMESPACES`)."""

    def step_cost(self) -> int:
        """An upper bound on the target sequences the next step uses, with an evaluation after it (any step may turn
        out to be the last, which is always evaluated)."""

    def candidates(self) -> Mapping[str, list[str]]:
        """The prompts to score on dev now, by role (``{"greedy": [...], "sampled": [...]}``); earlier ones win
        ties."""

    def evaluate(self, prompt: str) -> float:
        """Accuracy of ``prompt`` on the dev split."""

    def stop_reason(self) -> str | None:
        """Why the method cannot take another step (one of :data:`~rlprompt.runs.STOP_REASONS`), or None."""

    def state_dict(self) -> MethodState:
        """Everything a resumed run needs to continue exactly (tensors, optimizer, rng states, counters)."""

    def load_state_dict(self, state: MethodState) -> None:
        """Restore what :meth:`state_dict` returned."""

    def details(self) -> dict[str, Any]:
        """The method's own figures for the summary's ``details``."""


class RunLoop:
    """A run of any method: open it (fresh, or resumed from its newest intact checkpoint), then :meth:`run` a stepped
    method or train a Trainer with :meth:`trainer_callback`, then :meth:`finish`.

    ``cfg`` is the method's config: ``method``, ``seed``, ``steps``, ``checkpoint_every``, ``keep_checkpoints``,
    ``max_target_queries`` and ``eval_every`` (1 when it has none) are read from it. ``checkpoints="run"`` keeps the
    loop's ``checkpoints/step_<n>/`` (stepped methods); ``"trainer"`` a Trainer's ``checkpoints/checkpoint-<n>/``.
    Opening writes ``config.yaml`` (checked first against the one a resumed run holds), seeds every generator from
    ``cfg.seed``, builds the target (``cfg.build_target(target)``: ``target`` overrides the config's) and drops the
    metrics logged after the checkpoint it resumes from. A run to resume that has metrics but no intact checkpoint
    is a :class:`~rlprompt.errors.DataError`.
    """

    def __init__(self, cfg: Any, run_dir: str | Path | RunDir, *, resume: bool = False, target: Target | None = None,
                 checkpoints: str = "run", desc: str | None = None, progress: bool = True) -> None:
        if checkpoints not in ("run", "trainer"):
            raise ValueError(f"checkpoints must be 'run' or 'trainer', got {checkpoints!r}")
        self.cfg, self.kind, self.progress = cfg, checkpoints, progress
        self.desc = desc or cfg.method
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, resume=resume)
        run = self.run_dir
        if resume and run.file("config.yaml").is_file():
            check_resume_config(run.read_config(), cfg)
        run.write_config(dump_config(cfg))
        seed_everything(cfg.seed)
        self.checkpoint: Any = None  # a stepped run's Checkpoint, or a trl checkpoint folder
        state = self._open_checkpoint() if resume else {}
        self.step = int(state.get("step", 0))
        self.best_prompt: str | None = state.get("best_prompt")
        self.best_accuracy: float | None = state.get("best_accuracy")
        self.target = cfg.build_target(target)
        self.budget = QueryBudget(self.target, cfg.max_target_queries, int(state.get("target_queries", 0)))
        self.clock = RunClock(run)  # after the truncation: the last wall time logged at or before the checkpoint
        self.stop: str | None = None
        self._bar: Any = None

    def _open_checkpoint(self) -> dict[str, Any]:
        """Find the checkpoint to resume from, drop the metrics after it, and return the loop state it holds."""
        run = self.run_dir
        if self.kind == "run":
            path = run.latest_checkpoint()
            if path is not None:
                self.checkpoint = run.load_checkpoint(path)
                if not isinstance(self.checkpoint.state.get("method"), dict):
                    raise DataError(f"checkpoint {str(path)!r} was written before rlprompt's run loop (it holds no "
                                    f"'method' state) and cannot be resumed by this version: start a new run")
                run.truncate_to(self.checkpoint.step)
                return {"step": self.checkpoint.step, **self.checkpoint.state.get("loop", {})}
        else:
            path = resume_trainer_checkpoint(run.path / "checkpoints")
            if path is not None:
                self.checkpoint = path
                step = trainer_checkpoint_step(path)
                run.truncate_to(step, training_only=True)
                saved = path / LOOP_STATE_FILE
                if saved.is_file():
                    return {**json.loads(saved.read_text(encoding="utf-8")), "step": step}
                # a checkpoint written before the loop kept its state: the queries its metrics logged
                return {"step": step, "target_queries": max((r["target_queries"] for r in run.read_metrics()),
                                                            default=0)}
        if run.read_metrics():
            raise DataError(f"cannot resume {str(run.path)!r}: it has metrics but no intact checkpoint")
        return {}

    def loop_state(self) -> dict[str, Any]:
        """The loop's own state (JSON): the best prompt and its dev accuracy, and the run's target queries."""
        return {"best_prompt": self.best_prompt, "best_accuracy": self.best_accuracy,
                "target_queries": self.budget.spent()}

    # -- what every method uses ---------------------------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        """Append ``metrics`` for ``step`` with ``perf/wall_seconds`` and the run's target queries."""
        return self.run_dir.log(step, {**metrics, "perf/wall_seconds": self.clock()},
                                target_queries=self.budget.spent())

    def consider(self, prompt: str, accuracy: float) -> bool:
        """Keep ``prompt`` as the run's best when its dev ``accuracy`` beats the best so far (``prompt.txt``,
        ``best_prompt.json``); True when it did."""
        if self.best_accuracy is not None and accuracy <= self.best_accuracy:
            return False
        self.best_prompt, self.best_accuracy = prompt, float(accuracy)
        self.run_dir.write_prompt(prompt)
        self.run_dir.write_json("best_prompt.json", {"prompt": prompt, "dev_accuracy": accuracy, "step": self.step,
                                                     "target_queries": self.budget.spent()})
        return True

    def evaluate(self, method: Method) -> dict[str, float]:
        """Score ``method``'s candidates on dev and keep the best; ``eval/<role>_accuracy`` and
        ``eval/best_accuracy``."""
        metrics: dict[str, float] = {}
        for role, prompts in method.candidates().items():
            scores = [method.evaluate(p) for p in prompts]
            metrics[f"eval/{role}_accuracy"] = max(scores, default=float("nan"))
            for prompt, score in zip(prompts, scores):
                self.consider(prompt, score)
        metrics["eval/best_accuracy"] = self.best_accuracy if self.best_accuracy is not None else float("nan")
        return metrics

    def finish(self, *, details: Mapping[str, Any] | None = None, test_accuracy: float | None = None,
               best_prompt: str | None = None, dev_accuracy: float | None = None, steps: int | None = None,
               stop_reason: str | None = None) -> dict[str, Any]:
        """Write ``summary.json`` and close the run; return the summary. ``best_prompt``/``dev_accuracy`` replace the
        loop's best (a method with its own final selection), ``steps``/``stop_reason`` its own counts."""
        if best_prompt is not None:
            self.best_prompt, self.best_accuracy = best_prompt, dev_accuracy
            self.run_dir.write_prompt(best_prompt)
        try:
            return RunResult(
                method=self.cfg.method, best_prompt=self.best_prompt, dev_accuracy=self.best_accuracy,
                test_accuracy=test_accuracy, target_queries=self.budget.spent(),
                steps=self.step if steps is None else steps, stop_reason=stop_reason or self.stop or "steps",
                wall_seconds=self.clock(), details=dict(details or {}),
            ).write(self.run_dir)
        finally:
            self.run_dir.close()

    # -- stepped methods ---------------------------------------------------------------------------------
    def run(self, method: Method) -> str:
        """Drive ``method`` until its ``steps`` are done, the budget cannot pay for its next step, or it stops on its
        own; return why it ended (also :attr:`stop`). A resumed loop first restores the method from its checkpoint."""
        cfg = self.cfg
        eval_every = getattr(cfg, "eval_every", 1)
        if self.checkpoint is not None:
            method.load_state_dict(MethodState(self.checkpoint.tensors, self.checkpoint.state["method"],
                                               self.checkpoint.optimizer))
        self._open_bar(cfg.steps)
        try:
            with self.budget:
                self.stop = self._stop_before(method)
                while self.stop is None:
                    metrics = dict(method.step())
                    self.step += 1
                    self.stop = self._stop_before(method)
                    final = self.stop is not None
                    if self.step % eval_every == 0 or final:
                        metrics.update(self.evaluate(method))
                        if not final:  # the evaluation spent queries too: the next step may no longer be affordable
                            self.stop = self._stop_before(method)
                            final = self.stop is not None
                    self.log(self.step, metrics)
                    if self.step % cfg.checkpoint_every == 0 or final:
                        self.save(method)
                    self._show(metrics)
        finally:
            self._close_bar()
        return self.stop

    def _stop_before(self, method: Method) -> str | None:
        """Why the next step may not be taken, or None."""
        if self.step >= self.cfg.steps:
            return "steps"
        reason = method.stop_reason()
        if reason is not None:
            return reason
        if not self.budget.affords(method.step_cost()):
            return "max_target_queries"
        return None

    def save(self, method: Method) -> Path:
        """Write a checkpoint of ``method`` and the loop at the current step (the newest ``keep_checkpoints`` kept)."""
        saved = method.state_dict()
        return self.run_dir.save_checkpoint(self.step, saved.tensors, {"loop": self.loop_state(),
                                                                       "method": saved.state},
                                            saved.optimizer, keep=self.cfg.keep_checkpoints)

    # -- trainer methods ---------------------------------------------------------------------------------
    def affordable_steps(self, step_cost: int, reserve: int = 0) -> int:
        """The last Trainer step the budget pays for when each step costs at most ``step_cost`` target sequences and
        ``reserve`` stay for what follows training (a final selection): ``cfg.steps`` without a budget, or for steps
        that query no target (``step_cost`` 0, DPO's). A budget too small for ``reserve`` alone is a
        :class:`~rlprompt.errors.ConfigError`. Under N processes (:meth:`~rlprompt.runs.QueryBudget.processes`) each
        spends ``step_cost`` a step, so a step costs ``N * step_cost``; ``reserve`` is counted once (what follows
        training runs on the main process only). Decided once from the checkpoint's counts, before
        training, so every process of a multi-process run decides the same."""
        if not self.budget.affords(reserve):
            raise ConfigError(f"max_target_queries={self.cfg.max_target_queries} cannot pay for the final selection "
                              f"({reserve} sequences, {self.budget.spent()} spent already): raise it or shrink the "
                              f"selection")
        if self.budget.limit is None or step_cost <= 0:
            return self.cfg.steps
        left = self.budget.limit - self.budget.spent() - reserve
        return min(self.cfg.steps, self.step + left // (step_cost * self.budget.processes()))

    def trainer_callback(self, extra: Callable[[], Mapping[str, float]] = dict) -> Any:
        """The adapter of a transformers ``Trainer`` to this loop: every logged step's numbers go through :meth:`log`
        (under ``losses/`` for loss and KL keys, else ``charts/``, plus ``extra()`` and ``perf/seconds_per_step``);
        each checkpoint the Trainer saves gets the loop's state as ``loop_state.json`` (add this callback before the
        checkpoint sealer); one progress bar on the main process. Under several processes the Trainer calls
        ``on_log`` and ``on_save`` on every process (transformers' ``Trainer.log`` and ``_maybe_log_save_evaluate``),
        so both first sum every process's target queries (:meth:`~rlprompt.runs.QueryBudget.sync`): the rows and
        ``loop_state.json`` the main process writes hold the run's total. Train inside
        ``with loop.budget.shared():``. The Trainer's end-of-run summary
        (``train_runtime``, ...) is not a step and is not logged; :attr:`step_seconds` of the returned callback holds
        the time of every step taken."""
        from transformers import TrainerCallback

        loop = self

        class LoopCallback(TrainerCallback):
            def __init__(self) -> None:
                self.step_seconds: list[float] = []
                self._t0 = time.perf_counter()

            def on_train_begin(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    loop._open_bar(state.max_steps)

            def on_train_end(self, args, state, control, **kwargs):
                loop._close_bar()

            def on_step_begin(self, args, state, control, **kwargs):
                self._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self.step_seconds.append(time.perf_counter() - self._t0)
                loop.step = state.global_step

            def on_log(self, args, state, control, logs=None, **kwargs):
                loop.budget.sync()  # a collective: every process, before the main process's early return
                if not state.is_world_process_zero or "train_runtime" in (logs or {}):
                    return
                metrics = {f"{'losses' if 'loss' in key or key.startswith('kl') else 'charts'}/{key.replace('/', '_')}":
                           float(value) for key, value in (logs or {}).items()
                           if isinstance(value, (int, float)) and not isinstance(value, bool)}
                metrics.update(extra())
                if self.step_seconds:
                    metrics["perf/seconds_per_step"] = self.step_seconds[-1]
                loop.log(state.global_step, metrics)
                loop._show(metrics)

            def on_save(self, args, state, control, **kwargs):
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                loop.budget.sync()
                if state.is_world_process_zero and folder.is_dir():
                    write_atomic(folder / LOOP_STATE_FILE, json.dumps(loop.loop_state()))

        return LoopCallback()

    # -- progress ------------------------------------------------------------------------------------------
    def _open_bar(self, total: int) -> None:
        if self.progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True)

    def _show(self, metrics: Mapping[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.update(self.step - self._bar.n)
        shown = {k.split("/", 1)[1]: v for k, v in metrics.items()
                 if k in ("charts/raw_reward", "charts/reward", "losses/loss", "charts/best_reward")}
        if self.best_accuracy is not None:
            shown["dev"] = self.best_accuracy
        self._bar.set_postfix({**{k: f"{v:.3g}" for k, v in shown.items()}, "queries": self.budget.spent()},
                              refresh=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["LOOP_STATE_FILE", "Method", "MethodState", "RunLoop"]
