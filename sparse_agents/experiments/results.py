"""One writer for task-matrix results (CL accuracy, continual-RL return): CSV, JSON and a
heat map with per-task curves, written atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def matrix_rows(matrix: Any) -> list[list[float | None]]:
    """A matrix (array or nested lists, NaN or None for "not yet") as JSON-ready rows."""
    return [[None if v is None or math.isnan(v) else float(v) for v in row] for row in matrix]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_matrix_outputs(out: str | Path, matrix: Any, summary: dict[str, Any], *,
                         csv_name: str, png_name: str, value: str, title: str,
                         digits: int = 4, value_range: tuple[float, float] | None = None
                         ) -> dict[str, Path]:
    """Write ``csv_name`` (rows ``after_task``, columns ``task_j``), ``summary.json`` and
    ``png_name`` (heat map plus one curve per task) into ``out``; returns the paths.

    ``value`` names the quantity (axis labels), ``value_range`` fixes the colour scale
    (default: the data's range).
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows = matrix_rows(matrix)
    n = len(rows[0])
    lines = ["after_task," + ",".join(f"task_{j}" for j in range(n))]
    for i, row in enumerate(rows):
        lines.append(f"{i}," + ",".join("" if v is None else f"{v:.{digits}f}" for v in row))
    paths = {"csv": folder / csv_name, "json": folder / "summary.json",
             "png": folder / png_name}
    write_atomic(paths["csv"], "\n".join(lines) + "\n")
    write_atomic(paths["json"], json.dumps(summary, indent=2, sort_keys=True))
    plot_matrix(rows, paths["png"], value=value, title=title, value_range=value_range)
    return paths


def plot_matrix(rows: Sequence[Sequence[float | None]], path: Path, *, value: str, title: str,
                value_range: tuple[float, float] | None = None) -> None:
    """Heat map of the matrix (left) and each task's value after every later task (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    n_rows, n_cols = m.shape
    finite = m[~np.isnan(m)]
    lo, hi = value_range or ((float(finite.min()), float(finite.max())) if finite.size
                             else (0.0, 1.0))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(4.0 + 1.4 * n_cols, 2.5 + 0.6 * n_rows))
    im = ax.imshow(m, cmap="viridis", vmin=lo, vmax=hi)
    fmt = ".2f" if hi - lo <= 1.0 else ".0f"
    for i in range(n_rows):
        for j in range(n_cols):
            if not np.isnan(m[i, j]):
                light = hi > lo and (m[i, j] - lo) / (hi - lo) > 0.6
                ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_xticks(range(n_cols))
    ax.set_yticks(range(n_rows))
    fig.colorbar(im, ax=ax, shrink=0.8, label=value)
    for j in range(n_cols):
        ax2.plot(range(j, n_rows), m[j:, j], marker="o", label=f"task {j}")
    ax2.set_xlabel("after training task")
    ax2.set_ylabel(value)
    ax2.set_xticks(range(n_rows))
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
