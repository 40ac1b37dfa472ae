"""The RL benchmark's report (``scripts/bench_rl.py``, every mode that trains or
``--report``): per-run rows -> ``results.csv``, ``summary.csv``/``summary.md`` (score mean
+- sample std over seeds, ratios to dense, FLOPs), ``contrasts.csv`` (differences of the
score with Welch's 95% CIs), ``curves.png`` and ``equal_params.png``."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparse_agents.experiments.bench.update_size import update_size_markdown, update_size_rows
from sparse_agents.intervals import diff_ci, excludes_zero, mean_std
from sparse_agents.study.rl_runs import RLRunJob
from sparse_agents.updaters import DENSE, REGISTRY


def run_dir(task: str, method: str, seed: int) -> str:
    """A run's folder under ``runs/`` (``/`` of ``MinAtar/...`` ids becomes ``-``)."""
    from sparse_agents.experiments.rl import env_slug

    return f"{env_slug(task)}-{method}-s{seed}"


def width_method(name: str, width: int) -> str:
    """An ``--equal-params`` row's name: the method's, then its hidden width."""
    return f"{name}-w{width}"


def split_width(method: str) -> tuple[str, str]:
    """``width_method``'s inverse: (the method's name, the width as written)."""
    name, width = method.rsplit("-w", 1)
    return name, width


def row_kinds(jobs: Sequence[RLRunJob]) -> dict[str, tuple[str, str, float]]:
    """Each row (method) -> (updater, distribution, sparsity) of its runs."""
    return {j.method: (j.run.updater, j.run.distribution, j.run.sparsity) for j in jobs}


def score(run: dict) -> float:
    """A run's score: the mean of its last 10% of evaluations (older runs: the final)."""
    return run["last10_mean"] if "last10_mean" in run else run["final_mean"]


def summarise(rows: list[dict], names: list[str], reference: str = DENSE) -> list[dict]:
    """Per (task, method): mean +- std over seeds, and the ratios to ``reference`` (the
    dense row; ``dense-w<W>`` with ``--equal-params W``)."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        dense = [r for r in rows if r["task"] == task and r["method"] == reference]
        dense_ret, _ = mean_std([score(r) for r in dense])
        dense_t, _ = mean_std([r["train_s"] for r in dense])
        for name in names:
            runs = [r for r in rows if r["task"] == task and r["method"] == name]
            if not runs:
                continue
            ret, ret_sd = mean_std([score(r) for r in runs])
            t, t_sd = mean_std([r["train_s"] for r in runs])
            density = mean_std([r["density"] for r in runs])[0]
            out.append({
                "task": task, "method": name, "seeds": len(runs),
                "score": ret, "score_std": ret_sd,
                "final_return": mean_std([r["final_mean"] for r in runs])[0],
                "best_return": mean_std([r["best_mean"] for r in runs])[0],
                # signed gap, as a fraction of |dense|: > 0 better, -0.1 = 10% worse
                "vs_dense": (ret - dense_ret) / abs(dense_ret) if dense and dense_ret
                else math.nan,
                "train_s": t, "train_s_std": t_sd,
                "time_vs_dense": t / dense_t if dense and dense_t else math.nan,
                "density": density,
                "nonzero": (density * runs[0]["masked_total"]
                            if runs[0].get("masked_total") else math.nan),
                "updates": mean_std([r["updates"] for r in runs])[0],
                "flops_forward": mean_std([r.get("flops_forward", math.nan)
                                            for r in runs])[0],
                "flops_ratio": mean_std([r.get("flops_ratio", math.nan) for r in runs])[0],
            })
    return out


def markdown(summary: list[dict], sparsity: float | str | None) -> str:
    """The summary table and its legend; ``sparsity`` ``None``: ``--equal-params`` rows;
    a string: the legend's words for it."""
    lines = [
        "| task | method | score (mean ± std) | Δ vs dense | final eval | best eval | "
        "train time s | time vs dense | density | updates | FLOPs/obs (× dense) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        flops = s.get("flops_forward", math.nan)
        flops_cell = (f"{flops:,.0f} ({s['flops_ratio']:.3f})" if math.isfinite(flops)
                      else "–")
        lines.append(
            f"| {s['task']} | {s['method']} | {s['score']:.1f} ± {s['score_std']:.1f} | "
            f"{s['vs_dense']:+.0%} | {s['final_return']:.1f} | {s['best_return']:.1f} | "
            f"{s['train_s']:.1f} ± {s['train_s_std']:.1f} | {s['time_vs_dense']:.3f} | "
            f"{s['density']:.3f} | {s['updates']:.0f} | {flops_cell} |")
    lines.append("")
    at = ("the sparsity that leaves them the nonzero weights of dense at the base width "
          "(`density` column)" if sparsity is None else sparsity
          if isinstance(sparsity, str) else f"{sparsity:.0%} sparsity")
    lines.append(f"Sparse rows at {at} (ERK unless the row names another "
                 "distribution). `score`: mean of each run's last 10% of deterministic "
                 "evaluations (Graesser et al.), mean ± sample std over seeds (÷ n − 1); "
                 "`Δ vs dense`: (sparse − dense) / |dense| of those means (negative: "
                 "worse); `final eval`: the evaluation at the end, mean over seeds; `best eval`: "
                 "mean over seeds of each run's best evaluation; `train time`: "
                 "wall time of `learn()` minus evaluation; `FLOPs/obs`: forward FLOPs per "
                 "observation of the trained policy (`sparse_agents.flops`: active weights "
                 "only, ablated neurons folded; SAC/TD3: the actor), and its ratio to the "
                 "same policy dense.")
    return "\n".join(lines) + "\n"


def contrasts(rows: list[dict], kinds: Mapping[str, tuple[str, str, float]],
              reference: str = DENSE) -> list[dict]:
    """Per task: every method's score minus ``reference``'s, and every dynamic updater's
    minus the fixed-mask one's (static) at the same distribution and sparsity (a
    ``--variant`` row too: static has no variants), with the
    half-width of the difference's 95% CI (Welch's t over seeds: runs of one seed share
    only the environment seeds, so the samples are not paired). ``kinds``: each method's
    (updater, distribution, sparsity) (:func:`row_kinds`)."""
    fixed = {(d, s): m for m, (u, d, s) in kinds.items()
             if u != DENSE and not REGISTRY[u].dynamic}
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        scores: dict[str, list[float]] = {}
        for r in rows:
            if r["task"] == task:
                scores.setdefault(r["method"], []).append(score(r))
        for method, (updater, distribution, sparsity) in kinds.items():
            baselines = [reference]
            if updater != DENSE and REGISTRY[updater].dynamic:
                baselines.append(fixed.get((distribution, sparsity)))
            for base in baselines:
                if base is None or base == method or not {method, base} <= scores.keys():
                    continue
                diff, half = diff_ci(scores[method], scores[base], paired=False)
                out.append({"task": task, "method": method, "baseline": base,
                            "seeds": f"{len(scores[method])}/{len(scores[base])}",
                            "diff": diff, "ci95": half,
                            "excludes_zero": excludes_zero(diff, half)})
    return out


CONTRAST_FIELDS = ["task", "method", "baseline", "seeds", "diff", "ci95", "excludes_zero"]


def contrast_markdown(table: list[dict]) -> str:
    """:func:`contrasts` as a markdown table and its legend."""
    lines = ["| task | method − baseline | seeds | Δ score | 95% CI | CI excludes 0 |",
             "|---|---|---|---|---|---|"]
    for c in table:
        ci = (f"[{c['diff'] - c['ci95']:+.1f}, {c['diff'] + c['ci95']:+.1f}]"
              if math.isfinite(c["ci95"]) else "–")
        lines.append(f"| {c['task']} | {c['method']} − {c['baseline']} | {c['seeds']} | "
                     f"{c['diff']:+.1f} | {ci} | {'yes' if c['excludes_zero'] else 'no'} |")
    lines.append("\nΔ score: difference of the mean scores; 95% CI: Welch's t interval of "
                 "that difference over seeds (`sparse_agents.intervals.diff_ci`; – with one "
                 "seed on a side).")
    return "\n".join(lines) + "\n"


def _curves(rows: list[dict], root: Path, task: str, method: str):
    """Evaluation curves of every seed of (task, method): timesteps and returns."""
    import numpy as np

    curves = []
    for r in rows:
        if r["task"] != task or r["method"] != method:
            continue
        path = root / "runs" / run_dir(task, method, r["seed"]) / "evaluations.csv"
        with open(path) as fh:
            curves.append([(float(a), float(b)) for a, b, _ in list(csv.reader(fh))[1:]])
    n = min(len(c) for c in curves)
    t = np.array([c[i][0] for c in curves for i in range(n)]).reshape(len(curves), n)
    y = np.array([c[i][1] for c in curves for i in range(n)]).reshape(len(curves), n)
    return t, y


def _task_figure(tasks: list[str], draw, out: Path, xlabel: str, ylabel: str) -> None:
    """One panel per task, ``draw(ax, task)`` filling it; saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        draw(ax, task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(rows: list[dict], out: Path, root: Path) -> None:
    """Evaluation curves, mean +- sample std (ddof=1) over seeds, per task and method
    (no band with one seed)."""
    import numpy as np

    def draw(ax, task: str) -> None:
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            t, y = _curves(rows, root, task, method)
            sd = y.std(0, ddof=1) if len(y) > 1 else np.zeros(y.shape[1])
            ax.plot(t.mean(0), y.mean(0), label=method)
            ax.fill_between(t.mean(0), y.mean(0) - sd, y.mean(0) + sd, alpha=0.15)
        ax.set_title(task, fontsize=10)

    _task_figure(list(dict.fromkeys(r["task"] for r in rows)), draw, out, "timesteps",
                 "eval return")


def dodge(index: int, count: int, step: float = 1.04) -> float:
    """Multiplicative x offset of series ``index`` of ``count`` on a log axis, centred on
    1, so that series at the same x (the same nonzero weights) stand side by side."""
    return step ** (index - (count - 1) / 2)


def log_xlim(xs: list[float], span: float = 4.0) -> tuple[float, float]:
    """Limits of a log x axis around ``xs`` covering at least a factor ``span``, with a
    margin, so that points at (almost) one x do not stretch a few units over the axis."""
    lo, hi = min(xs) / 1.25, max(xs) * 1.25
    if hi / lo < span:
        centre = math.sqrt(lo * hi)
        lo, hi = centre / math.sqrt(span), centre * math.sqrt(span)
    return lo, hi


def label_log_x(ax) -> None:
    """Labelled ticks at 1, 2 and 5 x 10^k on a log x axis, so that one within a factor 4
    (``log_xlim``'s least span) shows a value even where it holds no power of 10."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_equal_params(summary: list[dict], out: Path) -> None:
    """Score against nonzero weights per task: dense across widths, each sparse method
    across its widths (``--equal-params``); rows dodged by a few percent in x."""

    def draw(ax, task: str) -> None:
        rows = [s for s in summary if s["task"] == task and math.isfinite(s["nonzero"])]
        at = {s["method"]: s["nonzero"] * dodge(i, len(rows)) for i, s in enumerate(rows)}
        parts = {s["method"]: split_width(s["method"]) for s in rows}
        for family in dict.fromkeys(family for family, _ in parts.values()):
            pts = [s for s in rows if parts[s["method"]][0] == family]
            xs = [at[s["method"]] for s in pts]
            ax.errorbar(xs, [s["score"] for s in pts], yerr=[s["score_std"] for s in pts],
                        marker="o", capsize=3, label=family)
            for x, s in zip(xs, pts, strict=True):
                ax.annotate(parts[s["method"]][1], (x, s["score"]),
                            fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        if rows:
            ax.set_xlim(*log_xlim([s["nonzero"] for s in rows]))
        label_log_x(ax)
        ax.set_title(f"{task} (labels: hidden width)", fontsize=10)

    _task_figure(list(dict.fromkeys(s["task"] for s in summary)), draw, out,
                 "nonzero weights (methods dodged a few % apart)",
                 "score (last 10% of evaluations)")


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """``rows`` as CSV (``fields``: the columns, default the first row's keys)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


RESULT_FIELDS = ["task", "algo", "env", "method", "updater", "distribution", "sparsity",
                 "seed", "timesteps", "last10_mean", "final_mean", "final_std", "best_mean",
                 "train_s", "eval_s", "wall_s",
                 "density", "updates", "itop", "flops_forward", "flops_ratio", "optimizer"]


def optimizer_note(rows: list[dict]) -> str:
    """What trained each method, from the runs' summaries (older runs did not record it:
    they predate fused Adam in sparse policies and ran SB3's single-tensor default
    unless ``--fused-adam``)."""
    by_method: dict[str, set] = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add(r.get("optimizer") or "not recorded")
    return "optimizers: " + "; ".join(f"{m} {', '.join(sorted(v))}"
                                      for m, v in by_method.items())


def write_report(args, rows: list[dict], jobs: Sequence[RLRunJob], root: Path,
                 start: float) -> str:
    """results.csv, summary.csv, summary.md and curves.png under ``root``; the markdown."""
    write_csv(root / "results.csv", rows, RESULT_FIELDS)
    widths = getattr(args, "widths", None)
    reference = (width_method(DENSE, args.equal_params) if args.equal_params else
                 width_method(DENSE, min(widths)) if widths else DENSE)
    summary = summarise(rows, list(dict.fromkeys(j.method for j in jobs)), reference)
    write_csv(root / "summary.csv", summary)
    several = len(set(getattr(args, "sparsities", None) or [args.sparsity])) > 1
    md = markdown(summary, None if args.equal_params else
                  "the sparsity the row names" if several else args.sparsity)
    if widths:
        md += (f"\n`--widths`: every row at each hidden width (`-w<width>`); `Δ vs dense` "
               f"and the contrasts are against {reference}.\n")
    table = contrasts(rows, row_kinds(jobs), reference)
    write_csv(root / "contrasts.csv", table, CONTRAST_FIELDS)
    if table:
        md += "\nDifferences of the score:\n\n" + contrast_markdown(table)
    progress: dict[tuple[str, str], list[Path]] = {}
    for r in rows:
        progress.setdefault((r["task"], r["method"]), []).append(
            root / "runs" / run_dir(r["task"], r["method"], r["seed"]) / "progress.csv")
    md += update_size_markdown(update_size_rows(progress, reference))
    budgets = ", ".join(f"{j.task} {j.run.timesteps} steps" for j in
                        {j.task: j for j in jobs}.values())
    counts = {f"{r['task']} {r['method']}": r["seeds"] for r in summary}
    seeds = (f"{args.seeds} seeds" if set(counts.values()) <= {args.seeds} else
             "seeds per row: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    md += (f"\nBudgets: {budgets}; {seeds}; {args.workers} workers; "
           f"{optimizer_note(rows)}; "
           f"hyperparameters: {args.hyperparams}"
           + ("" if args.sparse_settings == "table" else
              "; sparse runs: the sparse policies' shipped defaults over the table's dense "
              "configuration (`--sparse-settings defaults`)")
           + ("" if args.report else f"; total wall {time.perf_counter() - start:.0f} s")
           + ".\n")
    (root / "summary.md").write_text(md)
    plot(rows, root / "curves.png", root)
    if args.equal_params:
        plot_equal_params(summary, root / "equal_params.png")
        md += ("\nEqual parameter count (`equal_params.png`):\n\n| task | method | nonzero "
               "weights | score |\n|---|---|---|---|\n" + "".join(
                   f"| {s['task']} | {s['method']} | {s['nonzero']:,.0f} | {s['score']:.1f} ± "
                   f"{s['score_std']:.1f} |\n" for s in summary))
        (root / "summary.md").write_text(md)
    return md

