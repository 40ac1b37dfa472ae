"""Aggregate study results over seeds: tables (CSV, markdown), plots and a summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sparse_agents.intervals import diff_ci, excludes_zero
from sparse_agents.study.store import write_json_atomic

GROUP = ["workload", "distribution", "sparsity", "updater"]
LOW_SPARSITY = 0.8  # the seed's "low" (<=) and "high" (>=) sparsity regimes
HIGH_SPARSITY = 0.95


def load_results(out: str | Path) -> pd.DataFrame:
    """One row per run under ``out/runs`` (ok and failed), metrics flattened."""
    rows = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        cfg = rec["config"]
        row = {k: cfg[k] for k in ("workload", "distribution", "sparsity", "updater", "seed")}
        row.update(job_id=rec["job_id"], status=rec["status"], wall_time=rec.get("wall_time"),
                   error=(rec.get("error") or "").strip().splitlines()[-1:] or None)
        row["error"] = row["error"][0] if row["error"] else None
        for key, value in rec.get("metrics", {}).items():
            if key in row:  # a result named like a grid column never replaces it
                key = f"result_{key}"
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = float(value)
            elif key == "metric_name":
                row[key] = value
        rows.append(row)
    columns = GROUP + ["seed", "job_id", "status", "wall_time", "error", "metric"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def _ci95(std: float, n: int) -> float:
    if n < 2 or not np.isfinite(std):
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def aggregate(df: pd.DataFrame, metric: str = "metric") -> pd.DataFrame:
    """Mean, std, 95% CI half-width (Student t) and n per workload x distribution x
    sparsity x updater, over the successful seeds."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=GROUP + ["mean", "std", "ci95", "n"])
    grouped = ok.groupby(GROUP, dropna=False)[metric]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    table["std"] = table["std"].fillna(0.0).where(table["n"] > 1, math.nan)
    table["ci95"] = [_ci95(s, n) for s, n in zip(table["std"], table["n"], strict=True)]
    return table.sort_values(GROUP).reset_index(drop=True)[GROUP + ["mean", "std", "ci95", "n"]]


def contrast(ga: pd.DataFrame, gb: pd.DataFrame, metric: str) -> tuple[float, float, bool]:
    """``metric`` of runs ``ga`` minus runs ``gb``: the difference of means, the
    half-width of its 95% CI, and whether it was paired (both sides ran the same seeds
    once each, so per-seed differences are used; else Welch's)."""
    ga, gb = ga.sort_values("seed"), gb.sort_values("seed")
    paired = ga["seed"].tolist() == gb["seed"].tolist() and ga["seed"].is_unique
    diff, half = diff_ci(ga[metric].to_numpy(float), gb[metric].to_numpy(float), paired)
    return diff, half, paired


def compare(df: pd.DataFrame, a: str = "erk", b: str = "uniform",
            metric: str = "metric") -> pd.DataFrame:
    """Per workload x updater x sparsity: mean(a) - mean(b), its 95% CI and whether
    the difference is outside the CI (the CI excludes 0).

    Runs of the two distributions with the same seed share data split, task order and
    mini-batch order, so when both sides have the same seeds the CI is paired (a t
    interval on the per-seed differences, column ``test`` = ``paired``); otherwise
    Welch's."""
    ok = df[df["status"] == "ok"]
    rows = []
    for (w, u, s), g in ok.groupby(["workload", "updater", "sparsity"]):
        ga, gb = g[g["distribution"] == a], g[g["distribution"] == b]
        if not len(ga) or not len(gb):
            continue
        xa, xb = ga[metric].to_numpy(float), gb[metric].to_numpy(float)
        diff, half, paired = contrast(ga, gb, metric)
        rows.append({"workload": w, "updater": u, "sparsity": s, f"{a}_mean": xa.mean(),
                     f"{b}_mean": xb.mean(), "diff": diff, "ci95": half,
                     "significant": excludes_zero(diff, half),
                     "test": "paired" if paired else "welch",
                     "n_a": len(xa), "n_b": len(xb)})
    return pd.DataFrame(rows)


def best_updater(df: pd.DataFrame, metric: str = "metric") -> pd.DataFrame:
    """Per workload x distribution x sparsity: the updater (growth rule) with the best
    mean, the runner-up, the lead and its 95% CI (paired by seed where possible), and
    whether the lead is outside the CI. Needs at least two sparse updaters."""
    ok = df[(df["status"] == "ok") & (df["updater"] != "dense")]
    rows = []
    for (w, d, s), g in ok.groupby(["workload", "distribution", "sparsity"]):
        means = g.groupby("updater")[metric].mean().sort_values(ascending=False)
        if len(means) < 2:
            continue
        first, second = means.index[0], means.index[1]
        lead, half, paired = contrast(g[g["updater"] == first], g[g["updater"] == second],
                                      metric)
        rows.append({"workload": w, "distribution": d, "sparsity": s, "best": first,
                     "best_mean": means.iloc[0], "runner_up": second,
                     "runner_up_mean": means.iloc[1], "lead": lead, "ci95": half,
                     "significant": excludes_zero(lead, half),  # lead >= 0: best minus runner-up
                     "test": "paired" if paired else "welch"})
    return pd.DataFrame(rows)


def best_text(best: pd.DataFrame) -> str:
    """Markdown lines: per workload and distribution, the best updater at each sparsity
    (``*``: its lead over the runner-up is outside the 95% CI)."""
    if best.empty:
        return ""
    lines = ["", "## Best growth rule (updater) per sparsity", ""]
    for (w, d), g in best.groupby(["workload", "distribution"]):
        cells = [f"{s:g}: {b}{'*' if sig else ''}" for s, b, sig in
                 zip(g["sparsity"], g["best"], g["significant"], strict=True)]
        lines.append(f"- **{w}, {d}**: " + ", ".join(cells))
    lines.append("")
    lines.append("(* = lead over the runner-up outside the 95% CI; see best_updater.md)")
    return "\n".join(lines) + "\n"


def seed_verdict(low: pd.DataFrame, high: pd.DataFrame) -> str:
    """Whether the low-sparsity rows favour the first distribution (diff > 0) and the
    high-sparsity rows the second (diff < 0), and which of those differences lie
    outside the 95% CI. A point whose significant difference goes the other way
    contradicts the finding."""
    expect = pd.concat([low.assign(want=1.0), high.assign(want=-1.0)])
    agree = np.sign(expect["diff"]) == expect["want"]
    sig = expect["significant"].astype(bool)
    fmt = lambda rows: ", ".join(f"{x:g}" for x in rows["sparsity"])  # noqa: E731
    if (sig & ~agree).any():
        return f"contradicted (significant the other way at {fmt(expect[sig & ~agree])})"
    if agree.all() and sig.all():
        return "reproduced (every difference outside the CI)"
    if agree.all():
        return (f"same direction everywhere, outside the CI only at {fmt(expect[sig])}"
                if sig.any() else "same direction everywhere, but no difference outside "
                "the CI: not established")
    side = ("low" if agree.iloc[: len(low)].all() else
            "high" if agree.iloc[len(low):].all() else None)
    if side is None:
        return "not reproduced"
    return (f"partly: only the {side}-sparsity side agrees"
            + (f", outside the CI at {fmt(expect[sig])}" if sig.any() else
               ", no difference outside the CI"))


def summary_text(cmp: pd.DataFrame, failed: pd.DataFrame, a: str = "erk",
                 b: str = "uniform") -> str:
    """Plain-language summary: where each distribution wins, and whether the seed's
    finding (ERK better at low sparsity, uniform better at high) is reproduced."""
    lines = [f"# Study summary: {a.upper()} vs {b}", "",
             "Differences are mean(" + a + ") - mean(" + b + ") with a 95% CI, paired by seed "
             "where both ran the same seeds (same data split and order), else Welch's.", ""]
    if cmp.empty:
        lines.append(f"No workload has results for both {a} and {b}.")
    for (w, u), g in cmp.groupby(["workload", "updater"]):
        wins_a = [f"{s:g}{'*' if sig else ''}" for s, d, sig in
                  zip(g["sparsity"], g["diff"], g["significant"], strict=True) if d > 0]
        wins_b = [f"{s:g}{'*' if sig else ''}" for s, d, sig in
                  zip(g["sparsity"], g["diff"], g["significant"], strict=True) if d < 0]
        lines.append(f"- **{w}, {u}**: {a} wins at sparsity {', '.join(wins_a) or 'none'}; "
                     f"{b} wins at {', '.join(wins_b) or 'none'} "
                     "(* = outside the 95% CI).")
        low = g[g["sparsity"] <= LOW_SPARSITY]
        high = g[g["sparsity"] >= HIGH_SPARSITY]
        if len(low) and len(high):
            verdict = seed_verdict(low, high)
            lines.append(f"  - seed finding ({a} better at sparsity <= {LOW_SPARSITY}, {b} "
                         f"better at >= {HIGH_SPARSITY}): **{verdict}**; mean diffs "
                         + ", ".join(f"{s:g}: {d:+.4f}±{h:.4f}" for s, d, h in
                                     zip(g["sparsity"], g["diff"], g["ci95"], strict=True)))
    if len(failed):
        lines += ["", f"{len(failed)} run(s) failed:"]
        lines += [f"- {r.job_id}: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_sparsity(table: pd.DataFrame, path: Path, metric_label: str) -> bool:
    """Metric vs sparsity: a line per distribution (95% CI bars), a panel per workload x
    updater, the dense baseline dashed. False (nothing written) without sparse rows."""
    sparse = table[table["updater"] != "dense"]
    if sparse.empty:
        return False
    plt = _pyplot()
    workloads = sorted(sparse["workload"].unique())
    updaters = sorted(sparse["updater"].unique())
    fig, axes = plt.subplots(len(workloads), len(updaters), squeeze=False,
                             figsize=(4 * len(updaters), 3.2 * len(workloads)))
    for i, w in enumerate(workloads):
        dense = table[(table["workload"] == w) & (table["updater"] == "dense")]
        for j, u in enumerate(updaters):
            ax = axes[i][j]
            for dist, g in sparse[(sparse["workload"] == w) & (sparse["updater"] == u)] \
                    .groupby("distribution"):
                g = g.sort_values("sparsity")
                ax.errorbar(g["sparsity"], g["mean"], yerr=g["ci95"].fillna(0), marker="o",
                            capsize=3, label=dist)
            if len(dense):
                ax.axhline(float(dense["mean"].iloc[0]), color="grey", ls="--", label="dense")
            ax.set_title(f"{w} / {u}", fontsize=9)
            ax.set_xlabel("sparsity")
            ax.set_ylabel(metric_label)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_difference_heatmap(cmp: pd.DataFrame, path: Path, metric_label: str) -> None:
    """Heat-map of the ERK - uniform difference (rows: workload / updater, columns:
    sparsity), each cell labelled with its value."""
    plt = _pyplot()
    pivot = cmp.pivot_table(index=["workload", "updater"], columns="sparsity", values="diff")
    fig, ax = plt.subplots(figsize=(1.2 * pivot.shape[1] + 3, 0.5 * pivot.shape[0] + 1.5))
    lim = float(np.nanmax(np.abs(pivot.to_numpy()))) or 1.0
    im = ax.imshow(pivot.to_numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), [f"{c:g}" for c in pivot.columns])
    ax.set_yticks(range(pivot.shape[0]), [f"{w} / {u}" for w, u in pivot.index])
    for (r, c), v in np.ndenumerate(pivot.to_numpy()):
        if np.isfinite(v):
            ax.text(c, r, f"{v:+.3f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("sparsity")
    ax.set_title(f"ERK - uniform ({metric_label})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(table: pd.DataFrame, cmp: pd.DataFrame, out: Path, metric_label: str) -> list[Path]:
    """Write ``metric_vs_sparsity.png`` and (with a comparison) ``erk_minus_uniform.png``
    under ``out``; return the paths written (none without sparse results)."""
    paths = []
    if not plot_metric_vs_sparsity(table, out / "metric_vs_sparsity.png", metric_label):
        return paths
    paths.append(out / "metric_vs_sparsity.png")
    if not cmp.empty:
        plot_difference_heatmap(cmp, out / "erk_minus_uniform.png", metric_label)
        paths.append(out / "erk_minus_uniform.png")
    return paths


def write_report(out: str | Path, metric: str = "metric") -> dict:
    """Write ``summary_table.{csv,md}``, ``erk_vs_uniform.{csv,md}``,
    ``best_updater.{csv,md}``, ``runs.{csv,md}``,
    plots and ``summary.md`` for ``metric`` (default: each workload's primary metric)
    under ``out``, or under ``out/report-<metric>`` for another metric; return their
    paths."""
    out = Path(out)
    df = load_results(out)
    if metric != "metric":
        ok = df[df["status"] == "ok"] if len(df) else df
        if metric not in df or ok[metric].isna().all():
            known = sorted(c for c in df.columns if c not in GROUP and
                           pd.api.types.is_numeric_dtype(df[c]))
            raise ValueError(f"metric must be a numeric result of these runs, one of "
                             f"{known}; got {metric!r}")
        out = out / f"report-{metric}"
        out.mkdir(exist_ok=True)
        label = metric
    else:
        names = df["metric_name"].dropna().unique() if "metric_name" in df else []
        label = " / ".join(names) or "metric"
    table = aggregate(df, metric)
    cmp = compare(df, metric=metric)
    best = best_updater(df, metric) if len(df) else pd.DataFrame()
    failed = df[df["status"] != "ok"] if len(df) else df
    written = {}
    for name, frame in (("summary_table", table), ("erk_vs_uniform", cmp),
                        ("best_updater", best), ("runs", df)):
        frame.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(frame.to_markdown(index=False, floatfmt=".4f") + "\n")
        written[name] = out / f"{name}.csv"
    (out / "summary.md").write_text(summary_text(cmp, failed) + best_text(best))
    written["summary"] = out / "summary.md"
    for path in plot(table, cmp, out, label):
        written[path.stem] = path
    write_json_atomic(out / "report.json", {k: str(v) for k, v in written.items()})
    return written
