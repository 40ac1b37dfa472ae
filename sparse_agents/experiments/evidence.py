"""Claims at the field's standard (docs/protocol.md): a run's score from its evaluation
curve, and the tests a claim names, with rliable's stratified bootstrap.

* :func:`window_score`: the mean evaluation return over the last 10% of training, from at
  least 5 evaluations in that window.
* :func:`iqm`: interquartile mean across runs and tasks, with its 95% CI.
* :func:`noninferiority`: "matches dense" holds when the lower 95% bound of
  ``sparse - margin * dense`` (per-task means, summed over tasks after dividing by
  ``|dense|``) is above 0.
* :func:`difference` and :func:`holm`: "beats" holds when the difference CI excludes 0,
  Holm-corrected when several contrasts make one claim.
* :func:`improvement_probability`: P(X > Y) across runs, averaged over tasks.

Score matrices are ``(runs, tasks)`` arrays, as rliable takes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from rliable import library as rly
from rliable import metrics
from scipy import stats
from statsmodels.stats.multitest import multipletests

from sparse_agents.experiments.results import write_atomic
from sparse_agents.experiments.rl import MIN_EVALS, WINDOW, window_score
from sparse_agents.intervals import mean_std

__all__ = ["MARGIN", "MIN_EVALS", "WINDOW", "Interval", "Run", "best_dense_width",
           "difference", "holm", "improvement_probability", "iqm", "noninferiority",
           "plot_width_scaling", "read_runs", "sweep_report", "width_of", "width_section",
           "window_score"]

#: "matches dense": sparse above this fraction of dense
MARGIN = 0.9
#: bootstrap replications (rliable's default is 50,000; its paper's figures use 2,000+)
REPS = 5_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% CI; ``holds``: the claim the test makes (CI above
    zero for non-inferiority, excluding zero for a difference); ``p``: the two-sided
    p-value where the test has one (Holm-adjusted after :func:`holm`)."""

    estimate: float
    low: float
    high: float
    holds: bool
    p: float = math.nan

    def fmt(self, digits: int = 2) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _rng(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def _estimates(data: Mapping, func, reps: int, seed: int):
    """rliable's interval estimates, reproducible for ``seed``. rliable 1.2's stratified
    bootstraps draw their indices from NumPy's global generator (the ``random_state`` it
    takes goes to arch, which does not draw them), so that generator is seeded here and
    its state restored afterwards; arch's warning that ``random_state`` is deprecated is
    silenced."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
            return rly.get_interval_estimates(data, func, reps=reps,
                                              random_state=_rng(seed))
    finally:
        np.random.set_state(state)


def _matrix(scores: ArrayLike, name: str) -> np.ndarray:
    m = np.asarray(scores, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"{name} must be a (runs, tasks) matrix with 2+ runs, "
                         f"got shape {m.shape}")
    return m


def iqm(score_dict: Mapping[str, ArrayLike], reps: int = REPS, seed: int = 0
        ) -> dict[str, Interval]:
    """Interquartile mean of each method's ``(runs, tasks)`` scores with its stratified
    bootstrap 95% CI (``holds``: the CI is above 0)."""
    data = {k: _matrix(v, k) for k, v in score_dict.items()}
    point, ci = _estimates(data, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)
    return {k: Interval(float(point[k][0]), float(ci[k][0, 0]), float(ci[k][1, 0]),
                        bool(ci[k][0, 0] > 0)) for k in data}


def _pair(x: np.ndarray, y: np.ndarray, stat, reps: int, seed: int
          ) -> tuple[float, float, float]:
    """``stat(x, y)`` and its stratified independent bootstrap 95% CI."""
    point, ci = _estimates({"c": (x, y)}, stat, reps, seed)
    return float(point["c"][0]), float(ci["c"][0, 0]), float(ci["c"][1, 0])


def _mean_gap(margin: float, scale: np.ndarray | float):
    """The statistic ``sum over tasks of (mean(x) - margin * mean(y)) / scale``."""
    def stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([float(np.sum((x.mean(0) - margin * y.mean(0)) / scale))])
    return stat


def noninferiority(sparse: ArrayLike, dense: ArrayLike, margin: float = MARGIN,
                   reps: int = REPS, seed: int = 0) -> Interval:
    """``sum over tasks of (mean(sparse) - margin * mean(dense)) / |mean(dense)|`` (one
    task: divided by 1, the raw difference in return units) with a stratified
    independent bootstrap 95% CI; ``holds`` when the lower bound is above 0."""
    s, d = _matrix(sparse, "sparse"), _matrix(dense, "dense")
    if s.shape[1] != d.shape[1]:
        raise ValueError(f"sparse has {s.shape[1]} tasks, dense {d.shape[1]}")
    scale = np.abs(d.mean(axis=0)) if s.shape[1] > 1 else 1.0
    estimate, low, high = _pair(s, d, _mean_gap(margin, scale), reps, seed)
    return Interval(estimate, low, high, low > 0)


def difference(a: ArrayLike, b: ArrayLike, reps: int = REPS, seed: int = 0) -> Interval:
    """``mean(a) - mean(b)`` (one task; a (runs, tasks) matrix: summed over tasks) with
    a stratified independent bootstrap 95% CI and Welch's two-sided p-value (first
    task); ``holds`` when the CI excludes 0."""
    x, y = _matrix(a, "a"), _matrix(b, "b")
    estimate, low, high = _pair(x, y, _mean_gap(1.0, 1.0), reps, seed)
    p = float(stats.ttest_ind(x[:, 0], y[:, 0], equal_var=False).pvalue)
    return Interval(estimate, low, high, low > 0 or high < 0, p)


def holm(contrasts: Mapping[str, Interval], alpha: float = 0.05) -> dict[str, Interval]:
    """The contrasts of one claim with Holm-adjusted p-values; ``holds`` when the
    adjusted p is below ``alpha`` and the bootstrap CI agrees in sign."""
    keys = list(contrasts)
    if not keys:
        return {}
    reject, adjusted, _, _ = multipletests([contrasts[k].p for k in keys], alpha=alpha,
                                           method="holm")
    return {k: Interval(c.estimate, c.low, c.high, bool(r) and c.holds, float(p))
            for k, c, r, p in zip(keys, (contrasts[k] for k in keys), reject, adjusted,
                                  strict=True)}


def improvement_probability(x: ArrayLike, y: ArrayLike, reps: int = REPS,
                            seed: int = 0) -> Interval:
    """P(a run of X scores above a run of Y), averaged over tasks (rliable), with its
    95% CI; ``holds`` when the CI is above 0.5."""
    estimate, low, high = _pair(
        _matrix(x, "x"), _matrix(y, "y"),
        lambda u, v: np.array([metrics.probability_of_improvement(u, v)]), reps, seed)
    return Interval(estimate, low, high, low > 0.5)


# ---------------------------------------------------------------------- a sweep's report
@dataclass(frozen=True)
class Run:
    """One committed run: its group (the run folder's name without ``-s<seed>``), seed,
    score (:func:`window_score`) and the evaluations its window holds."""

    group: str
    seed: int
    score: float
    window_evals: int
    cpu_s: float = math.nan  # the run's CPU time (older runs: training wall time)
    nonzero: float = math.nan  # nonzero parameters of its trained policy


def read_runs(sweep: str | Path, window: float = WINDOW) -> list[Run]:
    """The runs under ``sweep/runs/*`` (``summary.json`` and ``evaluations.csv``)."""
    runs = []
    for folder in sorted(Path(sweep, "runs").iterdir()):
        summary = folder / "summary.json"
        evals = folder / "evaluations.csv"
        if not summary.exists() or not evals.exists():
            continue
        info = json.loads(summary.read_text())
        with evals.open() as f:
            rows = [(float(r["timesteps"]), float(r["mean"])) for r in csv.DictReader(f)]
        t, r = zip(*rows, strict=True)
        total = float(info["timesteps"])
        n = int(sum(x >= (1 - window) * total for x in t))
        group = folder.name.rsplit("-s", 1)[0]
        cpu = info.get("cpu_s", info.get("train_s", math.nan))
        runs.append(Run(group, int(info["seed"]), window_score(t, r, total, window, 1), n,
                        float(cpu), float(info.get("nonzero_params", math.nan))))
    return runs


def width_of(group: str) -> tuple[str, int] | None:
    """``(family, width)`` of a ``--widths`` group (``...-<method>-w<W>``), else None."""
    family, sep, width = group.rpartition("-w")
    return (family, int(width)) if sep and width.isdigit() else None


def best_dense_width(groups: Mapping[str, list[Run]]) -> str | None:
    """The dense ``--widths`` group with the best mean score (None: no such group)."""
    dense = [g for g in groups if (w := width_of(g)) and w[0].endswith("-dense")]
    return max(dense, key=lambda g: float(np.mean([r.score for r in groups[g]])),
               default=None)


def width_section(groups: Mapping[str, list[Run]], reps: int = REPS) -> list[str]:
    """Markdown lines of the width-scaling claim: the best dense network of any width
    against every sparse group (difference, Holm over the sparse groups) and the CPU
    time each needs relative to it; empty when the sweep has no dense width groups."""
    widths = {g: width_of(g) for g in groups}
    dense = [g for g, w in widths.items() if w and w[0].endswith("-dense")]
    if not dense:
        return []
    score = {g: float(np.mean([r.score for r in runs])) for g, runs in groups.items()}
    cpu = {g: float(np.mean([r.cpu_s for r in runs])) for g, runs in groups.items()}
    nonzero = {g: float(np.mean([r.nonzero for r in runs])) for g, runs in groups.items()}
    best = best_dense_width(groups)
    sparse = [g for g, w in widths.items() if w and g not in dense]
    arrays = {g: np.array([r.score for r in runs]) for g, runs in groups.items()}
    diffs = holm({g: difference(arrays[g], arrays[best], reps) for g in sparse})
    lines = ["", f"## Width scaling: against the best dense network ({best})", "",
             "Every sparse group against the dense width with the best mean score; the "
             f"difference is Holm-corrected over the {len(sparse)} sparse groups. \"beats "
             "the best dense at no more CPU time\" needs the CI above 0 and a CPU-time "
             "ratio <= 1 (CPU seconds of the whole run, evaluations included).", "",
             "| group | width | nonzero params | score | difference | Holm p | CPU s | "
             "CPU vs best dense | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for g in sorted(dense + sparse, key=lambda g: (widths[g][0], widths[g][1])):
        ratio = cpu[g] / cpu[best] if cpu[best] else math.nan
        if g in diffs:
            d = diffs[g]
            cell, p = d.fmt(1), f"{d.p:.3f}"
            verdict = ("beats the best dense at no more CPU time"
                       if d.holds and d.estimate > 0 and ratio <= 1 else
                       "beats the best dense, at more CPU time" if d.holds and d.estimate > 0
                       else "below the best dense" if d.holds else "not shown")
        else:
            cell, p, verdict = "–", "–", "best dense" if g == best else "dense"
        lines.append(f"| {g} | {widths[g][1]} | {nonzero[g]:,.0f} | {score[g]:.1f} | {cell} "
                     f"| {p} | {cpu[g]:.0f} | {ratio:.2f} | {verdict} |")
    return lines


def plot_width_scaling(sweep: str | Path, out: str | Path) -> None:
    """Score against hidden width, nonzero parameters and CPU seconds, one line per
    method family (mean over seeds, bars the sample std), of a ``--widths`` sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Run]] = {}
    for run in read_runs(sweep):
        if width_of(run.group):
            groups.setdefault(run.group, []).append(run)
    families: dict[str, list[str]] = {}
    for g in sorted(groups, key=lambda g: width_of(g)[1]):
        families.setdefault(width_of(g)[0], []).append(g)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for family, members in families.items():
        mean = [float(np.mean([r.score for r in groups[g]])) for g in members]
        std = [mean_std([r.score for r in groups[g]])[1] for g in members]
        xs = {"width": [width_of(g)[1] for g in members],
              "nonzero parameters": [float(np.mean([r.nonzero for r in groups[g]]))
                                     for g in members],
              "CPU seconds per run": [float(np.mean([r.cpu_s for r in groups[g]]))
                                      for g in members]}
        for ax, (label, x) in zip(axes, xs.items(), strict=True):
            ax.errorbar(x, mean, yerr=np.nan_to_num(std), marker="o", capsize=3,
                        label=family.rsplit("-", 1)[-1] if "-s" not in family
                        else family.split("-", 2)[-1])
            ax.set_xscale("log")
            ax.set_xlabel(label)
    axes[0].set_ylabel(f"score (last {WINDOW:.0%} of training)")
    axes[0].legend(fontsize=8)
    fig.suptitle(Path(sweep).name)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def sweep_report(sweep: str | Path, dense: str | None = None, static: str | None = None,
                 margin: float = MARGIN, reps: int = REPS) -> str:
    """Markdown: each group's score (mean ± sample std over seeds), and the tests of the
    claims a table makes: every group against ``dense`` (non-inferiority at ``margin``;
    difference, Holm over the groups; probability of improvement) and the DST groups
    against ``static`` (difference, Holm over the groups). ``dense``/``static``: the
    group names (default: the group ending in ``-dense`` / ``-static``, if any)."""
    runs = read_runs(sweep)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    names = sorted(groups)
    width_lines = width_section(groups, reps)
    # a width sweep: against the best dense width
    dense = dense or best_dense_width(groups) or next((g for g in names if "-dense" in g),
                                                      None)
    static = static or next((g for g in names if g.endswith("-static")), None)
    scores = {g: np.array([r.score for r in groups[g]]) for g in names}
    lines = [f"# Evidence: {Path(sweep).name}", "",
             f"Generated by `python scripts/evidence_report.py {sweep}` "
             "(sparse_agents.experiments.evidence; docs/protocol.md). Score: the mean "
             f"evaluation return over the last {WINDOW:.0%} of training; ± is the sample "
             "std over seeds; CIs are 95% stratified bootstrap (rliable), "
             f"{reps} replications.", "",
             "| group | seeds | evals in window | score |", "|---|---|---|---|"]
    for g in names:
        ev = sorted({r.window_evals for r in groups[g]})
        mean, std = mean_std(scores[g])
        lines.append(f"| {g} | {len(scores[g])} | {'/'.join(map(str, ev))} | "
                     f"{mean:.1f} ± {std:.1f} |")
    short = [g for g in names if min(r.window_evals for r in groups[g]) < MIN_EVALS]
    if short:
        lines += ["", f"Below the protocol: the window holds fewer than {MIN_EVALS} "
                  "evaluations in every run of " + ", ".join(short) + " (the score is the "
                  "mean of those it holds)."]
    if dense is not None:
        others = [g for g in names if g != dense]
        diffs = holm({g: difference(scores[g], scores[dense], reps) for g in others})
        lines += ["", f"## Against dense ({dense})", "",
                  f"Non-inferiority: sparse − {margin}·dense, lower bound above 0 = "
                  "\"matches dense\". Difference: Holm-corrected over the "
                  f"{len(others)} groups (p adjusted), CI excluding 0 = \"beats\" / "
                  "\"below\". P(improvement): a run above a dense run.", "",
                  "| group | sparse − 0.9·dense | matches dense | difference | Holm p | "
                  "verdict | P(improvement) |", "|---|---|---|---|---|---|---|"]
        for g in others:
            ni = noninferiority(scores[g], scores[dense], margin, reps)
            d = diffs[g]
            verdict = ("beats dense" if d.holds and d.estimate > 0 else
                       "below dense" if d.holds else "not shown")
            pi = improvement_probability(scores[g], scores[dense], reps)
            lines.append(f"| {g} | {ni.fmt(1)} | {'yes' if ni.holds else 'not shown'} | "
                         f"{d.fmt(1)} | {d.p:.3f} | {verdict} | {pi.fmt(2)} |")
    if static is not None:
        dst = [g for g in names if g not in (static, dense)]
        diffs = holm({g: difference(scores[g], scores[static], reps) for g in dst})
        lines += ["", f"## DST against static ({static})", "",
                  f"Difference, Holm-corrected over the {len(dst)} groups.", "",
                  "| group | difference | Holm p | verdict |", "|---|---|---|---|"]
        for g in dst:
            d = diffs[g]
            verdict = ("above static" if d.holds and d.estimate > 0 else
                       "below static" if d.holds else "not shown")
            lines.append(f"| {g} | {d.fmt(1)} | {d.p:.3f} | {verdict} |")
    lines += width_lines
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python scripts/evidence_report.py SWEEP [SWEEP ...]``: writes SWEEP/evidence.md."""
    parser = argparse.ArgumentParser(description="tests of a sweep's claims")
    parser.add_argument("sweeps", nargs="+", help="results/<sweep> folders (with runs/)")
    parser.add_argument("--dense", help="the dense group (default: the one with -dense)")
    parser.add_argument("--static", help="the static group (default: ...-static)")
    parser.add_argument("--margin", type=float, default=MARGIN)
    args = parser.parse_args(argv)
    for sweep in args.sweeps:
        out = Path(sweep, "evidence.md")
        write_atomic(out, sweep_report(sweep, args.dense, args.static, args.margin))
        print(f"wrote {out}")
        if any(width_of(r.group) for r in read_runs(sweep)):
            plot_width_scaling(sweep, Path(sweep, "width_scaling.png"))
            print(f"wrote {Path(sweep, 'width_scaling.png')}")
