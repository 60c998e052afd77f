"""The errors rlprompt raises on purpose, all under one base, :class:`RLPromptError`.

The ``rlprompt`` command prints a project error as one line (``rlprompt train: error: ...``) and exits with the
error's :attr:`~RLPromptError.exit_code`; any other exception is a bug and keeps its traceback. Each class also
derives from the built-in error that callers caught before it existed (``ValueError``, ``FileNotFoundError``,
``RuntimeError``), so ``except ValueError`` around a config or a task load still works.

Defined elsewhere, next to what raises them, and derived from :class:`RLPromptError` as well:
:class:`rlprompt.devices.DeviceError` and :class:`rlprompt.models.ModelNotFoundError` (a :class:`ConfigError`),
:class:`rlprompt.targets.base.TargetError` and :class:`rlprompt.runs.RunWriteError` (exit code 1: the target or
the disk failed, not the input).

This module imports nothing heavy, so the CLI can catch these types without loading torch.
"""

from __future__ import annotations

from typing import ClassVar


class RLPromptError(Exception):
    """Base of every error rlprompt raises on purpose: bad input, or a failure outside the program."""

    exit_code: ClassVar[int] = 2
    """Exit status of the ``rlprompt`` command for this error: 2 for bad input, 1 for a failure of the system."""


class ConfigError(RLPromptError, ValueError):
    """A setting with a bad value: a config field, a ``key=value`` override, a command-line option, a target spec."""


class DataError(RLPromptError, ValueError):
    """A file rlprompt reads (task data, a checkpoint, a saved enhancer) that is malformed or does not fit the
    request (a missing split, an unknown column, a label outside the label set)."""


class MissingFileError(RLPromptError, FileNotFoundError):
    """A file or directory named by the user (a config, a task, a run, an enhancer) that does not exist."""


__all__ = ["ConfigError", "DataError", "MissingFileError", "RLPromptError"]
