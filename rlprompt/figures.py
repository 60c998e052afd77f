"""Figures a run or a benchmark writes, saved the way a run writes every file (:func:`rlprompt.runs.write_atomic`):
through a temporary file in the same folder and ``os.replace``, so a reader never sees a partial image."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rlprompt.runs import current_umask


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save the matplotlib figure ``fig`` as ``path`` atomically (the format from its suffix, folders created as
    needed, the mode ``open()`` would give a new file) and close it; returns ``path``. A failed save leaves any
    older file at ``path`` as it was and no temporary file behind."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


__all__ = ["save_figure"]
