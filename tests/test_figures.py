"""Figures are saved atomically: a complete PNG with a new file's usual mode, or the older file untouched."""

from __future__ import annotations

import os
import stat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from rlprompt.figures import save_figure  # noqa: E402


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_figure_writes_a_png_closes_the_figure_and_leaves_no_temporary_file(tmp_path):
    fig = _figure()
    umask = os.umask(0o022)
    try:
        path = save_figure(fig, tmp_path / "plots" / "curve.png", dpi=50)
    finally:
        os.umask(umask)
    assert path == tmp_path / "plots" / "curve.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0o600
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]


def test_a_failed_save_keeps_the_older_file(tmp_path):
    path = tmp_path / "curve.png"
    path.write_bytes(b"old")
    fig = _figure()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    fig.savefig = broken
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    assert not plt.fignum_exists(fig.number)
