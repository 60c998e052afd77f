"""One place that turns a device setting (``cpu``, ``cuda``, ``cuda:N``, ``auto``) into a torch device.

Every config's ``device`` field and every ``--device`` option goes through :func:`resolve_device`, so a machine
without CUDA gets one clear :class:`DeviceError` (a :class:`~rlprompt.errors.ConfigError`, so a ``ValueError``) instead of a torch traceback deep inside a run.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from rlprompt.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a device is resolved, so configs validate without it
    import torch

DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")
"""Device settings accepted everywhere."""


class DeviceError(ConfigError):
    """A device setting that is malformed or names hardware this machine does not have."""


def check_device(spec: str) -> str:
    """``spec`` if it is a well-formed device setting (not whether the hardware exists), else a DeviceError."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise DeviceError(f"device={spec!r} is not one of cpu, cuda, cuda:N, auto")
    return spec


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device of a setting: ``auto`` is the process's CUDA device when one is available (``LOCAL_RANK``
    under ``accelerate launch``/``torchrun``, else the first), else the CPU; ``cuda``/``cuda:N`` must exist on this
    machine. A ``torch.device`` passes through unchanged."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    check_device(spec)
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device={spec!r} but this machine has no CUDA device (torch {torch.__version__}, "
                          f"CUDA build: {torch.version.cuda or 'no'}); use device=cpu or device=auto")
    index = int(spec.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device={spec!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


__all__ = ["DEVICE_PATTERN", "DeviceError", "check_device", "resolve_device"]
