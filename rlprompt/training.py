"""One entry point for every method: :func:`train` (``rlprompt.train`` in Python, ``rlprompt train`` in a shell).

A config (a YAML path, a dict or a config dataclass) names its method with its ``method:`` key; :func:`train`
loads it into that method's config class (:mod:`rlprompt.config`), checks it against the run directory when
resuming, and calls the method's train function, which returns the run's summary dict. The method modules (and
torch) are imported only when a method is used, so listing the methods stays fast.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlprompt.config import check_resume_config, config_method, dump_config, load_config
from rlprompt.errors import ConfigError, MissingFileError
from rlprompt.tasks import read_text

METHODS: dict[str, str] = {
    "rlprompt": "a discrete prompt, token by token, with PPO (RLPrompt, Deng et al. 2022)",
    "multiprompter": "K agents writing one prompt's segments in turn (MultiPrompter, Kim et al. 2023)",
    "prewrite": "a LoRA rewriter of task instructions with GRPO (PRewrite, Kong et al. 2024)",
    "dpo": "a LoRA rewriter from preference pairs (DPO, Rafailov et al. 2023)",
    "sem-dpo": "DPO with each pair weighted by semantic similarity (Sem-DPO, Mohamed et al. 2025)",
    "promptagent": "a prompt found by tree search over error-driven revisions (PromptAgent, Wang et al. 2023)",
}
"""The ``method:`` values a config may name, each with what it learns."""
CONFIG_FILE = "config.yaml"


def method_entry(method: str) -> tuple[type, Callable[..., dict[str, Any]]]:
    """The config class and train function of ``method`` (one of :data:`METHODS`); imports its module."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known methods: {sorted(METHODS)}")
    if method == "rlprompt":
        from rlprompt.policies.rlprompt import RLPromptConfig, train_rlprompt

        return RLPromptConfig, train_rlprompt
    if method == "multiprompter":
        from rlprompt.policies.multiprompter import MultiPrompterConfig, train_multiprompter

        return MultiPrompterConfig, train_multiprompter
    if method == "prewrite":
        from rlprompt.policies.prewrite import PRewriteConfig, train_prewrite

        return PRewriteConfig, train_prewrite
    if method == "promptagent":
        from rlprompt.policies.promptagent import PromptAgentConfig, train_promptagent

        return PromptAgentConfig, train_promptagent
    from rlprompt.policies.dpo import method_config, train_dpo

    return method_config(method), train_dpo


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config a run directory was started with (its ``config.yaml``) as a dict."""
    import yaml

    path = Path(run_dir).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{str(path)!r} does not exist: {str(run_dir)!r} is not a run directory to resume "
                               f"(give its config file to start it)")
    data = yaml.safe_load(read_text(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of field: value")
    return data


def resolve_config(config: str | Path | Mapping[str, Any] | Any | None, run_dir: str | Path, resume: bool = False,
                   **overrides: Any) -> tuple[Any, Callable[..., dict[str, Any]]]:
    """The loaded config and the train function :func:`train` would use, checked as it checks them (no run
    directory is made): ``config=None`` with ``resume`` reads the run's own ``config.yaml``."""
    if config is None:
        if not resume:
            raise ConfigError("a config (YAML file, dict or config object) is needed to start a run")
        config = run_config(run_dir)  # holds absolute paths (relative ones in runs made before meant the cwd)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        method, config = type(config).method, dump_config(config)
    else:
        method = config_method(config)
    config_cls, train_fn = method_entry(method)
    if "max_target_queries" in overrides and "max_target_queries" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise ConfigError(f"method {method!r} cannot stop at a target-query budget yet (max_target_queries): bound its "
                          f"run with steps= instead")
    cfg = load_config(config, config_cls, overrides)
    if resume and (Path(run_dir).expanduser() / CONFIG_FILE).is_file():
        check_resume_config(run_config(run_dir), cfg)
    return cfg, train_fn


def train(config: str | Path | Mapping[str, Any] | Any | None, run_dir: str | Path, resume: bool = False,
          **overrides: Any) -> dict[str, Any]:
    """Train the method ``config`` names (a YAML path, a dict or a method's config object) into ``run_dir`` and
    return the run's summary (``steps``, ``target_queries``, the best prompt, ...; see each method's train function).

    ``overrides`` set config fields (``steps=100``). ``resume=True`` continues the run in ``run_dir`` from its newest
    checkpoint; ``config`` may then be None (the run's own ``config.yaml`` is used), and only
    :data:`rlprompt.config.RESUME_CHANGEABLE` fields may differ from it. A start that fails before the run wrote
    anything but its config removes the run directory it created, so no half-made run is left behind.
    """
    cfg, train_fn = resolve_config(config, run_dir, resume, **overrides)
    path = Path(run_dir).expanduser()
    created = not path.exists()
    try:
        return train_fn(cfg, path, resume=resume)
    except BaseException:
        if created and _unstarted(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


def _unstarted(path: Path) -> bool:
    """True when ``path`` holds no file but its config (nothing a run made: no metric, checkpoint or output)."""
    return path.is_dir() and all(p.name == CONFIG_FILE for p in path.rglob("*") if not p.is_dir())


__all__ = ["METHODS", "method_entry", "resolve_config", "run_config", "train"]
